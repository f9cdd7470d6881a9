"""Influence functions: :class:`InfluenceExplicit` (explicit Hessian, Cholesky) and
:class:`InfluenceCG` (whole network, batched conjugate gradients).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ..engine.curvature import MLPCurvature
from ..engine.model import MLP
from ..engine.tangents import Tangents
from ..errors import ConfigError
from .base import MEMORY_BUDGET, Attributor, _dot, _flat, _layers, _nbytes, _param_slice, output_factors

# ================================================================ influence functions


class _Influence(Attributor):
    """Shared part: −(1/n) ∇f(q)ᵀ (H + δI)⁻¹ ∇ℓ_j on a set of layers.

    H is the Hessian of the training objective (1/n) Σ ℓ_i + (λ/2)‖θ‖² at ``theta`` (or
    its Gauss–Newton matrix), restricted to the chosen layers; δ is the damping.
    """

    def __init__(
        self,
        mlp: MLP,
        theta: Tensor,
        weight_decay: float,
        damping: float = 0.01,
        layers: str = "all",
        curvature: str = "hessian",
        measure="margin",
        target_class=None,
        dtype: torch.dtype = torch.float64,
    ):
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
        return MLPCurvature(
            self.mlp, self.theta, X.to(self.dtype), y, weight_decay=self.weight_decay, curvature=self.curvature
        )

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
            full[:, self.slice] = U[s : s + step]
            out[s : s + step] = curv.hvp(Tangents.from_flat(self.mlp, full)).flat()[:, self.slice]
        return out + self.damping * U

    def _setup(self, X, y):
        X = X.to(self.dtype)
        self._train = output_factors(self.mlp, self.theta, X, y, "loss", layers=self.layer_ids)
        self._setup_solver(X, y)

    def _score(self, X_q, y_q):
        X_q = X_q.to(self.dtype)
        fq = output_factors(self.mlp, self.theta, X_q, y_q, self.measure, self.target_class, layers=self.layer_ids)
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
        H[o * k : (o + 1) * k, o * k : (o + 1) * k] += (A * P[:, o : o + 1]).T @ A
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

    def __init__(
        self,
        mlp,
        theta,
        weight_decay,
        damping=0.01,
        layers="last",
        curvature="hessian",
        measure="margin",
        target_class=None,
        max_params: int = 6000,
    ):
        super().__init__(
            mlp, theta, weight_decay, damping, layers, curvature, measure, target_class, dtype=torch.float64
        )
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
                "curvature='gauss-newton' for a well-posed influence function.",
                stacklevel=4,
            )
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

    def __init__(
        self,
        mlp,
        theta,
        weight_decay,
        damping=0.01,
        layers="all",
        curvature="gauss-newton",
        measure="margin",
        target_class=None,
        max_iter: int = 100,
        tol: float = 1e-4,
        hessian_examples: int | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__(mlp, theta, weight_decay, damping, layers, curvature, measure, target_class, dtype=dtype)
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
            idx = idx[: self.hessian_examples].sort().values
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
                "curvature='gauss-newton'.",
                stacklevel=4,
            )
        return Xs

    def state_bytes(self):
        c = self._curvobj
        return _nbytes(*(t for f in self._train for t in f), *c.cache.acts, *c.cache.pre)
