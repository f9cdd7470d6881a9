"""Compressed responses Δ ≈ C Qᵀ against the dense responses computed by the same engine.

The dense responses are themselves proven elsewhere (finite-difference retraining, explicit
Hessian solves: tests/engine/test_simulate.py), so here they are the oracle:

- the adjoint coefficients are the projection C = Δ_dense Q, to rounding, for plain SGD,
  momentum + weight decay and lr schedules, with checkpointed replays too;
- the forward sketch equals Δ_denseᵀ Ω;
- with rank ≥ m the compressed responses (and scores) equal the dense ones, for the full
  horizon, a short horizon (dense-then-compressed and one-pass), K = 0 and stationary;
- the readout equals Q-space inner products computed by reverse mode here;
- reruns are bit-identical; the memory budget is respected or refused with the fix.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.testing import assert_close

from attrcore import fit, load_dataset
from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine import compress
from attrcore.engine.compress import (
    CompressedResponses,
    Recording,
    adjoint_coefficients,
    compress_dense,
    forward_sketch,
    rank_for,
    resolve_rank,
)
from attrcore.engine.measures import measure
from attrcore.engine.model import MLP, MLPConfig
from attrcore.engine.readout import score, self_scores
from attrcore.engine.simulate import ShortTrajectory
from attrcore.engine.tangents import Tangents
from attrcore.engine.train import Replay, batch_orders, step_learning_rates, train
from attrcore.errors import ConfigError
from attrcore.run import TrainedRun
from attrcore.store import RunStore

CASES = {
    # name: (activation, hidden, TrainConfig overrides) — as in test_simulate's FD cases
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


def setup(tiny, case):
    activation, hidden, overrides = CASES[case]
    return MLP(MLPConfig(tiny.d, tiny.n_classes, hidden, activation)), config(**overrides)


def dense_and_compressed(tiny, mlp, cfg, sim: SimulationConfig, rank: int, **kw):
    dense = train(mlp, tiny.X, tiny.y, cfg, dataclasses.replace(sim, rank=None), **kw).responses
    comp = train(mlp, tiny.X, tiny.y, cfg, dataclasses.replace(sim, rank=rank), **kw).responses
    return dense, comp


def recording_of(tiny, mlp, cfg, budget_bytes=1e9) -> Recording:
    """The run replayed step by step into a Recording (as the training loop feeds it)."""
    X = tiny.X.double()
    orders = batch_orders(tiny.n, cfg)
    lrs = step_learning_rates(cfg, len(orders[0]))
    rp = Replay(mlp, X, tiny.y, None, [i for b in orders for i in b], lrs, cfg, "hessian", "mlp")
    rec = Recording(rp, budget_bytes)
    theta = mlp.init(torch.Generator().manual_seed(cfg.seed), torch.float64)
    v = torch.zeros_like(theta) if cfg.momentum else None
    for t in range(rp.total_steps):
        rec.record(t, theta, v)
        theta, v = rp.advance(t, theta, v)
    rec.final_theta = theta
    return rec


# ---- full horizon: adjoint and forward sketch ---------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("power_iterations", [0, 1])
def test_adjoint_coefficients_are_the_projection_of_the_dense_responses(tiny, case, power_iterations):
    mlp, cfg = setup(tiny, case)
    sim = SimulationConfig(power_iterations=power_iterations)
    dense, comp = dense_and_compressed(tiny, mlp, cfg, sim, rank=4)
    assert isinstance(comp, CompressedResponses) and comp.rank == 4 and len(comp) == tiny.n
    assert comp.info["method"] == "forward-sketch+adjoint"
    Qf = comp.Q.flat()
    assert_close(Qf @ Qf.T, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    expected = dense @ Qf.T
    assert expected.abs().max() > 1e-3  # a real projection, not 0 = 0
    assert_close(comp.C, expected, rtol=1e-9, atol=1e-10 * float(expected.abs().max()))


@pytest.mark.parametrize("case", ["sgd-relu-constant", "momentum-wd-cosine-tanh"])
def test_the_forward_sketch_is_the_dense_responses_times_omega(tiny, case):
    mlp, cfg = setup(tiny, case)
    dense = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(rank=None)).responses
    rec = recording_of(tiny, mlp, cfg)
    Om = torch.randn(tiny.n, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    Y = forward_sketch(rec, Om, torch.arange(tiny.n), 2**30)
    assert_close(Y.flat(), Om.T @ dense, rtol=1e-9, atol=1e-12)
    # and the in-training sketch (q = 0) spans exactly Δᵀ Ω for the run's own Ω
    comp = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(rank=3, power_iterations=0)).responses
    Om_run = compress.gaussian((tiny.n, 3), compress.sketch_generator(cfg.seed), torch.float64)
    Y_run = Om_run.T @ dense  # [3, p]
    Qf = comp.Q.flat()
    assert_close(Y_run - (Y_run @ Qf.T) @ Qf, torch.zeros_like(Y_run), rtol=0, atol=1e-12)


def test_power_iterations_sharpen_the_subspace(tiny):
    mlp, cfg = setup(tiny, "sgd-relu-constant")
    dense = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(rank=None)).responses
    errs = []
    for q in (0, 2):
        comp = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(rank=3, power_iterations=q)).responses
        errs.append(float(torch.linalg.norm(comp.dense() - dense)))
    best = float(torch.linalg.svdvals(dense)[3:].square().sum().sqrt())  # Eckart–Young
    assert best <= errs[1] < errs[0]
    assert errs[1] < 1.2 * best


def test_groups_get_one_coefficient_row_each(tiny):
    mlp, cfg = setup(tiny, "momentum-wd-step-gelu")
    kw = {"source_index": tiny.groups, "n_sources": tiny.n_groups}
    dense, comp = dense_and_compressed(tiny, mlp, cfg, SimulationConfig(), rank=3, **kw)
    assert comp.C.shape == (tiny.n_groups, 3)
    assert_close(comp.C, dense @ comp.Q.flat().T, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", ["sgd-relu-constant", "momentum-wd-cosine-tanh"])
def test_the_func_backend_gives_the_same_coefficients(tiny, case):
    mlp, cfg = setup(tiny, case)
    fast = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(rank=3)).responses
    ref = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(rank=3, backend="func")).responses
    assert_close(ref.dense(), fast.dense(), rtol=1e-9, atol=1e-12)


# ---- rank ≥ m reproduces the dense responses, every scheme ---------------------------------

SCHEMES = {
    "full-sgd": ({}, SimulationConfig()),
    "full-momentum-wd-cosine": (
        {"momentum": 0.9, "weight_decay": 1e-2, "lr_schedule": "cosine"},
        SimulationConfig(),
    ),
    "k3-momentum-wd": ({"momentum": 0.9, "weight_decay": 1e-2}, SimulationConfig(horizon=3)),
    "k0-momentum": ({"momentum": 0.9}, SimulationConfig(horizon=0)),
    "k2-step-schedule": (
        {"lr_schedule": "step", "step_every": 1, "step_gamma": 0.5},
        SimulationConfig(horizon=2),
    ),
    "stationary": ({"weight_decay": 1e-3}, SimulationConfig(scheme="stationary", horizon=20, damping=1.0)),
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_with_rank_at_least_m_compressed_scores_equal_dense_scores(tiny, scheme):
    overrides, sim = SCHEMES[scheme]
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, (5,), "tanh"))
    cfg = config(**overrides)
    out_dense = train(mlp, tiny.X, tiny.y, cfg, dataclasses.replace(sim, rank=None))
    out = train(mlp, tiny.X, tiny.y, cfg, dataclasses.replace(sim, rank=tiny.n))
    assert torch.equal(out.theta, out_dense.theta)  # compression never touches training
    comp, dense = out.responses, out_dense.responses
    assert isinstance(comp, CompressedResponses) and comp.rank == tiny.n
    scale = float(dense.abs().max())
    assert_close(comp.dense(), dense, rtol=0, atol=1e-10 * scale)
    for kind in ("margin", "loss"):
        s_dense = score(mlp, out.theta, dense, tiny.X_query, tiny.y_query, kind, out_dtype=torch.float64)
        s_comp = score(mlp, out.theta, comp, tiny.X_query, tiny.y_query, kind, out_dtype=torch.float64)
        assert_close(s_comp, s_dense, rtol=1e-9, atol=1e-10 * float(s_dense.abs().max()))


@pytest.mark.parametrize("horizon", [0, 2])
def test_the_one_pass_sketch_of_a_short_horizon_is_exact_at_full_rank(tiny, horizon):
    """The ring feeding a StreamingSketch instead of the dense Δ, step by step."""
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, (5,), "tanh"))
    cfg = config(momentum=0.9, weight_decay=1e-2, batch_size=4)
    dense = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(horizon=horizon, rank=None)).responses
    rec = recording_of(tiny, mlp, cfg)
    rp = rec.replay
    for rank in (tiny.n, 6):
        sink = compress.StreamingSketch(Tangents.zeros(mlp, 1, torch.float64), tiny.n, rank, 0, torch.float64)
        traj = ShortTrajectory(
            mlp, tiny.n, rp.lrs, cfg.momentum, torch.float64, 2**30, horizon, cfg.batch_size, sink=sink
        )
        for t, theta in rec.forward():
            traj.step(t, rp.curvature(t, theta), rp.batch(t))
        comp = traj.finalize()
        assert comp.info["method"] == "one-pass-sketch" and comp.rank == rank
        if rank == tiny.n:
            assert_close(comp.dense(), dense, rtol=0, atol=1e-10 * float(dense.abs().max()))
        else:  # a rank-r approximation within a small factor of the best one
            best = float(torch.linalg.svdvals(dense)[rank:].square().sum().sqrt())
            assert best <= float(torch.linalg.norm(comp.dense() - dense)) < 3 * best


def test_a_short_horizon_switches_to_the_one_pass_sketch_when_dense_does_not_fit(make_problem):
    data = make_problem(n=1000, d=3, n_classes=3, seed=2)
    mlp = MLP(MLPConfig(3, 3, (5,), "tanh"))
    cfg = config(epochs=1, batch_size=50, momentum=0.9)
    p = mlp.n_params
    dense_bytes = 1000 * p * 8
    sim = SimulationConfig(horizon=2, rank=2, memory_budget_mb=0.6 * dense_bytes / 2**20)
    out = train(mlp, data.X, data.y, cfg, sim)
    assert out.responses.info["method"] == "one-pass-sketch" and out.responses.rank == 2
    roomy = train(mlp, data.X, data.y, cfg, dataclasses.replace(sim, memory_budget_mb=64.0)).responses
    assert roomy.info["method"] == "randomized-svd"
    with pytest.raises(ConfigError, match="memory budget"):
        train(mlp, data.X, data.y, cfg, dataclasses.replace(sim, memory_budget_mb=0.05 * dense_bytes / 2**20))


# ---- compress_dense -------------------------------------------------------------------------


def test_compress_dense_is_a_randomized_svd(tiny):
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, (5,), "tanh"))
    R = train(mlp, tiny.X, tiny.y, config(), SimulationConfig(rank=None)).responses
    full = compress_dense(R, tiny.n, power_iterations=0, seed=3, mlp=mlp)
    assert_close(full.dense(), R, rtol=0, atol=1e-12)
    # the same from a Tangents stack, without the model
    stack = Tangents.from_flat(mlp, R)
    again = compress_dense(stack, tiny.n, power_iterations=0, seed=3)
    assert torch.equal(again.C, full.C) and torch.equal(again.Q.flat(), full.Q.flat())
    low = compress_dense(R, 4, power_iterations=2, seed=3, mlp=mlp)
    Qf = low.Q.flat()
    assert_close(Qf @ Qf.T, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    assert_close(low.C, R @ Qf.T, rtol=1e-12, atol=1e-14)  # exact projection
    s = torch.linalg.svdvals(R)
    err = float(torch.linalg.norm(low.dense() - R))
    assert float(s[4:].square().sum().sqrt()) <= err < 1.1 * float(s[4:].square().sum().sqrt())
    # columns in SVD order: truncating keeps the best lower rank within the span
    two = low.truncate(2)
    assert two.rank == 2
    assert_close(torch.linalg.norm(two.C, dim=0), s[:2], rtol=0.1, atol=0)
    # float32 responses stay float32; float16 are computed in float32
    half = compress_dense(R.half(), 4, seed=3, mlp=mlp)
    assert half.C.dtype == torch.float32 and half.Q.dtype == torch.float32


def test_compress_dense_errors_name_the_fix(tiny):
    R = torch.zeros(4, 10, dtype=torch.float64)
    with pytest.raises(ConfigError, match="mlp"):
        compress_dense(R, 2)
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, (5,), "tanh"))
    R = torch.zeros(4, mlp.n_params)
    with pytest.raises(ConfigError, match="rank"):
        compress_dense(R, 0, mlp=mlp)
    with pytest.raises(ConfigError, match="power iterations"):
        compress_dense(R, 2, power_iterations=-1, mlp=mlp)


# ---- the readout ----------------------------------------------------------------------------


@pytest.mark.parametrize("readout_kind", ["jvp", "cd"])
@pytest.mark.parametrize("backend", ["mlp", "func"])
def test_compressed_readout_is_the_q_space_inner_product_by_reverse_mode(tiny, readout_kind, backend):
    mlp, cfg = setup(tiny, "momentum-wd-step-gelu")
    comp = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(rank=5)).responses
    theta = train(mlp, tiny.X, tiny.y, cfg).theta
    J = torch.func.jacrev(lambda t: measure(mlp.forward(t, tiny.X_query), tiny.y_query, "margin"))(theta)
    expected = (J @ comp.Q.flat().T) @ comp.C.T  # [Q, r] then [r, m]
    got = score(
        mlp, theta, comp, tiny.X_query, tiny.y_query, readout=readout_kind, backend=backend, out_dtype=torch.float64
    )
    tol = 1e-10 if readout_kind == "jvp" else 1e-6
    assert_close(got, expected, rtol=tol, atol=tol * float(expected.abs().max()))
    assert score(mlp, theta, comp, tiny.X_query, tiny.y_query).dtype == torch.float32


# ---- runs: save, load, rerun ------------------------------------------------------------------


def test_a_compressed_run_saves_loads_and_scores_the_same():
    ds = load_dataset("moons", n_samples=80)
    cfg = TrainConfig(epochs=2, batch_size=16)
    run = fit(ds, hidden=(6,), train_config=cfg, simulation=SimulationConfig(rank=8))
    assert run.compressed and run.compression["rank"] == 8
    p, m = run.mlp.n_params, ds.n_train
    assert run.bytes_per_source() == pytest.approx(8 * (p + m) * 4 / m)
    run.save(RunStore(), "moons-r8")
    loaded = TrainedRun.load(RunStore(), "moons-r8")
    assert loaded.compressed and loaded.compression["method"] == "forward-sketch+adjoint"
    assert torch.equal(loaded.responses.C, run.responses.C)
    assert_close(
        torch.from_numpy(loaded.score(ds.X_test, ds.y_test)), torch.from_numpy(run.score(ds.X_test, ds.y_test))
    )
    rec = RunStore().load_run("moons-r8")
    assert not any(k.startswith("responses.") for k in rec.tensors)  # instead of, not beside, dense
    assert rec.meta["bytes_per_source"] == pytest.approx(run.bytes_per_source())
    dense = fit(ds, hidden=(6,), train_config=cfg, simulation=SimulationConfig(rank=None))
    dense.save(RunStore(), "moons-dense")
    assert not TrainedRun.load(RunStore(), "moons-dense").compressed


@pytest.mark.parametrize("horizon", [None, 3])
def test_the_same_seed_gives_bit_identical_compressed_responses(tiny, horizon):
    mlp, cfg = setup(tiny, "momentum-wd-cosine-tanh")
    sim = SimulationConfig(horizon=horizon, rank=4)
    a, b = (train(mlp, tiny.X, tiny.y, cfg, sim).responses for _ in range(2))
    assert torch.equal(a.C, b.C) and torch.equal(a.Q.flat(), b.Q.flat())
    c = train(mlp, tiny.X, tiny.y, dataclasses.replace(cfg, seed=1), sim).responses
    assert not torch.equal(a.C, c.C)


# ---- memory ---------------------------------------------------------------------------------


def test_replays_from_checkpoints_are_bit_identical_and_spacing_adapts(tiny):
    mlp, cfg = setup(tiny, "momentum-wd-cosine-tanh")
    cfg = dataclasses.replace(cfg, epochs=4, batch_size=5)
    p, T = mlp.n_params, 4 * 5
    everything = recording_of(tiny, mlp, cfg, budget_bytes=T * p * 8)
    assert everything.mode == "all"
    assert torch.equal(everything.final_theta, train(mlp, tiny.X, tiny.y, cfg).theta)
    forward = [th for _, th in everything.forward()]
    spacings = set()
    for budget in (T * p * 8 - 1, Recording.min_bytes(T, p, 8, True)):
        rec = recording_of(tiny, mlp, cfg, budget_bytes=budget)
        assert rec.mode == "checkpoints" and rec.nbytes <= budget
        spacings.add(rec.spacing)
        ts = [t for t, _ in rec.backward()]
        assert ts == list(range(T - 1, -1, -1))
        back = [th for _, th in rec.backward()][::-1]
        assert all(torch.equal(a, b) for a, b in zip(back, forward))
        assert all(torch.equal(a, b) for (_, a), b in zip(rec.forward(), forward))
        Q = compress.orthonormal(Tangents.from_flat(mlp, torch.randn(3, p, dtype=torch.float64)))
        src = torch.arange(tiny.n)
        assert torch.equal(
            adjoint_coefficients(rec, Q, src, tiny.n, 2**30), adjoint_coefficients(everything, Q, src, tiny.n, 2**30)
        )
    with pytest.raises(ConfigError, match="memory budget"):
        recording_of(tiny, mlp, cfg, budget_bytes=p * 8)


def test_the_memory_budget_is_respected_in_training_or_refused_with_the_fix(tiny):
    mlp, cfg = setup(tiny, "momentum-wd-cosine-tanh")
    cfg = dataclasses.replace(cfg, epochs=4, batch_size=5)
    base = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(rank=3)).responses
    assert base.info["recording"] == "all"
    est = compress.full_horizon_memory(3, mlp.n_params, tiny.n, cfg.epochs * 5, 8, True)
    assert est["min_bytes"] < est["all_bytes"]
    # room for the rank-3 state and a few checkpoints, but not for every θ_t
    tight = SimulationConfig(rank=3, memory_budget_mb=(est["all_bytes"] - 1) / 2**20)
    comp = train(mlp, tiny.X, tiny.y, cfg, tight).responses
    assert comp.info["recording"] == "checkpoints" and comp.info["checkpoint_spacing"] > 1
    assert_close(comp.C, base.C, rtol=1e-12, atol=1e-15)
    with pytest.raises(ConfigError, match="memory budget") as err:
        train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(rank=3, memory_budget_mb=(est["min_bytes"] - 1) / 2**20))
    assert "lower the rank" in str(err.value)


# ---- the automatic rank --------------------------------------------------------------------


def test_auto_rank_is_dense_where_dense_is_cheap_and_compressed_above():
    assert resolve_rank(None, 10**5, 10**5)[0] is None
    assert resolve_rank("auto", 24, 38)[0] is None  # tiny
    rank, why = resolve_rank("auto", 1437, 9610)  # digits-mlp: 4.9× the rank-256 factors
    assert rank is None and "dense" in why and "4.9" in why
    rank, why = resolve_rank("auto", 4000, 78858)  # mnist1d-mlp: 15×
    assert rank == 256 and "14.9" in why
    assert resolve_rank(64, 10, 38)[0] == 38  # capped at p
    assert resolve_rank(8, 24, 38) == (8, "rank 8")
    assert SimulationConfig().rank == "auto"
    for value, parsed in (("dense", None), ("none", None), ("16", 16), (16, 16), ("auto", "auto")):
        assert SimulationConfig(rank=value).rank == parsed
    for bad in (0, -1, 1.5, "x", True):
        with pytest.raises(ConfigError, match="rank"):
            SimulationConfig(rank=bad)
    with pytest.raises(ConfigError, match="power iterations"):
        SimulationConfig(power_iterations=-1)


def test_compressed_self_influence_is_the_diagonal_of_the_compressed_scores(tiny):
    """r JVPs per training point, then a row-wise dot with C (per example and grouped)."""
    mlp, cfg = setup(tiny, "sgd-relu-constant")
    out = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(rank=6))
    comp = out.responses
    full = score(mlp, out.theta, comp, tiny.X, tiny.y, "loss", out_dtype=torch.float64)
    diag = self_scores(mlp, out.theta, comp, tiny.X, tiny.y, "loss")
    assert_close(diag.double(), torch.diagonal(full), rtol=1e-6, atol=1e-9)
    kw = {"source_index": tiny.groups, "n_sources": tiny.n_groups}
    grouped = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(rank=3), **kw).responses
    full_g = score(mlp, out.theta, grouped, tiny.X, tiny.y, "loss", out_dtype=torch.float64)
    diag_g = self_scores(mlp, out.theta, grouped, tiny.X, tiny.y, "loss", source_index=tiny.groups)
    assert_close(diag_g.double(), full_g[torch.arange(tiny.n), tiny.groups], rtol=1e-6, atol=1e-9)


# ---- stationary: the symmetric Neumann sketch ------------------------------------------------


@pytest.mark.parametrize(("curvature", "power_iterations"), [("hessian", 1), ("gauss-newton", 0)])
def test_the_symmetric_neumann_sketch_projects_the_dense_stationary_responses(tiny, curvature, power_iterations):
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, (5,), "tanh"))
    cfg = config(epochs=3, weight_decay=1e-3)
    sim = SimulationConfig(
        scheme="stationary", horizon=30, damping=1.0, curvature=curvature, power_iterations=power_iterations
    )
    dense_out = train(mlp, tiny.X, tiny.y, cfg, dataclasses.replace(sim, rank=None))
    out = train(mlp, tiny.X, tiny.y, cfg, dataclasses.replace(sim, rank=3))  # 2(q+1)·3 < 24: the sketch
    comp, dense = out.responses, dense_out.responses
    assert comp.info["method"] == "symmetric-neumann-sketch" and comp.rank == 3
    assert out.extras["neumann_step_size"] == dense_out.extras["neumann_step_size"]  # the same α
    expected = dense @ comp.Q.flat().T
    assert_close(comp.C, expected, rtol=1e-9, atol=1e-10 * float(expected.abs().max()))
    if power_iterations == 0:  # Q spans Δᵀ Ω for the run's Ω
        Om = compress.gaussian((tiny.n, 3), compress.sketch_generator(cfg.seed), torch.float64)
        Y, Qf = Om.T @ dense, comp.Q.flat()
        assert_close(Y - (Y @ Qf.T) @ Qf, torch.zeros_like(Y), rtol=0, atol=1e-12)
    # groups: one coefficient row per group, the members' sum
    kw = {"source_index": tiny.groups, "n_sources": tiny.n_groups}
    dense_g = train(mlp, tiny.X, tiny.y, cfg, dataclasses.replace(sim, rank=None), **kw).responses
    g = train(mlp, tiny.X, tiny.y, cfg, dataclasses.replace(sim, rank=1, power_iterations=0), **kw).responses
    assert g.info["method"] == "symmetric-neumann-sketch"
    assert_close(g.C, dense_g @ g.Q.flat().T, rtol=1e-9, atol=1e-12)


def test_auto_rank_keeps_finite_horizon_trajectories_dense():
    """Short-horizon responses are nearly full-rank (mnist1d K = 4: rank 256 LDS 0.114 vs dense
    0.188), so ``auto`` keeps them dense; the full horizon and stationary still compress."""
    m, p = 4000, 78858  # mnist1d-mlp
    assert rank_for(SimulationConfig(horizon=4), m, p)[0] is None
    assert "finite-horizon" in rank_for(SimulationConfig(horizon=4), m, p)[1]
    assert rank_for({"scheme": "trajectory", "horizon": "16", "rank": "auto"}, m, p)[0] is None
    assert rank_for(SimulationConfig(horizon=None), m, p)[0] == 256
    assert rank_for({"scheme": "trajectory", "horizon": "full", "rank": "auto"}, m, p)[0] == 256
    assert rank_for(SimulationConfig(scheme="stationary", horizon=50), m, p)[0] == 256
    assert rank_for(SimulationConfig(horizon=4, rank=128), m, p)[0] == 128  # an explicit rank applies
