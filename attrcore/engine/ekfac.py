"""Continuous-time trajectory responses in a Kronecker-factored eigenbasis (EK-FAC).

The exact trajectory response propagates every injection of a source's gradient through
the discrete tangent map u ← u − η_t (H_t u + g). With momentum 0.9 at lr 0.1 the
effective step η/(1 − μ) is ~1 and |1 − η_eff λ| > 1 along the top curvature directions,
so the exact map mostly amplifies the instability of training (issue #12: exact K = 16
gave LDS 0.07 on mnist1d-mlp). This scheme replaces it by the contractive
continuous-time map of SOURCE (Bae et al. 2024, "approximate unrolled differentiation"):

    u(t + τ) = exp(−η_eff τ H_s) u(t),     η_eff = η_t / (1 − μ),

with H_s the Gauss–Newton matrix of segment s (PSD, so every mode decays) in its EK-FAC
form. Per layer, with ā = [a, 1] the layer input and δ the back-propagated signal,

    H_s ≈ (Q_G ⊗ Q_A) diag(Λ) (Q_G ⊗ Q_A)ᵀ,   A = E[ā āᵀ] = Q_A … ,  G = E[Σ_c δ_c δ_cᵀ] = Q_G …,
    Λ[o, i] = E[Σ_c (Q_Gᵀ δ_c)_o² (Q_Aᵀ ā)_i²]  (+ weight decay + damping),

δ_c the back-propagation of the pseudo-gradient √p_c (e_c − p) at the logits
(Σ_c s_c s_cᵀ = diag p − p pᵀ, the exact output Hessian of the cross-entropy), so Λ is
the diagonal of the exact layer GN block in the Kronecker eigenbasis. A segment is a run
of ``segment_steps`` training steps (default: one epoch); its factors are averaged over
the segment's own batches.

In that basis a per-example gradient is rank one per layer, (1/|B|) δ āᵀ →
(Q_Gᵀ δ)(Q_Aᵀ ā)ᵀ / |B|, and τ steps of propagation are the elementwise factor
exp(−Σ_k η_eff,k Λ), so an injection costs O(p). The response of the final parameters is
kept in the current segment's eigen-coordinates; at every segment end the coefficients
carried from earlier segments are rotated into the new basis (two GEMMs per layer,
R_G X R_Aᵀ with R = Q_newᵀ Q_old) and decayed over the segment. ``horizon`` K bounds the
propagation: an injection decays over at most K steps in its own segment's basis, then is
frozen (no rotation of a carried state at all); ``None`` (full) carries every injection
to the end of training through every later segment's curvature.

Two refinements (options of :class:`~attrcore.config.SimulationConfig`):

- ``ekfac_decay="discrete"``: per eigen-mode the discrete map Π_k (1 − η_eff,k λ) of the
  exact scheme where it is stable (η_eff,k λ < 2) and exp(−η_eff,k λ) where it is not. On
  digits-mlp it moves LDS by < 0.005 (the modes a short horizon decays have η λ ≪ 1).
- ``ekfac_rank=r``: the top r eigenpairs (V, S) of the segment's *whole-network* GN matrix
  (cross-layer blocks included; subspace iteration warm-started from the previous segment,
  then Rayleigh–Ritz, with products from the recorded pseudo-gradients) are propagated
  exactly and EK-FAC only on the rest: the segment map is V f(S) Vᵀ + (I − P) E (I − P),
  P = V Vᵀ, E the EK-FAC map. On digits-mlp the block-diagonal Kronecker basis is where the
  EK-FAC map loses the exact short horizon (one step's injections after 16 steps: cosine
  0.85 to the exact Hessian map; with r = 32: 0.99). An injection then costs O(r·p).

The curvature-free part matches the exact scheme: an injection at step t moves the
parameters by −(η_t + c_t) g in total (c_t the momentum still to be delivered, see
:func:`~attrcore.engine.simulate.flush_coefficients`); with zero curvature (or
``time_scale`` 0) this scheme equals the trajectory scheme at K = 0 exactly.

Interface: :class:`EKFACTrajectory` is a simulator like
:class:`~attrcore.engine.simulate.FullTrajectory` — ``step(t, curv, batch_sources)`` during
training, ``finalize() -> Tangents [m, p]``. :func:`segment_factors` computes one
segment's basis and eigenvalues (used by the tests' explicit oracle too).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import EKFAC_DECAYS as DECAYS
from ..errors import ConfigError
from .model import MLP
from .simulate import flush_coefficients
from .tangents import Tangents


@dataclass
class _StepRecord:
    """What a segment keeps of one training step until the segment closes."""

    t: int
    sources: Tensor  # [B] source id of each example
    deltas: list[Tensor]  # per layer [B, o]: ∂L/∂pre of the weighted, normalised batch loss
    acts: list[Tensor]  # per layer [B, i + 1]: the layer input with a trailing 1 (bias)
    pseudo: list[Tensor]  # per layer [B·C, o]: back-propagated GN pseudo-gradients


@dataclass
class LayerBasis:
    """Kronecker eigenbasis and EK-FAC eigenvalues of one layer: H ≈ (Q_G ⊗ Q_A) diag(Λ) (⋯)ᵀ."""

    QG: Tensor  # [o, o]
    QA: Tensor  # [i + 1, i + 1]
    lam: Tensor  # [o, i + 1], weight decay and damping included


def pseudo_deltas(curv) -> list[Tensor]:
    """GN pseudo-gradients back-propagated to every layer's pre-activation: ``[B·C, o]`` each.

    Row (b, c) is the signal of √p_{b,c} (e_c − p_b) at the logits of example b: for each
    example Σ_c δ_c δ_cᵀ = Jᵀ (diag p − p pᵀ) J, the exact Gauss–Newton factor.
    """
    p = curv.probs  # [B, C]
    B, C = p.shape
    eye = torch.eye(C, dtype=p.dtype)
    d = (p.sqrt().unsqueeze(2) * (eye.unsqueeze(0) - p.unsqueeze(1))).reshape(B * C, C)
    L = curv.mlp.n_layers
    out: list[Tensor] = [d] * L
    for layer in range(L - 1, 0, -1):
        W = curv.layers[layer][0]
        d = (d @ W).view(B, C, -1).mul_(curv.cache.d1[layer - 1].unsqueeze(1)).view(B * C, -1)
        out[layer - 1] = d
    return out


def segment_factors(records: list[_StepRecord], l2: float) -> list[LayerBasis]:
    """Eigenbasis of A and G and the EK-FAC eigenvalues of each layer over a segment."""
    n = sum(len(r.sources) for r in records)
    out = []
    for layer in range(len(records[0].acts)):
        A = sum(r.acts[layer].T @ r.acts[layer] for r in records).double() / n
        G = sum(r.pseudo[layer].T @ r.pseudo[layer] for r in records).double() / n
        _, QA = torch.linalg.eigh(A)
        _, QG = torch.linalg.eigh(G)
        dtype = records[0].acts[layer].dtype
        QA, QG = QA.to(dtype), QG.to(dtype)
        lam = torch.zeros(QG.shape[0], QA.shape[0], dtype=torch.float64)
        for r in records:
            B = len(r.sources)
            pu = (r.pseudo[layer] @ QG).square_().view(B, -1, QG.shape[0]).sum(1)  # [B, o]
            pv = (r.acts[layer] @ QA).square_()  # [B, i + 1]
            lam += (pu.T @ pv).double()
        out.append(LayerBasis(QG, QA, (lam / n).clamp_min_(0.0).add_(l2)))
    return out


def segment_gn_product(records: list[_StepRecord], U: list[Tensor], l2: float) -> list[Tensor]:
    """(H_s + l2 I) U with H_s the exact Gauss–Newton matrix of the segment (across layers),
    averaged over its examples: U per layer ``[r, o, i + 1]`` → the same shapes.

    H_s = (1/n) Σ_{b,c} s_bc s_bcᵀ with s_bc the pseudo-gradient of example b and class c
    (per layer δ_{bc} ⊗ ā_b, see :func:`pseudo_deltas`)."""
    n = sum(len(r.sources) for r in records)
    out = [l2 * u for u in U]
    for r in records:
        B = len(r.sources)
        # z[r, b, c] = s_bcᵀ u_r = Σ_l δ_{l,bc}ᵀ U_l ā_{l,b}
        z = None  # [B, C, r]
        for u, a, d in zip(U, r.acts, r.pseudo):
            R, o, i = u.shape
            Ua = torch.mm(u.reshape(R * o, i), a.T).view(R, o, B).permute(2, 1, 0)  # [B, o, r]
            part = torch.bmm(d.view(B, -1, o), Ua)
            z = part if z is None else z.add_(part)
        for k, (a, d) in enumerate(zip(r.acts, r.pseudo)):
            R, o, i = out[k].shape
            Y = torch.bmm(z.transpose(1, 2), d.view(B, -1, o))  # [B, r, o]
            out[k].add_(torch.mm(Y.permute(1, 2, 0).reshape(R * o, B), a).view(R, o, i), alpha=1.0 / n)
    return out


def top_gn_eigen(
    records: list[_StepRecord],
    shapes: list[tuple[int, int]],
    l2: float,
    start: list[Tensor],
    iterations: int,
) -> tuple[list[Tensor], Tensor]:
    """Top eigenpairs of the segment's Gauss–Newton matrix (+ l2 I, across layers): subspace
    iteration from ``start`` (per layer ``[r, o, i + 1]``), then Rayleigh–Ritz.

    Returns V (per layer ``[r, o, i + 1]``, orthonormal over the whole network, float64) and
    the eigenvalues S ``[r]`` (float64, ascending)."""
    sizes = [o * i for o, i in shapes]

    def split(flat: Tensor) -> list[Tensor]:
        return [x.reshape(-1, o, i) for x, (o, i) in zip(torch.split(flat, sizes, 1), shapes)]

    def join(parts: list[Tensor]) -> Tensor:
        return torch.cat([x.reshape(x.shape[0], -1) for x in parts], 1)

    dtype = records[0].acts[0].dtype  # products in the training dtype, orthogonalisation in float64

    def product(V: Tensor) -> Tensor:
        return join(segment_gn_product(records, split(V.to(dtype)), l2)).double()

    V = torch.linalg.qr(join(start).double().T)[0].T  # [r, P]
    for _ in range(iterations):
        V = torch.linalg.qr(product(V).T)[0].T
    HV = product(V)
    S, E = torch.linalg.eigh(0.5 * (V @ HV.T + HV @ V.T))
    return split(E.T @ V), S


class EKFACTrajectory:
    """Trajectory responses under the continuous-time EK-FAC map (see the module docstring)."""

    def __init__(
        self,
        mlp: MLP,
        n_sources: int,
        lrs: Tensor,
        momentum: float,
        dtype: torch.dtype,
        budget_bytes: float,
        horizon: int | None,
        segment_steps: int,
        weight_decay: float,
        damping: float = 0.0,
        time_scale: float = 1.0,
        chunk_rows: int = 256,
        decay: str = "exp",
        rank: int = 0,
        rank_iterations: int = 4,
        seed: int = 0,
    ):
        if segment_steps < 1:
            raise ConfigError(f"segment steps must be ≥ 1 (`segment_steps`), got {segment_steps}.")
        if decay not in DECAYS:
            raise ConfigError(f"the EK-FAC decay must be one of {', '.join(DECAYS)} (`ekfac_decay`), got {decay!r}.")
        self.decay = decay
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ConfigError(f"the EK-FAC rank must be a whole number ≥ 0 (`ekfac_rank`), got {rank!r}.")
        self.rank, self.rank_iterations = min(rank, mlp.n_params), int(rank_iterations)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.top: list[Tensor] | None = None  # the previous segment's top eigenvectors (warm start)
        self.mlp, self.m, self.dtype = mlp, n_sources, dtype
        self.horizon, self.seg = horizon, int(segment_steps)
        self.l2 = float(weight_decay) + float(damping)
        self.c = flush_coefficients(lrs, momentum)
        self.lrs = lrs
        # S[t] = Σ_{k<t} η_eff,k: the decay exponent of τ steps after step t is λ (S[t+1+τ] − S[t+1])
        self.h = lrs.double() * (time_scale / (1.0 - momentum))  # η_eff,k of every step
        self.S = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(self.h, 0)])
        sizes = mlp.config.sizes
        self.shapes = [(sizes[k + 1], sizes[k] + 1) for k in range(mlp.n_layers)]
        state = n_sources * sum(o * i for o, i in self.shapes) * torch.finfo(dtype).bits // 8
        if state > budget_bytes:
            raise ConfigError(
                f"the EK-FAC responses need {state / 2**20:.0f} MB ({n_sources} sources × "
                f"{mlp.n_params} parameters), more than the memory budget of {budget_bytes / 2**20:.0f} MB; "
                "raise the memory budget (`memory_budget_mb`) or group the sources "
                "(sources 'class' or a group column)."
            )
        # the response, per layer [m, o, i + 1]: eigen-coordinates of the current basis (full
        # horizon) or ordinary coordinates (finite horizon: injections are frozen in place)
        self.D = [torch.zeros(n_sources, o, i, dtype=dtype) for o, i in self.shapes]
        self.chunk = max(1, int(chunk_rows))
        self.basis: list[LayerBasis] | None = None
        self.records: list[_StepRecord] = []
        self.parts_seconds = {"factors": 0.0, "rotate": 0.0, "inject": 0.0, "eigen": 0.0}
        self.n_segments = 0

    # ---- training-time hooks ------------------------------------------------------------
    def step(self, t: int, curv, batch_sources: Tensor) -> None:
        ones = [torch.ones(a.shape[0], 1, dtype=a.dtype) for a in curv.cache.acts]
        self.records.append(
            _StepRecord(
                t=t,
                sources=batch_sources.clone(),
                deltas=list(curv.deltas),
                acts=[torch.cat([a, o], 1) for a, o in zip(curv.cache.acts, ones)],
                pseudo=pseudo_deltas(curv),
            )
        )
        if len(self.records) == self.seg:
            self._close_segment(last_step=t)

    def finalize(self) -> Tangents:
        if self.records:
            self._close_segment(last_step=self.records[-1].t)
        W, b = [], []
        for layer, D in enumerate(self.D):
            if self.horizon is None and self.basis is not None:  # back from eigen-coordinates
                QG, QA = self.basis[layer].QG, self.basis[layer].QA
                for s in range(0, self.m, self.chunk):
                    X = D[s : s + self.chunk]
                    X.copy_(torch.matmul(QG, torch.matmul(X, QA.T)))
            W.append(D[:, :, :-1].contiguous())
            b.append(D[:, :, -1].contiguous())
        self.D = []
        return Tangents(W, b)

    def factor(self, lam: Tensor, first: int, last: int) -> Tensor | None:
        """The map of steps ``first … last`` (inclusive) on every eigen-mode ``[o, i + 1]``;
        ``None`` when there is no step (or every step is curvature-free).

        ``exp``: exp(−Σ_k η_eff,k λ). ``discrete``: Π_k (1 − η_eff,k λ) where η_eff,k λ < 2
        (where the discrete tangent map is stable: the exact scheme's map on that mode),
        exp(−η_eff,k λ) where it is not (contractive instead of amplifying).
        """
        if last < first:
            return None
        if self.decay == "exp":
            span = float(self.S[last + 1] - self.S[first])
            return torch.exp(-span * lam).to(self.dtype) if span else None
        out = torch.ones_like(lam)
        for h in self.h[first : last + 1].tolist():
            if h:
                x = h * lam
                out.mul_(torch.where(x < 2.0, 1.0 - x, torch.exp(-x)))
        return out.to(self.dtype)

    # ---- one segment ----------------------------------------------------------------------
    def _close_segment(self, last_step: int) -> None:
        t0 = time.perf_counter()
        recs, self.records = self.records, []
        basis = segment_factors(recs, self.l2)
        t1 = time.perf_counter()
        first = recs[0].t
        full = self.horizon is None
        # the top eigen-directions of the segment's whole-network GN, in the new eigen-coordinates
        Vt, Ctop = None, None
        if self.rank:
            start = self.top
            if start is None:
                start = [torch.randn(self.rank, o, i, generator=self.gen, dtype=torch.float64) for o, i in self.shapes]
            its = self.rank_iterations * (3 if self.top is None else 1)
            V, S = top_gn_eigen(recs, self.shapes, self.l2, start, its)
            self.top = V
            Vt = [
                (lb.QG.T.double() @ v @ lb.QA.double()).reshape(self.rank, -1).to(self.dtype) for lb, v in zip(basis, V)
            ]
            Ctop = torch.zeros(self.m, self.rank, dtype=torch.float64)
        te = time.perf_counter()
        if full and self.basis is not None:  # carried responses: rotate, then decay over the segment
            for layer, (new, old) in enumerate(zip(basis, self.basis)):
                RG = new.QG.T @ old.QG
                RA = new.QA.T @ old.QA
                decay = None if self.rank else self.factor(new.lam, first, last_step)
                D = self.D[layer]
                for s in range(0, self.m, self.chunk):
                    X = D[s : s + self.chunk]
                    Y = torch.matmul(RG, torch.matmul(X, RA.T))
                    X.copy_(Y if decay is None else Y.mul_(decay))
            if self.rank:  # the top part moves to the coefficients, the rest decays by EK-FAC
                f = self.factor(S, first, last_step)
                decays = [self.factor(lb.lam, first, last_step) for lb in basis]
                for s in range(0, self.m, self.chunk):
                    rows = slice(s, min(self.m, s + self.chunk))
                    c = sum(D[rows].reshape(D[rows].shape[0], -1) @ v.T for D, v in zip(self.D, Vt))
                    Ctop[rows] += c.double() * (1.0 if f is None else f.double())
                    for D, v, dec in zip(self.D, Vt, decays):
                        X = D[rows]
                        X.sub_((c @ v).view_as(X))
                        if dec is not None:
                            X.mul_(dec)
        t2 = time.perf_counter()
        # injections of the segment, decayed over the steps that follow them (within the
        # segment for the full horizon — later segments decay the carried state — or over
        # at most K steps for a finite horizon)
        end = last_step if full else len(self.lrs) - 1
        target = self.D if full else [torch.zeros(self.m, o, i, dtype=self.dtype) for o, i in self.shapes]
        for r in recs:
            keep = r.sources >= 0  # −1: an example of another shard's (or no) source, never injected
            if not bool(keep.any()):
                continue
            rows = None if bool(keep.all()) else torch.nonzero(keep).squeeze(1)
            sources = r.sources if rows is None else r.sources[rows]
            stop = end if full else min(end, r.t + self.horizon)
            coef = -(float(self.lrs[r.t]) + float(self.c[r.t]))
            Cs = []
            for layer, lb in enumerate(basis):
                deltas, acts = r.deltas[layer], r.acts[layer]
                if rows is not None:
                    deltas, acts = deltas[rows], acts[rows]
                U = deltas @ lb.QG  # [B, o]
                V = acts @ lb.QA  # [B, i + 1]
                Cs.append(U.unsqueeze(2) * V.unsqueeze(1))
            if self.rank:  # per example: its top coefficients, and the rest
                c = sum(C.reshape(C.shape[0], -1) @ v.T for C, v in zip(Cs, Vt))  # [B, r]
                f = self.factor(S, r.t + 1, stop)
                Ctop.index_add_(0, sources, c.double() * (1.0 if f is None else f.double()), alpha=coef)
                for C, v in zip(Cs, Vt):
                    C.sub_((c @ v).view_as(C))
            for layer, (lb, C) in enumerate(zip(basis, Cs)):
                decay = self.factor(lb.lam, r.t + 1, stop)
                if decay is not None:
                    C.mul_(decay)
                target[layer].index_add_(0, sources, C, alpha=coef)
        if self.rank:  # (I − P) after the EK-FAC map, then the top part: V f(S) Vᵀ + (I − P) E (I − P)
            for s in range(0, self.m, self.chunk):
                rows = slice(s, min(self.m, s + self.chunk))
                c = sum(T[rows].reshape(T[rows].shape[0], -1) @ v.T for T, v in zip(target, Vt))
                c = Ctop[rows].to(self.dtype) - c
                for T, v in zip(target, Vt):
                    T[rows].add_((c @ v).view_as(T[rows]))
        if not full:  # frozen: back to ordinary coordinates and into the response
            for layer, lb in enumerate(basis):
                for s in range(0, self.m, self.chunk):
                    X = target[layer][s : s + self.chunk]
                    self.D[layer][s : s + self.chunk] += torch.matmul(lb.QG, torch.matmul(X, lb.QA.T))
        t3 = time.perf_counter()
        self.parts_seconds["factors"] += t1 - t0
        self.parts_seconds["eigen"] += te - t1
        self.parts_seconds["rotate"] += t2 - te
        self.parts_seconds["inject"] += t3 - t2
        self.basis = basis
        self.n_segments += 1


def default_segment_steps(steps_per_epoch: int) -> int:
    return max(1, int(steps_per_epoch))


__all__ = [
    "DECAYS",
    "EKFACTrajectory",
    "LayerBasis",
    "default_segment_steps",
    "pseudo_deltas",
    "segment_factors",
    "segment_gn_product",
    "top_gn_eigen",
]
