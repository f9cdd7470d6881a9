"""Divergence is caught before NaN: a loss blow-up or a run stuck at chance stops training,
says "lower the learning rate" and saves nothing; runs that learn (even slowly, even after
an early spike) are never stopped."""

from __future__ import annotations

import pytest
import torch

from attrcore import fit, load_dataset
from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine.train import DivergenceGuard
from attrcore.errors import DivergenceError
from attrcore.store import RunStore

NONE = SimulationConfig(scheme="none")


@pytest.mark.parametrize(
    ("source", "train_kw"),
    [
        ("moons", {"lr": 100.0, "epochs": 10}),  # the run: loss 1e31, then chance
        ("digits", {"lr": 10.0, "momentum": 0.9, "epochs": 5}),  # allowed by the app, ended at 10 %
        ("digits", {"lr": 10.0, "epochs": 10}),  # a spike, then stuck at chance with a loss ≈ ln 10
    ],
)
def test_in_range_learning_rates_that_diverge_are_stopped_and_nothing_is_saved(source, train_kw):
    cfg = TrainConfig(**train_kw)  # every value is in its valid range
    with pytest.raises(DivergenceError) as info:
        fit(load_dataset(source), hidden=(128,), train_config=cfg, simulation=SimulationConfig(horizon=0))
    msg = str(info.value)
    assert "diverged" in msg and "lower the learning rate" in msg and "Nothing was saved" in msg
    assert RunStore().list_runs() == []


@pytest.mark.parametrize(
    ("source", "train_kw", "min_accuracy"),
    [
        ("digits", {"lr": 0.1, "epochs": 30}, 0.9),  # the reference preset
        ("digits", {"lr": 0.5, "momentum": 0.9, "epochs": 15}, 0.9),
        ("moons", {"lr": 5.0, "epochs": 30}, 0.85),  # the first epoch's mean loss is 15x the start
        ("digits", {"lr": 0.001, "epochs": 2}, 0.0),  # learns slowly: at chance, but not diverging
    ],
)
def test_runs_that_learn_are_never_stopped(source, train_kw, min_accuracy):
    run = fit(load_dataset(source), hidden=(128,), train_config=TrainConfig(**train_kw), simulation=NONE)
    assert run.history[-1]["train_accuracy"] >= min_accuracy


def feed(guard: DivergenceGuard, losses_and_accuracies, first_batch_loss):
    guard.batch(1, 1, first_batch_loss)
    n = len(losses_and_accuracies)
    for e, (loss, acc) in enumerate(losses_and_accuracies, start=1):
        guard.epoch(e, loss, acc, last=e == n)


def test_the_guard_rules():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)  # chance = 50 %
    cfg = TrainConfig(lr=1.0)
    # a huge batch loss stops at once
    with pytest.raises(DivergenceError, match="rose to"):
        guard = DivergenceGuard(cfg, y, 3)
        guard.batch(1, 1, 1.0)
        guard.batch(1, 2, 1.2e4)
    # three epochs at chance with a loss above the start
    with pytest.raises(DivergenceError, match="after epoch 3"):
        feed(DivergenceGuard(cfg, y, 3), [(2.0, 0.5)] * 3 + [(0.1, 0.9)] * 5, 1.1)
    # ends at chance after having been better (a dead network)
    with pytest.raises(DivergenceError, match="after reaching"):
        feed(DivergenceGuard(cfg, y, 3), [(0.9, 0.7), (1.0, 0.5), (1.0, 0.45)], 1.1)
    # ends at chance after a spike
    with pytest.raises(DivergenceError, match="spiked"):
        feed(DivergenceGuard(cfg, y, 3), [(5.0, 0.4), (1.1, 0.5), (1.1, 0.5)], 1.1)
    # learning, slowly or after a spike: never stopped
    feed(DivergenceGuard(cfg, y, 3), [(1.09, 0.5), (1.08, 0.5), (1.07, 0.51)], 1.1)
    feed(DivergenceGuard(cfg, y, 3), [(15.0, 0.5), (1.0, 0.6), (0.5, 0.8)], 1.1)
    # unscaled inputs can start far above ln C: the reference is the starting loss
    feed(DivergenceGuard(cfg, y, 3), [(5.0, 0.6), (3.0, 0.7)], 6.0)
    with pytest.raises(DivergenceError, match="momentum"):
        g = DivergenceGuard(TrainConfig(lr=1.0, momentum=0.9), y, 3)
        g.batch(1, 1, 1.0)
        g.batch(1, 2, 1e9)
