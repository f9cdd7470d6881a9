"""Train page figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import NEUTRAL, PROPONENT, QUERY, _layout

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
