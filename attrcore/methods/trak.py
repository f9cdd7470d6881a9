"""TRAK through the official ``traker`` package, on the CPU."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import shutil
import tempfile
import uuid
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..engine.model import MLP
from ..errors import ConfigError
from .base import AUTO_RIDGE, MEMORY_BUDGET, Attributor, output_factors

# ============================================================================= TRAK


class TRAK(Attributor):
    """TRAK through the official ``traker`` package, on the CPU (see the module docstring).

    ``thetas`` are the final parameters of M independently trained models. Setup
    (``featurize`` + ``finalize_features`` for every model) is timed apart from scoring
    (``start_scoring_checkpoint`` + ``score`` per model, then ``finalize_scores``).
    ``save_dir`` (default: a fresh folder under the system temp dir) is removed when the
    attributor is garbage-collected or :meth:`close` is called.
    """

    name = "trak"
    measures = ("margin",)

    def __init__(
        self,
        mlp: MLP,
        thetas: Sequence[Tensor],
        proj_dim: int = 512,
        lambda_reg: float | None = None,
        ridge: float | None = None,
        measure="margin",
        target_class=None,
        save_dir: str | Path | None = None,
        projector_seed: int = 0,
        batch_size: int = 512,
        quiet: bool = True,
    ):
        super().__init__(mlp, measure, target_class)
        if len(thetas) == 0:
            raise ConfigError("TRAK needs at least one trained model (an ensemble of M ≥ 1).")
        if not (isinstance(proj_dim, int) and proj_dim >= 1):
            raise ConfigError(f"the projection dimension must be a whole number ≥ 1, got {proj_dim!r}.")
        if lambda_reg is not None and not (math.isfinite(lambda_reg) and lambda_reg >= 0):
            raise ConfigError(f"lambda_reg must be ≥ 0 or None (automatic), got {lambda_reg}.")
        if ridge is not None and not (math.isfinite(ridge) and ridge > 0):
            raise ConfigError(f"ridge must be > 0 or None, got {ridge}.")
        if ridge is not None and lambda_reg is not None:
            raise ConfigError("pass either lambda_reg (absolute) or ridge (relative), not both.")
        self.thetas = [t.detach().to(torch.float32) for t in thetas]
        self.proj_dim, self.lambda_reg, self.ridge = proj_dim, lambda_reg, ridge
        self.projector_seed, self.batch_size = int(projector_seed), int(batch_size)
        self.quiet = quiet
        base = Path(save_dir) if save_dir is not None else Path(tempfile.gettempdir())
        self.save_dir = base / f"trak-{uuid.uuid4().hex[:12]}"
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.save_dir), True)
        self._n_exp = 0
        self.meta.update(ensemble=len(thetas), proj_dim=proj_dim, ridge=ridge)

    def close(self) -> None:
        """Delete TRAK's files now (they are deleted at garbage collection otherwise)."""
        self._finalizer()

    def _state_dict(self, theta: Tensor) -> dict:
        return self.mlp.to_module(theta).state_dict()

    def _mean_eigenvalue(self, X: Tensor, y: Tensor) -> float:
        """Mean eigenvalue of TRAK's kernel ΦᵀΦ, averaged over the ensemble.

        traker projects Pᵀg / sqrt(p) with P ~ N(0, 1), so E trace(ΦᵀΦ) / k = Σ_i ‖g_i‖² / p;
        the gradient norms come exactly from the factors (‖D ⊗ A‖² = ‖D‖² ‖A‖²).
        """
        total = 0.0
        for theta in self.thetas:
            f = output_factors(self.mlp, theta.double(), X, y, "margin")
            sq = sum((D * D).sum(1) * ((A * A).sum(1) + 1.0) for D, A in f)
            total += float(sq.sum()) / self.mlp.n_params
        return total / len(self.thetas)

    def _choose_lambda(self, X: Tensor, y: Tensor) -> float:
        n, k = X.shape[0], self.proj_dim
        if self.ridge is not None:
            return self.ridge * self._mean_eigenvalue(X, y)
        if self.lambda_reg is not None:
            if self.lambda_reg == 0.0 and k >= n:
                raise ConfigError(
                    f"TRAK with proj_dim={k} ≥ {n} training examples and lambda_reg=0 has a singular "
                    "kernel ΦᵀΦ (rank ≤ n): its scores would be noise. Use proj_dim < "
                    f"{n // 2}, pass lambda_reg > 0 or ridge=…, or leave both unset for an automatic ridge."
                )
            if self.lambda_reg == 0.0 and 2 * k >= n:
                warnings.warn(
                    f"TRAK: proj_dim={k} is more than half of the {n} training examples; without a "
                    "ridge the kernel is ill-conditioned and the scores degrade (on digits-mlp LDS "
                    "falls from 0.20 at 512 to 0.09 at 1024).",
                    stacklevel=4,
                )
            return self.lambda_reg
        if 2 * k < n:
            return 0.0  # traker's own default
        lam = AUTO_RIDGE * self._mean_eigenvalue(X, y)
        warnings.warn(
            f"TRAK: proj_dim={k} ≥ half of the {n} training examples makes the kernel ΦᵀΦ "
            f"{'singular' if k >= n else 'ill-conditioned'}; added a ridge lambda_reg={lam:.3g} "
            f"({AUTO_RIDGE:g} × its mean eigenvalue). Pass lambda_reg= or ridge= to choose it.",
            stacklevel=4,
        )
        return lam

    def _quiet(self):
        """traker draws tqdm bars on stderr for every finalize call; hide them when quiet."""
        return contextlib.redirect_stderr(io.StringIO()) if self.quiet else contextlib.nullcontext()

    def _setup(self, X, y):
        lam = self._choose_lambda(X, y)  # outside _quiet: its warning must reach the user
        self.meta["lambda_reg"] = lam
        with self._quiet():
            self._setup_traker(X, y, lam)

    def _score(self, X_q, y_q):
        with self._quiet():
            return self._score_traker(X_q, y_q)

    def _setup_traker(self, X, y, lam: float):
        from trak import TRAKer  # optional heavy dependency (traker): only when TRAK is used
        from trak.projectors import BasicProjector, ProjectionType

        X32, n = X.to(torch.float32), X.shape[0]
        p, k = self.mlp.n_params, self.proj_dim
        # one sketch block when it fits the budget: generated once per model instead of per call
        projector = BasicProjector(
            grad_dim=p,
            proj_dim=k,
            seed=self.projector_seed,
            proj_type=ProjectionType.normal,
            device="cpu",
            block_size=_sketch_block(p, k),
            dtype=torch.float32,
        )
        self.save_dir.parent.mkdir(parents=True, exist_ok=True)
        self.traker = TRAKer(
            model=self.mlp.to_module(self.thetas[0]),
            task="image_classification",
            train_set_size=n,
            save_dir=str(self.save_dir),
            load_from_save_dir=True,
            device="cpu",
            projector=projector,
            use_half_precision=False,
            lambda_reg=lam,
            logging_level=logging.WARNING,
        )
        for model_id, theta in enumerate(self.thetas):
            self.traker.load_checkpoint(self._state_dict(theta), model_id=model_id)
            for s in range(0, n, self.batch_size):
                batch = (X32[s : s + self.batch_size], y[s : s + self.batch_size])
                self.traker.featurize(batch=batch, num_samples=len(batch[1]))
        self.traker.finalize_features()
        # traker 0.3.2: finalize_features frees the sketch, and a single-block
        # BasicProjector only redraws it when the model id changes, so scoring the model
        # featurized last would fail; redraw the same sketch (same generator state) here.
        if projector.num_blocks == 1:
            projector.generate_sketch_matrix(projector.generator_states[0])
        self._projector = projector

    def _score_traker(self, X_q, y_q):
        exp = f"q{self._n_exp}"
        self._n_exp += 1
        Xq, Q = X_q.to(torch.float32), X_q.shape[0]
        for model_id, theta in enumerate(self.thetas):
            self.traker.start_scoring_checkpoint(
                exp_name=exp, checkpoint=self._state_dict(theta), model_id=model_id, num_targets=Q
            )
            for s in range(0, Q, self.batch_size):
                batch = (Xq[s : s + self.batch_size], y_q[s : s + self.batch_size])
                self.traker.score(batch=batch, num_samples=len(batch[1]))
        scores = self.traker.finalize_scores(exp_name=exp)  # [n, Q] memmap
        out = torch.from_numpy(np.array(scores, dtype=np.float64)).T.contiguous()
        if not torch.isfinite(out).all():
            raise ConfigError(
                "TRAK returned non-finite scores (an ill-conditioned kernel); pass a larger "
                "lambda_reg or a smaller proj_dim."
            )
        return out

    def state_bytes(self):
        # per model: projected gradients and features [n, k] float32, and out-to-loss [n]
        M, n, k, p = len(self.thetas), self.n_train, self.proj_dim, self.mlp.n_params
        return M * (2 * n * k + n) * 4 + p * _sketch_block(p, k) * 4


def _sketch_block(p: int, k: int) -> int:
    """Columns of TRAK's sketch held at once: all k when they fit the memory budget, so the
    sketch is drawn once per model instead of once per call."""
    return max(1, min(k, MEMORY_BUDGET // (4 * p)))
