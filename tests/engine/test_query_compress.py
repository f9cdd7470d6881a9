"""Query-aware compression against its slow, obvious float64 oracle.

The oracle (here only): per-example measurement gradients G by reverse-mode ``torch.func``,
M = G Δᵀ explicitly, numpy's SVD, A = Δᵀ V_r = Q R, C = V_r Rᵀ. The library must give

- the same per-example gradients (closed form) and the same M as the readout of the points;
- the same factorisation (C Qᵀ = V_r V_rᵀ Δ, unique whatever the signs of Q's columns);
- with r ≥ rank(M), the dense scores on the training points; with r < m, exactly M's best
  rank-r approximation there (Eckart–Young), and never a better one than that;
- a readout with no reverse-mode call.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine.compress import CompressedResponses, compress_dense
from attrcore.engine.measures import measure
from attrcore.engine.model import MLP, MLPConfig
from attrcore.engine.query_compress import (
    compress_from_scores,
    compress_query_aware,
    measurement_gradients,
    top_right_singular,
    training_score_matrix,
)
from attrcore.engine.readout import score
from attrcore.engine.tangents import Tangents
from attrcore.engine.train import train
from attrcore.errors import ConfigError


@pytest.fixture(scope="module")
def run(tiny):
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, (5, 4), "gelu"))
    cfg = TrainConfig(epochs=2, lr=0.3, batch_size=8, momentum=0.9, weight_decay=1e-2, dtype="float64")
    out = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(horizon=None, rank=None))
    return mlp, out.theta, out.responses  # [m, p] float64


def oracle_gradients(mlp, theta, X, y, kind="margin", target_class=None):
    """G [n, p] by reverse mode, one example at a time (the slow obvious way)."""

    def f(t, x, yy):
        return measure(mlp.forward(t, x[None]), yy[None], kind, target_class)[0]

    return torch.stack([torch.func.grad(f)(theta, X[i], y[i]) for i in range(X.shape[0])])


def oracle(mlp, theta, D, X, y, r):
    """(M, V_r V_rᵀ Δ, M's best rank-r approximation), numpy float64."""
    G = oracle_gradients(mlp, theta, X, y).numpy()
    Dn = D.numpy()
    M = G @ Dn.T
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    V = Vt[:r].T
    A = Dn.T @ V  # [p, r]
    Q, R = np.linalg.qr(A)
    C = V @ R.T
    return M, C @ Q.T, (U[:, :r] * s[:r]) @ Vt[:r]


@pytest.mark.parametrize(("kind", "target_class"), [("margin", None), ("loss", None), ("logit", 1), ("prob", None)])
def test_measurement_gradients_match_reverse_mode(run, tiny, kind, target_class):
    mlp, theta, _ = run
    blocks = measurement_gradients(mlp, theta, tiny.X, tiny.y, kind, target_class)
    assert_close(torch.cat(blocks, dim=1), oracle_gradients(mlp, theta, tiny.X, tiny.y, kind, target_class))


def test_training_score_matrix_is_the_readout_of_the_training_points(run, tiny):
    mlp, theta, D = run
    # a tiny budget forces several chunks of points
    M = training_score_matrix(Tangents.from_flat(mlp, D), mlp, theta, tiny.X, tiny.y, memory_budget_mb=1e-3)
    expected = score(mlp, theta, D, tiny.X, tiny.y, out_dtype=torch.float64)
    assert_close(M, expected)


@pytest.mark.parametrize("r", [3, 8])
def test_factorisation_equals_the_oracle(run, tiny, r):
    mlp, theta, D = run
    comp = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, r, normalize=False)
    assert isinstance(comp, CompressedResponses) and comp.rank == r
    _, approx, _ = oracle(mlp, theta, D, tiny.X, tiny.y, r)
    assert_close(comp.dense(torch.float64), torch.from_numpy(approx), rtol=1e-8, atol=1e-10 * float(D.abs().max()))
    # Q has orthonormal rows
    Qf = comp.Q.flat()
    assert_close(Qf @ Qf.T, torch.eye(r, dtype=torch.float64))


