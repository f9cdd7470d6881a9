"""Small things seen in the browser: the Cost page's speed ratio, the Evaluate page's TRAK
curves and tick labels, the breast_cancer heatmaps' colour scales."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from attrcore import app as sup
from attrcore import plots
from attrcore.plots.evaluation import thin_ticks

ROOT = Path(__file__).resolve().parents[2]


def test_the_speed_ratio_never_reads_zero_times():
    assert sup.speed_ratio_text(0.2) == "5.0× faster than forward-only"  # was "↑ 0× forward-only"
    assert sup.speed_ratio_text(3.14) == "3.1× slower than forward-only"
    assert sup.speed_ratio_text(1.01) == "as fast as forward-only"
    assert all(not sup.speed_ratio_text(r).startswith("0") for r in (0.001, 0.04, 0.3, 0.7))


def test_trak_curves_keep_the_ridge_row_apart_so_they_do_not_zig_zag():
    doc = json.loads((ROOT / "benchmarks" / "digits-mlp.json").read_text())
    curves = sup.bench_curves(doc)
    for key in ("trak_models", "trak_proj"):
        for name, (x, _y) in curves[key].items():
            assert len(set(x)) == len(x), (key, name, x)  # one point per x: a line, not a zig-zag
    assert any("ridge" in name for name in curves["trak_models"])


def test_tick_labels_do_not_overlap_on_a_log_axis():
    assert thin_ticks([1, 4, 16, 64, 100, 4096], log=True) == [1, 4, 16, 64, 4096]
    assert thin_ticks([10, 20, 30], log=False) == [10, 20, 30]
    fig = plots.lds_curves(
        {"a": ([1, 64, 100, 4096], [0.1, 0.2, 0.3, 0.4])},
        "K",
        log_x=True,
        x_labels={1: "1", 64: "64", 100: "100", 4096: "full"},
    )
    assert list(fig.layout.xaxis.ticktext) == ["1", "64", "full"]


def test_heatmaps_side_by_side_share_one_colour_scale():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(100, 4))
    pro = plots.feature_heatmap(reference[:3] * 0.1, list("abcd"), ["1", "2", "3"], reference=reference)
    opp = plots.feature_heatmap(reference[3:6] * 5, list("abcd"), ["4", "5", "6"], reference=reference)
    assert (pro.data[0].zmin, pro.data[0].zmax) == (opp.data[0].zmin, opp.data[0].zmax) == (-3.0, 3.0)
