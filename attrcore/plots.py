"""Figures for the app: pure functions from numpy arrays to plotly figures.

Nothing here reads a run, a store or Streamlit state; every function takes plain arrays
(and names) and returns a :class:`plotly.graph_objects.Figure`, so each one can be tested
on its own and reused in a notebook.

Interface, by page:

- Train: :func:`training_curves`.
- Explore: :func:`example_mosaic` (images / signals, optionally click-selectable),
  :func:`feature_heatmap` (tabular rows), :func:`points_scatter` (2-D queries),
  :func:`decision_boundary`, :func:`score_bars`, :func:`method_scatter`,
  :func:`agreement_heatmap`, :func:`counterfactual_bars`.
- Evaluate: :func:`lds_bars`, :func:`lds_curves`, :func:`predicted_vs_actual`.
- Cost: :func:`cost_curves`, :func:`memory_bars`.

Colour convention everywhere: proponents (positive scores, they push the query's
measurement up) are blue, opponents (negative scores) are red.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

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


# ------------------------------------------------------------------------------ training


def training_curves(history: Sequence[Mapping[str, float]], total_epochs: int | None = None) -> go.Figure:
    """Loss (left) and accuracy (right) per epoch; ``history`` is the run's per-epoch list."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Training loss", "Accuracy"))
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig.add_trace(
        go.Scatter(
            x=epochs, y=[h.get("loss") for h in history], mode="lines+markers", name="loss", line={"color": NEUTRAL}
        ),
        row=1,
        col=1,
    )
    for key, name, colour in (("train_accuracy", "train", PROPONENT), ("test_accuracy", "test", QUERY)):
        if any(key in h for h in history):
            fig.add_trace(
                go.Scatter(
                    x=epochs,
                    y=[h.get(key) for h in history],
                    mode="lines+markers",
                    name=f"{name} accuracy",
                    line={"color": colour},
                ),
                row=1,
                col=2,
            )
    fig.update_xaxes(title_text="epoch")
    if total_epochs:
        fig.update_xaxes(range=[0.5, total_epochs + 0.5])
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(legend={"orientation": "h", "y": -0.25})
    _layout(fig, height=300)
    fig.update_layout(margin={"t": 30})  # room for the subplot titles
    return fig


# ------------------------------------------------------------------------------ examples


