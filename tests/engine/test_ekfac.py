"""The continuous-time EK-FAC trajectory scheme against oracles computed in the test.

- zero curvature (``time_scale=0``): the scheme equals the exact trajectory scheme at K = 0
  (the rotations between segment bases cancel exactly);
- an explicit float64 oracle: per segment the layer Gauss–Newton block built from
  per-example Jacobians (``torch.func.jacrev``), K-FAC factors from the layer inputs and
  the Jacobians of the logits in the pre-activations, the EK-FAC eigenvalues as the
  diagonal of the exact GN block in the Kronecker eigenbasis, and every propagation as a
  dense ``torch.linalg.matrix_exp`` — for the full horizon (carried through later
  segments) and for a finite horizon K;
- the config: ekfac only with the trajectory scheme; grouped sources add up.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine import MLP, MLPConfig
from attrcore.engine.curvature import MLPCurvature
from attrcore.engine.ekfac import EKFACTrajectory
from attrcore.engine.simulate import flush_coefficients
from attrcore.engine.train import batch_orders, step_learning_rates, train
from attrcore.errors import ConfigError

CFG = TrainConfig(
    epochs=2, lr=0.3, batch_size=8, momentum=0.9, weight_decay=1e-3, dtype="float64", lr_schedule="cosine"
)


def problem(n=24, d=4, C=3, hidden=(5,), seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (n,), generator=g)
    return MLP(MLPConfig(d, C, hidden, "tanh")), X, y


def drive(mlp, X, y, cfg, sim):
    """The training loop of :func:`train`, feeding ``sim``; returns (θ_t per step, batches, θ_T)."""
    theta = mlp.init(torch.Generator().manual_seed(cfg.seed), torch.float64)
    orders = batch_orders(X.shape[0], cfg)
    lrs = step_learning_rates(cfg, len(orders[0]))
    vel = torch.zeros_like(theta)
    thetas, batches, t = [], [], 0
    for epoch in orders:
        for idx in epoch:
            curv = MLPCurvature(mlp, theta, X[idx], y[idx], weight_decay=cfg.weight_decay, curvature="gauss-newton")
            if sim is not None:
                sim.step(t, curv, idx)
            thetas.append(theta.clone())
            batches.append(idx)
            vel.mul_(cfg.momentum).add_(curv.grad())
            theta = theta - float(lrs[t]) * vel
            t += 1
    return thetas, batches, theta, lrs


def make_sim(mlp, n, lrs, cfg, horizon, segment, time_scale=1.0):
    return EKFACTrajectory(
        mlp,
        n,
        lrs,
        cfg.momentum,
        torch.float64,
        2**30,
        horizon=horizon,
        segment_steps=segment,
        weight_decay=cfg.weight_decay,
        time_scale=time_scale,
    )


# --------------------------------------------------------------------------- the oracle


def layer_params(mlp, theta, layer):
    W, b = mlp.unflatten(theta)[layer]
    return torch.cat([W, b.unsqueeze(1)], 1)  # [o, i + 1]


def logits_with_layer(mlp, theta, layer, P, x):
    """Logits of one example with layer ``layer``'s [W | b] replaced by ``P``."""
    a = x
    for k, (W, b) in enumerate(mlp.unflatten(theta)):
        if k == layer:
            W, b = P[:, :-1], P[:, -1]
        z = W @ a + b
        a = torch.tanh(z) if k < mlp.n_layers - 1 else z
    return a


def layer_input(mlp, theta, layer, x):
    a = x
    for k, (W, b) in enumerate(mlp.unflatten(theta)):
        if k == layer:
            return torch.cat([a, torch.ones(1, dtype=a.dtype)])
        a = torch.tanh(W @ a + b)
    raise AssertionError