def test_full_rank_gives_the_dense_scores_on_the_training_points(run, tiny):
    mlp, theta, D = run
    m = D.shape[0]
    comp = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, m + 5)  # capped at min(n, m, p)
    assert comp.rank == m
    dense = score(mlp, theta, D, tiny.X, tiny.y, out_dtype=torch.float64)
    got = score(mlp, theta, comp, tiny.X, tiny.y, out_dtype=torch.float64)
    assert_close(got, dense, rtol=1e-8, atol=1e-10 * float(dense.abs().max()))


@pytest.mark.parametrize("r", [2, 5, 10])
def test_low_rank_gives_the_best_rank_r_scores_on_the_training_points(run, tiny, r):
    mlp, theta, D = run
    M, _, best = oracle(mlp, theta, D, tiny.X, tiny.y, r)
    comp = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, r, normalize=False)
    got = score(mlp, theta, comp, tiny.X, tiny.y, out_dtype=torch.float64)
    assert_close(got, torch.from_numpy(best), rtol=1e-8, atol=1e-10 * float(np.abs(M).max()))
    # and the plain SVD of Δ at the same rank does worse on these points (the reason to exist)
    plain = compress_dense(D, r, 2, 0, mlp=mlp)
    err_plain = float(((score(mlp, theta, plain, tiny.X, tiny.y, out_dtype=torch.float64).numpy() - M) ** 2).sum())
    err_qa = float(((got.numpy() - M) ** 2).sum())
    assert err_qa <= err_plain * (1 + 1e-9)


def test_projection_coefficients_are_delta_times_q(run, tiny):
    mlp, theta, D = run
    src = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, 6)
    proj = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, 6, coefficients="projection")
    Qf = proj.Q.flat()
    assert_close(proj.C.double(), D @ Qf.T)
    # the same subspace of parameter space as the source-space projection
    Qs = src.Q.flat()
    assert_close(Qs.T @ Qs, Qf.T @ Qf, rtol=1e-8, atol=1e-10)
    assert proj.info["coefficients"] == "projection" and src.info["method"] == "query-aware"


def test_randomized_singular_vectors_match_the_exact_ones():
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(60, 40, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(50, 40, generator=g, dtype=torch.float64))
    s = 2.0 ** -torch.arange(40, dtype=torch.float64)
    M = (U * s) @ V.T
    Ve, se = top_right_singular(M, 6)
    Vr, sr = top_right_singular(M, 6, exact_max=0)
    assert_close(sr, se)
    assert_close(Vr @ Vr.T, Ve @ Ve.T)  # the same subspace (signs may differ)


def test_a_subset_of_points_and_bit_identical_reruns(run, tiny):
    mlp, theta, D = run
    a = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, 4, n_points=12, seed=3)
    b = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, 4, n_points=12, seed=3)
    assert a.info["n_points"] == 12 and a.rank == 4
    assert torch.equal(a.C, b.C) and torch.equal(a.Q.flat(), b.Q.flat())
    c = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, 4, n_points=12, seed=4)
    assert not torch.equal(a.C, c.C)


def test_bad_arguments_are_refused(run, tiny):
    mlp, theta, D = run
    with pytest.raises(ConfigError, match="rank"):
        compress_query_aware(D, mlp, theta, tiny.X, tiny.y, 0)
    with pytest.raises(ConfigError, match="coefficients"):
        compress_query_aware(D, mlp, theta, tiny.X, tiny.y, 3, coefficients="nope")
    with pytest.raises(ConfigError, match="points"):
        compress_query_aware(D, mlp, theta, tiny.X, tiny.y, 3, n_points=0)


class ReverseModeCalled(AssertionError):
    pass


