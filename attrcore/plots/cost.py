"""Cost page figures: time curves and memory bars."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .style import OPPONENT, PROPONENT, QUERY, _layout

# ------------------------------------------------------------------------------ cost


def cost_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    y_title: str = "seconds per query",
    breakeven: float | None = None,
    title: str | None = None,
    markers: bool = True,
) -> go.Figure:
    """Log-log cost against the number of queries; one line per method; a dotted line at
    the break-even number of queries when given."""
    fig = go.Figure()
    for i, (name, (x, y)) in enumerate(series.items()):
        fig.add_trace(
            go.Scatter(
                x=list(x),
                y=list(y),
                mode="lines+markers" if markers else "lines",
                name=name,
                line={"color": (PROPONENT, OPPONENT, QUERY, "#54a24b", "#b279a2")[i % 5]},
            )
        )
    if breakeven is not None and np.isfinite(breakeven) and breakeven > 0:
        fig.add_vline(
            x=breakeven, line={"dash": "dot", "color": "#333"}, annotation_text=f"break-even ≈ {breakeven:,.0f} queries"
        )
    fig.update_xaxes(type="log", title_text="number of queries")
    fig.update_yaxes(type="log", title_text=y_title)
    fig.update_layout(legend={"orientation": "h", "y": -0.25})
    return _layout(fig, height=360, title=title)


def memory_bars(
    names: Sequence[str], nbytes: Sequence[float], title: str = "memory per source", unit: str = "KiB"
) -> go.Figure:
    """Bytes kept (per source, or in total), one bar per method / source grouping, in
    ``unit`` (``"KiB"`` or ``"MB"``), from zero."""
    scale = {"KiB": 1024.0, "MB": 1e6}[unit]
    vals = [b / scale for b in nbytes]
    fig = go.Figure(
        go.Bar(
            x=list(names),
            y=vals,
            marker={"color": PROPONENT},
            text=[f"{v:,.2f} {unit}" for v in vals],
            textposition="outside",
        )
    )
    fig.update_yaxes(title_text=unit, rangemode="tozero")
    return _layout(fig, height=320, title=title)
