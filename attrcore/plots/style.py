"""Shared look of every figure: the colours and the common layout.

Colour convention everywhere: proponents (positive scores, they push the query's
measurement up) are blue, opponents (negative scores) are red.
"""

from __future__ import annotations

import plotly.graph_objects as go

PROPONENT = "#1f77b4"
OPPONENT = "#d62728"
QUERY = "#ff7f0e"
NEUTRAL = "#7f7f7f"
CLASS_COLOURS = (
    "#4c78a8",
    "#f58518",
    "#54a24b",
    "#e45756",
    "#72b7b2",
    "#b279a2",
    "#eeca3b",
    "#9d755d",
    "#ff9da6",
    "#bab0ac",
)
_FONT = {"size": 12}


def _layout(fig: go.Figure, *, height: int | None = None, title: str | None = None) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        font=_FONT,
        height=height,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        title={"text": title} if title else None,
    )
    return fig


def class_colour(c: int) -> str:
    return CLASS_COLOURS[int(c) % len(CLASS_COLOURS)]
