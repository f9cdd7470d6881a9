"""Scaling benchmark (Cost page): cost against the training-set size or the parameter count, log-log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from .style import CLASS_COLOURS, _layout


def scaling_lines(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    x_title: str = "training examples n",
    y_title: str = "ms per query",
    title: str | None = "Cost against size (log-log)",
) -> go.Figure:
    """One line per method, ``{method: (x, y)}``, on log axes (a slope of 1 is linear cost)."""
    fig = go.Figure()
    for i, (name, (x, y)) in enumerate(series.items()):
        pts = sorted((float(a), float(b)) for a, b in zip(x, y) if a > 0 and b > 0)
        if not pts:
            continue
        fig.add_trace(
            go.Scatter(
                x=[a for a, _ in pts],
                y=[b for _, b in pts],
                mode="lines+markers",
                name=name,
                line={"color": CLASS_COLOURS[i % len(CLASS_COLOURS)]},
            )
        )
    fig.update_xaxes(type="log", title=x_title)
    fig.update_yaxes(type="log", title=y_title)
    return _layout(fig, title=title)
