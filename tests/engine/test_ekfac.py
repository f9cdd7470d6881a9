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

from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close

from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine import MLP, MLPConfig, ekfac
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


def make_sim(mlp, n, lrs, cfg, horizon, segment, time_scale=1.0, decay="exp", rank=0):
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
        decay=decay,
        rank=rank,
        rank_iterations=60,
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


def dense_map(op, h, decay):
    """The map of steps with effective steps ``h`` on a dense symmetric ``op``: exp(−Σh op), or
    per step I − h op on the eigen-modes where h λ < 2 and exp(−h op) on the others."""
    if decay == "exp":
        return torch.linalg.matrix_exp(-float(h.sum()) * op)
    lam, V = torch.linalg.eigh(op)
    f = torch.ones_like(lam)
    for hk in h.tolist():
        x = hk * lam
        f = f * torch.where(x < 2, 1 - x, torch.exp(-x))
    return V @ torch.diag(f) @ V.T


def oracle(mlp, X, y, thetas, batches, lrs, cfg, horizon, segment, decay="exp", tops=None):
    """Responses [n, p] with dense maps (matrix exponentials, or the discrete map) of the
    explicit EK-FAC matrices.

    ``tops``: per segment an orthonormal ``V [r, P]`` (the layers' row-major ``[o, i + 1]``
    blocks one after the other): the map is then V f(S) Vᵀ + (I − P) E (I − P), with S the
    Rayleigh–Ritz values of the explicit whole-network Gauss–Newton matrix on span V and E the
    block-diagonal EK-FAC map; ``V = I`` gives the exact whole-network GN map."""
    n, L, mu = X.shape[0], mlp.n_layers, cfg.momentum
    T = len(thetas)
    eta_eff = lrs / (1 - mu)
    c = flush_coefficients(lrs, mu)
    sizes = mlp.config.sizes
    shapes = [(sizes[k + 1], sizes[k] + 1) for k in range(L)]
    P_all = sum(o * i for o, i in shapes)
    resp = torch.zeros(n, P_all, dtype=torch.float64)
    l2 = cfg.weight_decay
    seg_starts = list(range(0, T, segment))
    prev_map = None
    for number, s0 in enumerate(seg_starts):
        steps = range(s0, min(T, s0 + segment))
        A = [torch.zeros(i, i, dtype=torch.float64) for o, i in shapes]
        G = [torch.zeros(o, o, dtype=torch.float64) for o, i in shapes]
        H = torch.zeros(P_all, P_all, dtype=torch.float64)  # the whole-network GN
        count = 0
        for t in steps:
            th = thetas[t]
            for j in batches[t].tolist():
                x = X[j]
                z = mlp.forward(th, x.unsqueeze(0))[0]
                p = torch.softmax(z, 0)
                Hz = torch.diag(p) - torch.outer(p, p)
                Js = []
                for k, (o, i) in enumerate(shapes):
                    P = layer_params(mlp, th, k)
                    J = torch.func.jacrev(lambda P_, th=th, k=k, x=x: logits_with_layer(mlp, th, k, P_, x))(P)
                    J = J.reshape(len(z), -1)
                    Js.append(J)
                    a = layer_input(mlp, th, k, x)
                    A[k] += torch.outer(a, a)
                    # ∂logits/∂pre of layer k: J restricted to the bias column
                    Bk = J.view(len(z), o, i)[:, :, -1]
                    G[k] += Bk.T @ Hz @ Bk
                Jf = torch.cat(Js, 1)
                H += Jf.T @ Hz @ Jf
                count += 1
        H = H / count
        ops, offset = [], 0
        for k, (o, i) in enumerate(shapes):
            QA = torch.linalg.eigh(A[k] / count)[1]
            QG = torch.linalg.eigh(G[k] / count)[1]
            K = torch.kron(QG, QA)  # row-major vec of [o, i + 1]
            blk = slice(offset, offset + o * i)
            lam = torch.diagonal(K.T @ H[blk, blk] @ K).clamp_min(0) + l2  # diag of the layer GN block
            ops.append((blk, K @ torch.diag(lam) @ K.T))
            offset += o * i
        V = None if tops is None else tops[number]
        Hl2 = H + l2 * torch.eye(P_all, dtype=torch.float64)

        def seg_map(h, ops=ops, V=V, Hl2=Hl2):
            E = torch.zeros(P_all, P_all, dtype=torch.float64)
            for blk, op in ops:
                E[blk, blk] = dense_map(op, h, decay)
            if V is None:
                return E
            S, R = torch.linalg.eigh(V @ Hl2 @ V.T)
            Vr = R.T @ V
            Pr = torch.eye(P_all, dtype=torch.float64) - V.T @ V
            return Vr.T @ dense_map(torch.diag(S), h, decay) @ Vr + Pr @ E @ Pr

        last = steps[-1]
        if horizon is None and prev_map is not None:
            resp = resp @ seg_map(eta_eff[s0 : last + 1]).T
        for t in steps:
            th = thetas[t]
            stop = last if horizon is None else min(T - 1, t + horizon)
            prop = seg_map(eta_eff[t + 1 : stop + 1])
            for j in batches[t].tolist():
                xj, yj = X[j : j + 1], y[j : j + 1]
                g = torch.func.grad(
                    lambda th_, xj=xj, yj=yj: torch.nn.functional.cross_entropy(mlp.forward(th_, xj), yj)
                )(th) / len(batches[t])
                gv = torch.cat([torch.cat([W, b.unsqueeze(1)], 1).reshape(-1) for W, b in mlp.unflatten(g)])
                resp[j] += -(float(lrs[t]) + float(c[t])) * (prop @ gv)
        prev_map = seg_map
    out, offset = [], 0
    for o, i in shapes:
        R = resp[:, offset : offset + o * i].reshape(n, o, i)
        out += [R[:, :, :-1].reshape(n, -1), R[:, :, -1]]
        offset += o * i
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


