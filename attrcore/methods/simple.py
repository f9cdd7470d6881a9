"""The simple baselines: :class:`RandomScores` (the control) and :class:`GradDot`."""

from __future__ import annotations

import torch
from torch import Tensor

from ..engine.model import MLP
from .base import Attributor, _gram, _nbytes, output_factors

# ============================================================================ random


class RandomScores(Attributor):
    """Independent standard-normal scores, seeded: the control every method must beat."""

    name = "random"

    def __init__(self, mlp: MLP, measure: str = "margin", target_class=None, seed: int = 0):
        super().__init__(mlp, measure, target_class)
        self.seed = int(seed)

    def _setup(self, X, y):
        self._gen = torch.Generator().manual_seed(self.seed)

    def _score(self, X_q, y_q):
        return torch.randn(X_q.shape[0], self.n_train, generator=self._gen, dtype=torch.float64)


# ========================================================================= grad-dot


class GradDot(Attributor):
    """−⟨∇f(q; θ̂), ∇ℓ_j(θ̂)⟩: one SGD step's first-order effect, up to the step size."""

    name = "grad-dot"

    def __init__(self, mlp: MLP, theta: Tensor, measure="margin", target_class=None):
        super().__init__(mlp, measure, target_class)
        self.theta = theta.detach().to(torch.float64)

    def _setup(self, X, y):
        self._train = output_factors(self.mlp, self.theta, X, y, "loss")

    def _score(self, X_q, y_q):
        fq = output_factors(self.mlp, self.theta, X_q, y_q, self.measure, self.target_class)
        return -_gram(fq, self._train)

    def state_bytes(self):
        return _nbytes(*(t for f in self._train for t in f))
