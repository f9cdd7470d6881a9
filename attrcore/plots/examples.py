"""Figures of the examples themselves: image / signal mosaics, tabular heatmaps, 2-D
points and decision boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .style import CLASS_COLOURS, OPPONENT, PROPONENT, QUERY, _layout, class_colour

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
    z_range: float = 3.0,
) -> go.Figure:
    """Tabular rows as a heatmap of feature values (``X [n, d]``); rows labelled on the left.

    Values are shown as z-scores against ``reference [N, d]`` (e.g. the training set) so that
    features on different scales share one colour bar, on a fixed scale ``±z_range`` (beyond
    it the colour saturates; hovering shows the value): two heatmaps side by side (the
    proponents and the opponents) then mean the same thing by the same colour.
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
            zmin=-z_range,
            zmax=z_range,
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