def oracle(mlp, X, y, thetas, batches, lrs, cfg, horizon, segment):
    """Responses [n, p] with dense matrix exponentials of the explicit EK-FAC matrices."""
    n, L, mu = X.shape[0], mlp.n_layers, cfg.momentum
    T = len(thetas)
    eta_eff = lrs / (1 - mu)
    c = flush_coefficients(lrs, mu)
    sizes = mlp.config.sizes
    shapes = [(sizes[k + 1], sizes[k] + 1) for k in range(L)]
    resp = [torch.zeros(n, o * i, dtype=torch.float64) for o, i in shapes]
    l2 = cfg.weight_decay
    seg_starts = list(range(0, T, segment))
    prev_ops = None
    for s0 in seg_starts:
        steps = range(s0, min(T, s0 + segment))
        ops = []
        for k, (o, i) in enumerate(shapes):
            A = torch.zeros(i, i, dtype=torch.float64)
            G = torch.zeros(o, o, dtype=torch.float64)
            H = torch.zeros(o * i, o * i, dtype=torch.float64)
            count = 0
            for t in steps:
                th = thetas[t]
                P = layer_params(mlp, th, k)
                for j in batches[t].tolist():
                    x = X[j]
                    z = mlp.forward(th, x.unsqueeze(0))[0]
                    p = torch.softmax(z, 0)
                    Hz = torch.diag(p) - torch.outer(p, p)
                    J = torch.func.jacrev(lambda P_, th=th, k=k, x=x: logits_with_layer(mlp, th, k, P_, x))(P)
                    J = J.reshape(len(z), -1)
                    H += J.T @ Hz @ J
                    a = layer_input(mlp, th, k, x)
                    A += torch.outer(a, a)
                    # ∂logits/∂pre of layer k: J restricted to the bias column
                    Bk = J.view(len(z), o, i)[:, :, -1]
                    G += Bk.T @ Hz @ Bk
                    count += 1
            A, G, H = A / count, G / count, H / count
            QA = torch.linalg.eigh(A)[1]
            QG = torch.linalg.eigh(G)[1]
            K = torch.kron(QG, QA)  # row-major vec of [o, i + 1]
            lam = torch.diagonal(K.T @ H @ K).clamp_min(0) + l2
            ops.append(K @ torch.diag(lam) @ K.T)
        last = steps[-1]
        if horizon is None and prev_ops is not None:
            span = float(eta_eff[s0 : last + 1].sum())
            for k in range(L):
                resp[k] = resp[k] @ torch.linalg.matrix_exp(-span * ops[k]).T
        for t in steps:
            th = thetas[t]
            stop = last if horizon is None else min(T - 1, t + horizon)
            span = float(eta_eff[t + 1 : stop + 1].sum())
            for j in batches[t].tolist():
                xj, yj = X[j : j + 1], y[j : j + 1]
                g = torch.func.grad(
                    lambda th_, xj=xj, yj=yj: torch.nn.functional.cross_entropy(mlp.forward(th_, xj), yj)
                )(th) / len(batches[t])
                for k, (W, b) in enumerate(mlp.unflatten(g)):
                    gk = torch.cat([W, b.unsqueeze(1)], 1).reshape(-1)
                    resp[k][j] += -(float(lrs[t]) + float(c[t])) * (torch.linalg.matrix_exp(-span * ops[k]) @ gk)
        prev_ops = ops
    out = []
    for k, (o, i) in enumerate(shapes):
        R = resp[k].view(n, o, i)
        out += [R[:, :, :-1].reshape(n, -1), R[:, :, -1]]
    return torch.cat(out, 1)


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("horizon,segment", [(None, 3), (None, 4), (2, 3)])
def test_matches_explicit_matrix_exponential_oracle(horizon, segment):
    mlp, X, y = problem()
    steps = 2 * 3
    lrs = step_learning_rates(CFG, 3)
    assert len(lrs) == steps
    sim = make_sim(mlp, X.shape[0], lrs, CFG, horizon, segment)
    thetas, batches, _, lrs = drive(mlp, X, y, CFG, sim)
    fast = sim.finalize().flat()
    ref = oracle(mlp, X, y, thetas, batches, lrs, CFG, horizon, segment)
    assert float(ref.abs().max()) > 1e-3  # a real response, not zeros
    assert_close(fast, ref, rtol=1e-9, atol=1e-11)


def test_zero_curvature_equals_trajectory_k0():
    mlp, X, y = problem(n=30, hidden=(6, 4))
    cfg = TrainConfig(epochs=3, lr=0.2, batch_size=7, momentum=0.9, weight_decay=1e-2, dtype="float64")
    ref = train(mlp, X, y, cfg, SimulationConfig(scheme="trajectory", horizon=0)).responses
    lrs = step_learning_rates(cfg, 5)
    for horizon in (None, 3):
        sim = make_sim(mlp, X.shape[0], lrs, cfg, horizon, segment=4, time_scale=0.0)
        drive(mlp, X, y, cfg, sim)
        assert_close(sim.finalize().flat(), ref, rtol=1e-12, atol=1e-14)


def test_train_runs_the_scheme_and_groups_add_up():
    mlp, X, y = problem(n=30)
    sim = SimulationConfig(scheme="trajectory", curvature="ekfac", segment_steps=3)
    per_example = train(mlp, X, y, CFG, sim).responses
    groups = torch.arange(30) % 4
    grouped = train(mlp, X, y, CFG, sim, source_index=groups, n_sources=4).responses
    expected = torch.zeros(4, mlp.n_params, dtype=torch.float64).index_add_(0, groups, per_example)
    assert_close(grouped, expected, rtol=1e-9, atol=1e-12)
    # the training itself never depends on the simulation
    plain = train(mlp, X, y, CFG).theta
    assert torch.equal(train(mlp, X, y, CFG, sim).theta, plain)


def test_config_validation():
    with pytest.raises(ConfigError, match="trajectory"):
        SimulationConfig(scheme="stationary", horizon=10, curvature="ekfac")
    with pytest.raises(ConfigError, match="segment"):
        SimulationConfig(curvature="ekfac", segment_steps=0)
    cfg = SimulationConfig(curvature="ekfac", segment_steps=40)
    assert SimulationConfig.from_dict(cfg.to_dict()) == cfg