@pytest.mark.parametrize("horizon,segment", [(None, 4), (2, 3)])
def test_discrete_decay_matches_the_dense_oracle(horizon, segment):
    """The discrete map against the dense oracle; the recipe (η_eff up to 8) puts modes on
    both sides of η_eff λ = 2, so both branches are exercised."""
    mlp, X, y = problem()
    cfg = replace(CFG, lr=0.8)
    lrs = step_learning_rates(cfg, 3)
    sim = make_sim(mlp, X.shape[0], lrs, cfg, horizon, segment, decay="discrete")
    thetas, batches, _, lrs = drive(mlp, X, y, cfg, sim)
    x = torch.cat([lb.lam.flatten() for lb in sim.basis]) * float(lrs.max()) / (1 - cfg.momentum)
    assert bool((x < 2).any()) and bool((x >= 2).any())
    fast = sim.finalize().flat()
    ref = oracle(mlp, X, y, thetas, batches, lrs, cfg, horizon, segment, decay="discrete")
    assert float(ref.abs().max()) > 1e-3
    assert_close(fast, ref, rtol=1e-9, atol=1e-11)
    exp = make_sim(mlp, X.shape[0], lrs, cfg, horizon, segment)
    drive(mlp, X, y, cfg, exp)
    assert float((exp.finalize().flat() - fast).abs().max()) > 1e-4  # a different map


