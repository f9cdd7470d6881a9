"""Baseline attribution methods, all with one call shape and one sign convention.

Interface: an :class:`Attributor` is built with what its method needs from training
(parameters, checkpoints), then ``fit(X, y, sources)`` does the per-training-set setup
(timed as ``setup_seconds``) and ``score(X_q, y_q)`` returns a float32 ``[Q, m]`` tensor
(timed as ``score_seconds``). Positive = up-weighting source j's loss weight raises the
query measurement f(z_q) (a proponent), as everywhere in attrcore. Per-example scores are
summed over each source's members (first-order effects add up).
:func:`~attrcore.methods.registry.make_method` builds any of them from training outputs.

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
products (:class:`~attrcore.engine.curvature.MLPCurvature`, tested against ``torch.func``) and
per-layer gradient factors, which is exact and an order of magnitude cheaper.

Gradients use the MLP's structure: example b's gradient of a scalar with logit-gradient
e_b is ⊕_l (D_l[b] ⊗ A_l[b], D_l[b]) with D_l the back-propagated signal and A_l the
layer input, so inner products between gradients are Σ_l (D Dᵀ) ⊙ (A Aᵀ + 1) and never
materialise a ``[n, p]`` matrix. These are reverse-mode computations: baselines, unlike
the forward-only readout, are allowed a backward pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..engine.measures import MEASURES, check_labels, measure_dlogits
from ..engine.model import MLP
from ..errors import ConfigError, ShapeError

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
    :class:`~attrcore.engine.model.MLP`) and ``b: D_l[b]``.
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
            VW = V[sl, off : off + o * i].reshape(q * o, i)
            Vb = V[sl, off + o * i : off + o * i + o]
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
            raise ConfigError(f"{self.name} supports the measurement(s) {', '.join(self.measures)}, not {measure!r}.")
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
        check_labels(self.measure, y_q is not None, self.target_class)
        if y_q is not None and y_q.shape != (X_q.shape[0],):
            raise ShapeError(f"query labels have shape {tuple(y_q.shape)}; pass one per query ({X_q.shape[0]}).")
        t0 = time.perf_counter()
        per_example = self._score(X_q, y_q)  # [Q, n]
        if self._source_index is not None:
            per_example = torch.zeros(per_example.shape[0], self._m, dtype=per_example.dtype).index_add_(
                1, self._source_index, per_example
            )
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
