"""Mislabeled data page figures: found vs inspected, detection bars, accuracy before / after."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .style import CLASS_COLOURS, NEUTRAL, OPPONENT, PROPONENT, QUERY, _layout


def found_vs_inspected(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    flipped_fraction: float | None = None,
    title: str = "Flipped labels found vs data inspected",
    max_inspected: float = 1.0,
) -> go.Figure:
    """One line per signal: ``curves[name] = (inspected [n+1], found [n+1])`` in [0, 1].

    With ``flipped_fraction`` (flips / n) the best possible curve and the random-order
    diagonal are drawn for reference. Attribution signals solid, controls (names ending
    in "(control)") dashed.
    """
    fig = go.Figure()
    if flipped_fraction is not None and flipped_fraction > 0:
        x = np.array([0.0, flipped_fraction, 1.0])
        fig.add_trace(
            go.Scatter(
                x=x,
                y=np.minimum(1.0, x / flipped_fraction),
                mode="lines",
                name="perfect ranking",
                line={"color": "#bbb", "width": 1},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="random order", line={"color": NEUTRAL, "dash": "dot", "width": 1}
        )
    )
    for i, (name, (x, y)) in enumerate(curves.items()):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        step = max(1, len(x) // 400)  # a few hundred points draw the same curve
        keep = np.r_[np.arange(0, len(x), step), len(x) - 1]
        control = name.endswith("(control)")
        fig.add_trace(
            go.Scatter(
                x=x[keep],
                y=y[keep],
                mode="lines",
                name=name,
                line={
                    "color": CLASS_COLOURS[i % len(CLASS_COLOURS)],
                    "width": 2,
                    "dash": "dash" if control else "solid",
                },
            )
        )
    fig.update_xaxes(
        title_text="fraction of the training data inspected (most suspicious first)",
        range=[0, max_inspected],
        tickformat=".0%",
    )
    fig.update_yaxes(title_text="fraction of flipped labels found", range=[0, 1.02], tickformat=".0%")
    fig.update_layout(legend={"orientation": "h", "y": -0.25})
    return _layout(fig, height=440, title=title)


def detection_bars(
    signals: Sequence[str],
    auc: Sequence[float],
    ap: Sequence[float] | None = None,
    title: str = "How well each signal ranks the flipped labels",
) -> go.Figure:
    """ROC-AUC (and average precision) per signal; controls in grey."""
    colours = [NEUTRAL if s.endswith("(control)") else PROPONENT for s in signals]
    fig = go.Figure(
        go.Bar(
            y=list(signals),
            x=list(auc),
            orientation="h",
            name="ROC-AUC",
            marker={"color": colours},
            text=[f"{v:.3f}" for v in auc],
            textposition="outside",
        )
    )
    if ap is not None:
        fig.add_trace(
            go.Bar(
                y=list(signals),
                x=list(ap),
                orientation="h",
                name="average precision",
                marker={"color": QUERY},
                text=[f"{v:.3f}" for v in ap],
                textposition="outside",
            )
        )
    fig.update_xaxes(range=[0, 1.1], title_text="score (1 = perfect)")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": -0.2})
    return _layout(fig, height=max(260, 60 + 45 * len(signals)), title=title)


def accuracy_bars(before: float, after: float, clean: float | None = None, title: str = "Test accuracy") -> go.Figure:
    """Test accuracy of the model on the given labels, after the fixes, and (when the flips
    are known) on the clean labels."""
    names = ["given labels", "after the fixes"] + ([] if clean is None else ["clean labels"])
    values = [before, after] + ([] if clean is None else [clean])
    colours = [OPPONENT, PROPONENT] + ([] if clean is None else [NEUTRAL])
    fig = go.Figure(
        go.Bar(x=names, y=values, marker={"color": colours}, text=[f"{v:.1%}" for v in values], textposition="outside")
    )
    low = max(0.0, min(values) - 0.1)
    fig.update_yaxes(range=[low, min(1.0, max(values) + 0.05)], tickformat=".0%")
    return _layout(fig, height=300, title=title)
