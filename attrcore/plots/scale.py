"""Scaling benchmark (Cost page): cost against the training-set size or the parameter count, log-log."""

from __future__ import annotations

import math
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


def speedup_bars(
    speedups: Mapping[str, Mapping[str, float]],
    targets: Mapping[str, float] | None = None,
    title: str | None = "Time per query: TRAK-10 ÷ method (same run)",
) -> go.Figure:
    """Grouped bars on a log axis, ``{cell label: {method: TRAK-10 time ÷ method time}}``;
    ``targets`` ``{label: ratio}`` are drawn as dashed horizontal lines (e.g. the issue's 10× / 100×)."""
    methods: list[str] = []
    for per in speedups.values():
        methods += [m for m in per if m not in methods]
    fig = go.Figure()
    cells = list(speedups)
    for i, method in enumerate(methods):
        xs = [c for c in cells if speedups[c].get(method, 0) > 0]
        fig.add_trace(
            go.Bar(
                x=xs,
                y=[float(speedups[c][method]) for c in xs],
                name=method,
                marker_color=CLASS_COLOURS[i % len(CLASS_COLOURS)],
                text=[f"{float(speedups[c][method]):.0f}×" for c in xs],
                textposition="outside",
            )
        )
    fig.update_yaxes(type="log", title="TRAK-10 ÷ method, per query")
    for label, value in (targets or {}).items():
        # the line is a shape (data units); its label an annotation, which on a log axis is
        # placed in log10 units: y=value there put the axis up to 10^100 (seen on Cost)
        fig.add_hline(y=float(value), line_dash="dash", line_color="#7f7f7f")
        fig.add_annotation(
            x=1,
            xref="paper",
            xanchor="right",
            y=math.log10(float(value)),
            yref="y",
            yanchor="bottom",
            text=label,
            showarrow=False,
        )
    fig.update_layout(barmode="group")
    return _layout(fig, title=title)
