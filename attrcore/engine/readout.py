"""Forward-only readout: attribution scores τ(q, j) from simulated responses Δ_j.

Interface: :func:`score` ``(mlp, theta, responses, X_q, y_q) -> [Q, m]``. Implementations
(``readout=``):

- ``"jvp"`` (default): τ(q, j) = ⟨∇_θ f(z_q; θ̂), Δ_j⟩ evaluated in *forward mode*: each
  Δ_j is pushed forward through the network as a tangent of the activations, layer by
  layer, and contracted with ∂f/∂logits at the end. Batched over sources and queries:
  the first layer's tangents for all sources and queries are one GEMM
  ``[m·d_1, d_0] @ [d_0, Q]``.
- ``"cd"``: central difference [f(θ̂ + εΔ_j) − f(θ̂ − εΔ_j)] / 2ε with two perturbed
  forward passes per source, batched the same way; ε is scaled per source to
  ``eps · ‖θ̂‖ / ‖Δ_j‖``.

``backend="func"`` computes the same with ``torch.func.jvp`` under ``vmap`` (the slow
reference the tests hold the fast path to). No path runs reverse-mode autograd.

:func:`self_scores` ``(mlp, theta, responses, X, y) -> [n]`` is the *diagonal*: every
training point read out against its own source only, τ(i, s_i) = ⟨∇f(z_i; θ̂), Δ_{s_i}⟩,
one forward-mode JVP per point with its own tangent (O(n·p), never the n × m matrix);
the self-influence that ranks suspicious labels (:mod:`attrcore.mislabel`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ShapeError
from .measures import measure as measure_fn
from .measures import measure_dlogits
from .model import MLP, act
from .tangents import Tangents

READOUTS = ("jvp", "cd")
# Sources per chunk are capped so that a chunk's [S, d, Q] tangents stay in cache.
CACHE_BYTES = 4 * 2**20


def _sources_per_chunk(mlp: MLP, Q: int, itemsize: int, budget_bytes: float, factor: int) -> int:
    per_source = factor * sum(mlp.config.sizes[1:]) * Q * itemsize
    return max(1, int(min(budget_bytes, CACHE_BYTES) // max(1, per_source)))


def _validate(mlp: MLP, theta: Tensor, responses, X: Tensor, readout: str) -> None:
    if readout not in READOUTS:
        raise ConfigError(f"unknown readout {readout!r}; choose {' or '.join(READOUTS)}.")
    mlp.check_input(X)
    p = responses.shape[1] if isinstance(responses, Tensor) else responses.n_params
    if theta.shape != (mlp.n_params,) or p != mlp.n_params:
        raise ShapeError(
            f"responses have {p} parameters per source but the model has {mlp.n_params}; "
            "score with the run the responses were simulated for."
        )


def score(
    mlp: MLP,
    theta: Tensor,
    responses: Tensor | Tangents,
    X: Tensor,
    y: Tensor | None = None,
    measure: str = "margin",
    readout: str = "jvp",
    target_class: int | None = None,
    eps: float | None = None,
    backend: str = "mlp",
    memory_budget_mb: float = 1024.0,
    out_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Scores ``[Q, m]`` (``out_dtype``, float32 by default) for queries ``X [Q, d]`` (labels ``y [Q]``).

    ``responses`` is ``[m, p]`` in the model's row layout, a :class:`Tangents` stack
    (pass the stack when scoring repeatedly: it saves a copy per call), or
    :class:`~attrcore.compress.CompressedResponses` ``Δ ≈ C Qᵀ``: then the r directional
    derivatives ⟨∇f(z_q), Q_k⟩ are read out (r JVPs per query) and multiplied by ``Cᵀ``.
    """
    from .compress import CompressedResponses

    if isinstance(responses, CompressedResponses):
        work = torch.float64 if theta.dtype == torch.float64 else torch.float32
        J = score(mlp, theta, responses.Q, X, y, measure, readout, target_class, eps, backend,
                  memory_budget_mb, out_dtype=work)  # [Q, r]
        return (J @ responses.C.to(work).T).to(out_dtype)
    X = torch.as_tensor(X).to(theta.dtype)
    y = None if y is None else torch.as_tensor(y).long()
    _validate(mlp, theta, responses, X, readout)
    if y is not None and y.shape != (X.shape[0],):
        raise ShapeError(f"{X.shape[0]} queries but {y.shape[0]} labels; pass one label per query.")
    if backend == "func":
        flat = responses.flat() if isinstance(responses, Tangents) else responses
        return _score_func(mlp, theta, flat.to(theta.dtype), X, y, measure, readout, target_class, eps).to(out_dtype)
    stack = responses if isinstance(responses, Tangents) else Tangents.from_flat(mlp, responses)
    budget = memory_budget_mb * 2**20
    if readout == "jvp":
        return _score_jvp(mlp, theta, stack, X, y, measure, target_class, budget, out_dtype)
    return _score_cd(mlp, theta, stack, X, y, measure, target_class, eps, budget, out_dtype)


