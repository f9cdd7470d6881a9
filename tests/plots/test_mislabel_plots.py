"""The Mislabeled data figures: pure functions of arrays, one trace per thing drawn."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from attrcore import plots
from attrcore.evaluation.metrics import found_vs_inspected


def test_found_vs_inspected_draws_each_signal_and_the_references():
    flags = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    curves = {
        "forward-only self-influence (loss)": found_vs_inspected(flags, np.arange(10)[::-1]),
        "training loss (control)": found_vs_inspected(flags, np.arange(10)),
    }
    fig = plots.found_vs_inspected(curves, flipped_fraction=0.2)
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert names == ["perfect ranking", "random order", *curves]
    assert fig.data[-1].line.dash == "dash" and fig.data[-2].line.dash == "solid"
    assert fig.data[2].y[0] == 0 and fig.data[2].y[-1] == 1


def test_detection_and_accuracy_bars():
    fig = plots.detection_bars(
        ["forward-only self-influence (loss)", "training loss (control)"], [0.9, 0.95], [0.3, 0.4]
    )
    assert len(fig.data) == 2 and list(fig.data[0].x) == [0.9, 0.95]
    fig = plots.accuracy_bars(0.88, 0.94, 0.96)
    assert list(fig.data[0].x) == ["given labels", "after the fixes", "clean labels"]
    assert len(plots.accuracy_bars(0.88, 0.9).data[0].x) == 2
