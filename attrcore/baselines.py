"""Baseline attribution methods, all with one call shape and one sign convention.

Interface: an :class:`Attributor` is built with what its method needs from training
(parameters, checkpoints), then ``fit(X, y, sources)`` does the per-training-set setup
(timed as ``setup_seconds``) and ``score(X_q, y_q)`` returns a float32 ``[Q, m]`` tensor
(timed as ``score_seconds``). Positive = up-weighting source j's loss weight raises the
query measurement f(z_q) (a proponent), as everywhere in attrcore. Per-example scores are
summed over each source's members (first-order effects add up).
:func:`make_baseline` builds any of them from training outputs.

Implementations (``METHODS``):

- ``trak`` — :class:`TRAK`: the official ``traker`` package (MadryLab), on the CPU, an
  ensemble of independently trained models, its ``image_classification`` output (the
  margin, which works unchanged on flat MLP inputs), float32, ``BasicProjector`` with a
  Gaussian sketch. The regulariser: ``traker`` 0.3.2 has ``lambda_reg`` (a ridge on the
  kernel ΦᵀΦ, default 0). With ``proj_dim ≥ n`` the kernel has rank ≤ n < proj_dim and is
  singular, and already at ``proj_dim`` ≈ 0.7 n it is so ill-conditioned that scores
  degrade (digits-mlp, 1 model, 100 queries × 40 subsets: LDS 0.20 at 512, 0.09 at 1024,
  −0.01 at 2048). So by default λ = 0 (traker's default) below ``n/2``; at or above it
  λ = 0.01 × the kernel's mean eigenvalue (computed exactly from the per-example
  gradient norms), with a warning; ``lambda_reg=0`` with ``proj_dim ≥ n`` is refused.
  ``ridge=r`` sets λ = r × mean eigenvalue at any size: TRAK is very sensitive to it
  (same setting, 2048: r = 0.01 → 0.22, 0.1 → 0.33, 1 → 0.48, 3 → 0.52; 512 with r ≈ 1
  → 0.49), because a large ridge turns it into a damped Gauss–Newton influence function.
- ``if-explicit`` — :class:`InfluenceExplicit`: −(1/n) ∇f(q)ᵀ (H + δI)⁻¹ ∇ℓ_j with the
  Hessian of the training objective built explicitly (``layers="last"``, or ``"all"`` for
  tiny models) and a Cholesky solve in float64.
- ``if-cg`` — :class:`InfluenceCG`: the same target for the whole network through
  batched conjugate gradients (one CG per query, all queries in one block) on exact
  curvature-vector products with damping δ (Gauss–Newton by default: the exact Hessian
  is indefinite on these networks; ``curvature="hessian"`` is available).
- ``tracin`` — :class:`TracIn`: −Σ_c w_c ⟨∇f(q; θ_c), ∇ℓ_j(θ_c)⟩ over checkpoints,
  w_c = η_c · (epochs the checkpoint stands for) / batch size, i.e. the curvature-free
  SGD effect of one more unit of weight on z_j.
- ``grad-dot`` — :class:`GradDot`: −⟨∇f(q; θ̂), ∇ℓ_j(θ̂)⟩ at the final model.
- ``random`` — :class:`RandomScores`: seeded Gaussian scores, the control.

Why not ``dattri`` for the influence functions: ``dattri`` 0.3.0 installs and runs on
the CPU, but measured on digits-mlp (1437 train, p = 9610, 2 cores) its ``IFAttributorCG``
took 4.1 s per query with only 10 CG iterations and a 1.8 GB peak, because it redoes the
query's inverse-HVP for every training mini-batch and double-reverse HVPs through
``torch.func`` are slow; its CG also has no stopping tolerance (fixed iterations from
x₀ = v) and, given a multi-batch loader, sums per-batch inverse-HVPs, which is not the
inverse of the full Hessian. The solvers here use attrcore's per-layer Hessian-vector
products (:class:`~attrcore.curvature.MLPCurvature`, tested against ``torch.func``) and
per-layer gradient factors, which is exact and an order of magnitude cheaper.

Gradients use the MLP's structure: example b's gradient of a scalar with logit-gradient
e_b is ⊕_l (D_l[b] ⊗ A_l[b], D_l[b]) with D_l the back-propagated signal and A_l the
layer input, so inner products between gradients are Σ_l (D Dᵀ) ⊙ (A Aᵀ + 1) and never
materialise a ``[n, p]`` matrix. These are reverse-mode computations: baselines, unlike
the forward-only readout, are allowed a backward pass.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import shutil
import tempfile
import time
import uuid
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import TrainConfig
from .curvature import MLPCurvature
from .errors import ConfigError, ShapeError
from .measures import MEASURES, measure_dlogits
from .model import MLP
from .tangents import Tangents

__all__ = [
    "METHODS",
    "Attributor",
    "GradDot",
    "InfluenceCG",
    "InfluenceExplicit",
    "RandomScores",
    "TRAK",
    "TracIn",
    "make_baseline",
    "output_factors",
    "train_ensemble",
    "tracin_checkpoint_epochs",
]

METHODS = ("trak", "if-explicit", "if-cg", "tracin", "grad-dot", "random")
MEMORY_BUDGET = 256 * 2**20  # bytes of intermediates per chunk of queries
AUTO_RIDGE = 1e-2  # TRAK's automatic ridge, relative to the kernel's mean eigenvalue

Factors = list[tuple[Tensor, Tensor]]  # per layer: (D [B, d_out], A [B, d_in])


# ============================================================== per-example gradients


def _layers(mlp: MLP, layers: str) -> list[int]:
    if layers == "all":
        return list(range(mlp.n_layers))
    if layers == "last":
        return [mlp.n_layers - 1]
    raise ConfigError(f"layers must be 'all' or 'last', got {layers!r}.")


def _param_slice(mlp: MLP, layer_ids: list[int]) -> slice:
    """The flat-parameter slice of consecutive layers ``layer_ids``."""
    return slice(mlp.layout[layer_ids[0]][0], mlp.layout[layer_ids[-1]][2])


def output_factors(
    mlp: MLP,
    theta: Tensor,
    X: Tensor,
    y: Tensor | None,
    kind: str,
    target_class: int | None = None,
    layers: Sequence[int] | None = None,
) -> Factors:
    """Per-example gradient factors of ``measure(kind)`` (``kind="loss"``: ℓ) at ``theta``.

    Returns ``[(D_l [B, d_out], A_l [B, d_in]) for l in layers]`` such that example b's
    gradient with respect to layer l is ``W: outer(D_l[b], A_l[b])`` (row-major, as in
    :class:`~attrcore.model.MLP`) and ``b: D_l[b]``.
    """
    layer_ids = list(range(mlp.n_layers)) if layers is None else list(layers)
    cache = mlp.forward_cache(theta, X)
    d = measure_dlogits(cache.logits, y, kind, target_class)
    weights = mlp.unflatten(theta)
    out: dict[int, tuple[Tensor, Tensor]] = {}
    for layer in range(mlp.n_layers - 1, min(layer_ids) - 1, -1):
        out[layer] = (d, cache.acts[layer])
        if layer > 0:
            d = (d @ weights[layer][0]) * cache.d1[layer - 1]
    return [out[layer] for layer in layer_ids]


def _flat(f: Factors) -> Tensor:
    """Materialised per-example gradients ``[B, p_S]`` (tests, tiny models, last layer)."""
    B = f[0][0].shape[0]
    parts = []
    for D, A in f:
        parts += [(D.unsqueeze(2) * A.unsqueeze(1)).reshape(B, -1), D]
    return torch.cat(parts, dim=1)


def _gram(fa: Factors, fb: Factors) -> Tensor:
    """``[Ba, Bb]`` inner products of per-example gradients: Σ_l (Da Dbᵀ) ⊙ (Aa Abᵀ + 1)."""
    out = None
    for (Da, Aa), (Db, Ab) in zip(fa, fb):
        term = (Da @ Db.T) * (Aa @ Ab.T + 1.0)
        out = term if out is None else out + term
    return out


def _dot(V: Tensor, f: Factors) -> Tensor:
    """``[Q, n]`` inner products of flat vectors ``V [Q, p_S]`` with per-example gradients."""
    Q, n = V.shape[0], f[0][0].shape[0]
    out = torch.zeros(Q, n, dtype=V.dtype)
    widest = max(D.shape[1] for D, _ in f)
    for sl in _query_chunks(Q, widest * n * V.element_size()):  # [q, o, n] intermediates
        q = sl.stop - sl.start
        off = 0
        for D, A in f:
            o, i = D.shape[1], A.shape[1]
            VW = V[sl, off:off + o * i].reshape(q * o, i)
            Vb = V[sl, off + o * i:off + o * i + o]
            off += o * i + o
            out[sl] += ((VW @ A.T).view(q, o, n) * D.T.unsqueeze(0)).sum(1)
            out[sl] += Vb @ D.T
    return out


def _query_chunks(Q: int, bytes_per_query: int) -> list[slice]:
    step = max(1, int(MEMORY_BUDGET // max(1, bytes_per_query)))
    return [slice(s, min(Q, s + step)) for s in range(0, Q, step)]


# ============================================================================== base


def _tensor(a, dtype: torch.dtype | None, name: str) -> Tensor:
    t = a if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ShapeError(f"{name} holds NaN or infinite values; clean the data first.")
    return t.to(dtype) if dtype is not None else t


class Attributor:
    """One call shape for every baseline: ``fit(X, y, sources)`` then ``score(X_q, y_q)``.

    ``timings`` holds ``setup_seconds`` (fit), ``score_seconds`` and ``n_queries`` (summed
    over score calls) and ``seconds_per_query``.
    """

    name = "base"
    measures: tuple[str, ...] = MEASURES

    def __init__(self, mlp: MLP, measure: str = "margin", target_class: int | None = None):
        if measure not in self.measures:
            raise ConfigError(
                f"{self.name} supports the measurement(s) {', '.join(self.measures)}, not {measure!r}."
            )
        self.mlp, self.measure, self.target_class = mlp, measure, target_class
        self.timings: dict = {"setup_seconds": 0.0, "score_seconds": 0.0, "n_queries": 0}
        self._fitted = False
        self._source_index: Tensor | None = None
        self._m = 0
        self.meta: dict = {}

    # ---- public -------------------------------------------------------------------------
    def fit(self, X, y, sources=None) -> Attributor:
        """Setup on the training set ``X [n, d]``, ``y [n]``; ``sources`` as in ``train``."""
        X = _tensor(X, torch.float64, "the training inputs")
        y = _tensor(y, None, "the training labels").long()
        self.mlp.check_input(X)
        n = X.shape[0]
        if y.shape != (n,):
            raise ShapeError(f"labels have shape {tuple(y.shape)}; pass one label per training example ({n}).")
        if sources is None:
            self._source_index, self._m = None, n
        else:
            idx = torch.as_tensor(np.asarray(getattr(sources, "index", sources))).long()
            if idx.shape != (n,):
                raise ShapeError(
                    f"the source index has shape {tuple(idx.shape)}; it needs one id per training example ({n})."
                )
            self._source_index = idx
            self._m = int(getattr(sources, "m", int(idx.max()) + 1))
        self.n_train = n
        t0 = time.perf_counter()
        self._setup(X, y)
        self.timings["setup_seconds"] += time.perf_counter() - t0
        self._fitted = True
        return self

    def score(self, X_q, y_q=None) -> Tensor:
        """Scores ``[Q, m]`` float32 for queries ``X_q [Q, d]`` (labels ``y_q [Q]``)."""
        if not self._fitted:
            raise ConfigError(f"call fit(X, y) on the training data before scoring with {self.name}.")
        X_q = _tensor(X_q, torch.float64, "the query inputs")
        self.mlp.check_input(X_q)
        y_q = None if y_q is None else _tensor(y_q, None, "the query labels").long()
        if y_q is None and (self.measure in ("margin", "loss") or self.target_class is None):
            raise ConfigError(
                f"the {self.measure!r} measurement needs query labels; pass y_q, or use "
                "measure='logit'/'prob' with a target class."
            )
        if y_q is not None and y_q.shape != (X_q.shape[0],):
            raise ShapeError(f"query labels have shape {tuple(y_q.shape)}; pass one per query ({X_q.shape[0]}).")
        t0 = time.perf_counter()
        per_example = self._score(X_q, y_q)  # [Q, n]
        if self._source_index is not None:
            per_example = torch.zeros(
                per_example.shape[0], self._m, dtype=per_example.dtype
            ).index_add_(1, self._source_index, per_example)
        self.timings["score_seconds"] += time.perf_counter() - t0
        self.timings["n_queries"] += int(X_q.shape[0])
        return per_example.float()

    @property
    def seconds_per_query(self) -> float:
        q = self.timings["n_queries"]
        return self.timings["score_seconds"] / q if q else float("nan")

    def state_bytes(self) -> int:
        """Bytes this attributor keeps between queries (features, factors, Hessians)."""
        return 0

    # ---- per method ---------------------------------------------------------------------
    def _setup(self, X: Tensor, y: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, X_q: Tensor, y_q: Tensor | None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


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


# =========================================================================== TracIn


class TracIn(Attributor):
    """TracIn-CP: −Σ_c w_c ⟨∇f(q; θ_c), ∇ℓ_j(θ_c)⟩ over checkpoints ``θ_c``."""

    name = "tracin"

    def __init__(self, mlp: MLP, checkpoints: Sequence[Tensor], weights: Sequence[float],
                 measure="margin", target_class=None):
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


def tracin_weights(epochs_of: Sequence[int], lrs: Sequence[float], total_epochs: int,
                   batch_size: int) -> list[float]:
    """w_c = η_c · (epochs until the next checkpoint, or the end) / batch size."""
    ends = list(epochs_of[1:]) + [total_epochs]
    return [lr * (end - e) / batch_size for e, end, lr in zip(epochs_of, ends, lrs)]


# ================================================================ influence functions


class _Influence(Attributor):
    """Shared part: −(1/n) ∇f(q)ᵀ (H + δI)⁻¹ ∇ℓ_j on a set of layers.

    H is the Hessian of the training objective (1/n) Σ ℓ_i + (λ/2)‖θ‖² at ``theta`` (or
    its Gauss–Newton matrix), restricted to the chosen layers; δ is the damping.
    """

    def __init__(self, mlp: MLP, theta: Tensor, weight_decay: float, damping: float = 0.01,
                 layers: str = "all", curvature: str = "hessian", measure="margin",
                 target_class=None, dtype: torch.dtype = torch.float64):
        super().__init__(mlp, measure, target_class)
        if not (math.isfinite(damping) and damping >= 0):
            raise ConfigError(f"damping must be ≥ 0, got {damping}.")
        if curvature not in ("hessian", "gauss-newton"):
            raise ConfigError(f"curvature must be 'hessian' or 'gauss-newton', got {curvature!r}.")
        self.dtype = dtype
        self.theta = theta.detach().to(dtype)
        self.weight_decay, self.damping = float(weight_decay), float(damping)
        self.curvature = curvature
        self.layer_ids = _layers(mlp, layers)
        self.slice = _param_slice(mlp, self.layer_ids)
        self.meta.update(layers=layers, damping=damping, curvature=curvature)

    def _curv(self, X, y) -> MLPCurvature:
        return MLPCurvature(self.mlp, self.theta, X.to(self.dtype), y,
                            weight_decay=self.weight_decay, curvature=self.curvature)

    def _hvp_block(self, curv: MLPCurvature, U: Tensor) -> Tensor:
        """(H + δI) restricted to the layer block, applied to ``U [T, p_S]``.

        Row chunks as large as the memory budget allows: one product over the whole
        training set costs about the same per tangent at any chunk size above a few
        rows, so fewer, larger chunks mean fewer passes over the activations.
        """
        T = U.shape[0]
        out = torch.empty_like(U)
        step = max(1, int(MEMORY_BUDGET // curv.hvp_bytes_per_tangent()))
        for s in range(0, T, step):
            full = torch.zeros(min(T, s + step) - s, self.mlp.n_params, dtype=self.dtype)
            full[:, self.slice] = U[s:s + step]
            out[s:s + step] = curv.hvp(Tangents.from_flat(self.mlp, full)).flat()[:, self.slice]
        return out + self.damping * U

    def _setup(self, X, y):
        X = X.to(self.dtype)
        self._train = output_factors(self.mlp, self.theta, X, y, "loss", layers=self.layer_ids)
        self._setup_solver(X, y)

    def _score(self, X_q, y_q):
        X_q = X_q.to(self.dtype)
        fq = output_factors(self.mlp, self.theta, X_q, y_q, self.measure, self.target_class,
                            layers=self.layer_ids)
        Gq = _flat(fq)  # [Q, p_S]
        V = self._solve(Gq)  # (H + δI)⁻¹ ∇f(q), [Q, p_S]
        return _dot(V, self._train).double() * (-1.0 / self.n_train)

    def _setup_solver(self, X, y) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _solve(self, G: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _hessian_block(mlp: MLP, curv: MLPCurvature, sl: slice) -> Tensor:
    """The block ``H[sl, sl]`` of the curvature (λI included) from unit-vector products."""
    p_s = sl.stop - sl.start
    H = torch.empty(p_s, p_s, dtype=curv.theta.dtype)
    rows = max(1, int(MEMORY_BUDGET // curv.hvp_bytes_per_tangent()))
    for s in range(0, p_s, rows):
        e = min(p_s, s + rows)
        U = torch.zeros(e - s, mlp.n_params, dtype=curv.theta.dtype)
        U[torch.arange(e - s), sl.start + s + torch.arange(e - s)] = 1.0
        H[s:e] = curv.hvp(Tangents.from_flat(mlp, U)).flat()[:, sl]
    return H


def _last_layer_hessian(mlp: MLP, theta: Tensor, X: Tensor, weight_decay: float) -> Tensor:
    """Exact Hessian of (1/n) Σ ℓ_i + (λ/2)‖θ‖² in the last layer's parameters.

    The logits are linear in the last layer, so its Hessian block equals its Gauss–Newton
    block: (1/n) Σ_b (diag(p_b) − p_b p_bᵀ) ⊗ ã_b ã_bᵀ + λI with ã_b = [a_b; 1], built
    here in the augmented layout [(o, k)] and permuted to the flat layout (W row-major,
    then b).
    """
    cache = mlp.forward_cache(theta, X)
    n, C = X.shape[0], cache.logits.shape[1]
    P = torch.softmax(cache.logits, dim=-1)  # [n, C]
    A = torch.cat([cache.acts[-1], torch.ones(n, 1, dtype=X.dtype)], dim=1)  # [n, i+1]
    k = A.shape[1]
    PA = (P.unsqueeze(2) * A.unsqueeze(1)).reshape(n, C * k)
    H = -(PA.T @ PA)
    for o in range(C):
        H[o * k:(o + 1) * k, o * k:(o + 1) * k] += (A * P[:, o:o + 1]).T @ A
    H /= n
    H.diagonal().add_(weight_decay)
    i = k - 1
    o_idx, k_idx = torch.meshgrid(torch.arange(C), torch.arange(k), indexing="ij")
    perm = torch.where(k_idx < i, o_idx * i + k_idx, C * i + o_idx).reshape(-1)
    out = torch.empty_like(H)
    out[perm.unsqueeze(1), perm.unsqueeze(0)] = H
    return out


class InfluenceExplicit(_Influence):
    """Influence function with the Hessian block built explicitly and Cholesky-factored.

    ``layers="last"`` (default: the last layer's block, p_S = d_L·(d_{L−1}+1)) or
    ``"all"`` for tiny models (refused above ``max_params``).
    """

    name = "if-explicit"

    def __init__(self, mlp, theta, weight_decay, damping=0.01, layers="last", curvature="hessian",
                 measure="margin", target_class=None, max_params: int = 6000):
        super().__init__(mlp, theta, weight_decay, damping, layers, curvature, measure,
                         target_class, dtype=torch.float64)
        p_s = self.slice.stop - self.slice.start
        if p_s > max_params:
            raise ConfigError(
                f"an explicit Hessian over {p_s} parameters needs {p_s * p_s * 8 / 2**30:.1f} GiB and "
                f"a long factorisation; use layers='last' or the iterative solver (if-cg), or raise "
                f"max_params (now {max_params}) if you have the memory."
            )

    def _setup_solver(self, X, y):
        if self.layer_ids == [self.mlp.n_layers - 1]:
            H = _last_layer_hessian(self.mlp, self.theta, X, self.weight_decay)
        else:
            H = _hessian_block(self.mlp, self._curv(X, y), self.slice)
        H = 0.5 * (H + H.T)
        H.diagonal().add_(self.damping)
        p_s = H.shape[0]
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) == 0:
            self._chol, self._lu = L, None
        else:
            warnings.warn(
                f"H + {self.damping}·I is not positive definite on the chosen layers (a negative "
                "curvature direction); solving with LU instead. Raise the damping or use "
                "curvature='gauss-newton' for a well-posed influence function.", stacklevel=4)
            self._chol, self._lu = None, torch.linalg.lu_factor(H)
        self.meta["min_eig"] = float(torch.linalg.eigvalsh(H)[0]) if p_s <= 4000 else None
        self._H = H

    def _solve(self, G):
        G = G.to(torch.float64)
        if self._chol is not None:
            return torch.cholesky_solve(G.T, self._chol).T
        return torch.linalg.lu_solve(*self._lu, G.T).T

    def state_bytes(self):
        return _nbytes(self._H, *(t for f in self._train for t in f))


class InfluenceCG(_Influence):
    """Influence function through conjugate gradients on exact Hessian-vector products.

    One CG per query, all queries in one block (each column has its own step sizes and
    stops when its residual falls below ``tol`` × its right-hand side). Whole network by
    default. ``meta["cg_iterations"]`` and ``meta["negative_curvature"]`` report how it
    went; a non-positive curvature along a CG direction freezes that column (and warns).

    ``hessian_examples`` (default: all) estimates H on a fixed random subset of the
    training set, which makes every product proportionally cheaper on large sets.

    The default curvature is Gauss–Newton: on digits-mlp the exact Hessian plus the usual
    damping (0.01) is indefinite and CG meets negative curvature for every query within a
    few iterations, while GN + λ + δ is positive definite, so CG is well posed.
    """

    name = "if-cg"

    def __init__(self, mlp, theta, weight_decay, damping=0.01, layers="all",
                 curvature="gauss-newton", measure="margin", target_class=None,
                 max_iter: int = 100, tol: float = 1e-4, hessian_examples: int | None = None,
                 seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(mlp, theta, weight_decay, damping, layers, curvature, measure,
                         target_class, dtype=dtype)
        if max_iter < 1 or not tol > 0:
            raise ConfigError("CG needs max_iter ≥ 1 and tol > 0.")
        if hessian_examples is not None and hessian_examples < 1:
            raise ConfigError(f"hessian_examples must be ≥ 1 or None (all), got {hessian_examples}.")
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.hessian_examples, self.seed = hessian_examples, int(seed)
        self.meta.update(hessian_examples=hessian_examples)

    def _setup_solver(self, X, y):
        n = X.shape[0]
        if self.hessian_examples is not None and self.hessian_examples < n:
            # a fixed random subset, normalised by its own size: an unbiased estimate of H
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
            idx = idx[:self.hessian_examples].sort().values
            X, y = X[idx], y[idx]
        self._curvobj = self._curv(X, y)

    def _solve(self, G):
        B = G.to(self.dtype)
        Xs = torch.zeros_like(B)
        R = B.clone()
        P = R.clone()
        rs = (R * R).sum(1)
        stop = self.tol**2 * rs
        active = rs > stop
        iters, negative = 0, 0
        for _ in range(self.max_iter):
            if not bool(active.any()):
                break
            iters += 1
            idx = active.nonzero().squeeze(1)
            AP = self._hvp_block(self._curvobj, P[idx])
            pAp = (P[idx] * AP).sum(1)
            bad = pAp <= 0
            if bool(bad.any()):
                negative += int(bad.sum())
                active[idx[bad]] = False
            good = ~bad
            idx, AP, pAp = idx[good], AP[good], pAp[good]
            alpha = rs[idx] / pAp
            Xs[idx] += alpha.unsqueeze(1) * P[idx]
            R[idx] -= alpha.unsqueeze(1) * AP
            rs_new = (R[idx] * R[idx]).sum(1)
            beta = rs_new / rs[idx]
            P[idx] = R[idx] + beta.unsqueeze(1) * P[idx]
            rs[idx] = rs_new
            active[idx] = rs_new > stop[idx]
        self.meta["cg_iterations"] = max(iters, self.meta.get("cg_iterations", 0))
        self.meta["cg_unconverged"] = int(active.sum())
        self.meta["negative_curvature"] = self.meta.get("negative_curvature", 0) + negative
        if negative:
            warnings.warn(
                f"CG met non-positive curvature for {negative} queries (H + {self.damping}·I is "
                "indefinite); their solves stopped early. Raise the damping or use "
                "curvature='gauss-newton'.", stacklevel=4)
        return Xs

    def state_bytes(self):
        c = self._curvobj
        return _nbytes(*(t for f in self._train for t in f), *c.cache.acts, *c.cache.pre)


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

    def __init__(self, mlp: MLP, thetas: Sequence[Tensor], proj_dim: int = 512,
                 lambda_reg: float | None = None, ridge: float | None = None, measure="margin",
                 target_class=None, save_dir: str | Path | None = None, projector_seed: int = 0,
                 batch_size: int = 512, quiet: bool = True):
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
                    "falls from 0.20 at 512 to 0.09 at 1024).", stacklevel=4)
            return self.lambda_reg
        if 2 * k < n:
            return 0.0  # traker's own default
        lam = AUTO_RIDGE * self._mean_eigenvalue(X, y)
        warnings.warn(
            f"TRAK: proj_dim={k} ≥ half of the {n} training examples makes the kernel ΦᵀΦ "
            f"{'singular' if k >= n else 'ill-conditioned'}; added a ridge lambda_reg={lam:.3g} "
            f"({AUTO_RIDGE:g} × its mean eigenvalue). Pass lambda_reg= or ridge= to choose it.",
            stacklevel=4)
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
        from trak import TRAKer
        from trak.projectors import BasicProjector, ProjectionType

        X32, n = X.to(torch.float32), X.shape[0]
        p, k = self.mlp.n_params, self.proj_dim
        # one sketch block when it fits the budget: generated once per model instead of per call
        projector = BasicProjector(grad_dim=p, proj_dim=k, seed=self.projector_seed,
                                   proj_type=ProjectionType.normal, device="cpu",
                                   block_size=_sketch_block(p, k), dtype=torch.float32)
        self.save_dir.parent.mkdir(parents=True, exist_ok=True)
        self.traker = TRAKer(
            model=self.mlp.to_module(self.thetas[0]), task="image_classification",
            train_set_size=n, save_dir=str(self.save_dir), load_from_save_dir=True,
            device="cpu", projector=projector, use_half_precision=False,
            lambda_reg=lam, logging_level=logging.WARNING,
        )
        for model_id, theta in enumerate(self.thetas):
            self.traker.load_checkpoint(self._state_dict(theta), model_id=model_id)
            for s in range(0, n, self.batch_size):
                batch = (X32[s:s + self.batch_size], y[s:s + self.batch_size])
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
            self.traker.start_scoring_checkpoint(exp_name=exp, checkpoint=self._state_dict(theta),
                                                 model_id=model_id, num_targets=Q)
            for s in range(0, Q, self.batch_size):
                batch = (Xq[s:s + self.batch_size], y_q[s:s + self.batch_size])
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


# ========================================================================== factory


def train_ensemble(mlp: MLP, X, y, cfg: TrainConfig, seeds: Sequence[int], **train_kwargs) -> list:
    """Train one model per seed (everything else as ``cfg``): ``[TrainOutput]``."""
    from dataclasses import replace

    from .train import train

    return [train(mlp, X, y, replace(cfg, seed=int(s)), **train_kwargs) for s in seeds]


def make_baseline(method: str, mlp: MLP, runs: Sequence, train_cfg: TrainConfig, *,
                  measure: str = "margin", target_class: int | None = None, **options) -> Attributor:
    """Build baseline ``method`` from training outputs ``runs`` (``[TrainOutput]``).

    TRAK uses every run (its ensemble); the others use ``runs[0]``; TracIn needs
    ``runs[0].checkpoints`` (train with ``checkpoint_epochs=tracin_checkpoint_epochs(E)``).
    ``options`` go to the method's constructor (``proj_dim``, ``damping``, ``layers``, …).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}.")
    if not runs:
        raise ConfigError("a baseline needs at least one trained model.")
    common = {"measure": measure, "target_class": target_class}
    run = runs[0]
    if method == "trak":
        return TRAK(mlp, [r.theta for r in runs], **common, **options)
    if method == "if-explicit":
        return InfluenceExplicit(mlp, run.theta, train_cfg.weight_decay, **common, **options)
    if method == "if-cg":
        return InfluenceCG(mlp, run.theta, train_cfg.weight_decay, **common, **options)
    if method == "grad-dot":
        return GradDot(mlp, run.theta, **common, **options)
    if method == "random":
        return RandomScores(mlp, **common, **options)
    epochs = sorted(e for e in run.checkpoints if e < train_cfg.epochs)
    if not epochs:
        raise ConfigError(
            "TracIn needs checkpoints before the last epoch; train with "
            "checkpoint_epochs=tracin_checkpoint_epochs(epochs)."
        )
    weights = tracin_weights(epochs, [run.checkpoint_lrs[e] for e in epochs], train_cfg.epochs,
                             train_cfg.batch_size)
    return TracIn(mlp, [run.checkpoints[e] for e in epochs], weights, **common, **options)


def cli_attribute(args) -> int:
    """Hook for ``python -m attrcore attribute --method …``; lives in :mod:`attrcore.cli_eval`."""
    from .cli_eval import cli_attribute as run

    return run(args)
