"""Simulation of each source's parameter response Δ_j ∈ R^p (see ``shared/method.md``).

Interface: a simulator is fed the training run step by step (:meth:`step`, called by
:func:`attrcore.engine.train.train` with the step's :class:`~attrcore.engine.curvature.MLPCurvature`)
and returns ``Δ [m, p]`` from :meth:`finalize`. Implementations:

- :class:`FullTrajectory` — full horizon. One tangent per source, u_j = dθ_t/ds_j,
  carried through every step:  v ← μ v + H_t u + g_{j,t};  u ← u − η_t v.
  At the end u_j is the exact derivative of the final parameters.
- :class:`ShortTrajectory` — horizon K. Each injection g_{j,t} lives in a ring of K
  cohorts, is propagated through the K steps after it, then frozen: its pending momentum
  is flushed as if curvature were zero (u −= c_t v with c_t = Σ_{k≥1} η_{t+k} μ^k over the
  steps that remain) and added to Δ_j. K = 0 is the curvature-free sum −Σ_t (η_t + c_t) g_{j,t}.
- :func:`stationary_response` — after training: K Neumann steps
  Δ ← (I − α H_λ) Δ − α ḡ_j towards −H_λ⁻¹ ḡ_j.

All tangents active at a step go through one batched curvature product per layer, with
the tangents' SGD update fused into it (:meth:`MLPCurvature.sgd_step_`), in row chunks
sized to stay in cache and within the memory budget (:func:`propagate`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import ConfigError, DivergenceError
from .curvature import MLPCurvature, make_curvature, tangent_chunks
from .model import MLP
from .tangents import Tangents

# Rows per product are capped so that a chunk's intermediates stay in cache: on these
# machines memory bandwidth, not arithmetic, bounds the speed of a step.
CACHE_BYTES = 12 * 2**20


def chunk_rows(curv, T: int, budget_bytes: float) -> int:
    per_row = curv.hvp_bytes_per_tangent() if hasattr(curv, "hvp_bytes_per_tangent") else 1 << 20
    return max(8, min(T, int(min(budget_bytes, CACHE_BYTES) // per_row)))


def chunked_hvp(curv, U: Tangents, budget_bytes: float) -> Tangents:
    """H U for ``T`` tangents, in row chunks (see :data:`CACHE_BYTES`)."""
    T = len(U)
    step = chunk_rows(curv, T, budget_bytes)
    if step >= T:
        return curv.hvp(U)
    out = Tangents.empty(curv.mlp, T, U.dtype)
    for s in range(0, T, step):
        sl = slice(s, min(T, s + step))
        out.rows(sl).copy_(curv.hvp(U.rows(sl)))
    return out


def propagate(curv, U: Tangents, V: Tangents | None, lr: float, mu: float, budget_bytes: float) -> None:
    """One SGD step of the tangents, in place: v ← μ v + H u;  u ← u − η v.

    Chunk by chunk, so each chunk's product and update happen while it is in cache.
    """
    T = len(U)
    step = chunk_rows(curv, T, budget_bytes)
    fused = hasattr(curv, "sgd_step_")
    for s in range(0, T, step):
        sl = slice(s, min(T, s + step))
        Uc, Vc = U.rows(sl), None if V is None else V.rows(sl)
        if fused:
            curv.sgd_step_(Uc, Vc, lr, mu)
            continue
        HU = curv.hvp(Uc)
        if Vc is not None:
            Vc.mul_(mu).add_(HU)
            Uc.add_(Vc, alpha=-lr)
        else:
            Uc.add_(HU, alpha=-lr)


def flush_coefficients(lrs: Tensor, momentum: float) -> Tensor:
    """c_t = Σ_{k≥1} η_{t+k} μ^k over the remaining steps (float64 ``[T]``)."""
    c = torch.zeros_like(lrs, dtype=torch.float64)
    if momentum:
        for t in range(len(lrs) - 2, -1, -1):
            c[t] = momentum * (float(lrs[t + 1]) + c[t + 1])
    return c


def _membership(batch_sources: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct sources in the batch and the 0/1 membership matrix ``[S, B]``.

    Examples with source id −1 (no source: another shard's, see ``shard.py``) are left out.
    """
    keep = torch.nonzero(batch_sources >= 0).squeeze(1)
    uniq, inverse = torch.unique(batch_sources[keep], return_inverse=True)
    M = torch.zeros(len(uniq), len(batch_sources))
    M[inverse, keep] = 1.0
    return uniq, M


