"""Simulated parameter responses Δ_j against oracles computed independently in the test.

- full horizon: the exact derivative dθ_T/dw_j, checked by central finite differences of
  retraining with the same seed and batch order (ε = 1e-5 in float64: ReLU makes θ_T only
  piecewise smooth in w, and larger steps cross kinks);
- stationary: −(H + (wd + damping) I)⁻¹ ḡ_j from an explicit matrix solve;
- horizon 0: the learning-rate-weighted sum of the source's gradients along the real run,
  replayed here step by step;
- linearity: a group's response is the sum of its members' responses.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine import MLP, MLPConfig, simulate
from attrcore.engine.simulate import FullTrajectory, ShortTrajectory, flush_coefficients, make_trajectory
from attrcore.engine.train import batch_orders, train
from attrcore.errors import DivergenceError

EPS = 1e-5

FD_CASES = {
    # name: (activation, hidden, TrainConfig overrides)
    "sgd-relu-constant": ("relu", (5,), {"lr": 0.2}),
    "momentum-wd-cosine-tanh": (
        "tanh",
        (5, 4),
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2, "lr_schedule": "cosine"},
    ),
    "momentum-wd-step-gelu": (
        "gelu",
        (5,),
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2, "lr_schedule": "step", "step_every": 1, "step_gamma": 0.5},
    ),
}


def config(**overrides) -> TrainConfig:
    base = {"epochs": 3, "lr": 0.2, "batch_size": 10, "momentum": 0.0, "weight_decay": 0.0, "dtype": "float64"}
    return TrainConfig(**{**base, **overrides})


def mlp_for(tiny, activation="tanh", hidden=(5,)) -> MLP:
    return MLP(MLPConfig(tiny.d, tiny.n_classes, hidden, activation))


def fd_retraining(mlp, X, y, cfg, direction, base=None) -> torch.Tensor:
    """[θ_T(w = w₀ + ε·direction) − θ_T(w = w₀ − ε·direction)] / 2ε, same seed and batches (w₀ = 1)."""
    w0 = torch.ones(X.shape[0], dtype=torch.float64) if base is None else base
    plus = train(mlp, X, y, cfg, weights=w0 + EPS * direction).theta
    minus = train(mlp, X, y, cfg, weights=w0 - EPS * direction).theta
    return (plus - minus) / (2 * EPS)


def per_example_grads(mlp, theta, X, y) -> torch.Tensor:
    """∇ℓ_i for every row: ``[n, p]`` (unnormalised, no weight decay)."""

    def loss_i(t, x, yi):
        return F.cross_entropy(mlp.forward(t, x.unsqueeze(0)), yi.unsqueeze(0))

    return torch.func.vmap(torch.func.grad(loss_i), in_dims=(None, 0, 0))(theta, X, y)


def membership(groups: torch.Tensor) -> torch.Tensor:
    return F.one_hot(groups, int(groups.max()) + 1).T.double()  # [m, n]


# ---- full horizon = d θ_T / d w_j -------------------------------------------------------


@pytest.mark.parametrize("case", list(FD_CASES))
def test_full_horizon_is_the_derivative_of_retraining_per_example(tiny, case):
    activation, hidden, overrides = FD_CASES[case]
    mlp, cfg = mlp_for(tiny, activation, hidden), config(**overrides)
    responses = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig()).responses
    assert responses.shape == (tiny.n, mlp.n_params)
    for j in (0, 7, tiny.n - 1):  # first batch member, anywhere, last example
        direction = torch.zeros(tiny.n, dtype=torch.float64)
        direction[j] = 1.0
        fd = fd_retraining(mlp, tiny.X, tiny.y, cfg, direction)
        assert fd.abs().max() > 1e-3  # a real effect, not 0 = 0
        assert_close(responses[j], fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("case", ["sgd-relu-constant", "momentum-wd-step-gelu"])
def test_full_horizon_is_the_derivative_of_retraining_for_groups(tiny, case):
    activation, hidden, overrides = FD_CASES[case]
    mlp, cfg = mlp_for(tiny, activation, hidden), config(**overrides)
    out = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(), source_index=tiny.groups, n_sources=tiny.n_groups)
    assert out.responses.shape == (tiny.n_groups, mlp.n_params)
    for j in (0, tiny.n_groups - 1):
        direction = (tiny.groups == j).double()  # every member's weight moves together
        assert_close(out.responses[j], fd_retraining(mlp, tiny.X, tiny.y, cfg, direction), rtol=1e-6, atol=1e-9)


def test_with_non_unit_weights_the_response_is_per_unit_of_relative_weight(tiny):
    """Pins the convention of ``MLPCurvature.source_grads``: Δ_j is the derivative with respect
    to a multiplicative scale s_j of the source's weights (w_i → w_i (1 + s_j)), which is
    w_j · dθ_T/dw_j; with the default unit weights the two coincide."""
    mlp, cfg = mlp_for(tiny), config(epochs=2)
    w0 = 0.5 + torch.rand(tiny.n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    responses = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(), weights=w0).responses
    j = 4
    direction = torch.zeros(tiny.n, dtype=torch.float64)
    direction[j] = 1.0
    fd = fd_retraining(mlp, tiny.X, tiny.y, cfg, direction, base=w0)
    assert_close(responses[j], w0[j] * fd, rtol=1e-6, atol=1e-9)


# ---- stationary = −(H + λI)⁻¹ ḡ -----------------------------------------------------------


def stationary_oracle(mlp, theta, X, y, groups, l2, curvature):
    n = X.shape[0]
    if curvature == "hessian":
        H = torch.func.hessian(lambda t: F.cross_entropy(mlp.forward(t, X), y))(theta)
    else:
        J = torch.func.jacrev(lambda t: mlp.forward(t, X))(theta)  # [n, C, p]
        p = torch.softmax(mlp.forward(theta, X), -1)
        A = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
        H = torch.einsum("ncp,ncd,ndq->pq", J, A, J) / n
    H_l = H + l2 * torch.eye(mlp.n_params, dtype=torch.float64)
    assert torch.linalg.eigvalsh(H_l)[0] > 0.1  # damped enough for the Neumann series
    gbar = membership(groups) @ per_example_grads(mlp, theta, X, y) / n  # ḡ_j = (1/n) Σ_{i∈S_j} ∇ℓ_i
    return -torch.linalg.solve(H_l, gbar.T).T


@pytest.mark.parametrize(
    ("activation", "curvature"),
    [("tanh", "hessian"), ("relu", "hessian"), ("tanh", "gauss-newton"), ("relu", "gauss-newton")],
)
@pytest.mark.parametrize("sources", ["example", "group"])
def test_stationary_converges_to_the_damped_inverse_curvature_solve(tiny, activation, curvature, sources):
    mlp = mlp_for(tiny, activation, (5,))
    cfg = config(epochs=5, lr=0.3, batch_size=8, weight_decay=1e-3)
    groups = torch.arange(tiny.n) if sources == "example" else tiny.groups
    sim = SimulationConfig(scheme="stationary", horizon=300, damping=1.0, curvature=curvature)
    out = train(mlp, tiny.X, tiny.y, cfg, sim, source_index=groups)
    expected = stationary_oracle(mlp, out.theta, tiny.X, tiny.y, groups, 1e-3 + 1.0, curvature)
    assert_close(out.responses, expected, rtol=1e-7, atol=1e-10)
    assert 0 < out.extras["neumann_step_size"]


def test_stationary_over_several_data_chunks(make_problem):
    # n > 512: the curvature and ḡ are accumulated over three data chunks
    data = make_problem(n=1100, d=2, n_classes=3, seed=1)
    mlp = MLP(MLPConfig(2, 3, (3,), "tanh"))
    cfg = config(epochs=1, lr=0.3, batch_size=128, weight_decay=1e-3)
    groups = torch.arange(1100) % 7
    sim = SimulationConfig(scheme="stationary", horizon=300, damping=1.0)
    out = train(mlp, data.X, data.y, cfg, sim, source_index=groups)
    expected = stationary_oracle(mlp, out.theta, data.X, data.y, groups, 1e-3 + 1.0, "hessian")
    assert_close(out.responses, expected, rtol=1e-7, atol=1e-10)


def test_stationary_with_uncovered_negative_curvature_raises_instead_of_returning_garbage(tiny):
    # exact Hessian of a tanh net after little training has negative eigenvalues larger than a
    # tiny damping: the Neumann iterate grows without bound and must be refused, not returned
    mlp = mlp_for(tiny, "tanh", (5,))
    cfg = config(epochs=5, lr=0.3, batch_size=8)
    sim = SimulationConfig(scheme="stationary", horizon=300, damping=0.05, curvature="hessian")
    with pytest.raises(DivergenceError, match="damping"):
        train(mlp, tiny.X, tiny.y, cfg, sim)


def test_stationary_curvature_batch_covering_the_data_is_the_full_curvature(tiny):
    mlp, cfg = mlp_for(tiny), config(epochs=2)
    sims = [
        SimulationConfig(scheme="stationary", horizon=20, damping=1.0, curvature_batch_size=b) for b in (None, tiny.n)
    ]
    a, b = (train(mlp, tiny.X, tiny.y, cfg, s).responses for s in sims)
    assert torch.equal(a, b)


# ---- horizon K --------------------------------------------------------------------------


def replay_gradient_sums(mlp, X, y, cfg):
    """Replay plain SGD step by step: (θ_T, the per-step (η_t, idx, ∇ℓ_i / |B|) records)."""
    theta = mlp.init(torch.Generator().manual_seed(cfg.seed), torch.float64)
    records = []
    for epoch, batches in enumerate(batch_orders(X.shape[0], cfg)):
        lr = cfg.lr * cfg.step_gamma ** (epoch // cfg.step_every) if cfg.lr_schedule == "step" else cfg.lr
        for idx in batches:
            G = per_example_grads(mlp, theta, X[idx], y[idx]) / len(idx)  # this step's g_{i,t}
            records.append((lr, idx, G))
            step = G.sum(0) + cfg.weight_decay * theta
            theta = theta - lr * step  # momentum 0
    return theta, records


def test_horizon_zero_is_the_lr_weighted_sum_of_the_source_gradients(tiny):
    mlp = mlp_for(tiny, "relu", (5,))
    cfg = config(epochs=3, lr=0.2, weight_decay=1e-2, lr_schedule="step", step_every=1, step_gamma=0.5)
    out = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(horizon=0))
    theta, records = replay_gradient_sums(mlp, tiny.X, tiny.y, cfg)
    assert_close(out.theta, theta)  # the replay follows the real trajectory
    expected = torch.zeros(tiny.n, mlp.n_params, dtype=torch.float64)
    for lr, idx, G in records:
        expected[idx] -= lr * G  # Δ_j = −Σ_t η_t g_{j,t}
    assert_close(out.responses, expected)
    grouped = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(horizon=0), source_index=tiny.groups)
    assert_close(grouped.responses, membership(tiny.groups) @ expected)


def test_horizon_zero_with_momentum_flushes_the_pending_momentum(tiny):
    # each injection is carried by the momentum buffer into every later step:
    # Δ_j = −Σ_t (η_t + Σ_{k≥1} η_{t+k} μ^k) g_{j,t}
    mlp, mu = mlp_for(tiny), 0.9
    cfg = config(epochs=2, lr=0.1, momentum=mu, lr_schedule="step", step_every=1, step_gamma=0.5)
    out = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(horizon=0))
    # replay with momentum to get the real g_{j,t}
    theta = mlp.init(torch.Generator().manual_seed(cfg.seed), torch.float64)
    v = torch.zeros_like(theta)
    records = []
    for epoch, batches in enumerate(batch_orders(tiny.n, cfg)):
        lr = cfg.lr * 0.5**epoch
        for idx in batches:
            G = per_example_grads(mlp, theta, tiny.X[idx], tiny.y[idx]) / len(idx)
            records.append((lr, idx, G))
            v = mu * v + G.sum(0)
            theta = theta - lr * v
    assert_close(out.theta, theta)
    lrs = [r[0] for r in records]
    T = len(lrs)
    expected = torch.zeros(tiny.n, mlp.n_params, dtype=torch.float64)
    for t, (lr, idx, G) in enumerate(records):
        carried = sum(lrs[t + k] * mu**k for k in range(1, T - t))
        expected[idx] -= (lr + carried) * G
    assert_close(out.responses, expected)


def test_flush_coefficients_match_their_definition():
    lrs = torch.tensor([0.3, 0.2, 0.2, 0.1, 0.05], dtype=torch.float64)
    mu = 0.7
    c = flush_coefficients(lrs, mu)
    expected = [sum(float(lrs[t + k]) * mu**k for k in range(1, 5 - t)) for t in range(5)]
    assert_close(c, torch.tensor(expected, dtype=torch.float64))
    assert torch.equal(flush_coefficients(lrs, 0.0), torch.zeros(5, dtype=torch.float64))


def total_steps(n, cfg) -> int:
    return cfg.epochs * len(batch_orders(n, cfg)[0])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_horizon_covering_the_run_is_the_full_horizon(tiny, momentum):
    mlp, cfg = mlp_for(tiny), config(momentum=momentum)
    T = total_steps(tiny.n, cfg)
    assert T == 9
    full = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(horizon=None)).responses
    for K in (T, 10 * T):
        assert torch.equal(train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(horizon=K)).responses, full)
    # K = T − 1 carries the first step's injection through every later step: the same maths
    # through the cohort ring, so equal up to rounding
    almost = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(horizon=T - 1)).responses
    assert_close(almost, full, rtol=1e-9, atol=1e-12)


def test_agreement_with_the_full_horizon_grows_with_the_horizon(tiny):
    mlp, cfg = mlp_for(tiny, "relu"), config(epochs=3)
    T = total_steps(tiny.n, cfg)
    full = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig()).responses
    errors = []
    for K in (0, 1, 2, 4, T - 1):
        r = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(horizon=K)).responses
        errors.append(float((r - full).norm() / full.norm()))
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.05 and errors[-1] < 1e-10, errors


def test_make_trajectory_picks_the_full_simulator_when_the_horizon_covers_the_run(tiny):
    mlp = mlp_for(tiny)
    kw = {
        "mlp": mlp,
        "n_sources": 4,
        "lrs": torch.full((9,), 0.1, dtype=torch.float64),
        "momentum": 0.0,
        "dtype": torch.float64,
        "budget_bytes": 2**30,
    }
    assert isinstance(make_trajectory(None, 9, batch_size=8, **kw), FullTrajectory)
    assert isinstance(make_trajectory(9, 9, batch_size=8, **kw), FullTrajectory)
    assert isinstance(make_trajectory(8, 9, batch_size=8, **kw), ShortTrajectory)
    assert isinstance(make_trajectory(0, 9, batch_size=8, **kw), ShortTrajectory)


# ---- linearity in the sources -----------------------------------------------------------


SCHEMES = {
    "full-sgd": ({}, SimulationConfig()),
    "full-momentum-wd": ({"momentum": 0.9, "weight_decay": 1e-2}, SimulationConfig()),
    "k3-momentum": ({"momentum": 0.9}, SimulationConfig(horizon=3)),
    "k0-momentum": ({"momentum": 0.9}, SimulationConfig(horizon=0)),
    "k2-gauss-newton": ({}, SimulationConfig(horizon=2, curvature="gauss-newton")),
    "stationary": ({"weight_decay": 1e-3}, SimulationConfig(scheme="stationary", horizon=20, damping=1.0)),
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_group_response_is_the_sum_of_its_members(tiny, scheme):
    overrides, sim = SCHEMES[scheme]
    mlp, cfg = mlp_for(tiny), config(**overrides)
    per_example = train(mlp, tiny.X, tiny.y, cfg, sim).responses
    grouped = train(mlp, tiny.X, tiny.y, cfg, sim, source_index=tiny.groups, n_sources=tiny.n_groups).responses
    assert_close(grouped, membership(tiny.groups) @ per_example, rtol=1e-9, atol=1e-12)


def test_a_source_never_seen_has_a_zero_response(tiny):
    mlp, cfg = mlp_for(tiny), config(epochs=1)
    out = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(), source_index=tiny.groups, n_sources=tiny.n_groups + 2)
    assert out.responses.shape == (tiny.n_groups + 2, mlp.n_params)
    assert torch.equal(out.responses[-2:], torch.zeros(2, mlp.n_params, dtype=torch.float64))


# ---- implementation choices do not change the responses ---------------------------------


@pytest.mark.parametrize("scheme", ["full-momentum-wd", "k3-momentum", "stationary"])
def test_tiny_cache_chunks_give_the_same_responses(tiny, monkeypatch, scheme):
    overrides, sim = SCHEMES[scheme]
    mlp, cfg = mlp_for(tiny), config(**overrides)
    whole = train(mlp, tiny.X, tiny.y, cfg, sim).responses
    monkeypatch.setattr(simulate, "CACHE_BYTES", 1)  # 8 tangents per product
    assert_close(train(mlp, tiny.X, tiny.y, cfg, sim).responses, whole, rtol=1e-10, atol=1e-13)


def test_stationary_memory_budget_chunks_give_the_same_responses(tiny):
    mlp, cfg = mlp_for(tiny), config(weight_decay=1e-3)
    sim = SimulationConfig(scheme="stationary", horizon=40, damping=1.0)
    whole = train(mlp, tiny.X, tiny.y, cfg, sim).responses
    tiny_budget = SimulationConfig(scheme="stationary", horizon=40, damping=1.0, memory_budget_mb=0.002)
    assert_close(train(mlp, tiny.X, tiny.y, cfg, tiny_budget).responses, whole, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("scheme", ["full-momentum-wd", "k3-momentum", "k2-gauss-newton", "stationary"])
def test_func_backend_gives_the_same_responses(tiny, scheme):
    overrides, sim = SCHEMES[scheme]
    mlp, cfg = mlp_for(tiny, "gelu", (5, 4)), config(**overrides)
    fast = train(mlp, tiny.X, tiny.y, cfg, sim).responses
    sim_func = dataclasses.replace(sim, backend="func")
    assert_close(train(mlp, tiny.X, tiny.y, cfg, sim_func).responses, fast, rtol=1e-9, atol=1e-12)


def test_response_dtype_only_changes_storage_precision(tiny):
    mlp, cfg = mlp_for(tiny), config(epochs=1)
    full = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig()).responses
    half = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(response_dtype="float16")).responses
    assert half.dtype == torch.float16
    assert_close(half.double(), full, rtol=1e-3, atol=1e-5)
