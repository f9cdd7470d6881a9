"""attrcore.plots: pure functions from arrays to plotly figures (no Streamlit involved)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import plotly.io
import pytest

from attrcore import plots

RNG = np.random.default_rng(0)


def trace_types(fig: go.Figure) -> list[str]:
    return [t.type for t in fig.data]


def test_training_curves_draws_loss_and_both_accuracies():
    history = [
        {"epoch": e, "loss": 1.0 / e, "train_accuracy": 0.5 + 0.1 * e, "test_accuracy": 0.4 + 0.1 * e}
        for e in (1, 2, 3)
    ]
    fig = plots.training_curves(history, total_epochs=10)
    assert [t.name for t in fig.data] == ["loss", "train accuracy", "test accuracy"]
    assert list(fig.data[0].y) == [1.0, 0.5, 1.0 / 3]
    assert tuple(fig.layout.xaxis.range) == (0.5, 10.5)


def test_training_curves_without_test_accuracy_and_empty_history():
    fig = plots.training_curves([{"epoch": 1, "loss": 0.3, "train_accuracy": 0.9}])
    assert [t.name for t in fig.data] == ["loss", "train accuracy"]
    assert isinstance(plots.training_curves([]), go.Figure)


def test_image_mosaic_places_every_image_once_and_is_selectable():
    X = RNG.random((5, 12))  # five 3x4 images
    fig = plots.example_mosaic(
        X, "image", (3, 4), titles=list("abcde"), ids=[10, 11, 12, 13, 14], cols=3, selectable=True, selected=12
    )
    heat, picker = fig.data
    z = np.asarray(heat.z, dtype=float)
    assert np.isfinite(z).sum() == X.size  # every pixel once, NaN gaps between cells
    assert np.isclose(np.nansum(z), X.sum())
    assert list(picker.customdata) == [10, 11, 12, 13, 14]
    assert len(fig.layout.annotations) == 5 and fig.layout.annotations[0].text == "a"
    assert len(fig.layout.shapes) == 1  # the selected example is framed


def test_signal_mosaic_and_border_colours():
    X = RNG.standard_normal((4, 40))
    fig = plots.example_mosaic(X, "signal", border_colours=[plots.PROPONENT, None, None, plots.OPPONENT], cols=2)
    assert trace_types(fig) == ["scatter"]
    assert sum(v is None for v in fig.data[0].x) == 4  # one line per signal
    assert [s.line.color for s in fig.layout.shapes] == [plots.PROPONENT, plots.OPPONENT]


def test_mosaic_edge_cases():
    assert len(plots.example_mosaic(np.zeros((0, 4)), "image", (2, 2)).data) == 0
    with pytest.raises(ValueError, match="image_shape"):
        plots.example_mosaic(np.zeros((1, 4)), "image")
    with pytest.raises(ValueError, match="tabular"):
        plots.example_mosaic(np.zeros((1, 4)), "tabular")


def test_feature_heatmap_uses_z_scores_against_the_reference():
    ref = RNG.standard_normal((50, 3)) * [1, 10, 100] + [0, 5, -5]
    fig = plots.feature_heatmap(ref[:2], ["a", "b", "c"], ["r0", "r1"], reference=ref)
    z = np.asarray(fig.data[0].z)
    np.testing.assert_allclose(z, (ref[:2] - ref.mean(0)) / ref.std(0))
    assert list(fig.data[0].y) == ["r0", "r1"]


def test_points_scatter_one_trace_per_class_plus_query():
    X = RNG.standard_normal((10, 2))
    y = np.arange(10) % 2
    fig = plots.points_scatter(X, y, ["a", "b"], ids=np.arange(100, 110), selected=103)
    assert [t.name for t in fig.data] == ["class a", "class b", "query"]
    assert set(fig.data[0].customdata) | set(fig.data[1].customdata) == set(range(100, 110))
    np.testing.assert_allclose([fig.data[2].x[0], fig.data[2].y[0]], X[3])


@pytest.mark.parametrize("n_classes", [2, 3])
def test_decision_boundary_highlights_proponents_and_opponents(n_classes):
    xx, yy = np.linspace(-1, 1, 5), np.linspace(-2, 2, 4)
    probs = RNG.dirichlet(np.ones(n_classes), size=(4, 5))
    X = RNG.standard_normal((20, 2))
    y = np.arange(20) % n_classes
    fig = plots.decision_boundary(
        xx,
        yy,
        probs,
        X,
        y,
        [str(c) for c in range(n_classes)],
        proponents=[1, 2],
        opponents=[3],
        query=np.array([0.1, 0.2]),
    )
    names = [t.name for t in fig.data]
    assert {"proponents", "opponents", "query"} <= set(names)
    pro = fig.data[names.index("proponents")]
    np.testing.assert_allclose(np.c_[pro.x, pro.y], X[[1, 2]])
    assert ("decision boundary" in names) == (n_classes == 2)


def test_score_bars_sorted_and_coloured_by_sign():
    fig = plots.score_bars(np.array([0.3, -0.2, 0.1]), ["a", "b", "c"])
    bar = fig.data[0]
    assert list(bar.y) == ["b", "c", "a"]
    assert list(bar.marker.color) == [plots.OPPONENT, plots.PROPONENT, plots.PROPONENT]


def test_method_scatter_and_agreement_heatmap():
    a, b = RNG.standard_normal(30), RNG.standard_normal(30)
    fig = plots.method_scatter(a, b, "A", "B")
    assert fig.layout.xaxis.title.text == "A" and len(fig.data[0].x) == 30
    m = np.array([[1.0, 0.5], [0.5, 1.0]])
    heat = plots.agreement_heatmap(m, ["A", "B"])
    np.testing.assert_allclose(np.asarray(heat.data[0].z), m)
    assert (heat.data[0].zmin, heat.data[0].zmax) == (-1, 1)


def test_counterfactual_bars():
    fig = plots.counterfactual_bars(-0.4, -0.3, "margin")
    assert list(fig.data[0].y) == [-0.4, -0.3]
    assert "margin" in fig.layout.yaxis.title.text


def test_lds_bars_with_and_without_ceiling():
    fig = plots.lds_bars(["a", "b"], [0.3, 0.1], [0.02, 0.03], ceiling=0.6)
    assert list(fig.data[0].y) == [0.3, 0.1]
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].y0 == 0.6
    assert len(plots.lds_bars(["a"], [-0.1], ceiling=float("nan")).layout.shapes) == 0


def test_lds_curves_one_line_per_series_and_labels():
    fig = plots.lds_curves(
        {"trajectory": ([0, 4, 16], [0.1, 0.2, 0.3]), "stationary": ([100], [0.25])},
        "horizon K",
        log_x=True,
        ceiling=0.5,
        x_labels={4: "4", 4096: "full"},
    )
    assert [t.name for t in fig.data] == ["trajectory", "stationary"]
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.ticktext) == ["4", "full"]


def test_predicted_vs_actual_fits_a_line():
    x = np.linspace(0, 1, 10)
    fig = plots.predicted_vs_actual(x, 2 * x + 1)
    fit = fig.data[1]
    np.testing.assert_allclose(fit.y, [1.0, 3.0])
    assert len(plots.predicted_vs_actual(np.ones(3), np.ones(3)).data) == 1  # no fit for constant x


def test_cost_curves_log_log_with_breakeven():
    fig = plots.cost_curves({"a": ([1, 10], [1e-3, 5e-4]), "b": ([1, 10], [1e-2, 1e-2])}, breakeven=120.0)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].x0 == 120.0
    assert len(plots.cost_curves({"a": ([1], [1.0])}, breakeven=float("inf")).layout.shapes) == 0


def test_memory_bars_in_kib_and_mb():
    fig = plots.memory_bars(["a", "b"], [2048, 1024 * 1024])
    assert list(fig.data[0].y) == [2.0, 1024.0]
    assert list(plots.memory_bars(["a"], [3e6], unit="MB").data[0].y) == [3.0]


def test_every_figure_serialises_to_json():
    """What Streamlit sends to the browser: every figure must be valid plotly JSON."""
    figs = [
        plots.training_curves([{"epoch": 1, "loss": 1.0, "train_accuracy": 0.5}]),
        plots.example_mosaic(RNG.random((3, 4)), "image", (2, 2), selectable=True),
        plots.decision_boundary(
            np.arange(3.0),
            np.arange(3.0),
            RNG.dirichlet([1, 1], (3, 3)),
            RNG.random((5, 2)),
            np.arange(5) % 2,
            ["a", "b"],
        ),
        plots.lds_bars(["a"], [0.2]),
    ]
    for fig in figs:
        again = plotly.io.from_json(fig.to_json())
        assert [t.type for t in again.data] == [t.type for t in fig.data]