def test_readout_of_query_aware_responses_makes_no_reverse_mode_call(run, tiny, monkeypatch):
    mlp, theta, D = run
    comp = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, 5)
    J = torch.func.jacrev(lambda t: measure(mlp.forward(t, tiny.X_query), tiny.y_query))(theta)
    expected = J @ comp.dense(torch.float64).T

    def trap(*args, **kwargs):
        raise ReverseModeCalled("reverse-mode autograd was called")

    monkeypatch.setattr(torch.autograd, "grad", trap)
    monkeypatch.setattr(torch.autograd, "backward", trap)
    monkeypatch.setattr(torch.Tensor, "backward", trap)
    with pytest.raises(ReverseModeCalled):
        torch.func.grad(lambda t: (t * t).sum())(theta)
    for readout_kind in ("jvp", "cd"):
        for backend in ("mlp", "func"):
            got = score(mlp, theta, comp, tiny.X_query, tiny.y_query, readout=readout_kind, backend=backend)
            assert_close(got.double(), expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_singular_vectors_computed_once_serve_every_lower_rank(run, tiny):
    mlp, theta, D = run
    stack = Tangents.from_flat(mlp, D)
    M = training_score_matrix(stack, mlp, theta, tiny.X, tiny.y)
    V, s = top_right_singular(M, 10)
    for r in (2, 6, 10):
        a = compress_from_scores(stack, M, r, singular=(V, s))
        b = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, r, normalize=False)
        assert_close(a.dense(torch.float64), b.dense(torch.float64))
    with pytest.raises(ConfigError, match="singular vectors"):
        compress_from_scores(stack, M, 12, singular=(V, s))


@pytest.mark.parametrize(
    "sim",
    [
        {"horizon": None},  # exact full horizon: dense, then factorised (not the sketch)
        {"horizon": 2},
        {"horizon": None, "curvature": "ekfac", "segment_steps": 3},
        {"scheme": "stationary", "horizon": 5, "curvature": "gauss-newton"},
    ],
    ids=["full", "K2", "ekfac", "stationary"],
)
def test_train_with_query_aware_compression_factorises_its_dense_responses(tiny, sim):
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, (5,), "tanh"))
    cfg = TrainConfig(epochs=2, lr=0.2, batch_size=8, momentum=0.9, dtype="float64")
    dense = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(**sim, rank=None))
    out = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(**sim, rank=4, compression="query-aware"))
    assert isinstance(out.responses, CompressedResponses) and out.responses.rank == 4
    assert out.responses.info["method"] == "query-aware" and "query-aware" in out.responses.info["reason"]
    expected = compress_query_aware(dense.responses, mlp, dense.theta, tiny.X, tiny.y, 4, seed=cfg.seed)
    assert_close(out.responses.dense(torch.float64), expected.dense(torch.float64))


def test_the_compression_option_is_checked():
    with pytest.raises(ConfigError, match="compression"):
        SimulationConfig(compression="jpeg")
    assert SimulationConfig().compression == "svd"


def test_the_estimate_counts_the_dense_responses_a_query_aware_run_factorises():
    from attrcore.engine.estimate import estimate_training

    train_cfg = TrainConfig(epochs=2, batch_size=50)
    n, d, k, hidden = 2000, 20, 10, (64,)
    p = (d + 1) * 64 + 65 * k
    svd = estimate_training(n, d, k, hidden, train_cfg, SimulationConfig(horizon=None, rank=32))
    qa = estimate_training(
        n, d, k, hidden, train_cfg, SimulationConfig(horizon=None, rank=32, compression="query-aware")
    )
    assert qa.response_bytes == svd.response_bytes == 32 * (p + n) * 4  # both store rank-32 factors
    assert qa.state_bytes >= n * p * 4 + n * n * 8 > svd.state_bytes  # but query-aware holds Δ and M first
    assert any("query-aware" in note for note in qa.notes)


@pytest.mark.parametrize("r", [3, 8])
def test_normalised_rows_give_the_best_rank_r_of_the_normalised_scores(run, tiny, r):
    mlp, theta, D = run
    M, _, _ = oracle(mlp, theta, D, tiny.X, tiny.y, r)
    norms = np.linalg.norm(M, axis=1, keepdims=True)
    U, s, Vt = np.linalg.svd(M / norms, full_matrices=False)
    best = (U[:, :r] * s[:r]) @ Vt[:r]
    comp = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, r)  # normalize=True is the default
    assert comp.info["normalize"] is True
    got = score(mlp, theta, comp, tiny.X, tiny.y, out_dtype=torch.float64).numpy() / norms
    assert_close(torch.from_numpy(got), torch.from_numpy(best), rtol=1e-8, atol=1e-10)
    # and it is not the unnormalised optimum (the points are weighted differently)
    plain = compress_query_aware(D, mlp, theta, tiny.X, tiny.y, r, normalize=False)
    assert float((plain.dense(torch.float64) - comp.dense(torch.float64)).abs().max()) > 1e-6 * float(D.abs().max())
