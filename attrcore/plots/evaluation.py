"""Evaluate page figures: LDS bars and curves, predicted vs actual."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .style import CLASS_COLOURS, PROPONENT, _layout

# ------------------------------------------------------------------------------ evaluation


def lds_bars(
    methods: Sequence[str],
    values: Sequence[float],
    errors: Sequence[float] | None = None,
    ceiling: float | None = None,
    title: str = "LDS per method",
) -> go.Figure:
    """LDS (or any score in [-1, 1]) per method, with the seed-noise ceiling as a dashed line."""
    fig = go.Figure(
        go.Bar(
            x=list(methods),
            y=list(values),
            marker={"color": PROPONENT},
            error_y=None if errors is None else {"type": "data", "array": list(errors)},
            text=[f"{v:.3f}" if v is not None and np.isfinite(v) else "" for v in values],
            textposition="inside",
            insidetextanchor="start",
            textfont={"color": "#fff"},
        )
    )
    if ceiling is not None and np.isfinite(ceiling):
        fig.add_hline(
            y=ceiling,
            line={"dash": "dash", "color": "#333"},
            annotation_text=f"noise ceiling {ceiling:.2f}",
            annotation_position="top right",
            annotation_bgcolor="rgba(255,255,255,0.8)",
        )
    fig.update_yaxes(title_text="LDS (Spearman)", range=[min(0.0, *(v for v in values if v is not None)) - 0.05, 1.0])
    return _layout(fig, height=360, title=title)


def thin_ticks(values: Sequence[float], log: bool = False, min_gap: float = 0.06) -> list[float]:
    """The tick positions to label so that no two labels overlap: sorted ``values``, dropping
    any closer than ``min_gap`` of the axis span to the previous one kept (in log10 on a log
    axis); the largest (e.g. "full") is always kept. 64 and 100 on a log axis of 1..4096
    are 0.05 of the span apart: one of them goes."""
    xs = sorted(float(v) for v in values if not log or v > 0)
    if len(xs) < 3:
        return xs
    pos = [np.log10(x) for x in xs] if log else xs
    gap = min_gap * max(pos[-1] - pos[0], 1e-12)
    kept = [0]
    for i in range(1, len(xs)):
        if pos[i] - pos[kept[-1]] >= gap:
            kept.append(i)
    if kept[-1] != len(xs) - 1:  # the last one always shows: replace the one too close to it
        if pos[-1] - pos[kept[-1]] < gap and len(kept) > 1:
            kept.pop()
        kept.append(len(xs) - 1)
    return [xs[i] for i in kept]


def lds_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    x_title: str,
    log_x: bool = False,
    ceiling: float | None = None,
    title: str | None = None,
    x_labels: Mapping[float, str] | None = None,
) -> go.Figure:
    """LDS against a setting (horizon K, ensemble size, …): one line per series name."""
    fig = go.Figure()
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
    if ceiling is not None and np.isfinite(ceiling):
        fig.add_hline(y=ceiling, line={"dash": "dash", "color": "#333"}, annotation_text="noise ceiling")
    fig.update_xaxes(title_text=x_title, type="log" if log_x else None)
    if x_labels:
        keep = thin_ticks(list(x_labels), log=log_x)
        fig.update_xaxes(tickvals=keep, ticktext=[x_labels[x] for x in keep])
    fig.update_yaxes(title_text="LDS")
    fig.update_layout(legend={"orientation": "h", "y": -0.25})
    return _layout(fig, height=340, title=title)


def predicted_vs_actual(
    predicted: np.ndarray,
    actual: np.ndarray,
    title: str | None = None,
    x_title: str = "predicted (sum of attributions)",
    y_title: str = "actual (retrained model)",
) -> go.Figure:
    """One query's per-subset predicted output against the retrained model's actual output."""
    predicted, actual = np.asarray(predicted, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    fig = go.Figure(
        go.Scatter(
            x=predicted,
            y=actual,
            mode="markers",
            marker={"color": PROPONENT, "size": 7, "opacity": 0.7},
            hovertemplate="predicted %{x:.3g}<br>actual %{y:.3g}<extra></extra>",
        )
    )
    if len(predicted) > 1 and np.ptp(predicted) > 0:
        slope, icpt = np.polyfit(predicted, actual, 1)
        xs = np.array([predicted.min(), predicted.max()])
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=slope * xs + icpt,
                mode="lines",
                line={"color": "#333", "dash": "dot"},
                name="least-squares fit",
                hoverinfo="skip",
            )
        )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    fig.update_layout(showlegend=False)
    return _layout(fig, height=340, title=title)
