"""Trajectory signals: the responses read mid-run are those of the parameters reached so far,
the recorder's self-influence equals Σ_c of the diagonals of full score matrices computed at
each checkpoint (the slow obvious oracle), the controls equal their definitions, a replay of
the recipe gives what recording while training gives, and bad setups get a clear message."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from attrcore import SimulationConfig, TrainConfig, fit
from attrcore.engine.measures import measure
from attrcore.engine.model import MLP, MLPConfig
from attrcore.engine.readout import score
from attrcore.engine.train import train
from attrcore.errors import ConfigError
from attrcore.mislabel import NoiseSpec, TrajectoryRecorder, compute_signals, second_half
from attrcore.mislabel.trajectory import check_recordable

CFG = TrainConfig(epochs=4, lr=0.3, batch_size=8, dtype="float64", seed=3)


class Snapshots:
    """Hook keeping θ_c and a copy of Δ(t_c) ``[m, p]`` after every epoch."""

    def __init__(self):
        self.theta, self.delta = {}, {}

    def __call__(self, epoch, theta, current):
        self.theta[epoch] = theta.clone()
        D = current()
        self.delta[epoch] = None if D is None else D.flat().clone()


@pytest.mark.parametrize("horizon", [0, 2, None])
def test_current_responses_are_those_of_a_run_stopped_there(tiny, horizon):
    """At K = 0, K = 2 (live injections) and the full horizon, Δ(t_c) read after epoch c is
    the response a run of c epochs returns (same seed, batch order and constant η)."""
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, (5,), "tanh"))
    snaps = Snapshots()
    sim = SimulationConfig(horizon=horizon, rank=None)
    train(mlp, tiny.X, tiny.y, CFG, sim, on_epoch=snaps)
    for c in (1, 3):
        short = train(mlp, tiny.X, tiny.y, TrainConfig(**{**CFG.to_dict(), "epochs": c}), sim)
        assert_close(snaps.theta[c], short.theta, rtol=0, atol=0)
        assert_close(snaps.delta[c], short.responses, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("window", [1, 2, None])
def test_trajectory_self_influence_is_the_sum_of_diagonals_of_full_score_matrices(tiny, window):
    """The oracle: at each checkpoint the full [n, n] loss-score matrix of the response in
    the window (Δ(t_c) − Δ(t_{c−w}), or Δ(t_c)), its diagonal, summed; the controls by hand."""
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, (6,), "relu"))
    epochs = (2, 3, 4)
    rec = TrajectoryRecorder(mlp, tiny.X, tiny.y, epochs, window=window)
    snaps = Snapshots()

    def both(epoch, theta, current):
        snaps(epoch, theta, current)
        rec(epoch, theta, current)

    train(mlp, tiny.X, tiny.y, CFG, SimulationConfig(horizon=0, rank=None), on_epoch=both)
    n = tiny.X.shape[0]
    si, loss, aum = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), []
    for c in epochs:
        D = snaps.delta[c] if window is None or c - window < 1 else snaps.delta[c] - snaps.delta[c - window]
        S = score(mlp, snaps.theta[c], D, tiny.X, tiny.y, "loss", out_dtype=torch.float64)  # [n, n]
        si -= torch.diagonal(S)
        z = mlp.forward(snaps.theta[c], tiny.X)
        loss += measure(z, tiny.y, "loss")
        aum.append([-(z[i, tiny.y[i]] - max(z[i, k] for k in range(z.shape[1]) if k != tiny.y[i])) for i in range(n)])
    got = rec.signals()
    assert rec.read == list(epochs)
    # self_scores returns float32 (the readout's output type); the oracle is float64
    assert_close(torch.as_tensor(got["forward-only-trajectory"]), si, rtol=1e-5, atol=1e-7)
    assert_close(torch.as_tensor(got["trajectory-loss"]), loss / len(epochs))
    assert_close(torch.as_tensor(got["aum"]), torch.tensor(aum, dtype=torch.float64).mean(0))


def test_a_replay_gives_what_recording_while_training_gives(tiny):
    data = NoiseSpec(0.2, seed=1).load("moons", n_samples=120)
    cfg = TrainConfig(epochs=6, lr=0.2, batch_size=16, seed=2)
    mlp = MLP(MLPConfig(data.n_features, data.n_classes, (8,), "relu"))
    rec = TrajectoryRecorder(mlp, data.X_train, data.y_train, second_half(cfg.epochs))
    run = fit(data, hidden=(8,), train_config=cfg, simulation=SimulationConfig(horizon=0), on_epoch=rec)
    ids = ["forward-only-trajectory", "trajectory-loss", "aum"]
    live = compute_signals(run, ids, recorder=rec)
    replayed = compute_signals(run, ids)
    assert rec.read == [4, 5, 6]
    for s in ids:
        assert_close(torch.as_tensor(replayed[s].scores), torch.as_tensor(live[s].scores), rtol=1e-6, atol=1e-8)
        assert live[s].setup_seconds == 0.0 and replayed[s].setup_seconds > 0 and replayed[s].meta["replayed"]


def test_runs_whose_responses_cannot_be_read_mid_run_are_refused(tiny):
    with pytest.raises(ConfigError, match="sources='example'"):
        check_recordable(SimulationConfig(horizon=0), "class", 3, 100)
    with pytest.raises(ConfigError, match="`scheme` trajectory"):
        check_recordable(SimulationConfig(scheme="stationary", horizon=5), "example", 10, 100)
    with pytest.raises(ConfigError, match="`rank` dense"):
        check_recordable(SimulationConfig(horizon=None, rank=4), "example", 10, 100)
    mlp = MLP(MLPConfig(tiny.d, tiny.n_classes, (5,), "tanh"))
    with pytest.raises(ConfigError, match="at least one checkpoint"):
        TrajectoryRecorder(mlp, tiny.X, tiny.y, ())
    rec = TrajectoryRecorder(mlp, tiny.X, tiny.y, (2,))
    with pytest.raises(ConfigError, match="no dense responses mid-run"):
        train(mlp, tiny.X, tiny.y, CFG, SimulationConfig(scheme="stationary", horizon=5), on_epoch=rec)
    controls = TrajectoryRecorder(mlp, tiny.X, tiny.y, (9,), self_influence=False)
    train(mlp, tiny.X, tiny.y, CFG, on_epoch=controls)
    with pytest.raises(ConfigError, match="no checkpoint was read"):
        controls.signals()