def test_discrete_decay_is_the_exact_discrete_map_where_stable():
    """Plain SGD with a small step (every η λ < 2): per segment the scheme's map of K steps is
    the product Π (I − η_k H_s) of the explicit EK-FAC matrix H_s, the exact scheme's form."""
    mlp, X, y = problem()
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=8, weight_decay=1e-3, dtype="float64")
    lrs = step_learning_rates(cfg, 3)
    sim = make_sim(mlp, X.shape[0], lrs, cfg, 2, 3, decay="discrete")
    thetas, batches, _, lrs = drive(mlp, X, y, cfg, sim)
    fast = sim.finalize().flat()
    ref = oracle(mlp, X, y, thetas, batches, lrs, cfg, 2, 3, decay="discrete")
    assert_close(fast, ref, rtol=1e-9, atol=1e-11)
    # the oracle's spectral form equals the plain matrix product when every mode is stable
    lam = torch.cat([lb.lam.flatten() for lb in sim.basis])
    assert float(lam.max()) * float(lrs.max()) < 2
    op = torch.diag(lam[:7]) + 0.01 * torch.ones(7, 7, dtype=torch.float64)
    h = lrs[:3]
    prod = torch.eye(7, dtype=torch.float64)
    for hk in h.tolist():
        prod = (torch.eye(7, dtype=torch.float64) - hk * op) @ prod
    assert_close(dense_map(op, h, "discrete"), prod, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("horizon,decay", [(None, "exp"), (2, "exp"), (None, "discrete")])
def test_full_rank_is_the_exact_whole_network_gauss_newton_map(horizon, decay):
    """ekfac_rank = p: every direction is propagated by the segment's whole-network GN
    (cross-layer blocks included), against the oracle's dense map of the explicit GN."""
    mlp, X, y = problem()
    lrs = step_learning_rates(CFG, 3)
    sim = make_sim(mlp, X.shape[0], lrs, CFG, horizon, 3, decay=decay, rank=mlp.n_params)
    thetas, batches, _, lrs = drive(mlp, X, y, CFG, sim)
    fast = sim.finalize().flat()
    eye = [torch.eye(mlp.n_params, dtype=torch.float64)] * 2
    ref = oracle(mlp, X, y, thetas, batches, lrs, CFG, horizon, 3, decay=decay, tops=eye)
    assert_close(fast, ref, rtol=1e-8, atol=1e-10)
    block = oracle(mlp, X, y, thetas, batches, lrs, CFG, horizon, 3, decay=decay)
    assert float((block - ref).abs().max()) > 1e-4  # the cross-layer blocks matter here


@pytest.mark.parametrize("horizon", [None, 2])
def test_low_rank_part_and_ekfac_rest_match_the_oracle(monkeypatch, horizon):
    """0 < ekfac_rank < p: V f(S) Vᵀ + (I − P) E (I − P) per segment, V the top eigenvectors
    the scheme found (they are eigenvectors of the whole-network GN: small residual)."""
    mlp, X, y = problem()
    lrs = step_learning_rates(CFG, 3)
    found = []
    top_gn_eigen = ekfac.top_gn_eigen

    def recording(records, shapes, l2, start, iterations):
        V, S = top_gn_eigen(records, shapes, l2, start, iterations)
        HV = ekfac.segment_gn_product(records, V, l2)
        for hv, v in zip(HV, V):  # H v = S v, layer by layer
            assert_close(hv, S.view(-1, 1, 1) * v, rtol=0, atol=1e-7 * float(S.max()))
        found.append(torch.cat([v.reshape(v.shape[0], -1) for v in V], 1))
        return V, S

    monkeypatch.setattr(ekfac, "top_gn_eigen", recording)
    sim = make_sim(mlp, X.shape[0], lrs, CFG, horizon, 3, rank=4)
    thetas, batches, _, lrs = drive(mlp, X, y, CFG, sim)
    fast = sim.finalize().flat()
    assert len(found) == 2
    ref = oracle(mlp, X, y, thetas, batches, lrs, CFG, horizon, 3, tops=found)
    assert_close(fast, ref, rtol=1e-8, atol=1e-10)
    plain = oracle(mlp, X, y, thetas, batches, lrs, CFG, horizon, 3)
    assert float((plain - ref).abs().max()) > 1e-4


def test_zero_curvature_equals_trajectory_k0():
    mlp, X, y = problem(n=30, hidden=(6, 4))
    cfg = TrainConfig(epochs=3, lr=0.2, batch_size=7, momentum=0.9, weight_decay=1e-2, dtype="float64")
    ref = train(mlp, X, y, cfg, SimulationConfig(scheme="trajectory", horizon=0)).responses
    lrs = step_learning_rates(cfg, 5)
    for horizon in (None, 3):
        for rank in (0, 5):
            sim = make_sim(mlp, X.shape[0], lrs, cfg, horizon, segment=4, time_scale=0.0, rank=rank)
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
    with pytest.raises(ConfigError, match="ekfac_decay"):
        SimulationConfig(curvature="ekfac", ekfac_decay="linear")
    with pytest.raises(ConfigError, match="ekfac_rank"):
        SimulationConfig(curvature="ekfac", ekfac_rank=-1)
    cfg = SimulationConfig(curvature="ekfac", segment_steps=40)
    assert SimulationConfig.from_dict(cfg.to_dict()) == cfg
