"""The fast per-layer curvature path against torch.func and against explicit matrices.

The loss under test is written out again here, independently of the library:

    L(θ) = (1/N) Σ_i w_i CE(f(x_i; θ), y_i) + (λ/2) ‖θ‖²,   N = normalizer or |B|.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from attrcore.engine import Tangents, simulate
from attrcore.engine.curvature import CURVATURES, FuncCurvature, MLPCurvature, make_curvature, tangent_chunks
from attrcore.engine.model import ACTIVATIONS, MLP, MLPConfig

HIDDEN = [(), (5,), (5, 4)]
WD = 0.03


def problem(activation="tanh", hidden=(5,), B=9, d=4, C=3, seed=0):
    """A batch with non-trivial weights and parameters large enough to bend every activation."""
    g = torch.Generator().manual_seed(seed)
    mlp = MLP(MLPConfig(d, C, hidden, activation))
    theta = 1.5 * mlp.init(g, torch.float64)
    X = torch.randn(B, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (B,), generator=g)
    w = 0.5 + torch.rand(B, generator=g, dtype=torch.float64)
    return mlp, theta, X, y, w


def reference_loss(mlp, X, y, w, wd, normalizer=None):
    N = X.shape[0] if normalizer is None else normalizer

    def loss(theta):
        ce = F.cross_entropy(mlp.forward(theta, X), y, reduction="none")
        return (w * ce).sum() / N + 0.5 * wd * (theta * theta).sum()

    return loss


def explicit_gauss_newton(mlp, theta, X, w, wd, normalizer=None):
    """G = (1/N) Σ_i w_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i + λI, from the full Jacobian."""
    N = X.shape[0] if normalizer is None else normalizer
    J = torch.func.jacrev(lambda t: mlp.forward(t, X))(theta)  # [B, C, p]
    p = torch.softmax(mlp.forward(theta, X), -1)
    A = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # [B, C, C]
    G = torch.einsum("b,bcp,bcd,bdq->pq", w, J, A, J) / N
    return G + wd * torch.eye(mlp.n_params, dtype=theta.dtype)


def random_tangents(mlp, T, seed=1):
    return torch.randn(T, mlp.n_params, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- first order ------------------------------------------------------------------------


@pytest.mark.parametrize("normalizer", [None, 20.0])
@pytest.mark.parametrize(("activation", "hidden"), list(itertools.product(ACTIVATIONS, HIDDEN)))
def test_grad_and_loss_match_autograd(activation, hidden, normalizer):
    mlp, theta, X, y, w = problem(activation, hidden)
    curv = MLPCurvature(mlp, theta, X, y, w, weight_decay=WD, normalizer=normalizer)
    loss = reference_loss(mlp, X, y, w, WD, normalizer)
    assert_close(curv.grad(), torch.func.grad(loss)(theta))
    assert_close(curv.loss(), loss(theta) - 0.5 * WD * (theta * theta).sum())
    # the reference path agrees too
    ref = FuncCurvature(mlp, theta, X, y, w, weight_decay=WD, normalizer=normalizer)
    assert_close(ref.grad(), curv.grad())
    assert_close(ref.loss(), curv.loss())


def test_unit_weights_are_the_default(tiny):
    mlp, theta, *_ = problem(d=tiny.d, C=tiny.n_classes)
    a = MLPCurvature(mlp, theta, tiny.X, tiny.y, None, weight_decay=WD)
    b = MLPCurvature(mlp, theta, tiny.X, tiny.y, torch.ones(tiny.n, dtype=torch.float64), weight_decay=WD)
    assert_close(a.grad(), b.grad(), rtol=0, atol=0)


@pytest.mark.parametrize(("activation", "hidden"), list(itertools.product(ACTIVATIONS, HIDDEN)))
def test_source_grads_match_a_per_example_loop_and_func(activation, hidden):
    mlp, theta, X, y, w = problem(activation, hidden)
    B = X.shape[0]
    g = torch.Generator().manual_seed(5)
    M = (torch.rand(4, B, generator=g) < 0.5).float()
    M[3] = 0.0  # a source with no example in the batch
    curv = MLPCurvature(mlp, theta, X, y, w, weight_decay=WD)
    got = curv.source_grads(M).flat()

    # the obvious loop: row j = (1/|B|) Σ_{i∈S_j} w_i ∇ℓ_i   (no weight-decay term)
    per_example = torch.stack(
        [
            torch.func.grad(lambda t, i=i: F.cross_entropy(mlp.forward(t, X[i : i + 1]), y[i : i + 1]))(theta)
            for i in range(B)
        ]
    )
    expected = (M.double() * w) @ per_example / B
    assert_close(got, expected)
    assert_close(got[3], torch.zeros(mlp.n_params, dtype=torch.float64), rtol=0, atol=0)
    assert_close(FuncCurvature(mlp, theta, X, y, w, weight_decay=WD).source_grads(M).flat(), got)
    # the sources of a partition add up to the data part of the full gradient
    ones = torch.ones(1, B)
    assert_close(curv.source_grads(ones).flat()[0], curv.grad() - WD * theta)


# ---- second order -----------------------------------------------------------------------


@pytest.mark.parametrize("curvature", CURVATURES)
@pytest.mark.parametrize(("activation", "hidden"), list(itertools.product(ACTIVATIONS, HIDDEN)))
def test_hvp_matches_func_reference(activation, hidden, curvature):
    mlp, theta, X, y, w = problem(activation, hidden)
    U = random_tangents(mlp, 6)
    fast = MLPCurvature(mlp, theta, X, y, w, weight_decay=WD, curvature=curvature)
    ref = FuncCurvature(mlp, theta, X, y, w, weight_decay=WD, curvature=curvature)
    assert_close(fast.hvp(Tangents.from_flat(mlp, U)).flat(), ref.hvp_flat(U))
    assert_close(ref.hvp(Tangents.from_flat(mlp, U)).flat(), ref.hvp_flat(U))


@pytest.mark.parametrize(("activation", "hidden"), [("gelu", (5, 4)), ("tanh", (5,)), ("relu", (5, 4)), ("tanh", ())])
def test_hessian_hvp_matches_the_explicit_hessian(activation, hidden):
    mlp, theta, X, y, w = problem(activation, hidden)
    H = torch.func.hessian(reference_loss(mlp, X, y, w, WD, normalizer=13.0))(theta)
    U = random_tangents(mlp, 5)
    for backend in ("mlp", "func"):
        curv = make_curvature(backend, mlp, theta, X, y, w, weight_decay=WD, curvature="hessian", normalizer=13.0)
        assert_close(curv.hvp(Tangents.from_flat(mlp, U)).flat(), U @ H)


@pytest.mark.parametrize(("activation", "hidden"), [("gelu", (5, 4)), ("tanh", (5,)), ("relu", (5, 4)), ("relu", ())])
def test_gauss_newton_hvp_matches_the_explicit_matrix(activation, hidden):
    mlp, theta, X, y, w = problem(activation, hidden)
    G = explicit_gauss_newton(mlp, theta, X, w, WD, normalizer=13.0)
    U = random_tangents(mlp, 5)
    for backend in ("mlp", "func"):
        curv = make_curvature(backend, mlp, theta, X, y, w, weight_decay=WD, curvature="gauss-newton", normalizer=13.0)
        assert_close(curv.hvp(Tangents.from_flat(mlp, U)).flat(), U @ G)


def test_logistic_regression_gauss_newton_is_the_hessian():
    # with no hidden layer the logits are linear in θ, so the two curvatures coincide
    mlp, theta, X, y, w = problem("relu", ())
    U = Tangents.from_flat(mlp, random_tangents(mlp, 4))
    h = MLPCurvature(mlp, theta, X, y, w, WD, "hessian").hvp(U).flat()
    gn = MLPCurvature(mlp, theta, X, y, w, WD, "gauss-newton").hvp(U).flat()
    assert_close(h, gn)


@pytest.mark.parametrize(("activation", "hidden"), list(itertools.product(ACTIVATIONS, [(5,), (5, 4)])))
def test_gauss_newton_is_symmetric_positive_semidefinite(activation, hidden):
    mlp, theta, X, y, w = problem(activation, hidden)
    curv = MLPCurvature(mlp, theta, X, y, w, weight_decay=WD, curvature="gauss-newton")
    U = random_tangents(mlp, 8, seed=2)
    V = random_tangents(mlp, 8, seed=3)
    HU = curv.hvp(Tangents.from_flat(mlp, U)).flat()
    HV = curv.hvp(Tangents.from_flat(mlp, V)).flat()
    assert_close((V * HU).sum(1), (U * HV).sum(1))  # vᵀHu = uᵀHv
    quad = (U * HU).sum(1)
    assert torch.all(quad >= WD * (U * U).sum(1) * (1 - 1e-12))  # uᵀHu ≥ λ‖u‖²
    # the exact Hessian is symmetric as well (but may be indefinite)
    exact = MLPCurvature(mlp, theta, X, y, w, weight_decay=WD, curvature="hessian")
    HU = exact.hvp(Tangents.from_flat(mlp, U)).flat()
    HV = exact.hvp(Tangents.from_flat(mlp, V)).flat()
    assert_close((V * HU).sum(1), (U * HV).sum(1))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("curvature", CURVATURES)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_fused_sgd_step_of_the_tangents_matches_the_reference_update(hidden, curvature, momentum):
    # v ← μ v + H_λ u;  u ← u − η v   (without momentum: u ← u − η H_λ u), in place
    mlp, theta, X, y, w = problem("gelu", hidden)
    lr = 0.3
    U0, V0 = random_tangents(mlp, 5, seed=1), random_tangents(mlp, 5, seed=2)
    HU = FuncCurvature(mlp, theta, X, y, w, weight_decay=WD, curvature=curvature).hvp_flat(U0)
    V_expected = momentum * V0 + HU if momentum else HU
    U_expected = U0 - lr * V_expected
    U, V = Tangents.from_flat(mlp, U0), (Tangents.from_flat(mlp, V0) if momentum else None)
    MLPCurvature(mlp, theta, X, y, w, weight_decay=WD, curvature=curvature).sgd_step_(U, V, lr, momentum)
    assert_close(U.flat(), U_expected)
    if momentum:
        assert_close(V.flat(), V_expected)


def test_accumulate_ignores_garbage_in_the_target_when_beta_is_zero():
    mlp, theta, X, y, w = problem("tanh", (5, 4))
    curv = MLPCurvature(mlp, theta, X, y, w, weight_decay=WD)
    U = Tangents.from_flat(mlp, random_tangents(mlp, 3))
    target = Tangents.from_flat(mlp, torch.full((3, mlp.n_params), float("nan"), dtype=torch.float64))
    curv.accumulate_(U, target, alpha=2.0, beta=0.0)
    assert_close(target.flat(), 2.0 * (curv.hvp(U).flat() - WD * U.flat()))


@pytest.mark.parametrize("curvature", CURVATURES)
def test_hvp_of_a_stack_equals_hvp_row_by_row(curvature):
    mlp, theta, X, y, w = problem("gelu", (5, 4))
    curv = MLPCurvature(mlp, theta, X, y, w, weight_decay=WD, curvature=curvature)
    U = random_tangents(mlp, 7)
    stacked = curv.hvp(Tangents.from_flat(mlp, U)).flat()
    rows = torch.cat([curv.hvp(Tangents.from_flat(mlp, U[k : k + 1])).flat() for k in range(7)])
    assert_close(stacked, rows)


def test_chunked_hvp_equals_one_product(monkeypatch):
    mlp, theta, X, y, w = problem("tanh", (5, 4))
    curv = MLPCurvature(mlp, theta, X, y, w, weight_decay=WD)
    U = Tangents.from_flat(mlp, random_tangents(mlp, 21))
    whole = curv.hvp(U).flat()
    monkeypatch.setattr(simulate, "CACHE_BYTES", 1)  # 8 rows per chunk: 3 chunks
    assert simulate.chunk_rows(curv, 21, 2**30) == 8
    assert_close(simulate.chunked_hvp(curv, U, 2**30).flat(), whole)


def test_tangent_chunks_cover_every_row_once():
    sl = list(tangent_chunks(10, 100, 350))
    assert [(s.start, s.stop) for s in sl] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [(s.start, s.stop) for s in tangent_chunks(5, 100, 1)] == [(k, k + 1) for k in range(5)]


# ---- property test ----------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(
    B=st.integers(1, 6),
    d=st.integers(1, 4),
    C=st.integers(2, 4),
    hidden=st.lists(st.integers(1, 5), max_size=2),
    activation=st.sampled_from(ACTIVATIONS),
    curvature=st.sampled_from(CURVATURES),
    wd=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_fast_hvp_equals_reference_for_any_small_shape(B, d, C, hidden, activation, curvature, wd, seed):
    g = torch.Generator().manual_seed(seed)
    mlp = MLP(MLPConfig(d, C, tuple(hidden), activation))
    theta = 2.0 * mlp.init(g, torch.float64)
    X = torch.randn(B, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (B,), generator=g)
    w = torch.rand(B, generator=g, dtype=torch.float64)
    U = torch.randn(3, mlp.n_params, generator=g, dtype=torch.float64)
    fast = MLPCurvature(mlp, theta, X, y, w, weight_decay=wd, curvature=curvature)
    ref = FuncCurvature(mlp, theta, X, y, w, weight_decay=wd, curvature=curvature)
    assert_close(fast.hvp(Tangents.from_flat(mlp, U)).flat(), ref.hvp_flat(U))
    assert_close(fast.grad(), ref.grad())


@pytest.mark.parametrize("curvature", CURVATURES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_wide_layers_take_the_batched_dw_delta_path_and_match_the_reference(activation, curvature):
    """A hidden layer with at least BATCHED_DW_MIN_OUT outputs computes dWᵀ δ as a batched GEMM
    (narrower ones on a permuted copy): both paths in one network, hvp and the fused in-place step."""
    from attrcore.engine.curvature import BATCHED_DW_MIN_OUT

    hidden = (6, BATCHED_DW_MIN_OUT + 3)  # layer 1 batched, the output layer copied
    mlp, theta, X, y, w = problem(activation, hidden)
    U0 = random_tangents(mlp, 4)
    ref = FuncCurvature(mlp, theta, X, y, w, weight_decay=WD, curvature=curvature)
    fast = MLPCurvature(mlp, theta, X, y, w, weight_decay=WD, curvature=curvature)
    assert_close(fast.hvp(Tangents.from_flat(mlp, U0)).flat(), ref.hvp_flat(U0))
    U = Tangents.from_flat(mlp, U0)
    fast.sgd_step_(U, None, 0.3, 0.0)  # target is U: each block overwritten after its last use
    assert_close(U.flat(), U0 - 0.3 * ref.hvp_flat(U0))
