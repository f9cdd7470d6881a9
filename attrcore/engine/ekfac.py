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
    ):
        if segment_steps < 1:
            raise ConfigError(f"segment steps must be ≥ 1 (`segment_steps`), got {segment_steps}.")
        self.mlp, self.m, self.dtype = mlp, n_sources, dtype
        self.horizon, self.seg = horizon, int(segment_steps)
        self.l2 = float(weight_decay) + float(damping)
        self.c = flush_coefficients(lrs, momentum)
        self.lrs = lrs
        # S[t] = Σ_{k<t} η_eff,k: the decay exponent of τ steps after step t is λ (S[t+1+τ] − S[t+1])
        self.S = torch.cat(
            [torch.zeros(1, dtype=torch.float64), torch.cumsum(lrs.double() * (time_scale / (1.0 - momentum)), 0)]
        )
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
        self.parts_seconds = {"factors": 0.0, "rotate": 0.0, "inject": 0.0}
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

    # ---- one segment ----------------------------------------------------------------------
    def _close_segment(self, last_step: int) -> None:
        t0 = time.perf_counter()
        recs, self.records = self.records, []
        basis = segment_factors(recs, self.l2)
        t1 = time.perf_counter()
        first = recs[0].t
        full = self.horizon is None
        if full and self.basis is not None:  # carried responses: rotate, then decay over the segment
            span = float(self.S[last_step + 1] - self.S[first])
            for layer, (new, old) in enumerate(zip(basis, self.basis)):
                RG = new.QG.T @ old.QG
                RA = new.QA.T @ old.QA
                decay = torch.exp(-span * new.lam).to(self.dtype)
                D = self.D[layer]
                for s in range(0, self.m, self.chunk):
                    X = D[s : s + self.chunk]
                    torch.mul(torch.matmul(RG, torch.matmul(X, RA.T)), decay, out=X)
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
            span = float(self.S[stop + 1] - self.S[r.t + 1])
            coef = -(float(self.lrs[r.t]) + float(self.c[r.t]))
            for layer, lb in enumerate(basis):
                deltas, acts = r.deltas[layer], r.acts[layer]
                if rows is not None:
                    deltas, acts = deltas[rows], acts[rows]
                U = deltas @ lb.QG  # [B, o]
                V = acts @ lb.QA  # [B, i + 1]
                decay = torch.exp(-span * lb.lam).to(self.dtype) if span else None
                C = U.unsqueeze(2) * V.unsqueeze(1)
                if decay is not None:
                    C.mul_(decay)
                target[layer].index_add_(0, sources, C, alpha=coef)
        if not full:  # frozen: back to ordinary coordinates and into the response
            for layer, lb in enumerate(basis):
                for s in range(0, self.m, self.chunk):
                    X = target[layer][s : s + self.chunk]
                    self.D[layer][s : s + self.chunk] += torch.matmul(lb.QG, torch.matmul(X, lb.QA.T))
        t3 = time.perf_counter()
        self.parts_seconds["factors"] += t1 - t0
        self.parts_seconds["rotate"] += t2 - t1
        self.parts_seconds["inject"] += t3 - t2
        self.basis = basis
        self.n_segments += 1


def default_segment_steps(steps_per_epoch: int) -> int:
    return max(1, int(steps_per_epoch))


__all__ = ["EKFACTrajectory", "LayerBasis", "default_segment_steps", "pseudo_deltas", "segment_factors"]
