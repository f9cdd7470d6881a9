"""Quality against cost: LDS of every benchmarked setting against the time it took.

:func:`lds_vs_time` draws one marker per setting (forward-only settings as one family,
TRAK, influence functions and the other baselines as others), log time on x, LDS on y,
with error bars and the seed-noise ceiling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .style import CLASS_COLOURS, PROPONENT, _layout

_FAMILY_STYLE = {
    "forward-only": {"color": PROPONENT, "symbol": "circle"},
    "trak": {"color": CLASS_COLOURS[1], "symbol": "diamond"},
    "if": {"color": CLASS_COLOURS[2], "symbol": "square"},
}


def lds_vs_time(
    labels: Sequence[str],
    seconds: Sequence[float],
    lds: Sequence[float],
    families: Sequence[str],
    errors: Sequence[float] | None = None,
    ceiling: float | None = None,
    x_title: str = "time before the first query (training + setup, s, log)",
    title: str | None = "LDS against time",
) -> go.Figure:
    """One point per setting: ``seconds[i]`` against ``lds[i]``, grouped by ``families[i]``
    (``forward-only``, ``trak``, ``if``; anything else is drawn grey), labelled ``labels[i]``."""
    n = len(labels)
    if not (len(seconds) == len(lds) == len(families) == n) or (errors is not None and len(errors) != n):
        raise ValueError("labels, seconds, lds, families (and errors) need one entry per setting.")
    fig = go.Figure()
    for fam in dict.fromkeys(families):
        idx = [i for i in range(n) if families[i] == fam]
        style = _FAMILY_STYLE.get(fam, {"color": "#7f7f7f", "symbol": "x"})
        fig.add_trace(
            go.Scatter(
                x=[seconds[i] for i in idx],
                y=[lds[i] for i in idx],
                mode="markers+text",
                name=fam,
                text=[labels[i] for i in idx],
                textposition="top center",
                textfont={"size": 10},
                marker={"color": style["color"], "symbol": style["symbol"], "size": 10},
                error_y=None if errors is None else {"type": "data", "array": [errors[i] for i in idx]},
                hovertemplate="%{text}<br>%{x:.1f} s<br>LDS %{y:.3f}<extra></extra>",
            )
        )
    if ceiling is not None and np.isfinite(ceiling):
        fig.add_hline(y=ceiling, line={"dash": "dash", "color": "#333"}, annotation_text="noise ceiling")
    fig.update_xaxes(title_text=x_title, type="log")
    fig.update_yaxes(title_text="LDS")
    fig.update_layout(legend={"orientation": "h", "y": -0.25})
    return _layout(fig, height=420, title=title)
