"""Forward-only attribution (the project's own method) as an :class:`Attributor`.

The work happens during training: :func:`attrcore.engine.train.train` with a
:class:`~attrcore.config.SimulationConfig` simulates every source's parameter response
Δ_j. ``fit`` takes those responses as they are (its setup time is the simulation time the
training reported) and ``score`` reads them out with forward evaluations only
(:func:`attrcore.engine.readout.score`). With several trained models (seeds) the scores
are the mean over the models. For one model the readout also streams: :meth:`top_k` and
:meth:`score_to_npy` never hold the ``[Q, m]`` matrix (what ``python -m attrcore score``
and ``attribute`` use).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..engine.model import MLP
from ..engine.readout import TopK
from ..engine.readout import score as readout_score
from ..engine.readout import score_to_npy as readout_score_to_npy
from ..engine.readout import top_k as readout_top_k
from ..engine.tangents import Tangents
from ..errors import ConfigError
from .base import Attributor


class ForwardOnly(Attributor):
    """Scores ``[Q, m]`` from simulated responses of one or more trained models.

    ``runs``: training outputs with ``theta [p]`` and ``responses`` (``[m, p]`` or
    :class:`Tangents`, or compressed ``Δ ≈ C Qᵀ``), trained with a simulation on the same sources that ``fit`` gets.
    """

    name = "forward-only"

    def __init__(
        self,
        mlp: MLP,
        runs: Sequence,
        measure: str = "margin",
        target_class: int | None = None,
        readout: str = "jvp",
        memory_budget_mb: float = 1024.0,
    ):
        super().__init__(mlp, measure, target_class)
        if not runs:
            raise ConfigError("forward-only attribution needs at least one trained model.")
        if any(getattr(r, "responses", None) is None for r in runs):
            raise ConfigError(
                "forward-only attribution needs models trained with a simulation (scheme 'trajectory' "
                "or 'stationary'); one of the models was trained without."
            )
        self.runs = list(runs)
        self.readout, self.memory_budget_mb = readout, memory_budget_mb
        self._models: list[tuple[Tensor, Tangents]] = []

    def fit(self, X, y, sources=None) -> ForwardOnly:
        super().fit(X, y, sources)
        # the responses are per source already: no per-example sum in score()
        self._source_index = None
        return self

    def _setup(self, X: Tensor, y: Tensor) -> None:
        self._models = []
        for r in self.runs:
            # dense [m, p] from training, or Tangents / compressed Δ ≈ C Qᵀ as they are
            stack = Tangents.from_flat(self.mlp, r.responses) if isinstance(r.responses, Tensor) else r.responses
            if len(stack) != self._m:
                raise ConfigError(
                    f"the models simulated {len(stack)} sources but fit() was given {self._m}; "
                    "pass the sources the models were trained with."
                )
            self._models.append((r.theta, stack))
        # the method-specific work is the simulation, done while training
        self.timings["setup_seconds"] += sum(float(r.timings.get("simulate_seconds", 0.0)) for r in self.runs)

    def _score(self, X_q: Tensor, y_q: Tensor | None) -> Tensor:
        parts = [
            readout_score(
                self.mlp,
                theta,
                stack,
                X_q.to(theta.dtype),
                y_q,
                measure=self.measure,
                readout=self.readout,
                target_class=self.target_class,
                memory_budget_mb=self.memory_budget_mb,
            )
            for theta, stack in self._models
        ]
        return parts[0] if len(parts) == 1 else torch.stack(parts).mean(0)

    def state_bytes(self) -> int:
        return int(sum(stack.nbytes() for _, stack in self._models))

    # ---- streaming readout (one model) ---------------------------------------------------
    def _stream(self, X_q, y_q):
        if not self._fitted:
            raise ConfigError(f"call fit(X, y) on the training data before scoring with {self.name}.")
        if len(self._models) != 1:
            raise ConfigError(
                f"the streaming readout scores one model; this forward-only attributor has {len(self._models)} "
                "(use score() for their mean)."
            )
        theta, stack = self._models[0]
        X = np.asarray(X_q)
        X = torch.as_tensor(X[None, :] if X.ndim == 1 else X).to(theta.dtype)
        y = None if y_q is None else torch.as_tensor(np.asarray(y_q)).long().reshape(-1)
        kw = {
            "measure": self.measure,
            "readout": self.readout,
            "target_class": self.target_class,
            "memory_budget_mb": self.memory_budget_mb,
        }
        return theta, stack, X, y, kw

    def top_k(self, X_q, y_q=None, k: int = 10, progress=None) -> TopK:
        """The ``k`` largest and smallest scores of every query and their sources, streamed
        (:func:`attrcore.engine.readout.top_k`)."""
        theta, stack, X, y, kw = self._stream(X_q, y_q)
        return readout_top_k(self.mlp, theta, stack, X, y, k=k, progress=progress, **kw)

    def score_to_npy(self, path, X_q, y_q=None, progress=None):
        """The ``[Q, m]`` float32 scores written chunk by chunk to a memory-mapped ``.npy``
        (:func:`attrcore.engine.readout.score_to_npy`)."""
        theta, stack, X, y, kw = self._stream(X_q, y_q)
        return readout_score_to_npy(path, self.mlp, theta, stack, X, y, progress=progress, **kw)