def self_scores(
    mlp: MLP,
    theta: Tensor,
    responses: Tensor | Tangents,
    X: Tensor,
    y: Tensor | None = None,
    measure: str = "loss",
    target_class: int | None = None,
    source_index=None,
    memory_budget_mb: float = 1024.0,
) -> Tensor:
    """Self-influence ``[n]`` (float32): τ(i, s_i) = ⟨∇_θ f(z_i; θ̂), Δ_{s_i}⟩ for every
    training point ``X [n, d]`` (labels ``y [n]``) read out against its *own* source.

    A diagonal, never the ``[n, m]`` matrix: each point is pushed forward with its own
    tangent Δ_{s_i} (one JVP per point, batched over points), O(n·p) work in all.
    ``source_index [n]`` maps point i to its source s_i; by default point i is source i
    (per-example sources, m = n), and the result is the diagonal of :func:`score`. With
    grouped sources τ(i, g_i) is the first-order effect of up-weighting i's whole group on
    i's own measurement (the ``[n, m]`` scores gathered at each point's group).

    ``responses`` is ``[m, p]``, a :class:`Tangents` stack, or
    :class:`~attrcore.compress.CompressedResponses` ``Δ ≈ C Qᵀ``: then τ(i, s_i) =
    Σ_k C[s_i, k] ⟨∇f(z_i), Q_k⟩ (r JVPs per point). Sign: with ``measure="loss"``
    up-weighting a point lowers its own loss, so τ < 0 and −τ is the usual self-influence.
    """
    from .compress import CompressedResponses

    if isinstance(responses, CompressedResponses):
        J = score(
            mlp,
            theta,
            responses.Q,
            X,
            y,
            measure,
            "jvp",
            target_class,
            memory_budget_mb=memory_budget_mb,
            out_dtype=torch.float64 if theta.dtype == torch.float64 else torch.float32,
        )  # [n, r]
        m = responses.C.shape[0]
        rows = _self_rows(source_index, J.shape[0], m)
        C = responses.C.to(J.dtype)
        return (J * (C if rows is None else C[rows])).sum(1).float()
    X = torch.as_tensor(X).to(theta.dtype)
    y = None if y is None else torch.as_tensor(y).long()
    _validate(mlp, theta, responses, X, "jvp")
    n = X.shape[0]
    if y is not None and y.shape != (n,):
        raise ShapeError(f"{n} points but {y.shape[0]} labels; pass one label per point.")
    stack = responses if isinstance(responses, Tangents) else Tangents.from_flat(mlp, responses)
    m = len(stack)
    rows = _self_rows(source_index, n, m)
    dtype = theta.dtype
    cache = mlp.forward_cache(theta, X)
    g = measure_dlogits(cache.logits, y, measure, target_class)  # ∂f_i/∂logits_i, [n, C]
    layers = mlp.unflatten(theta)
    L = mlp.n_layers
    # a chunk of points holds its own tangents, [S, p]: size it by the memory budget
    per_point = 2 * mlp.n_params * theta.element_size()
    step = max(1, min(n, int(memory_budget_mb * 2**20 // per_point)))
    out = torch.empty(n, dtype=torch.float32)
    for s in range(0, n, step):
        sl = slice(s, min(n, s + step))
        own = sl if rows is None else rows[sl]
        ra = None  # tangent of the current layer's input, [S, d_in]
        for layer, (W, _b) in enumerate(layers):
            dW = stack.W[layer][own].to(dtype)  # [S, d_out, d_in], point i's own Δ
            rz = torch.bmm(dW, cache.acts[layer][sl].unsqueeze(2)).squeeze(2)
            rz += stack.b[layer][own].to(dtype)
            if ra is not None:
                rz += ra @ W.T
            ra = cache.d1[layer][sl] * rz if layer < L - 1 else rz
        out[sl] = (ra * g[sl]).sum(1)
    return out


def _self_rows(source_index, n: int, m: int) -> Tensor | None:
    """Each point's source id ``[n]`` (None: point i is source i)."""
    if source_index is None:
        if m != n:
            raise ShapeError(
                f"the responses hold {m} sources but there are {n} points; pass source_index "
                "(each point's source) to read each point against its own source."
            )
        return None
    idx = torch.as_tensor(np.asarray(source_index)).long()
    if idx.shape != (n,):
        raise ShapeError(f"source_index has shape {tuple(idx.shape)}; it needs one source id per point ({n}).")
    if n and (int(idx.min()) < 0 or int(idx.max()) >= m):
        raise ShapeError(f"source_index refers to sources outside 0..{m - 1}; use the run's own source index.")
    return idx


def _score_jvp(mlp, theta, stack: Tangents, X, y, measure, target_class, budget, out_dtype=torch.float32) -> Tensor:
    dtype = theta.dtype
    cache = mlp.forward_cache(theta, X)
    g_T = measure_dlogits(cache.logits, y, measure, target_class).T.contiguous()  # [C, Q]
    acts_T = [a.T.contiguous() for a in cache.acts]  # [d, Q]
    d1_T = [d.T.contiguous() for d in cache.d1]
    layers = mlp.unflatten(theta)
    m, Q, L = len(stack), X.shape[0], mlp.n_layers
    out = torch.empty(m, Q, dtype=out_dtype)
    step = _sources_per_chunk(mlp, Q, theta.element_size(), budget, 2)
    for s in range(0, m, step):
        sl = slice(s, min(m, s + step))
        S = sl.stop - sl.start
        ra = None  # tangent of the current layer's input, [S, d_in, Q]
        for layer, (W, _b) in enumerate(layers):
            o, i = W.shape
            dW = stack.W[layer][sl].to(dtype).reshape(S * o, i)
            bias = stack.b[layer][sl].to(dtype).reshape(S * o, 1)
            rz = torch.addmm(bias, dW, acts_T[layer]).view(S, o, Q)  # the bias in the GEMM's epilogue
            if ra is not None:
                rz += torch.matmul(W, ra)
            ra = rz.mul_(d1_T[layer]) if layer < L - 1 else rz  # in place: one memory pass fewer
        # df = Σ_c ∂f/∂z_c · dz_c  (the last step of the JVP through f)
        out[sl] = (ra * g_T).sum(1)
    return out.T.contiguous()


def _score_cd(mlp, theta, stack: Tangents, X, y, measure, target_class, eps, budget, out_dtype=torch.float32) -> Tensor:
    dtype = theta.dtype
    if eps is None:
        eps = 1e-3 if dtype == torch.float32 else 1e-6
    layers = mlp.unflatten(theta)
    acts0_T = X.T.contiguous()
    z1 = torch.addmm(layers[0][1], X, layers[0][0].T).T.contiguous()  # [d_1, Q]
    m, Q, L = len(stack), X.shape[0], mlp.n_layers
    theta_norm = float(theta.norm())
    out = torch.empty(m, Q, dtype=out_dtype)
    step = _sources_per_chunk(mlp, Q, theta.element_size(), budget, 4)
    for s in range(0, m, step):
        sl = slice(s, min(m, s + step))
        S = sl.stop - sl.start
        chunk = Tangents([w[sl].to(dtype) for w in stack.W], [b[sl].to(dtype) for b in stack.b])
        norms = chunk.flat().norm(dim=1).clamp_min(1e-30)
        e = (eps * theta_norm / norms).view(S, 1, 1)  # per-source ε
        o, i = layers[0][0].shape
        dz = torch.mm(chunk.W[0].reshape(S * o, i), acts0_T).view(S, o, Q) + chunk.b[0].unsqueeze(2)
        zs = [z1 + e * dz, z1 - e * dz]  # first layer is linear in θ: exact
        for sign_idx in range(2):
            sgn = 1.0 if sign_idx == 0 else -1.0
            z = zs[sign_idx]
            for layer in range(1, L):
                a = act(mlp.activation, z)
                W, b = layers[layer]
                z = torch.matmul(W, a) + b.view(1, -1, 1)
                z = z + sgn * e * (torch.bmm(chunk.W[layer], a) + chunk.b[layer].unsqueeze(2))
            zs[sign_idx] = z
        # zs: logits [S, C, Q] at θ ± εΔ
        f = [measure_fn(z.transpose(1, 2), y, measure, target_class) for z in zs]
        out[sl] = ((f[0] - f[1]) / (2 * e.view(S, 1))).to(out_dtype)
    return out.T.contiguous()


def _score_func(mlp, theta, flat: Tensor, X, y, measure, readout, target_class, eps) -> Tensor:
    """Reference: ``torch.func.jvp`` (or two perturbed forwards) under ``vmap``."""

    def f(th: Tensor) -> Tensor:
        return measure_fn(mlp.forward(th, X), y, measure, target_class)

    if readout == "jvp":
        scores = torch.func.vmap(lambda d: torch.func.jvp(f, (theta,), (d,))[1])(flat)
    else:
        if eps is None:
            eps = 1e-3 if theta.dtype == torch.float32 else 1e-6
        e = eps * theta.norm() / flat.norm(dim=1).clamp_min(1e-30)
        scores = torch.stack([(f(theta + ej * d) - f(theta - ej * d)) / (2 * ej) for d, ej in zip(flat, e)])
    return scores.T.contiguous()
