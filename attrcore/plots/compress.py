"""Compressed responses: LDS against the rank r, with the dense run and TRAK as references."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .style import CLASS_COLOURS, _layout


def lds_against_rank(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    references: Mapping[str, float] | None = None,
    title: str | None = "LDS against the rank r",
) -> go.Figure:
    """One line per series (ranks, LDS) on a log2 rank axis; each reference (the dense run,
    TRAK-1, TRAK-10, …) is a dashed horizontal line labelled with its value."""
    fig = go.Figure()
    ranks = sorted({float(x) for x, _ in series.values() for x in x})
    for i, (name, (x, y)) in enumerate(series.items()):
        fig.add_trace(
            go.Scatter(
                x=list(x),
                y=list(y),
                mode="lines+markers",
                name=name,
                line={"color": CLASS_COLOURS[i % len(CLASS_COLOURS)]},
            )
        )
    dashes = ("dash", "dot", "dashdot", "longdash")
    for i, (name, value) in enumerate((references or {}).items()):
        if value is None or not np.isfinite(value):
            continue
        fig.add_hline(
            y=value,
            line={"dash": dashes[i % len(dashes)], "color": "#555"},
            annotation_text=f"{name} {value:.3f}",
            annotation_position="bottom right",
            annotation_bgcolor="rgba(255,255,255,0.8)",
        )
    fig.update_xaxes(
        title_text="rank r (log scale)",
        type="log",
        tickvals=ranks or None,
        ticktext=[f"{int(r)}" for r in ranks] or None,
    )
    fig.update_yaxes(title_text="LDS")
    fig.update_layout(legend={"orientation": "h", "y": -0.25})
    return _layout(fig, height=360, title=title)
