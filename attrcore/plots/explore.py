"""Explore page figures: score bars, method scatter, agreement heatmap, counterfactuals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .style import OPPONENT, PROPONENT, QUERY, _layout

# ------------------------------------------------------------------------------ scores


def score_bars(scores: np.ndarray, labels: Sequence[str], title: str | None = None) -> go.Figure:
    """Horizontal bars of the given scores (already chosen, e.g. top-k of each sign)."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores)
    fig = go.Figure(
        go.Bar(
            x=scores[order],
            y=[labels[i] for i in order],
            orientation="h",
            marker={"color": [PROPONENT if s >= 0 else OPPONENT for s in scores[order]]},
            hovertemplate="%{y}: %{x:.4g}<extra></extra>",
        )
    )
    fig.update_yaxes(type="category")
    fig.update_xaxes(
        title_text="attribution score (effect of up-weighting on the measurement)", zeroline=True, zerolinecolor="#333"
    )
    return _layout(fig, height=120 + 20 * len(scores), title=title)


def method_scatter(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> go.Figure:
    """One query's scores of two methods against each other (one point per source)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    fig = go.Figure(
        go.Scattergl(
            x=a,
            y=b,
            mode="markers",
            marker={"size": 5, "color": np.sign(a), "colorscale": [[0, OPPONENT], [1, PROPONENT]], "opacity": 0.6},
            customdata=np.arange(len(a)),
            hovertemplate="source %{customdata}<br>%{x:.3g} vs %{y:.3g}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text=name_a, zeroline=True)
    fig.update_yaxes(title_text=name_b, zeroline=True)
    return _layout(fig, height=360)


def agreement_heatmap(matrix: np.ndarray, names: Sequence[str], title: str = "rank agreement") -> go.Figure:
    """A symmetric ``[M, M]`` agreement matrix (e.g. mean Spearman) between methods."""
    matrix = np.asarray(matrix, dtype=np.float64)
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(names),
            y=list(names),
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            text=np.round(matrix, 2),
            texttemplate="%{text}",
            hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
            colorbar={"thickness": 10},
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return _layout(fig, height=120 + 50 * len(names), title=title)


def counterfactual_bars(predicted: float, actual: float, measure: str = "margin") -> go.Figure:
    """Predicted (first-order) against actual (retrained) change of the query's measurement."""
    fig = go.Figure(
        go.Bar(
            x=["predicted by attribution", "actual after retraining"],
            y=[predicted, actual],
            marker={"color": [PROPONENT, QUERY]},
            text=[f"{predicted:+.3f}", f"{actual:+.3f}"],
            textposition="outside",
        )
    )
    fig.update_yaxes(title_text=f"change of the query's {measure}", zeroline=True, zerolinecolor="#333")
    return _layout(fig, height=320)