def _state_bytes(rows: int, mlp: MLP, dtype: torch.dtype, momentum: float) -> int:
    return rows * mlp.n_params * (torch.finfo(dtype).bits // 8) * (2 if momentum else 1)


class FullTrajectory:
    """Full-horizon trajectory response (exact derivative of the final parameters)."""

    def __init__(self, mlp: MLP, n_sources: int, lrs: Tensor, momentum: float, dtype: torch.dtype, budget_bytes: float):
        self.mlp, self.m, self.lrs, self.mu = mlp, n_sources, lrs, momentum
        self.budget = budget_bytes
        state = _state_bytes(n_sources, mlp, dtype, momentum)
        if state > budget_bytes:
            raise ConfigError(
                f"the full-horizon state needs {state / 2**20:.2f} MB ({n_sources} sources × "
                f"{mlp.n_params} parameters), more than the memory budget of {budget_bytes / 2**20:.2f} MB; "
                "raise the memory budget (`memory_budget_mb`), group the sources (`sources` class or a "
                "group column), or use a short horizon."
            )
        self.U = Tangents.zeros(mlp, n_sources, dtype)
        self.V = Tangents.zeros(mlp, n_sources, dtype) if momentum else None
        # rows are assigned in order of first injection, so the active rows are a prefix
        self.row_of = torch.full((n_sources,), -1, dtype=torch.long)
        self.source_of_row = torch.empty(n_sources, dtype=torch.long)
        self.n_active = 0

    def step(self, t: int, curv: MLPCurvature, batch_sources: Tensor) -> None:
        lr = float(self.lrs[t])
        n_old = self.n_active
        if n_old:
            old = slice(0, n_old)
            propagate(curv, self.U.rows(old), None if self.V is None else self.V.rows(old), lr, self.mu, self.budget)
        uniq, M = _membership(batch_sources)
        new = uniq[self.row_of[uniq] < 0]
        if len(new):
            rows = torch.arange(n_old, n_old + len(new))
            self.row_of[new] = rows
            self.source_of_row[rows] = new
            self.n_active = n_old + len(new)
        if not len(uniq):  # no source in this batch (a shard's run): nothing to inject
            return
        G = curv.source_grads(M)
        rows = self.row_of[uniq]
        if self.V is not None:
            self.V.index_add_(rows, G)
        self.U.index_add_(rows, G, alpha=-lr)

    def finalize(self) -> Tangents:
        out = Tangents.zeros(self.mlp, self.m, self.U.dtype)
        n = self.n_active
        out.index_copy_(self.source_of_row[:n], self.U.rows(slice(0, n)))
        return out

    def current(self) -> Tangents:
        """The responses of the parameters reached so far, dθ_t/dw ``[m, p]`` (a copy)."""
        return self.finalize()


class ShortTrajectory:
    """Trajectory response with horizon K (each injection propagated K steps, then frozen)."""

    def __init__(
        self,
        mlp: MLP,
        n_sources: int,
        lrs: Tensor,
        momentum: float,
        dtype: torch.dtype,
        budget_bytes: float,
        horizon: int,
        batch_size: int,
        sink=None,
    ):
        self.mlp, self.m, self.lrs, self.mu, self.K = mlp, n_sources, lrs, momentum, horizon
        self.budget = budget_bytes
        self.c = flush_coefficients(lrs, momentum)
        self.R = min(batch_size, n_sources)  # distinct sources per batch, at most
        ring = horizon * self.R
        state = _state_bytes(ring, mlp, dtype, momentum)
        if state > budget_bytes:
            raise ConfigError(
                f"horizon {horizon} keeps {ring} tangents alive ({state / 2**20:.2f} MB), more than the "
                f"memory budget of {budget_bytes / 2**20:.2f} MB; use a smaller horizon, `horizon` full, "
                "or raise the memory budget (`memory_budget_mb`)."
            )
        # where retired injections accumulate: the dense Δ, or a sketch of it (``sink``)
        self.Delta = Tangents.zeros(mlp, n_sources, dtype) if sink is None else sink
        self.U = Tangents.zeros(mlp, ring, dtype)
        self.V = Tangents.zeros(mlp, ring, dtype) if momentum else None
        self.src = torch.full((ring,), -1, dtype=torch.long)
        self.filled = 0  # cohorts written so far (the ring fills in order in the first K steps)

    def _retire(self, sl: slice, coef: float) -> None:
        keep = torch.nonzero(self.src[sl] >= 0).squeeze(1)
        if len(keep) == 0:
            return
        U = self.U.rows(sl).select(keep)
        if self.V is not None and coef:
            U.add_(self.V.rows(sl).select(keep), alpha=-coef)
        self.Delta.index_add_(self.src[sl][keep], U)
        self.src[sl] = -1

    def step(self, t: int, curv: MLPCurvature, batch_sources: Tensor) -> None:
        lr, K, R = float(self.lrs[t]), self.K, self.R
        uniq, M = _membership(batch_sources)
        G = curv.source_grads(M) if len(uniq) else Tangents.zeros(self.mlp, 0, self.U.dtype)  # S tangents
        if K == 0:
            self.Delta.index_add_(uniq, G, alpha=-(lr + float(self.c[t])))
            return
        live = slice(0, min(self.filled, K) * R)
        if live.stop:
            propagate(curv, self.U.rows(live), None if self.V is None else self.V.rows(live), lr, self.mu, self.budget)
        slot = slice((t % K) * R, (t % K + 1) * R)
        if self.filled >= K:  # the cohort born at t−K has now been carried through K steps
            self._retire(slot, float(self.c[t]))
        S = len(uniq)
        head = slice(slot.start, slot.start + S)
        self.U.rows(slot).zero_()
        self.U.rows(head).copy_(G, alpha=-lr)
        if self.V is not None:
            self.V.rows(slot).zero_()
            self.V.rows(head).copy_(G)
        self.src[head] = uniq
        self.filled += 1

    def finalize(self):
        self._retire(slice(0, len(self.U)), 0.0)
        return self.Delta if isinstance(self.Delta, Tangents) else self.Delta.finalize()

    def current(self) -> Tangents | None:
        """The responses accumulated so far ``[m, p]``: the retired injections plus the
        live ones as carried up to now (no pending momentum flushed). At K = 0 this is Δ
        itself, not a copy: read it before the next step. None when Δ goes into a sketch."""
        if not isinstance(self.Delta, Tangents):
            return None
        live = torch.nonzero(self.src >= 0).squeeze(1)
        if self.K == 0 or len(live) == 0:
            return self.Delta
        out = self.Delta.clone()
        out.index_add_(self.src[live], self.U.select(live))
        return out


def make_trajectory(horizon: int | None, total_steps: int, **kw):
    """Full horizon when ``horizon`` is None or covers the whole run, else short."""
    batch_size = kw.pop("batch_size")
    if horizon is None or horizon >= total_steps:
        return FullTrajectory(**kw)
    return ShortTrajectory(horizon=horizon, batch_size=batch_size, **kw)


def _data_curvatures(mlp, theta, X, y, sim, weight_decay, batch, normalizer):
    return [
        make_curvature(
            sim.backend,
            mlp,
            theta,
            X[s : s + batch],
            y[s : s + batch],
            weight_decay=weight_decay + sim.damping,
            curvature=sim.curvature,
            normalizer=normalizer,
        )
        for s in range(0, X.shape[0], batch)
    ]


def stationary_response(
    mlp: MLP,
    theta: Tensor,
    X: Tensor,
    y: Tensor,
    source_index: Tensor,
    n_sources: int,
    sim,
    weight_decay: float,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Tangents, float]:
    """K Neumann steps towards −H_λ⁻¹ ḡ_j at ``theta``; returns ``(Δ [m, p], α)``.

    H_λ = ∇²[(1/n) Σ_i ℓ_i] + (weight_decay + damping) I, from the whole training set or,
    with ``sim.curvature_batch_size``, from a fresh seeded mini-batch at every step.
    ḡ_j = (1/n) Σ_{i∈S_j} ∇ℓ_i (the same normalisation as the training loss).
    """
    n, dtype = X.shape[0], theta.dtype
    budget = sim.memory_budget_mb * 2**20
    data_batch = 512
    full = _data_curvatures(mlp, theta, X, y, sim, weight_decay, data_batch, float(n))

    # ḡ for every source: Σ over data chunks of the chunk's source gradients
    gbar = Tangents.zeros(mlp, n_sources, dtype)
    for ci, curv in enumerate(full):
        uniq, M = _membership(source_index[ci * data_batch : (ci + 1) * data_batch])
        if len(uniq):
            gbar.index_add_(uniq, curv.source_grads(M))

    gen = torch.Generator().manual_seed(seed)
    l2 = weight_decay + sim.damping

    def curvatures_for_step() -> list:
        if sim.curvature_batch_size is None or sim.curvature_batch_size >= n:
            return full
        idx = torch.randperm(n, generator=gen)[: sim.curvature_batch_size]
        return _data_curvatures(mlp, theta, X[idx], y[idx], sim, weight_decay, len(idx), float(len(idx)))

    def H(U: Tangents, curvs: list) -> Tangents:
        out = chunked_hvp(curvs[0], U, budget)
        for c in curvs[1:]:
            out.add_(chunked_hvp(c, U, budget))
        if len(curvs) > 1:  # every chunk added the L2 term; keep it once
            out.add_(U, alpha=-(len(curvs) - 1) * l2)
        return out

    alpha = sim.step_size
    if alpha is None:  # α = 1/λ_max(H_λ) by power iteration
        v = Tangents.from_flat(mlp, torch.randn(1, mlp.n_params, generator=gen, dtype=torch.float64).to(dtype))
        lam = 1.0
        for _ in range(30):
            v.mul_(1.0 / float(v.flat().norm()))
            hv = H(v, full)
            lam = float((hv.flat() * v.flat()).sum())
            v = hv
        alpha = 1.0 / (1.05 * max(abs(lam), 1e-12))

    Delta = Tangents.zeros(mlp, n_sources, dtype)
    K = int(sim.horizon)
    # With H ⪰ 0 every eigencomponent of the truncated Neumann iterate is bounded by
    # |ḡ|/λ, so ‖Δ‖ ≤ ‖ḡ‖/λ at every K; far beyond that the iteration is diverging along
    # a negative-curvature direction the damping does not cover (exact Hessian only).
    bound = float(gbar.flat().norm()) / l2 if l2 > 0 else float("inf")
    chunks = list(tangent_chunks(n_sources, 6 * mlp.n_params * theta.element_size(), budget / 2))
    for k in range(K):
        curvs = curvatures_for_step()
        for sl in chunks:
            D = Delta.rows(sl)
            D.add_(H(D, curvs), alpha=-alpha).add_(gbar.rows(sl), alpha=-alpha)
        check = (k + 1) % 10 == 0 or k + 1 == K
        if not Delta.isfinite() or (check and float(Delta.flat().norm()) > 10 * bound):
            raise DivergenceError(
                f"the stationary (Neumann) iteration diverged at step {k + 1}; the curvature has "
                "directions the damping does not cover: raise `damping`, use `curvature` gauss-newton, "
                "or set a smaller `step_size`."
            )
        if progress is not None:
            progress(k + 1, K)
    return Delta, alpha
