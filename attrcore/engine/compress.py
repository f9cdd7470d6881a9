"""Compressed responses: every source's response as a rank-r factorisation Δ ≈ C Qᵀ.

``Δ [m, p]`` (one response per source) is replaced by ``Q [p, r]`` with orthonormal
columns (stored layer by layer as an r-row :class:`Tangents`) and ``C [m, r]``. Storage is
r·(p + m) numbers instead of m·p; a query costs r forward-mode JVPs along Q's columns and
one ``[Q, r] @ [r, m]`` product instead of m JVPs.

Producers (see ``shared/method.md``, "Compressed responses"):

- :func:`compress_dense` — a dense stack in memory: randomized range finder with power
  iterations (Halko, Martinsson & Tropp 2011), C = Δ Q exactly.
- :class:`StreamingSketch` — a one-pass sketch (Tropp, Yurtsever, Udell & Cevher 2017)
  for dense responses produced as a stream of row updates that never fit in memory.
- :class:`SketchedTrajectory` — the full-horizon trajectory response without ever forming
  Δ: a *forward sketch* during training (r tangents, tangent k injected with
  Σ_j Ω_jk g_{j,t}) gives Y = Δᵀ Ω; an *adjoint pass* backward over the recorded run
  gives C = Δ Q exactly; q power iterations repeat both. Cost ∝ r, independent of m.
- :func:`stationary_sketch` — the stationary responses with r Neumann tangents: the
  Neumann map is symmetric, so the same forward sketch / projection pair needs no adjoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import Horizon
from ..errors import ConfigError, DivergenceError
from .simulate import ShortTrajectory, _data_curvatures, chunk_rows, chunked_hvp, propagate
from .tangents import Tangents

__all__ = [
    "CompressedResponses",
    "Recording",
    "SketchedTrajectory",
    "StreamingSketch",
    "adjoint_coefficients",
    "compress_dense",
    "forward_sketch",
    "full_horizon_memory",
    "make_compressed_trajectory",
    "rank_for",
    "resolve_rank",
    "stationary_sketch",
]

# Ω's generator is seeded from the run's seed and this salt, so the sketch is reproducible.
SKETCH_SALT = 7_368_787

# The automatic rank: compress with this rank when it is clearly cheaper than dense.
AUTO_RANK = 256


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.3g} MB"


def sketch_generator(seed: int, purpose: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + SKETCH_SALT + 7919 * purpose)


def gaussian(shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


# ---- the representation ---------------------------------------------------------------


@dataclass
class CompressedResponses:
    """Δ ≈ C Qᵀ: ``Q`` r orthonormal parameter-space directions, ``C [m, r]`` coefficients."""

    Q: Tangents
    C: Tensor
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.C.shape[0]

    @property
    def rank(self) -> int:
        return self.C.shape[1]

    @property
    def n_params(self) -> int:
        return self.Q.n_params

    @property
    def dtype(self) -> torch.dtype:
        return self.Q.dtype

    def nbytes(self) -> int:
        return self.Q.nbytes() + self.C.numel() * self.C.element_size()

    def bytes_per_source(self) -> float:
        return self.nbytes() / max(1, len(self))

    def dense(self, dtype: torch.dtype | None = None) -> Tensor:
        """The reconstructed ``[m, p]`` (for tests and small runs)."""
        dt = dtype or self.Q.dtype
        return self.C.to(dt) @ self.Q.flat().to(dt)

    def truncate(self, rank: int) -> CompressedResponses:
        """The first ``rank`` directions (the best rank-k part: columns are in SVD order)."""
        k = max(1, min(int(rank), self.rank))
        return CompressedResponses(self.Q.rows(slice(0, k)).clone(), self.C[:, :k].clone(), dict(self.info, rank=k))

    def to(self, dtype: torch.dtype) -> CompressedResponses:
        return CompressedResponses(self.Q.to(dtype), self.C.to(dtype), dict(self.info))

    def isfinite(self) -> bool:
        return self.Q.isfinite() and bool(torch.isfinite(self.C).all())

    # ---- persistence (plain tensors, safetensors-friendly) ------------------------------
    def tensors(self, prefix: str = "compressed") -> dict[str, Tensor]:
        out = {f"{prefix}.C": self.C.contiguous()}
        for i, (W, b) in enumerate(zip(self.Q.W, self.Q.b)):
            out[f"{prefix}.Q.W{i}"] = W.contiguous()
            out[f"{prefix}.Q.b{i}"] = b.contiguous()
        return out

    @classmethod
    def from_tensors(
        cls, t, n_layers: int, info: dict | None = None, prefix: str = "compressed"
    ) -> CompressedResponses:
        Q = Tangents([t[f"{prefix}.Q.W{i}"] for i in range(n_layers)], [t[f"{prefix}.Q.b{i}"] for i in range(n_layers)])
        return cls(Q, t[f"{prefix}.C"], dict(info or {}))

    @staticmethod
    def stored_in(t) -> bool:
        return "compressed.C" in t


# ---- the rank rule ----------------------------------------------------------------------


def resolve_rank(rank: int | str | None, m: int, p: int, *, finite_horizon: bool = False) -> tuple[int | None, str]:
    """The rank a run uses (None = dense) and why, in words.

    ``"auto"`` compresses with r = :data:`AUTO_RANK` (256) where that is clearly cheaper:
    m ≥ 4r (so the full-horizon forward sketch, adjoint and one power iteration, ~4r
    tangents in all, cost no more than the m dense tangents) and m·p ≥ 8·r·(p + m) (storage
    and per-query work cut at least 8-fold). Below that dense responses are exact at a
    modest cost (digits-mlp: m·p is 4.9× the rank-256 factors, so it stays dense;
    mnist1d-mlp: 15×, compressed). ``finite_horizon`` (a trajectory run with a finite K)
    keeps ``"auto"`` dense: short-horizon responses are nearly full-rank across sources
    (benchmarks/compress-mnist1d-mlp.md: K = 4, rank 256 LDS 0.114 vs dense 0.188; even
    query-aware, benchmarks/query-compress-mnist1d-mlp-k4-ekfac.md: EK-FAC K = 4, r = 384
    0.257 vs dense 0.300), so compressing them by default costs quality. An explicit rank is
    capped at p.
    """
    if rank is None:
        return None, "dense (rank not set)"
    if rank == "auto" and finite_horizon:
        return None, (
            "dense (auto: a finite-horizon trajectory's responses are nearly full-rank, so a "
            "low-rank factorisation loses attribution quality; pass a rank to compress anyway)"
        )
    if rank == "auto":
        r = AUTO_RANK
        if m >= 4 * r and m * p >= 8 * r * (p + m):
            return r, (
                f"rank {r} (auto: {m} sources × {p} parameters is {m * p / (r * (p + m)):.1f}× the rank-{r} factors)"
            )
        return None, (
            f"dense (auto: {m} sources × {p} parameters is only "
            f"{m * p / (AUTO_RANK * (p + m)):.1f}× the rank-{AUTO_RANK} factors; "
            f"compression starts at 8× and m ≥ {4 * AUTO_RANK})"
        )
    r = int(rank)
    r_eff = min(r, p)
    return r_eff, f"rank {r_eff}" + ("" if r_eff == r else f" (rank {r} capped at p = {p})")


def rank_for(sim, m: int, p: int) -> tuple[int | None, str]:
    """:func:`resolve_rank` for a simulation (a ``SimulationConfig`` or its stored dict)."""
    get = sim.get if isinstance(sim, dict) else lambda k, d=None: getattr(sim, k, d)
    horizon = get("horizon")
    finite = get("scheme", "trajectory") == "trajectory" and not Horizon.parse(horizon).full
    rank, reason = resolve_rank(get("rank"), m, p, finite_horizon=finite)
    if rank is not None and get("compression", "svd") == "query-aware":
        reason += ", query-aware (dense responses, then the best rank for the training points' gradients)"
    return rank, reason


# ---- helpers on stacks ------------------------------------------------------------------


def like(template: Tangents, flat: Tensor) -> Tangents:
    """``flat [r, p]`` split into blocks shaped like ``template``'s (rows may differ)."""
    r = flat.shape[0]
    blocks, off = [], 0
    for blk in template.blocks():
        shape = blk.shape[1:]
        n = math.prod(shape)
        blocks.append(flat[:, off : off + n].reshape(r, *shape).contiguous())
        off += n
    return Tangents(blocks[0::2], blocks[1::2])


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _row_chunks(m: int, bytes_per_row: int, budget: float = 64 * 2**20) -> Iterator[slice]:
    step = max(1, int(budget // max(1, bytes_per_row)))
    for s in range(0, m, step):
        yield slice(s, min(m, s + step))


def stack_t_times(stack: Tangents, Om: Tensor, out_dtype: torch.dtype) -> Tangents:
    """Δᵀ Ω as an r-row stack: row k = Σ_j Ω_jk Δ_j (``Om [m, r]``)."""
    m, r = len(stack), Om.shape[1]
    wd = _work_dtype(stack.dtype)
    Om = Om.to(wd)
    outs = []
    for blk in stack.blocks():
        flat = blk.reshape(m, -1)
        acc = torch.zeros(r, flat.shape[1], dtype=wd)
        for sl in _row_chunks(m, flat.shape[1] * 8):
            acc.addmm_(Om[sl].T, flat[sl].to(wd))
        outs.append(acc.view(r, *blk.shape[1:]).to(out_dtype))
    return Tangents(outs[0::2], outs[1::2])


def stack_times(stack: Tangents, Qs: Tangents) -> Tensor:
    """Δ Q as ``[m, r]`` (float64), block by block."""
    m, r = len(stack), len(Qs)
    wd = _work_dtype(stack.dtype)
    out = torch.zeros(m, r, dtype=torch.float64)
    for blk, qb in zip(stack.blocks(), Qs.blocks()):
        flat = blk.reshape(m, -1)
        qf = qb.reshape(r, -1).to(wd)
        for sl in _row_chunks(m, flat.shape[1] * 8):
            out[sl] += (flat[sl].to(wd) @ qf.T).double()
    return out


def orthonormal(Y: Tangents) -> Tangents:
    """Q with orthonormal rows (as flat vectors) spanning ``Y``'s rows (float64 QR)."""
    flat = Y.flat().double()
    q, _ = torch.linalg.qr(flat.T, mode="reduced")  # [p, r]
    return like(Y, q.T.contiguous())


def svd_order(Qs: Tangents, C: Tensor) -> tuple[Tangents, Tensor, Tensor]:
    """Rotate (Q, C) so that C's columns are orthogonal with decreasing norms; C Qᵀ unchanged.

    C = U S Vᵀ → C' = U S = C V, Q' = Q V. Returns ``(Q', C', S)``.
    """
    C64 = C.double()
    _, S, Vh = torch.linalg.svd(C64, full_matrices=False)
    V = Vh.T  # [r, r]
    Cn = C64 @ V
    Qn = like(Qs, (V.T @ Qs.flat().double()).contiguous())
    return Qn, Cn, S


def finish(Qs: Tangents, C: Tensor, dtype: torch.dtype, info: dict) -> CompressedResponses:
    Qn, Cn, S = svd_order(Qs, C)
    return CompressedResponses(Qn.to(dtype), Cn.to(dtype), dict(info, rank=len(Qn)))


# ---- dense → compressed -----------------------------------------------------------------


def compress_dense(
    responses: Tensor | Tangents,
    rank: int,
    power_iterations: int = 1,
    seed: int = 0,
    *,
    mlp=None,
    dtype: torch.dtype | None = None,
) -> CompressedResponses:
    """Randomized rank-``rank`` factorisation of dense responses: ``Δ ≈ C Qᵀ``.

    ``responses`` is ``[m, p]`` in the model's row layout (pass ``mlp`` so Q can be stored
    layer by layer) or a :class:`Tangents` stack. Range finder: Y = Δᵀ Ω with Ω [m, r]
    Gaussian from ``seed``; ``power_iterations`` times Y ← Δᵀ (Δ Q); Q = orth(Y);
    C = Δ Q (exact projection). Columns come out in SVD order, so
    :meth:`CompressedResponses.truncate` keeps the best lower rank. With rank ≥ m,
    C Qᵀ = Δ to rounding. ``dtype`` of the result defaults to the responses' (at least float32).
    """
    if isinstance(responses, Tangents):
        stack = responses
    else:
        if mlp is None:
            raise ConfigError(
                "compress_dense needs the model (mlp=...) to lay out a flat [m, p] responses "
                "matrix per layer; pass mlp, or pass the responses as a Tangents stack."
            )
        stack = Tangents.from_flat(mlp, torch.as_tensor(responses))
    if not (isinstance(rank, int) and rank >= 1):
        raise ConfigError(f"rank must be a whole number ≥ 1, got {rank!r}.")
    if not (isinstance(power_iterations, int) and power_iterations >= 0):
        raise ConfigError(f"power iterations must be a whole number ≥ 0, got {power_iterations!r}.")
    m, p = len(stack), stack.n_params
    r = min(rank, p)
    out_dtype = dtype or _work_dtype(stack.dtype)
    Om = gaussian((m, r), sketch_generator(seed), torch.float64)
    Qs = orthonormal(stack_t_times(stack, Om, torch.float64))
    for _ in range(power_iterations):
        C = stack_times(stack, Qs)
        Qs = orthonormal(stack_t_times(stack, C, torch.float64))
    C = stack_times(stack, Qs)
    info = {"method": "randomized-svd", "power_iterations": power_iterations, "seed": seed}
    return finish(Qs, C, out_dtype, info)


class StreamingSketch:
    """One-pass sketch of a dense Δ [m, p] that arrives as row updates (Tropp et al. 2017).

    Keeps Y = Δᵀ Ω [p, k] (range sketch, Ω [m, k]) and W = Ψ Δᵀ [l, m] (co-range sketch,
    Ψ [l, p]), both updated by :meth:`index_add_` exactly like a dense stack would be. At the
    end Q = orth(Y), X = (Ψ Q)⁺ W [k, m], Δᵀ ≈ Q X; the rank-``rank`` part is kept
    (k = 2·rank, l = 2k + 1 as the paper recommends for a fixed budget).
    """

    def __init__(self, template: Tangents, n_sources: int, rank: int, seed: int, dtype: torch.dtype):
        self.m, self.rank = n_sources, rank
        p = template.n_params
        self.k = min(2 * rank, p, n_sources)
        self.l = min(2 * self.k + 1, p)
        gen = sketch_generator(seed, purpose=1)
        self.dtype = dtype
        self.Omega = gaussian((n_sources, self.k), gen, dtype)
        self.Psi = like(template, gaussian((self.l, p), gen, dtype))
        self.Y = like(template, torch.zeros(self.k, p, dtype=dtype))
        self.W = torch.zeros(self.l, n_sources, dtype=dtype)

    @staticmethod
    def nbytes_for(p: int, m: int, rank: int, itemsize: int) -> int:
        k = min(2 * rank, p, m)
        l_ = min(2 * k + 1, p)
        return (m * k + l_ * p + k * p + l_ * m) * itemsize

    def index_add_(self, idx: Tensor, other: Tangents, alpha: float = 1.0) -> StreamingSketch:
        """As if ``Δ[idx[i]] += alpha · other[i]`` (repeated indices accumulate)."""
        R = len(other)
        Om = self.Omega[idx].to(other.dtype)  # [R, k]
        psi_u = torch.zeros(self.l, R, dtype=other.dtype)
        for y, psi, u in zip(self.Y.blocks(), self.Psi.blocks(), other.blocks()):
            uf = u.reshape(R, -1)
            y.view(self.k, -1).addmm_(Om.T, uf, alpha=alpha)
            psi_u.addmm_(psi.view(self.l, -1), uf.T)
        self.W.index_add_(1, idx, psi_u, alpha=alpha)
        return self

    def finalize(self) -> CompressedResponses:
        Qs = orthonormal(self.Y)  # [k rows]
        PQ = self.Psi.flat().double() @ Qs.flat().double().T  # [l, k]
        X = torch.linalg.lstsq(PQ, self.W.double()).solution  # [k, m]
        Qn, Cn, _ = svd_order(Qs, X.T.contiguous())
        r = min(self.rank, len(Qn))
        info = {"method": "one-pass-sketch", "sketch_size": self.k, "corange_size": self.l}
        return CompressedResponses(
            Qn.rows(slice(0, r)).to(self.dtype).clone(), Cn[:, :r].to(self.dtype).contiguous(), dict(info, rank=r)
        )


# ---- full horizon: forward sketch + adjoint over the recorded run -------------------------


def example_grads(curv) -> list[Tensor] | None:
    """Per-example ∂(∇L)/∂s_i per parameter block, each ``[B, block size]`` (None: no fast path).

    δ already carries the example's weight and 1/|B|, so Σ_{i∈S_j} of these is g_{j,t}.
    Materialised once per step (B·p numbers), they turn both the sketch's injections and the
    adjoint's inner products into one well-shaped GEMM per block.
    """
    if not hasattr(curv, "deltas"):
        return None
    cached = getattr(curv, "_example_grads", None)
    if cached is not None:
        return cached
    out = []
    for layer, d in enumerate(curv.deltas):
        a = curv.cache.acts[layer]
        B = d.shape[0]
        out.append((d.unsqueeze(2) * a.unsqueeze(1)).reshape(B, -1))
        out.append(d)
    curv._example_grads = out
    return out


def injections(curv, weights: Tensor, template: Tangents) -> Tangents:
    """Σ_i weights[k, i] ∂(∇L)/∂s_i for k = 1..r (``weights [r, B]``): r tangents."""
    G = example_grads(curv)
    if G is None:
        return curv.source_grads(weights)
    r = weights.shape[0]
    blocks = [torch.mm(weights, g).view(r, *blk.shape[1:]) for g, blk in zip(G, template.blocks())]
    return Tangents(blocks[0::2], blocks[1::2])


def example_inner_products(curv, V: Tangents) -> Tensor:
    """e[i, k] = ⟨V_k, ∂(∇L)/∂s_i⟩ for every example i of the batch: ``[B, r]``.

    Per layer ⟨V_k, δ_i a_iᵀ⟩ = δ_iᵀ V_k a_i; Σ_{i∈S_j} e[i] = ⟨V, g_{j,t}⟩.
    """
    r = len(V)
    G = example_grads(curv)
    if G is None:  # reference backend: through its per-example gradients
        B = curv.X.shape[0]
        Gf = curv.source_grads(torch.eye(B, dtype=curv.theta.dtype))
        return Gf.flat() @ V.flat().T
    e = None
    for g, v in zip(G, V.blocks()):
        prod = torch.mm(g, v.reshape(r, -1).T)
        e = prod if e is None else e.add_(prod)
    return e


class Recording:
    """The training run's parameters θ_t, kept (or checkpointed) for replays.

    ``replay`` is the run's :class:`~attrcore.train.Replay` (batches, learning rates and the
    exact training step). Within ``budget_bytes`` every θ_t is kept; otherwise (θ, velocity)
    is checkpointed every ``spacing`` steps and segments are replayed when needed, with
    ``spacing`` chosen to minimise the memory (≈ √T checkpoints).
    """

    def __init__(self, replay, budget_bytes: float):
        self.replay = replay
        self.T = replay.total_steps
        p, isz = replay.mlp.n_params, replay.itemsize
        per_ck = p * isz * (2 if replay.momentum else 1)
        if self.T * p * isz <= budget_bytes:
            self.spacing = 1
            self.mode = "all"
            self.nbytes = self.T * p * isz
        else:
            mem, s = min((math.ceil(self.T / s) * per_ck + s * p * isz, s) for s in range(2, self.T + 1))
            if mem > budget_bytes:
                raise ConfigError(
                    f"replaying the run for the adjoint pass needs at least {_mb(mem)} "
                    f"({math.ceil(self.T / s)} checkpoints and a {s}-step segment of {p} parameters), "
                    f"more than the {_mb(budget_bytes)} left in the memory budget; raise "
                    "the memory budget or lower the rank."
                )
            self.mode, self.spacing, self.nbytes = "checkpoints", s, mem
        self.thetas: dict[int, Tensor] = {}
        self.velocities: dict[int, Tensor] = {}

    @staticmethod
    def min_bytes(total_steps: int, p: int, itemsize: int, momentum: bool) -> int:
        per_ck = p * itemsize * (2 if momentum else 1)
        every = total_steps * p * itemsize
        return min(
            [every] + [math.ceil(total_steps / s) * per_ck + s * p * itemsize for s in range(2, total_steps + 1)]
        )

    def record(self, t: int, theta: Tensor, velocity: Tensor | None) -> None:
        """Called by the training loop with θ_t (and v_t) before step t."""
        if self.mode == "all":
            self.thetas[t] = theta
        elif t % self.spacing == 0:
            self.thetas[t] = theta.clone()
            self.velocities[t] = None if velocity is None else velocity.clone()

    def forward(self) -> Iterator[tuple[int, Tensor]]:
        """(t, θ_t) for t = 0 … T−1."""
        if self.mode == "all":
            for t in range(self.T):
                yield t, self.thetas[t]
            return
        theta, vel = self.thetas[0], self.velocities[0]
        vel = None if vel is None else vel.clone()
        for t in range(self.T):
            if t % self.spacing == 0:
                theta = self.thetas[t]
                vel = None if self.velocities[t] is None else self.velocities[t].clone()
            yield t, theta
            theta, vel = self.replay.advance(t, theta, vel)

    def backward(self) -> Iterator[tuple[int, Tensor]]:
        """(t, θ_t) for t = T−1 … 0 (segments replayed from checkpoints)."""
        if self.mode == "all":
            for t in range(self.T - 1, -1, -1):
                yield t, self.thetas[t]
            return
        starts = list(range(0, self.T, self.spacing))
        for s0 in reversed(starts):
            s1 = min(self.T, s0 + self.spacing)
            theta = self.thetas[s0]
            vel = None if self.velocities[s0] is None else self.velocities[s0].clone()
            seg = []
            for t in range(s0, s1):
                seg.append(theta)
                if t + 1 < s1:
                    theta, vel = self.replay.advance(t, theta, vel)
            for t in range(s1 - 1, s0 - 1, -1):
                yield t, seg[t - s0]


def _chunks(curv, T: int, budget: float) -> Iterator[slice]:

    step = chunk_rows(curv, T, budget)
    for s in range(0, T, step):
        yield slice(s, min(T, s + step))


def forward_step(curv, U: Tangents, V: Tangents | None, lr: float, mu: float, weights: Tensor, budget: float) -> None:
    """One step of r tangents whose injection is Σ_i weights[k, i] ∂(∇L)/∂s_i (``[r, B]``).

    v ← μ v + H u + G;  u ← u − η (μ v + H u + G): the propagation, then the injection
    G = weights @ (per-example gradients) added by GEMMs straight into v and u.
    """

    propagate(curv, U, V, lr, mu, budget)
    G = example_grads(curv)
    if G is None:
        inj = curv.source_grads(weights)
        if V is not None:
            V.add_(inj)
        U.add_(inj, alpha=-lr)
        return
    r = weights.shape[0]
    w = weights.to(U.dtype)
    for g, u, v in zip(G, U.blocks(), V.blocks() if V is not None else [None] * len(G)):
        if v is not None:
            v.view(r, -1).addmm_(w, g)
        u.view(r, -1).addmm_(w, g, alpha=-lr)


def adjoint_step(
    curv, A: Tangents, M: Tangents | None, lr: float, mu: float, src: Tensor, coef: Tensor, budget: float
) -> None:
    """One backward step of the adjoint (a for θ, c for the momentum buffer), in place.

    w = c − η a;  coef[src_i] += ⟨w, ∂(∇L)/∂s_i⟩;  a ← a + H_λ w;  c ← μ w.
    Without momentum w = −η a and the update is a ← (I − η H_λ) a (the tangent step).
    """
    fused = hasattr(curv, "accumulate_")
    for sl in _chunks(curv, len(A), budget):
        Ac = A.rows(sl)
        if M is None:
            e = example_inner_products(curv, Ac)
            coef[:, sl].index_add_(0, src, e.to(coef.dtype), alpha=-lr)
            if fused:
                curv.sgd_step_(Ac, None, lr, 0.0)
            else:
                Ac.add_(curv.hvp(Ac), alpha=-lr)
            continue
        Wc = M.rows(sl)
        Wc.add_(Ac, alpha=-lr)  # w
        e = example_inner_products(curv, Wc)
        coef[:, sl].index_add_(0, src, e.to(coef.dtype))
        if fused:
            curv.accumulate_(Wc, Ac, alpha=1.0, beta=1.0)
            if curv.wd:
                Ac.add_(Wc, alpha=curv.wd)
        else:
            Ac.add_(curv.hvp(Wc))
        Wc.mul_(mu)


def forward_sketch(
    recording: Recording,
    weights: Tensor,
    source_index: Tensor,
    budget: float,
    progress: Callable[[int, int], None] | None = None,
) -> Tangents:
    """Δᵀ W for ``weights [m, r]`` by r tangents replayed forward over the recorded run."""
    rp = recording.replay
    r, dtype = weights.shape[1], rp.dtype
    W = weights.to(dtype)
    U = Tangents.zeros(rp.mlp, r, dtype)
    V = Tangents.zeros(rp.mlp, r, dtype) if rp.momentum else None
    for t, theta in recording.forward():
        curv = rp.curvature(t, theta)
        forward_step(curv, U, V, float(rp.lrs[t]), rp.momentum, W[source_index[rp.batch(t)]].T.contiguous(), budget)
        if progress is not None:
            progress(t + 1, recording.T)
    return U


def adjoint_coefficients(
    recording: Recording,
    Qs: Tangents,
    source_index: Tensor,
    n_sources: int,
    budget: float,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """C = Δ Q ``[m, r]`` (float64) by r adjoint tangents carried backward over the run."""
    rp = recording.replay
    r, dtype = len(Qs), rp.dtype
    A = Qs.to(dtype).clone()
    M = Tangents.zeros(rp.mlp, r, dtype) if rp.momentum else None
    coef = torch.zeros(n_sources, r, dtype=torch.float64)
    done = 0
    for t, theta in recording.backward():
        curv = rp.curvature(t, theta)
        adjoint_step(curv, A, M, float(rp.lrs[t]), rp.momentum, source_index[rp.batch(t)], coef, budget)
        done += 1
        if progress is not None:
            progress(done, recording.T)
    return coef


def full_horizon_memory(
    rank: int, n_params: int, n_sources: int, total_steps: int, itemsize: int, momentum: bool
) -> dict:
    """Bytes the compressed full-horizon simulation needs (what the budget is checked against).

    ``working_bytes``: r tangents (×2 with momentum), the injections and the float64
    orthonormalisation, the coefficients; ``min_bytes`` adds the fewest checkpoints a replay
    can do with; ``all_bytes`` adds every θ_t (no replay); ``stored_bytes`` is what the run
    stores, r·(p + m) numbers, against ``dense_bytes`` = m·p.
    """
    r, p, m, isz = rank, n_params, n_sources, itemsize
    working = r * p * isz * (2 if momentum else 1) + 2 * r * p * 8 + m * r * 8
    return {
        "working_bytes": working,
        "min_bytes": working + Recording.min_bytes(total_steps, p, isz, momentum),
        "all_bytes": working + total_steps * p * isz,
        "stored_bytes": r * (p + m) * isz,
        "dense_bytes": m * p * isz,
    }


class SketchedTrajectory:
    """Full-horizon trajectory response, compressed: r tangents forward, r adjoints backward.

    Fed by the training loop like :class:`~attrcore.simulate.FullTrajectory`
    (:meth:`record` then :meth:`step` at every step); :meth:`finalize` returns a
    :class:`CompressedResponses` with C = Δ Q exact.
    """

    def __init__(
        self,
        replay,
        source_index: Tensor,
        n_sources: int,
        rank: int,
        power_iterations: int,
        seed: int,
        budget_bytes: float,
    ):
        rp = replay
        self.rp, self.src, self.m = rp, source_index, n_sources
        self.r = min(rank, rp.mlp.n_params)
        self.q, self.seed, self.budget = power_iterations, seed, budget_bytes
        p = rp.mlp.n_params
        est = full_horizon_memory(self.r, p, n_sources, rp.total_steps, rp.itemsize, bool(rp.momentum))
        if est["min_bytes"] > budget_bytes:
            raise ConfigError(
                f"the compressed full-horizon simulation needs at least {_mb(est['min_bytes'])} (rank "
                f"{self.r} × {p} parameters plus the run's checkpoints), more than the memory "
                f"budget of {_mb(budget_bytes)}; raise the memory budget or lower the rank."
            )
        self.recording = Recording(rp, budget_bytes - est["working_bytes"])
        self.Omega = gaussian((n_sources, self.r), sketch_generator(seed), torch.float64)
        self.W = self.Omega.to(rp.dtype)
        self.U = Tangents.zeros(rp.mlp, self.r, rp.dtype)
        self.V = Tangents.zeros(rp.mlp, self.r, rp.dtype) if rp.momentum else None
        self.sketch: Tangents | None = None  # after finalize: the forward sketch Y = Δᵀ Ω (r rows)

    def record(self, t: int, theta: Tensor, velocity: Tensor | None) -> None:
        self.recording.record(t, theta, velocity)

    def step(self, t: int, curv, batch_sources: Tensor) -> None:
        forward_step(
            curv,
            self.U,
            self.V,
            float(self.rp.lrs[t]),
            self.rp.momentum,
            self.W[batch_sources].T.contiguous(),
            self.budget,
        )

    def finalize(self) -> CompressedResponses:
        self.sketch = self.U
        Qs = orthonormal(self.U)
        self.U = self.V = None
        for _ in range(self.q):
            C = adjoint_coefficients(self.recording, Qs, self.src, self.m, self.budget)
            Qs = orthonormal(forward_sketch(self.recording, C, self.src, self.budget))
        C = adjoint_coefficients(self.recording, Qs, self.src, self.m, self.budget)
        info = {
            "method": "forward-sketch+adjoint",
            "power_iterations": self.q,
            "seed": self.seed,
            "recording": self.recording.mode,
            "checkpoint_spacing": self.recording.spacing,
        }
        return finish(Qs, C, self.rp.dtype, info)


def make_compressed_trajectory(
    replay,
    horizon: int | None,
    source_index: Tensor,
    n_sources: int,
    rank: int,
    power_iterations: int,
    seed: int,
    budget_bytes: float,
):
    """The trajectory simulator for compressed responses.

    Full horizon (``horizon`` None or covering the run): :class:`SketchedTrajectory`.
    Short horizon: the dense :class:`~attrcore.engine.simulate.ShortTrajectory` (compressed
    afterwards by :func:`compress_dense`) while the dense Δ fits the memory budget beside
    the ring of live tangents, otherwise the ring feeds a :class:`StreamingSketch`.
    """

    rp = replay
    if horizon is None or horizon >= rp.total_steps:
        return SketchedTrajectory(rp, source_index, n_sources, rank, power_iterations, seed, budget_bytes)
    p, isz = rp.mlp.n_params, rp.itemsize
    ring = horizon * min(rp.cfg.batch_size, n_sources) * p * isz * (2 if rp.momentum else 1)
    sink = None
    if n_sources * p * isz + ring > budget_bytes:
        need = ring + StreamingSketch.nbytes_for(p, n_sources, rank, isz)
        if need > budget_bytes:
            raise ConfigError(
                f"horizon {horizon} with rank {rank} needs {_mb(need)} (the ring of live tangents and "
                f"a one-pass sketch of the responses), more than the memory budget of {_mb(budget_bytes)}; "
                "raise the memory budget, lower the horizon or the rank."
            )
        sink = StreamingSketch(Tangents.zeros(rp.mlp, 1, rp.dtype), n_sources, rank, seed, rp.dtype)
    return ShortTrajectory(
        rp.mlp, n_sources, rp.lrs, rp.momentum, rp.dtype, budget_bytes, horizon, rp.cfg.batch_size, sink=sink
    )


# ---- stationary: the Neumann map is symmetric -------------------------------------------


def stationary_sketch(
    mlp,
    theta: Tensor,
    X: Tensor,
    y: Tensor,
    source_index: Tensor,
    n_sources: int,
    sim,
    weight_decay: float,
    rank: int,
    power_iterations: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[CompressedResponses, float]:
    """The stationary responses, compressed, with r Neumann tangents instead of m.

    The stationary response is Δ_j = N ḡ_j with N = −α Σ_{k<K} (I − α H_λ)^k, which is
    symmetric for a fixed (whole-training-set) curvature. So Δᵀ Ω = N (Ḡᵀ Ω) is K Neumann
    steps of r tangents injected with Σ_j Ω_jk ḡ_j, and C = Δ Q = Ḡ (N Q) is K steps of the
    r columns of Q followed by every example's inner products ⟨ḡ_i, ·⟩, summed by source.
    ``power_iterations`` repeat both. α and the divergence check are those of
    :func:`~attrcore.engine.simulate.stationary_response` (same seed, same α). Needs the
    full curvature (``curvature_batch_size`` unset): a fresh mini-batch per step makes the
    map non-symmetric.
    """

    n, dtype = X.shape[0], theta.dtype
    budget = sim.memory_budget_mb * 2**20
    data_batch = 512
    full = _data_curvatures(mlp, theta, X, y, sim, weight_decay, data_batch, float(n))
    srcs = [source_index[ci * data_batch : (ci + 1) * data_batch] for ci in range(len(full))]
    l2 = weight_decay + sim.damping
    r = min(rank, mlp.n_params)

    def H(U: Tangents) -> Tangents:
        out = chunked_hvp(full[0], U, budget)
        for c in full[1:]:
            out.add_(chunked_hvp(c, U, budget))
        if len(full) > 1:  # every chunk added the L2 term; keep it once
            out.add_(U, alpha=-(len(full) - 1) * l2)
        return out

    gen = torch.Generator().manual_seed(seed)
    alpha = sim.step_size
    if alpha is None:  # α = 1/λ_max(H_λ) by power iteration, as the dense scheme does
        v = Tangents.from_flat(mlp, torch.randn(1, mlp.n_params, generator=gen, dtype=torch.float64).to(dtype))
        lam = 1.0
        for _ in range(30):
            v.mul_(1.0 / float(v.flat().norm()))
            hv = H(v)
            lam = float((hv.flat() * v.flat()).sum())
            v = hv
        alpha = 1.0 / (1.05 * max(abs(lam), 1e-12))

    K = int(sim.horizon)
    passes = 2 * (power_iterations + 1)
    done = [0]

    def neumann(B: Tangents) -> Tangents:
        """N B, K steps of Z ← (I − αH) Z − α B from Z = 0."""
        Z = Tangents.zeros(mlp, len(B), dtype)
        bound = float(B.flat().norm()) / l2 if l2 > 0 else float("inf")
        for k in range(K):
            Z.add_(H(Z), alpha=-alpha).add_(B, alpha=-alpha)
            check = (k + 1) % 10 == 0 or k + 1 == K
            if not Z.isfinite() or (check and float(Z.flat().norm()) > 10 * bound):
                raise DivergenceError(
                    f"the stationary (Neumann) iteration diverged at step {k + 1}; the curvature has "
                    "directions the damping does not cover: raise `damping`, use `curvature` gauss-newton, "
                    "or set a smaller `step_size`."
                )
            done[0] += 1
            if progress is not None:
                progress(done[0], K * passes)
        return Z

    template = Tangents.zeros(mlp, 1, dtype)

    def gbar_t_times(W: Tensor) -> Tangents:  # Ḡᵀ W: r tangents
        W = W.to(dtype)
        out = Tangents.zeros(mlp, W.shape[1], dtype)
        for curv, s in zip(full, srcs):
            out.add_(injections(curv, W[s].T.contiguous(), template))
        return out

    def gbar_times(Z: Tangents) -> Tensor:  # Ḡ Z: [m, r]
        C = torch.zeros(n_sources, len(Z), dtype=torch.float64)
        for curv, s in zip(full, srcs):
            C.index_add_(0, s, example_inner_products(curv, Z).double())
        return C

    Om = gaussian((n_sources, r), sketch_generator(seed), torch.float64)
    Qs = orthonormal(neumann(gbar_t_times(Om)))
    for _ in range(power_iterations):
        C = gbar_times(neumann(Qs.to(dtype)))
        Qs = orthonormal(neumann(gbar_t_times(C)))
    C = gbar_times(neumann(Qs.to(dtype)))
    info = {"method": "symmetric-neumann-sketch", "power_iterations": power_iterations, "seed": seed}
    return finish(Qs, C, dtype, info), alpha
