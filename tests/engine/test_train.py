"""Training: PyTorch SGD semantics, determinism, independence from the simulation, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from attrcore import fit, load_dataset
from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine import MLP, MLPConfig
from attrcore.engine.train import Progress, batch_orders, step_learning_rates, train
from attrcore.errors import CancelledError, ConfigError, DataError, DivergenceError, ShapeError
from attrcore.store import RunStore


def config(**overrides) -> TrainConfig:
    base = {"epochs": 3, "lr": 0.2, "batch_size": 10, "momentum": 0.0, "weight_decay": 0.0, "dtype": "float64"}
    return TrainConfig(**{**base, **overrides})


def mlp_for(tiny, activation="tanh", hidden=(5,)) -> MLP:
    return MLP(MLPConfig(tiny.d, tiny.n_classes, hidden, activation))


# ---- the optimiser ----------------------------------------------------------------------


def test_training_follows_torch_optim_sgd(tiny):
    """Same init, same batches: θ_T equals nn.Module + torch.optim.SGD with the same settings."""
    mlp = mlp_for(tiny, "gelu", (5, 4))
    cfg = config(epochs=4, lr=0.15, momentum=0.9, weight_decay=1e-2, lr_schedule="step", step_every=2, step_gamma=0.3)
    w = 0.5 + torch.rand(tiny.n, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    out = train(mlp, tiny.X, tiny.y, cfg, weights=w)

    module = mlp.to_module(mlp.init(torch.Generator().manual_seed(cfg.seed), torch.float64))
    opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    for epoch, batches in enumerate(batch_orders(tiny.n, cfg)):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * cfg.step_gamma ** (epoch // cfg.step_every)
        for idx in batches:
            opt.zero_grad()
            ce = F.cross_entropy(module(tiny.X[idx]), tiny.y[idx], reduction="none")
            (w[idx] * ce).mean().backward()  # (1/|B|) Σ w_i ℓ_i
            opt.step()
    assert_close(out.theta, mlp.flatten_module(module))


def test_learning_rate_schedules():
    steps = 4
    const = step_learning_rates(TrainConfig(epochs=3, lr=0.2), steps)
    assert_close(const, torch.full((12,), 0.2, dtype=torch.float64))
    step = step_learning_rates(TrainConfig(epochs=5, lr=0.2, lr_schedule="step", step_every=2, step_gamma=0.1), steps)
    expected = [0.2 * 0.1 ** ((t // steps) // 2) for t in range(20)]
    assert_close(step, torch.tensor(expected, dtype=torch.float64))
    cos = step_learning_rates(TrainConfig(epochs=2, lr=0.2, lr_schedule="cosine"), steps)
    expected = [0.2 * 0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)]
    assert_close(cos, torch.tensor(expected, dtype=torch.float64))


def test_history_records_the_schedule_and_metrics(tiny):
    cfg = config(epochs=3, lr_schedule="step", step_every=1, step_gamma=0.5)
    out = train(mlp_for(tiny), tiny.X, tiny.y, cfg, X_val=tiny.X_query, y_val=tiny.y_query)
    assert [h["epoch"] for h in out.history] == [1, 2, 3]
    assert [h["lr"] for h in out.history] == [0.2, 0.1, 0.05]
    for h in out.history:
        assert 0 <= h["train_accuracy"] <= 1 and 0 <= h["test_accuracy"] <= 1 and h["loss"] > 0
    assert out.responses is None
    assert set(out.timings) >= {"train_seconds", "simulate_seconds", "total_seconds"}


def test_batch_orders_are_seeded_permutations():
    cfg = TrainConfig(epochs=3, batch_size=4, seed=5)
    orders = batch_orders(10, cfg)
    assert [len(b) for b in orders[0]] == [4, 4, 2]
    for epoch in orders:
        assert sorted(torch.cat(epoch).tolist()) == list(range(10))
    again = batch_orders(10, TrainConfig(epochs=3, batch_size=4, seed=5, lr=0.3))  # only the seed matters
    assert all(torch.equal(a, b) for ea, eb in zip(orders, again) for a, b in zip(ea, eb))
    other = batch_orders(10, TrainConfig(epochs=3, batch_size=4, seed=6))
    assert not all(torch.equal(a, b) for a, b in zip(orders[0], other[0]))
    dropped = batch_orders(10, TrainConfig(epochs=1, batch_size=4, drop_last=True))
    assert [len(b) for b in dropped[0]] == [4, 4]


def test_checkpoints_are_taken_at_the_requested_epochs(tiny):
    mlp, cfg = mlp_for(tiny), config(epochs=3)
    out = train(mlp, tiny.X, tiny.y, cfg, checkpoint_epochs=(0, 2, 3))
    assert sorted(out.checkpoints) == [0, 2, 3]
    assert torch.equal(out.checkpoints[0], mlp.init(torch.Generator().manual_seed(cfg.seed), torch.float64))
    assert torch.equal(out.checkpoints[3], out.theta)
    two = train(mlp, tiny.X, tiny.y, config(epochs=2)).theta
    assert torch.equal(out.checkpoints[2], two)


# ---- the simulation does not change training --------------------------------------------


SIMULATIONS = {
    "none-scheme": SimulationConfig(scheme="none"),
    "full": SimulationConfig(),
    "k2": SimulationConfig(horizon=2),
    "k0": SimulationConfig(horizon=0),
    "k1-gauss-newton": SimulationConfig(horizon=1, curvature="gauss-newton"),
    "stationary": SimulationConfig(scheme="stationary", horizon=5, damping=1.0),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(SIMULATIONS))
def test_simulation_leaves_the_trained_parameters_bit_identical(tiny, name, dtype):
    mlp = mlp_for(tiny, "relu", (5,))
    cfg = config(dtype=dtype, momentum=0.9, weight_decay=1e-3, lr=0.1)
    plain = train(mlp, tiny.X, tiny.y, cfg)
    simulated = train(mlp, tiny.X, tiny.y, cfg, SIMULATIONS[name])
    assert torch.equal(simulated.theta, plain.theta)
    assert simulated.history == plain.history


def test_func_backend_simulation_leaves_the_trained_parameters_bit_identical(tiny):
    mlp = mlp_for(tiny, "relu", (5,))
    cfg = config(momentum=0.9, weight_decay=1e-3, lr=0.1)
    plain = train(mlp, tiny.X, tiny.y, cfg)
    simulated = train(mlp, tiny.X, tiny.y, cfg, SimulationConfig(backend="func"))
    assert torch.equal(simulated.theta, plain.theta)


@pytest.mark.parametrize(
    "sim", [SimulationConfig(), SimulationConfig(horizon=3), SimulationConfig(scheme="stationary", horizon=5)]
)
def test_same_seed_data_and_config_give_bit_identical_float32_results(tiny, sim):
    mlp = mlp_for(tiny, "relu", (6,))
    cfg = config(dtype="float32", momentum=0.9, weight_decay=1e-4)
    X, y = tiny.X.float(), tiny.y
    a = train(mlp, X, y, cfg, sim)
    b = train(mlp, X.clone(), y.clone(), cfg, sim)
    assert a.theta.dtype == torch.float32 and a.responses.dtype == torch.float32
    assert torch.equal(a.theta, b.theta)
    assert torch.equal(a.responses, b.responses)
    assert a.history == b.history
    c = train(mlp, X, y, TrainConfig(**{**cfg.to_dict(), "seed": 1}), sim)
    assert not torch.equal(a.theta, c.theta)


def test_numpy_inputs_are_accepted(tiny):
    mlp, cfg = mlp_for(tiny), config(epochs=1)
    a = train(mlp, tiny.X, tiny.y, cfg)
    b = train(mlp, tiny.X.numpy(), tiny.y.numpy(), cfg)
    assert torch.equal(a.theta, b.theta)


# ---- progress and cancellation ----------------------------------------------------------


def test_progress_is_reported_per_epoch_and_per_neumann_step(tiny):
    reports: list[Progress] = []
    sim = SimulationConfig(scheme="stationary", horizon=4, damping=1.0)
    train(mlp_for(tiny), tiny.X, tiny.y, config(epochs=3), sim, progress=reports.append)
    stages = [(r.stage, r.done, r.total) for r in reports]
    assert stages == [("train", 1, 3), ("train", 2, 3), ("train", 3, 3)] + [("stationary", k, 4) for k in range(1, 5)]
    assert {"loss", "train_accuracy", "epoch"} <= set(reports[0].metrics)


@pytest.mark.parametrize("stage", ["train", "stationary"])
def test_progress_returning_false_cancels(tiny, stage):
    def cancel(p: Progress):
        return p.stage != stage  # False only in the chosen stage

    sim = SimulationConfig(scheme="stationary", horizon=4, damping=1.0)
    with pytest.raises(CancelledError, match="cancelled"):
        train(mlp_for(tiny), tiny.X, tiny.y, config(epochs=2), sim, progress=cancel)


def test_cancelled_fit_leaves_nothing_in_the_store():
    ds = load_dataset("moons", n_samples=60)
    with pytest.raises(CancelledError, match="nothing was saved"):
        fit(ds, hidden=(4,), train_config=TrainConfig(epochs=3), progress=lambda p: False)
    assert RunStore().list_runs() == []


# ---- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_refused(tiny, bad):
    X = tiny.X.clone()
    X[3, 1] = bad
    with pytest.raises(DataError, match="NaN or infinite"):
        train(mlp_for(tiny), X, tiny.y, config())
    w = torch.ones(tiny.n, dtype=torch.float64)
    w[0] = bad
    with pytest.raises(DataError, match="weights"):
        train(mlp_for(tiny), tiny.X, tiny.y, config(), weights=w)


def test_labels_and_shapes_are_checked(tiny):
    mlp = mlp_for(tiny)
    with pytest.raises(DataError, match=r"labels must be in 0\.\.2"):
        train(mlp, tiny.X, tiny.y + 1, config())
    with pytest.raises(ShapeError, match="one label per row"):
        train(mlp, tiny.X, tiny.y[:-1], config())
    with pytest.raises(ShapeError, match="expects"):
        train(mlp, tiny.X[:, :2], tiny.y, config())
    with pytest.raises(ShapeError, match="one weight per training example"):
        train(mlp, tiny.X, tiny.y, config(), weights=torch.ones(3))
    with pytest.raises(ShapeError, match="one source id per training example"):
        train(mlp, tiny.X, tiny.y, config(), SimulationConfig(), source_index=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="source ids"):
        train(mlp, tiny.X, tiny.y, config(), SimulationConfig(), source_index=tiny.groups, n_sources=2)


@pytest.mark.parametrize("lr", [0.0, -0.1, 100.5, float("nan"), float("inf")])
def test_learning_rate_out_of_range(lr):
    with pytest.raises(ConfigError, match="learning rate"):
        TrainConfig(lr=lr)


def test_learning_rate_bounds_are_inclusive_at_100():
    assert TrainConfig(lr=100.0).lr == 100.0


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch size"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1e-3}, "weight decay"),
        ({"lr_schedule": "linear"}, "schedule"),
        ({"dtype": "float16"}, "dtype"),
        ({"lr_schedule": "step", "step_gamma": 0.0}, "step_gamma"),
    ],
)
def test_train_config_errors(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"horizon": -1}, "horizon"),
        ({"horizon": "3"}, "horizon"),
        ({"scheme": "stationary"}, "`horizon`"),
        ({"scheme": "stationary", "horizon": 0}, "`horizon`"),
        ({"scheme": "newton"}, "scheme"),
        ({"curvature": "fisher"}, "curvature"),
        ({"damping": -1.0}, "damping"),
        ({"backend": "jax"}, "backend"),
        ({"memory_budget_mb": 0}, "memory budget"),
        ({"response_dtype": "int8"}, "response dtype"),
    ],
)
def test_simulation_config_errors(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        SimulationConfig(**kwargs)


def test_simulation_config_round_trip():
    for sim in (
        SimulationConfig(),
        SimulationConfig(horizon=7, curvature="gauss-newton"),
        SimulationConfig(scheme="stationary", horizon=30, damping=0.5),
    ):
        assert SimulationConfig.from_dict(sim.to_dict()) == sim
    assert SimulationConfig().to_dict()["horizon"] == "full"


@pytest.mark.parametrize("horizon", [None, 3])
def test_memory_budget_too_small_is_a_config_error(tiny, horizon):
    sim = SimulationConfig(horizon=horizon, memory_budget_mb=1e-4)
    with pytest.raises(ConfigError, match="`memory_budget_mb`"):
        train(mlp_for(tiny), tiny.X, tiny.y, config(), sim)


def test_diverging_training_is_stopped_with_a_clear_error():
    ds = load_dataset("breast_cancer")
    mlp = MLP(MLPConfig(ds.n_features, ds.n_classes, (8,)))
    with pytest.raises(DivergenceError, match="diverged") as info:
        train(mlp, ds.X_train, ds.y_train, TrainConfig(epochs=2, lr=50.0), SimulationConfig())
    assert "lower the learning rate" in str(info.value)
    with pytest.raises(DivergenceError, match="Nothing was saved"):
        fit(ds, hidden=(8,), train_config=TrainConfig(epochs=2, lr=50.0))
    assert RunStore().list_runs() == []
    assert np.isfinite(ds.X_train).all()  # the data was fine: the learning rate was not
