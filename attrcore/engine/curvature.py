"""Gradients, per-source gradients and curvature products of the training loss on a batch.

The training loss on a mini-batch B with per-example weights w is

    L(θ) = (1/|B|) Σ_{i∈B} w_i ℓ_i(θ) + (λ/2) ‖θ‖²,     ℓ_i = cross-entropy.

Two implementations of the same interface (``BatchCurvature``):

- :class:`MLPCurvature` (the fast path): gradients and Hessian-vector products written per
  layer with Pearlmutter's R-operator, batched over many tangents ``U [T, p]`` so that each
  layer is a handful of large matrix products sharing the batch's activations.
- :class:`FuncCurvature` (the reference path): ``torch.func`` forward-over-reverse
  (``vmap(jvp(grad(L)))``) for the Hessian and ``jvp``/``vjp`` of the logits for
  Gauss–Newton. Slow and obviously right; the tests hold the fast path to it.

``curvature`` is ``"hessian"`` (exact) or ``"gauss-newton"`` (Jᵀ ∇²ℓ J, PSD). λ is always
included.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..config import CURVATURES  # noqa: F401  (the curvature kinds, defined with the options)
from .model import MLP, ForwardCache
from .tangents import Tangents


def tangent_chunks(n_rows: int, bytes_per_row: int, budget_bytes: float) -> Iterator[slice]:
    """Row slices of at most ``budget_bytes / bytes_per_row`` rows (at least one)."""
    step = max(1, int(budget_bytes // max(1, bytes_per_row)))
    for s in range(0, n_rows, step):
        yield slice(s, min(n_rows, s + step))


# dWᵀ δ of layers with at least this many outputs as a batched GEMM on U.W's layout: at T = 2400
# tangents of a 64 × 64 layer the permuted copy took 269 ms against 33 ms for the GEMMs; for a
# 10-output layer (digits) the copy and one GEMM stay faster (7.2 s vs 9.1 s CPU for 3 epochs).
BATCHED_DW_MIN_OUT = 32


class MLPCurvature:
    """Per-layer gradients and batched curvature products at fixed ``theta`` on one batch."""

    def __init__(
        self,
        mlp: MLP,
        theta: Tensor,
        X: Tensor,
        y: Tensor,
        weights: Tensor | None = None,
        weight_decay: float = 0.0,
        curvature: str = "hessian",
        normalizer: float | None = None,
    ):
        self.mlp, self.theta, self.wd = mlp, theta, float(weight_decay)
        self.exact = curvature == "hessian"
        B = X.shape[0]
        self.scale = 1.0 / (normalizer if normalizer is not None else B)
        w = torch.ones(B, dtype=theta.dtype) if weights is None else weights.to(theta.dtype)
        self.w = w
        self.layers = mlp.unflatten(theta)
        self.cache: ForwardCache = mlp.forward_cache(theta, X, need_second=self.exact)
        logits = self.cache.logits
        self.probs = torch.softmax(logits, dim=-1)
        onehot = torch.nn.functional.one_hot(y.long(), logits.shape[-1]).to(theta.dtype)
        self.per_example_loss = torch.logsumexp(logits, -1) - (logits * onehot).sum(-1)
        # δ_l: ∂L/∂pre_l for the weighted, normalised batch loss (rows = examples)
        self.ws = (w * self.scale).unsqueeze(1)  # [B, 1]
        deltas = [None] * mlp.n_layers
        d = self.ws * (self.probs - onehot)
        deltas[-1] = d
        self.backs: list[Tensor | None] = [None] * mlp.n_layers  # δ_l W_l (before σ')
        for layer in range(mlp.n_layers - 1, 0, -1):
            W, _ = self.layers[layer]
            back = d @ W
            self.backs[layer] = back
            d = back * self.cache.d1[layer - 1]
            deltas[layer - 1] = d
        self.deltas: list[Tensor] = deltas  # type: ignore[assignment]
        # feature-major copies for hvp ([d, B], contiguous)
        self.acts_T = [a.T.contiguous() for a in self.cache.acts]
        self.d1_T = [d.T.contiguous() for d in self.cache.d1]
        self.d2_T = [None if d is None else d.T.contiguous() for d in self.cache.d2]
        self.deltas_T = [d.T.contiguous() for d in deltas]
        self.backs_T = [None if b is None else b.T.contiguous() for b in self.backs]
        self.probs_T = self.probs.T.contiguous()
        self.wsp_T = (self.ws * self.probs).T.contiguous()

    # ---- first order --------------------------------------------------------------------
    def loss(self) -> Tensor:
        """Weighted, normalised batch loss without the L2 term."""
        return (self.per_example_loss * self.w).sum() * self.scale

    def grad(self) -> Tensor:
        """∇L ``[p]`` including λθ."""
        parts = []
        for layer, d in enumerate(self.deltas):
            parts.append((d.T @ self.cache.acts[layer]).reshape(-1))
            parts.append(d.sum(0))
        g = torch.cat(parts)
        if self.wd:
            g = g + self.wd * self.theta
        return g

    def source_grads(self, membership: Tensor) -> Tangents:
        """∂(∇L)/∂s_j for sources given by ``membership [S, B]`` (0/1): ``S`` tangents.

        Row j is (1/|B|) Σ_{i∈B∩S_j} w_i ∇ℓ_i, the derivative of the gradient with respect
        to a multiplicative weight s_j on source j's examples in this batch.
        """
        S = membership.shape[0]
        M = membership.to(self.theta.dtype)
        out = Tangents.empty(self.mlp, S, self.theta.dtype)
        for layer, d in enumerate(self.deltas):
            a = self.cache.acts[layer]
            o, i = d.shape[1], a.shape[1]
            # Σ_i M[j,i] δ_i ⊗ a_i: one GEMM [S·o, B] @ [B, i]
            Md = (M.unsqueeze(1) * d.T.unsqueeze(0)).reshape(S * o, -1)
            torch.mm(Md, a, out=out.W[layer].view(S * o, i))
            torch.mm(M, d, out=out.b[layer])
        return out

    # ---- second order -------------------------------------------------------------------
    def hvp(self, U: Tangents) -> Tangents:
        """H_λ U for ``T`` tangents (H exact or Gauss–Newton)."""
        out = Tangents.empty(self.mlp, len(U), self.theta.dtype)
        self.accumulate_(U, out, alpha=1.0, beta=0.0)
        if self.wd:
            out.add_(U, alpha=self.wd)
        return out

    def sgd_step_(self, U: Tangents, V: Tangents | None, lr: float, mu: float) -> None:
        """One SGD step of the tangents, in place:  v ← μ v + H_λ u;  u ← u − η v.

        Without momentum this is ``u ← (1 − ηλ) u − η H u`` fused into the GEMMs that
        compute H u (their ``beta``/``alpha``), so no H u tensor is ever materialised.
        """
        if V is None:
            self.accumulate_(U, U, alpha=-lr, beta=1.0 - lr * self.wd)
            return
        self.accumulate_(U, V, alpha=1.0, beta=mu)
        if self.wd:
            V.add_(U, alpha=self.wd)
        U.add_(V, alpha=-lr)

    def accumulate_(self, U: Tangents, target: Tangents, alpha: float, beta: float) -> None:
        """``target ← β·target + α·H U`` with H the curvature *without* λ; ``target`` may be ``U``.

        R-activations are kept feature-major, ``[T, d, B]``: a tangent's weight block times
        the batch's activations is then one ``[T·d_out, d_in] @ [d_in, B]`` GEMM, the
        fastest shape on these CPUs, and products land directly in the tangent layout.
        When ``target is U`` each layer's block of U is overwritten only after its last use.
        """
        cache, exact, L = self.cache, self.exact, self.mlp.n_layers
        T = len(U)
        acts_T = self.acts_T
        Rz: list[Tensor | None] = []  # kept only where a σ'' term needs it
        Ra: list[Tensor | None] = [None]  # Ra[l] = R(input of layer l), [T, d_in, B]
        for layer, (W, _b) in enumerate(self.layers):
            o, i = W.shape
            bias = U.b[layer].reshape(T * o, 1)
            if Ra[layer] is None:
                rz = torch.addmm(bias, U.W[layer].view(T * o, i), acts_T[layer]).view(T, o, -1)
            else:  # W @ Ra as one GEMM over all tangents: Ra permuted to [d_in, T·B]
                B = acts_T[layer].shape[1]
                wra = torch.mm(W, Ra[layer].transpose(0, 1).reshape(i, T * B)).view(o, T, B)
                rz = torch.addmm(bias, U.W[layer].view(T * o, i), acts_T[layer]).view(T, o, B)
                rz += wra.transpose(0, 1)
            if layer < L - 1:
                keep_rz = exact and self.d2_T[layer] is not None  # σ'' term needs Rz later
                Rz.append(rz if keep_rz else None)
                Ra.append(self.d1_T[layer] * rz if keep_rz else rz.mul_(self.d1_T[layer]))
            else:
                Rz.append(rz)
        # R(δ_L) = ws ⊙ (diag(p) − p pᵀ) Rz_L        (all [T, C, B])
        rz = Rz[-1]
        rd = self.wsp_T * (rz - (rz * self.probs_T).sum(1, keepdim=True))
        for layer in range(L - 1, -1, -1):
            W = self.layers[layer][0]
            o, i = W.shape
            rback = dw_delta = None
            if layer > 0:  # uses U.W[layer]: before target (maybe U) is written
                # Wᵀ Rδ as one GEMM over all tangents, laid out [d_in, T, B]
                B = rd.shape[2]
                rback = torch.mm(W.T, rd.transpose(0, 1).reshape(o, T * B))
                if exact and o < BATCHED_DW_MIN_OUT:  # + dWᵀ δ: one GEMM on a permuted copy of U.W
                    dWp = U.W[layer].permute(2, 0, 1).reshape(i * T, o)
                    rback.view(i * T, B).addmm_(dWp, self.deltas_T[layer])
                elif exact:  # wide layers: a batched GEMM on U's own layout, [T, i, B], instead of the copy
                    dw_delta = torch.matmul(U.W[layer].transpose(1, 2), self.deltas_T[layer])
                rback = rback.view(i, T, B).transpose(0, 1)  # strided view, [T, i, B]
            tW = target.W[layer]
            tW.view(T * o, i).addmm_(rd.view(T * o, -1), cache.acts[layer], beta=beta, alpha=alpha)
            if exact and Ra[layer] is not None:  # + δᵀ Ra
                tW.baddbmm_(self.deltas_T[layer].expand(T, o, -1), Ra[layer].transpose(1, 2), alpha=alpha)
            tb = target.b[layer]
            if beta == 0.0:
                torch.sum(rd, dim=2, out=tb)
                tb.mul_(alpha)
            else:
                tb.mul_(beta).add_(rd.sum(2), alpha=alpha)
            if rback is None:
                break
            rd = torch.empty(T, i, rd.shape[2], dtype=rd.dtype)
            torch.mul(rback, self.d1_T[layer - 1], out=rd)  # one strided pass into [T, i, B]
            if dw_delta is not None:
                rd.addcmul_(dw_delta, self.d1_T[layer - 1])
            if exact and self.d2_T[layer - 1] is not None:
                rd += self.d2_T[layer - 1] * Rz[layer - 1] * self.backs_T[layer]

    def hvp_bytes_per_tangent(self) -> int:
        """Rough peak bytes of intermediates per tangent in :meth:`hvp`."""
        B = self.cache.acts[0].shape[0]
        widths = sum(self.mlp.config.sizes[1:])
        return (4 * B * widths + 2 * self.mlp.n_params) * self.theta.element_size()


class FuncCurvature:
    """Reference implementation through ``torch.func`` (same interface as MLPCurvature)."""

    def __init__(
        self,
        mlp: MLP,
        theta: Tensor,
        X: Tensor,
        y: Tensor,
        weights: Tensor | None = None,
        weight_decay: float = 0.0,
        curvature: str = "hessian",
        normalizer: float | None = None,
    ):
        self.mlp, self.theta, self.X, self.y = mlp, theta, X, y.long()
        self.wd, self.curvature = float(weight_decay), curvature
        B = X.shape[0]
        self.scale = 1.0 / (normalizer if normalizer is not None else B)
        self.w = torch.ones(B, dtype=theta.dtype) if weights is None else weights.to(theta.dtype)

    def _loss(self, theta: Tensor, w: Tensor) -> Tensor:
        logits = self.mlp.forward(theta, self.X)
        ce = torch.nn.functional.cross_entropy(logits, self.y, reduction="none")
        return (w * ce).sum() * self.scale + 0.5 * self.wd * (theta * theta).sum()

    def loss(self) -> Tensor:
        return self._loss(self.theta, self.w) - 0.5 * self.wd * (self.theta**2).sum()

    def grad(self) -> Tensor:
        return torch.func.grad(self._loss)(self.theta, self.w)

    def source_grads(self, membership: Tensor) -> Tangents:
        return Tangents.from_flat(self.mlp, self._source_grads_flat(membership))

    def _source_grads_flat(self, membership: Tensor) -> Tensor:
        # d/ds_j ∇L(θ, w ⊙ (1 + s_j M_j)) — forward-over-reverse in the weights
        def g_dir(m: Tensor) -> Tensor:
            return torch.func.jvp(
                lambda s: torch.func.grad(self._loss)(self.theta, self.w * (1 + s * m)),
                (torch.zeros((), dtype=self.theta.dtype),),
                (torch.ones((), dtype=self.theta.dtype),),
            )[1]

        return torch.func.vmap(g_dir)(membership.to(self.theta.dtype))

    def hvp(self, U: Tangents) -> Tangents:
        return Tangents.from_flat(self.mlp, self.hvp_flat(U.flat()))

    def hvp_flat(self, U: Tensor) -> Tensor:
        """H_λ U for ``U [T, p]`` in the row layout."""
        if self.curvature == "hessian":
            g = torch.func.grad(self._loss)

            def one(u: Tensor) -> Tensor:
                return torch.func.jvp(lambda t: g(t, self.w), (self.theta,), (u,))[1]

            return torch.func.vmap(one)(U)

        # Gauss–Newton: Jᵀ (∇²_z ℓ) J u per example, weighted, plus λu
        def logits_fn(t: Tensor) -> Tensor:
            return self.mlp.forward(t, self.X)

        z, vjp_fn = torch.func.vjp(logits_fn, self.theta)
        p = torch.softmax(z, -1)
        ws = (self.w * self.scale).unsqueeze(1)

        def one(u: Tensor) -> Tensor:
            _, jz = torch.func.jvp(logits_fn, (self.theta,), (u,))
            hz = ws * p * (jz - (jz * p).sum(-1, keepdim=True))
            return vjp_fn(hz)[0] + self.wd * u

        return torch.func.vmap(one)(U)


def make_curvature(backend: str, *args, **kwargs) -> MLPCurvature | FuncCurvature:
    if backend == "func":
        return FuncCurvature(*args, **kwargs)
    return MLPCurvature(*args, **kwargs)
