"""The default simulation: a pure choice from the model and data size, recorded with the run."""

from __future__ import annotations

import json

from attrcore import fit, load_dataset
from attrcore.cli.main import main
from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine import MLPConfig
from attrcore.engine.choose import (
    AUTO_BUDGET_MB,
    EKFAC_RANK,
    EXACT_BUDGET_FLOP,
    QUERY_AWARE_RANK,
    choose_simulation,
    exact_short_horizon_flop,
)
from attrcore.run import TrainedRun
from attrcore.store import RunStore

MNIST1D = MLPConfig(40, 10, (256, 256))
MNIST1D_TRAIN = TrainConfig(epochs=30, lr=0.1, batch_size=100, momentum=0.9, weight_decay=1e-4)


def test_mnist1d_gets_the_ekfac_full_horizon_with_room_for_its_responses():
    choice = choose_simulation(MNIST1D, MNIST1D_TRAIN, n_train=4000)
    cfg = choice.config
    assert (cfg.scheme, cfg.horizon, cfg.curvature) == ("trajectory", None, "ekfac")
    # compressed query-aware (rank QUERY_AWARE_RANK is ≥ 8× smaller than the dense responses)
    assert (cfg.rank, cfg.compression) == (QUERY_AWARE_RANK, "query-aware")
    assert f"query-aware to rank {QUERY_AWARE_RANK}" in choice.reason
    dense_mb = 4000 * MNIST1D.n_params * 4 / 2**20
    assert cfg.memory_budget_mb >= dense_mb  # raised from the 2048 MB default to fit
    assert "ekfac" in choice.reason and "4000 sources" in choice.reason and "40 steps" in choice.reason
    assert choose_simulation(MNIST1D, MNIST1D_TRAIN, 4000) == choice  # pure


def test_small_effective_steps_get_the_exact_trajectory_at_k16_when_affordable():
    digits = MLPConfig(64, 10, (128,))
    plain = TrainConfig(epochs=30, lr=0.1, batch_size=64)
    choice = choose_simulation(digits, plain, n_train=1437)
    assert (choice.config.horizon, choice.config.curvature) == (16, "hessian")
    assert "exact" in choice.reason and "0.1" in choice.reason
    # the same model with momentum 0.9 (effective step 1) gets the contractive EK-FAC map
    heavy = TrainConfig(epochs=30, lr=0.1, batch_size=64, momentum=0.9)
    assert choose_simulation(digits, heavy, 1437).config.curvature == "ekfac"
    # mnist1d-mlp without momentum would still be too costly for exact products
    assert exact_short_horizon_flop(MNIST1D, TrainConfig(batch_size=100), 4000, 16) > EXACT_BUDGET_FLOP
    no_momentum = choose_simulation(MNIST1D, TrainConfig(epochs=30, lr=0.1, batch_size=100), 4000)
    assert no_momentum.config.curvature == "ekfac" and "flop" in no_momentum.reason
    # ... so its measured stand-in: EK-FAC at K = 16 with the top whole-network GN directions exact
    assert (no_momentum.config.horizon, no_momentum.config.ekfac_rank) == (16, EKFAC_RANK)
    assert f"top {EKFAC_RANK} whole-network" in no_momentum.reason and "0.524" in no_momentum.reason
    # with momentum the full-horizon EK-FAC map stays as it is (rank 0)
    with_momentum = choose_simulation(MNIST1D, MNIST1D_TRAIN, 4000).config
    assert (with_momentum.horizon, with_momentum.ekfac_rank) == (None, 0)


def test_a_given_budget_is_kept_and_huge_states_are_not_auto_raised():
    assert choose_simulation(MNIST1D, MNIST1D_TRAIN, 4000, memory_budget_mb=100.0).config.memory_budget_mb == 100.0
    big = choose_simulation(MLPConfig(40, 10, (2048, 2048)), MNIST1D_TRAIN, 4000)
    assert big.config.memory_budget_mb == SimulationConfig.memory_budget_mb < AUTO_BUDGET_MB
    grouped = choose_simulation(MNIST1D, MNIST1D_TRAIN, 4000, n_sources=10)
    assert "10 sources" in grouped.reason
    # 10 sources: a rank-QUERY_AWARE_RANK factorisation would not be smaller, so they stay dense
    assert (grouped.config.rank, grouped.config.compression) == (None, "svd") and "kept dense" in grouped.reason


def test_fit_without_simulation_uses_the_choice_and_records_why(capsys):
    ds = load_dataset("moons", n_samples=60)
    cfg = TrainConfig(epochs=2, batch_size=16)
    run = fit(ds, hidden=(6,), train_config=cfg)
    expected = choose_simulation(MLPConfig(2, 2, (6,)), cfg, ds.n_train)
    assert run.simulation == expected.config
    assert run.simulation_reason == expected.reason
    explicit = fit(ds, hidden=(6,), train_config=cfg, simulation=SimulationConfig(horizon=2))
    assert explicit.simulation_reason is None

    run.save(RunStore(), "chosen")
    assert TrainedRun.load(RunStore(), "chosen").simulation_reason == expected.reason
    assert main(["show", "chosen"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["simulation"] == {"picked": "trajectory, horizon 16, curvature hessian", "why": expected.reason}


def test_cli_without_simulation_flags_chooses_and_with_flags_keeps_them(capsys):
    moons = ["--train", "moons", "--n-samples", "60", "--epochs", "2", "--hidden", "6", "--batch-size", "16"]
    assert main(["train", *moons, "--momentum", "0.9", "--run", "auto"]) == 0
    assert "simulation: ekfac trajectory" in capsys.readouterr().err
    assert TrainedRun.load(RunStore(), "auto").simulation.curvature == "ekfac"
    assert main(["train", *moons, "--run", "auto-plain"]) == 0
    assert "simulation: exact trajectory, horizon 16" in capsys.readouterr().err
    assert main(["train", *moons, "--horizon", "3", "--run", "given"]) == 0
    given = TrainedRun.load(RunStore(), "given").simulation
    assert (given.horizon, given.curvature, given.memory_budget_mb) == (3, "hessian", 2048.0)


def test_the_mnist1d_default_fits_the_budget_it_chose():
    """The estimate counts the dense responses, M and the factors; the raised budget holds them."""
    from attrcore.engine.estimate import estimate_training

    choice = choose_simulation(MNIST1D, MNIST1D_TRAIN, 4000)
    est = estimate_training(4000, 40, 10, (256, 256), MNIST1D_TRAIN, choice.config)
    assert est.state_bytes >= 4000 * MNIST1D.n_params * 4  # the dense responses before the factorisation
    assert est.budget_bytes <= choice.config.memory_budget_mb * 2**20
