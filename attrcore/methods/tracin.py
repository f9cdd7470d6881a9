"""TracIn: −Σ_c w_c ⟨∇f(q; θ_c), ∇ℓ_j(θ_c)⟩ over checkpoints."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..engine.model import MLP
from ..errors import ConfigError
from .base import Attributor, _gram, _nbytes, output_factors

# =========================================================================== TracIn


class TracIn(Attributor):
    """TracIn-CP: −Σ_c w_c ⟨∇f(q; θ_c), ∇ℓ_j(θ_c)⟩ over checkpoints ``θ_c``."""

    name = "tracin"

    def __init__(
        self, mlp: MLP, checkpoints: Sequence[Tensor], weights: Sequence[float], measure="margin", target_class=None
    ):
        super().__init__(mlp, measure, target_class)
        if len(checkpoints) == 0 or len(checkpoints) != len(weights):
            raise ConfigError(
                "TracIn needs one or more checkpoints and one weight per checkpoint; train with "
                "checkpoint_epochs=tracin_checkpoint_epochs(epochs) to record them."
            )
        self.checkpoints = [c.detach().to(torch.float64) for c in checkpoints]
        self.weights = [float(w) for w in weights]

    def _setup(self, X, y):
        self._train = [output_factors(self.mlp, c, X, y, "loss") for c in self.checkpoints]

    def _score(self, X_q, y_q):
        out = torch.zeros(X_q.shape[0], self.n_train, dtype=torch.float64)
        for c, w, ft in zip(self.checkpoints, self.weights, self._train):
            fq = output_factors(self.mlp, c, X_q, y_q, self.measure, self.target_class)
            out -= w * _gram(fq, ft)
        return out

    def state_bytes(self):
        return _nbytes(*(t for ft in self._train for f in ft for t in f))


def tracin_checkpoint_epochs(epochs: int, n_checkpoints: int = 10) -> tuple[int, ...]:
    """Evenly spaced epochs ``0, s, 2s, …`` (< ``epochs``), each standing for ``s`` epochs."""
    n = max(1, min(int(n_checkpoints), int(epochs)))
    return tuple(sorted({int(round(k * epochs / n)) for k in range(n)}))


def tracin_weights(epochs_of: Sequence[int], lrs: Sequence[float], total_epochs: int, batch_size: int) -> list[float]:
    """w_c = η_c · (epochs until the next checkpoint, or the end) / batch size."""
    ends = list(epochs_of[1:]) + [total_epochs]
    return [lr * (end - e) / batch_size for e, end, lr in zip(epochs_of, ends, lrs)]
