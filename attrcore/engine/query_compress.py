"""Query-aware compression: the rank-r factorisation Δ ≈ C Qᵀ that keeps what queries see.

Scores are S = G_q Δᵀ (``G_q [Q, p]`` the queries' measurement gradients, ``Δ [m, p]`` the
responses), so what a compression has to keep is Δ's *action on measurement gradients*, not
its Frobenius norm. A plain SVD of Δ (:func:`~attrcore.engine.compress.compress_dense`)
keeps Δ's largest directions, which on a long momentum run are the flat, undamped ones
that queries barely see (mnist1d-mlp, EK-FAC full horizon: rank 256 LDS 0.21 against the
dense 0.39).

With the training points' own measurement gradients ``G [n, p]`` standing in for the query
distribution (Σ ≈ Gᵀ G / n), E‖g Δᵀ − g A Bᵀ‖² = ‖G Δᵀ − G A Bᵀ‖²_F / n is minimised over
rank-r pairs by the best rank-r approximation of the *training score matrix*
``M = G Δᵀ [n, m]`` (each training point read out as a query). With M ≈ U_r Σ_r V_rᵀ:
B = V_r, A = Δᵀ V_r give G A Bᵀ = M V_r V_rᵀ, the optimum. Orthonormalising A = Q R gives
the usual representation ``CompressedResponses(Q, C = V_r Rᵀ)``: Δ ≈ V_r V_rᵀ Δ, a projection
in *source* space, read out unchanged (r JVPs per query, no reverse mode).

Interface: :func:`compress_query_aware` ``(responses, mlp, theta, X, y, rank, ...)``;
``coefficients="source"`` (default) is the projection above, ``"projection"`` keeps the
same Q with C = Δ Q (the orthogonal projection in parameter space). Helpers:
:func:`measurement_gradients` (closed-form per-example ∇_θ f, the compression phase's only
backward quantity; never called by a readout), :func:`training_score_matrix` (M by one
GEMM per layer and chunk of points) and :func:`top_right_singular` (exact SVD for small M,
randomized with power iterations otherwise). Columns come out in C's SVD order like the
other producers'; :meth:`CompressedResponses.truncate` then keeps C's leading directions,
which is *not* the query-aware rank-k optimum: compress at each rank instead.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ShapeError
from .compress import CompressedResponses, finish, gaussian, like, sketch_generator, stack_t_times, stack_times
from .measures import measure_dlogits
from .model import MLP
from .tangents import Tangents

__all__ = [
    "COEFFICIENTS",
    "compress_from_scores",
    "compress_query_aware",
    "measurement_gradients",
    "top_right_singular",
    "training_score_matrix",
]

COEFFICIENTS = ("source", "projection")
EXACT_SVD_MAX = 1024  # min(n, m) up to which M's SVD is exact (LAPACK); randomized above


def measurement_gradients(
    mlp: MLP, theta: Tensor, X: Tensor, y: Tensor | None, measure: str = "margin", target_class: int | None = None
) -> list[Tensor]:
    """∇_θ f(z_i; θ) for every row of ``X [B, d]``, per parameter block ``[B, block size]``
    (the blocks in the model's row order W₀, b₀, W₁, b₁, …), in closed form: δ_L = ∂f/∂logits,
    δ_{l−1} = (δ_l W_l) ⊙ σ'(z_{l−1}), ∂f/∂W_l = δ_l a_lᵀ."""
    cache = mlp.forward_cache(theta, X)
    logits = cache.pre[-1]
    delta = measure_dlogits(logits, y, measure, target_class)  # [B, C]
    layers = mlp.unflatten(theta)
    B = X.shape[0]
    out: list[Tensor] = []
    for layer in range(mlp.n_layers - 1, -1, -1):
        a = cache.acts[layer]
        out.append(delta)  # b
        out.append((delta.unsqueeze(2) * a.unsqueeze(1)).reshape(B, -1))  # W
        if layer > 0:
            delta = (delta @ layers[layer][0]) * cache.d1[layer - 1]
    return out[::-1]


def training_score_matrix(
    stack: Tangents,
    mlp: MLP,
    theta: Tensor,
    X: Tensor,
    y: Tensor | None,
    measure: str = "margin",
    target_class: int | None = None,
    memory_budget_mb: float = 1024.0,
) -> Tensor:
    """M = G Δᵀ ``[n, m]`` (float64): every row of ``X`` read out as a query against every
    source — the same numbers as :func:`~attrcore.engine.readout.score` on these points, by
    one GEMM per parameter block and chunk of points (the chunk's gradients fit the budget)."""
    n, m = X.shape[0], len(stack)
    p = stack.n_params
    work = torch.float64 if theta.dtype == torch.float64 else torch.float32
    step = max(1, min(n, int(memory_budget_mb * 2**20 // (3 * p * theta.element_size()))))
    flat = [blk.reshape(m, -1).to(work) for blk in stack.blocks()]
    M = torch.zeros(n, m, dtype=torch.float64)
    for s in range(0, n, step):
        sl = slice(s, min(n, s + step))
        G = measurement_gradients(mlp, theta, X[sl], None if y is None else y[sl], measure, target_class)
        acc = None
        for g, d in zip(G, flat):
            prod = g.to(work) @ d.T
            acc = prod if acc is None else acc.add_(prod)
        M[sl] = acc.double()
    return M


def top_right_singular(
    M: Tensor, rank: int, seed: int = 0, power_iterations: int = 3, exact_max: int = EXACT_SVD_MAX
) -> tuple[Tensor, Tensor]:
    """``(V_r [m, r], s_r [r])``: M's top-``rank`` right singular vectors and values (float64).

    Exact (LAPACK) when min(n, m) ≤ ``exact_max``; otherwise a randomized range finder on
    Mᵀ with oversampling and ``power_iterations`` re-orthonormalised power steps
    (Halko, Martinsson & Tropp 2011), then the SVD of the small projected matrix.
    """
    M = M.double()
    n, m = M.shape
    r = min(int(rank), n, m)
    if min(n, m) <= exact_max:
        _, s, Vh = torch.linalg.svd(M, full_matrices=False)
        return Vh[:r].T.contiguous(), s[:r]
    k = min(n, m, r + max(10, r // 4))
    Om = gaussian((n, k), sketch_generator(seed, purpose=3), torch.float64)
    Y, _ = torch.linalg.qr(M.T @ Om)  # [m, k], spans Mᵀ's range
    for _ in range(power_iterations):
        Z, _ = torch.linalg.qr(M @ Y)
        Y, _ = torch.linalg.qr(M.T @ Z)
    B = M @ Y  # [n, k]: M ≈ B Yᵀ
    _, s, Vh = torch.linalg.svd(B, full_matrices=False)
    V = Y @ Vh.T
    return V[:, :r].contiguous(), s[:r]


def compress_query_aware(
    responses: Tensor | Tangents,
    mlp: MLP,
    theta: Tensor,
    X,
    y,
    rank: int,
    *,
    measure: str = "margin",
    target_class: int | None = None,
    n_points: int | None = None,
    coefficients: str = "source",
    normalize: bool = True,
    seed: int = 0,
    memory_budget_mb: float = 1024.0,
    dtype: torch.dtype | None = None,
) -> CompressedResponses:
    """Rank-``rank`` factorisation Δ ≈ C Qᵀ that best preserves the training points' scores.

    ``responses`` ``[m, p]`` (row layout) or a :class:`Tangents` stack; ``X [n, d]``, ``y [n]``
    the training points whose measurement gradients stand in for the queries' (``n_points``:
    a random subset of that many, drawn from ``seed``). M = G Δᵀ, V_r its top right singular
    vectors, A = Δᵀ V_r = Q R; ``coefficients="source"``: C = V_r Rᵀ, so the training points'
    scores G Q Cᵀ = M V_r V_rᵀ are M's best rank-r approximation; ``"projection"``: C = Δ Q.
    ``normalize`` (default) scales every row of M to unit norm first, so each point counts
    alike whatever the size of its scores (LDS is a per-query rank correlation; mnist1d-mlp:
    +0.006–0.007 LDS at r = 128…512); then the training points' scores, each divided by its
    norm, are the best rank-r approximation of the normalised M. The rank is capped at
    min(n_points, m, p); with r ≥ rank(M) the training points' scores are the dense ones.
    ``dtype`` of the result defaults to the responses' (at least float32).
    """
    stack = responses if isinstance(responses, Tangents) else Tangents.from_flat(mlp, torch.as_tensor(responses))
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"rank must be a whole number ≥ 1 (`rank`), got {rank!r}.")
    if coefficients not in COEFFICIENTS:
        raise ConfigError(f"unknown coefficients {coefficients!r}; choose {' or '.join(COEFFICIENTS)}.")
    if stack.n_params != mlp.n_params or theta.shape != (mlp.n_params,):
        raise ShapeError(
            f"responses have {stack.n_params} parameters per source but the model has {mlp.n_params}; "
            "compress with the run the responses were simulated for."
        )
    X = torch.as_tensor(np.asarray(X) if not isinstance(X, Tensor) else X).to(theta.dtype)
    y = None if y is None else torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y).long()
    n = X.shape[0]
    if n_points is not None:
        if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
            raise ConfigError(f"the number of points must be a whole number ≥ 1, got {n_points!r}.")
        if n_points < n:
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + 11)
            idx = torch.randperm(n, generator=gen)[:n_points].sort().values
            X, y = X[idx], None if y is None else y[idx]
            n = n_points
    M = training_score_matrix(stack, mlp, theta, X, y, measure, target_class, memory_budget_mb)
    if normalize:
        M = M / M.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    info = {"measure": measure, "n_points": n, "normalize": bool(normalize)}
    return compress_from_scores(stack, M, rank, coefficients=coefficients, seed=seed, dtype=dtype, info=info)


def compress_from_scores(
    stack: Tangents,
    M: Tensor,
    rank: int,
    *,
    coefficients: str = "source",
    seed: int = 0,
    singular: tuple[Tensor, Tensor] | None = None,
    dtype: torch.dtype | None = None,
    info: dict | None = None,
) -> CompressedResponses:
    """The factorisation of :func:`compress_query_aware` from a given score matrix
    ``M [n, m]`` (rows: the points standing in for queries; columns: ``stack``'s sources).
    ``singular``: M's top right singular vectors and values ``(V [m, k], s [k])``, k ≥ rank,
    computed once when several ranks are wanted (:func:`top_right_singular`)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"rank must be a whole number ≥ 1 (`rank`), got {rank!r}.")
    if coefficients not in COEFFICIENTS:
        raise ConfigError(f"unknown coefficients {coefficients!r}; choose {' or '.join(COEFFICIENTS)}.")
    n, m = M.shape
    if m != len(stack):
        raise ShapeError(f"the score matrix has {m} columns but there are {len(stack)} sources.")
    r = min(rank, n, m, stack.n_params)
    V, s = singular if singular is not None else top_right_singular(M, r, seed)
    if V.shape[1] < r:
        raise ConfigError(f"{V.shape[1]} singular vectors were given for rank {r}; compute at least {r}.")
    V, s = V[:, :r].double(), s[:r].double()
    out_dtype = dtype or (torch.float64 if stack.dtype == torch.float64 else torch.float32)
    A = stack_t_times(stack, V, torch.float64)  # Δᵀ V_r as r rows
    q, R = torch.linalg.qr(A.flat().T, mode="reduced")  # [p, r], [r, r]
    Qs = like(A, q.T.contiguous())
    C = V @ R.T if coefficients == "source" else stack_times(stack, Qs)
    total = float((M.double() ** 2).sum())
    info = {
        "method": "query-aware",
        "coefficients": coefficients,
        "seed": seed,
        **(info or {}),
        # the fraction of ‖M‖² the rank keeps: how much of the training points' scores survive
        "captured": float((s**2).sum()) / total if total > 0 else 1.0,
    }
    return finish(Qs, C, out_dtype, info)