def _grid_shape(n: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return -(-n // cols), cols


def example_mosaic(
    X: np.ndarray,
    kind: str,
    image_shape: tuple[int, int] | None = None,
    titles: Sequence[str] | None = None,
    ids: Sequence[int] | None = None,
    cols: int = 8,
    border_colours: Sequence[str | None] | None = None,
    selectable: bool = False,
    selected: int | None = None,
    cell_px: int = 90,
) -> go.Figure:
    """A grid of examples on one plane: images as grey tiles, signals as small line plots.

    ``X [n, d]``; ``kind`` is ``"image"`` (needs ``image_shape``) or ``"signal"``.
    ``titles[i]`` is drawn above cell ``i``; ``border_colours[i]`` frames it. With
    ``selectable`` an invisible marker sits on every cell carrying ``ids[i]`` as
    ``customdata``, so a click selects that example (Streamlit's ``on_select``).
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    ids = list(range(n)) if ids is None else [int(i) for i in ids]
    fig = go.Figure()
    if n == 0:
        fig.add_annotation(text="nothing to show", showarrow=False)
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        return _layout(fig, height=120)
    rows, cols = _grid_shape(n, cols)
    gap = 0.25  # fraction of a cell left blank between cells (room for the title)
    if kind == "image":
        if image_shape is None:
            raise ValueError("image mosaics need image_shape=(height, width)")
        h, w = image_shape
        pad = max(2, round((0.5 if titles is not None else gap) * h))
        H, W = rows * (h + pad) + pad, cols * (w + 1) + 1
        canvas = np.full((H, W), np.nan)
        for i in range(n):
            r, c = divmod(i, cols)
            y0, x0 = pad + r * (h + pad), 1 + c * (w + 1)
            canvas[y0 : y0 + h, x0 : x0 + w] = X[i].reshape(h, w)
        lo, hi = np.nanmin(canvas), np.nanmax(canvas)
        fig.add_trace(go.Heatmap(z=canvas, colorscale="gray_r", zmin=lo, zmax=hi, showscale=False, hoverinfo="skip"))
        fig.update_yaxes(autorange="reversed", scaleanchor="x", scaleratio=1)
        cell = [
            (1 + c * (w + 1) - 0.5, pad + r * (h + pad) - 0.5, w, h) for r, c in (divmod(i, cols) for i in range(n))
        ]
    elif kind == "signal":
        d = X.shape[1]
        span = float(np.nanmax(np.abs(X))) or 1.0
        xs, ys = [], []
        cell = []
        for i in range(n):
            r, c = divmod(i, cols)
            x0, y_mid = c * (1 + gap), -r * (1 + 2 * gap)
            xs += list(x0 + np.linspace(0, 1, d)) + [None]
            ys += list(y_mid + 0.5 * X[i] / span) + [None]
            cell.append((x0, y_mid - 0.5, 1.0, 1.0))
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", line={"color": "#333", "width": 1.2}, hoverinfo="skip", showlegend=False
            )
        )
        fig.update_yaxes(scaleanchor=None)
    else:
        raise ValueError(f"example_mosaic draws 'image' or 'signal' data, not {kind!r}")

    for i, (x0, y0, cw, ch) in enumerate(cell):
        colour = border_colours[i] if border_colours is not None else None
        is_selected = selected is not None and ids[i] == selected
        if kind == "signal":  # y grows upwards here: the title goes on top of the cell
            top = y0 + ch
            title_y, anchor = top + 0.05, "bottom"
        else:
            title_y, anchor = y0 - 0.1, "bottom"
        if colour or is_selected:
            fig.add_shape(
                type="rect",
                x0=x0,
                x1=x0 + cw,
                y0=y0,
                y1=y0 + ch,
                line={"color": QUERY if is_selected else colour, "width": 5 if is_selected else 3},
            )
        if titles is not None:
            fig.add_annotation(
                x=x0 + cw / 2,
                y=title_y,
                text=titles[i],
                showarrow=False,
                yanchor=anchor,
                font={"size": 11, "color": colour or "#222"},
            )
    if selectable:
        fig.add_trace(
            go.Scatter(
                x=[x0 + cw / 2 for x0, _, cw, _ in cell],
                y=[y0 + ch / 2 for _, y0, _, ch in cell],
                mode="markers",
                customdata=ids,
                showlegend=False,
                marker={"size": cell_px * 0.8, "opacity": 0.01, "color": "#000", "symbol": "square"},
                hovertemplate="pick example #%{customdata}<extra></extra>",
            )
        )
        fig.update_layout(clickmode="event+select", dragmode=False)
    fig.update_xaxes(visible=False, showgrid=False, zeroline=False)
    fig.update_yaxes(visible=False, showgrid=False, zeroline=False)
    height = int(rows * cell_px * (1.35 if kind == "signal" else 1.25)) + 20
    return _layout(fig, height=max(height, 120))


def feature_heatmap(
    X: np.ndarray,
    feature_names: Sequence[str],
    row_labels: Sequence[str],
    reference: np.ndarray | None = None,
) -> go.Figure:
    """Tabular rows as a heatmap of feature values (``X [n, d]``); rows labelled on the left.

    Values are shown as z-scores against ``reference [N, d]`` (e.g. the training set) so that
    features on different scales share one colour bar.
    """
    X = np.asarray(X, dtype=np.float64)
    if reference is not None and len(reference) > 1:
        mu, sd = reference.mean(0), reference.std(0)
        sd = np.where(sd == 0, 1.0, sd)
        Z = (X - mu) / sd
    else:
        Z = X
    fig = go.Figure(
        go.Heatmap(
            z=Z,
            x=list(feature_names),
            y=list(row_labels),
            colorscale="RdBu_r",
            zmid=0,
            colorbar={"title": "z-score", "thickness": 10},
            customdata=X,
            hovertemplate="%{y}<br>%{x} = %{customdata:.3g} (z %{z:.2f})<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(tickangle=45, type="category")
    return _layout(fig, height=140 + 26 * len(X))


def points_scatter(
    X: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    ids: Sequence[int] | None = None,
    selected: int | None = None,
    feature_names: Sequence[str] = ("x0", "x1"),
) -> go.Figure:
    """2-D points ``X [n, 2]`` coloured by class; click one to select it (``customdata`` = id)."""
    X = np.asarray(X)
    ids = np.arange(len(X)) if ids is None else np.asarray(ids)
    fig = go.Figure()
    for c, name in enumerate(class_names):
        mask = np.asarray(y) == c
        fig.add_trace(
            go.Scatter(
                x=X[mask, 0],
                y=X[mask, 1],
                mode="markers",
                name=f"class {name}",
                customdata=ids[mask],
                marker={"color": class_colour(c), "size": 8, "line": {"width": 0.5, "color": "#fff"}},
                hovertemplate="#%{customdata}<br>(%{x:.2f}, %{y:.2f})<extra></extra>",
            )
        )
    if selected is not None:
        where = np.flatnonzero(ids == selected)
        if len(where):
            p = X[where[0]]
            fig.add_trace(
                go.Scatter(
                    x=[p[0]],
                    y=[p[1]],
                    mode="markers",
                    name="query",
                    marker={"symbol": "star", "size": 18, "color": QUERY, "line": {"width": 1, "color": "#000"}},
                    hoverinfo="skip",
                )
            )
    fig.update_layout(clickmode="event+select", dragmode="select", legend={"orientation": "h", "y": -0.15})
    fig.update_xaxes(title_text=feature_names[0])
    fig.update_yaxes(title_text=feature_names[1], scaleanchor="x", scaleratio=1)
    return _layout(fig, height=420)


def decision_boundary(
    xx: np.ndarray,
    yy: np.ndarray,
    probs: np.ndarray,
    X_train: np.ndarray,
    y_train: np.ndarray,
    class_names: Sequence[str],
    proponents: Sequence[int] = (),
    opponents: Sequence[int] = (),
    query: np.ndarray | None = None,
    feature_names: Sequence[str] = ("x0", "x1"),
) -> go.Figure:
    """The model's decision regions on a grid, the training points, the query, and the
    influential training points circled (blue: proponents, red: opponents).

    ``xx [G]``, ``yy [H]`` grid coordinates; ``probs [H, G, C]`` class probabilities.
    """
    probs = np.asarray(probs)
    C = probs.shape[-1]
    fig = go.Figure()
    if C == 2:
        z, zmin, zmax, scale, title = (
            probs[..., 1],
            0.0,
            1.0,
            [[0, CLASS_COLOURS[0]], [0.5, "#ffffff"], [1, CLASS_COLOURS[1]]],
            f"p({class_names[1]})",
        )
    else:
        z, zmin, zmax = probs.argmax(-1).astype(float), -0.5, C - 0.5
        scale = [[i / max(1, C - 1), class_colour(i)] for i in range(C)]
        title = "predicted class"
    fig.add_trace(
        go.Contour(
            x=xx,
            y=yy,
            z=z,
            zmin=zmin,
            zmax=zmax,
            colorscale=scale,
            opacity=0.35,
            showscale=False,
            hoverinfo="skip",
            contours={"coloring": "fill", "showlines": False},
            name=title,
        )
    )
    if C == 2:
        fig.add_trace(
            go.Contour(
                x=xx,
                y=yy,
                z=z,
                contours={"start": 0.5, "end": 0.5, "coloring": "none"},
                line={"color": "#333", "width": 2},
                showscale=False,
                hoverinfo="skip",
                name="decision boundary",
            )
        )
    X_train = np.asarray(X_train)
    for c, name in enumerate(class_names):
        m = np.asarray(y_train) == c
        fig.add_trace(
            go.Scatter(
                x=X_train[m, 0],
                y=X_train[m, 1],
                mode="markers",
                name=f"train · {name}",
                marker={"color": class_colour(c), "size": 5, "opacity": 0.6},
                hoverinfo="skip",
            )
        )
    for idx, colour, label in ((proponents, PROPONENT, "proponents"), (opponents, OPPONENT, "opponents")):
        idx = np.asarray(idx, dtype=int)
        if len(idx):
            fig.add_trace(
                go.Scatter(
                    x=X_train[idx, 0],
                    y=X_train[idx, 1],
                    mode="markers",
                    name=label,
                    customdata=idx,
                    marker={"symbol": "circle-open", "size": 16, "color": colour, "line": {"width": 3}},
                    hovertemplate=f"{label[:-1]} #%{{customdata}}<extra></extra>",
                )
            )
    if query is not None:
        fig.add_trace(
            go.Scatter(
                x=[query[0]],
                y=[query[1]],
                mode="markers",
                name="query",
                marker={"symbol": "star", "size": 20, "color": QUERY, "line": {"width": 1, "color": "#000"}},
            )
        )
    fig.update_xaxes(title_text=feature_names[0], range=[float(np.min(xx)), float(np.max(xx))])
    fig.update_yaxes(
        title_text=feature_names[1], range=[float(np.min(yy)), float(np.max(yy))], scaleanchor="x", scaleratio=1
    )
    fig.update_layout(legend={"orientation": "h", "y": -0.15})
    return _layout(fig, height=460)


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
        fig.update_xaxes(tickvals=list(x_labels), ticktext=list(x_labels.values()))
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
