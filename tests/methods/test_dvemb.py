"""DVEmb through dattri: exact on a one-step run, close to the exact trajectory response after."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine.model import MLP, MLPConfig
from attrcore.engine.readout import score as readout_score
from attrcore.engine.tangents import Tangents
from attrcore.engine.train import train
from attrcore.errors import ConfigError
from attrcore.methods.registry import make_method

pytest.importorskip("dattri")


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    Xq = rng.normal(size=(8, 4))
    yq = (Xq[:, 0] + 0.5 * Xq[:, 1] > 0).astype(np.int64)
    return MLP(MLPConfig(4, 2, (6,), "tanh")), X, y, Xq, yq


def exact_scores(mlp, X, y, Xq, yq, cfg):
    """Forward-only scores of the dense full-horizon response (the float64 oracle)."""
    out = train(mlp, X, y, cfg, SimulationConfig(rank=None))
    R = Tangents.from_flat(mlp, out.responses)
    return out, readout_score(mlp, out.theta, R, torch.as_tensor(Xq), torch.as_tensor(yq), measure="margin").double()


def test_one_step_equals_the_trajectory_response(problem):
    """One SGD step over the whole set: u_i = −(η/B) g_i exactly, and so is DVEmb's embedding."""
    mlp, X, y, Xq, yq = problem
    cfg = TrainConfig(epochs=1, lr=0.3, batch_size=60, weight_decay=0.0, dtype="float64")
    out, ref = exact_scores(mlp, X, y, Xq, yq, cfg)
    att = make_method("dvemb", mlp, [out], cfg, proj_dim=None).fit(X, y)
    torch.testing.assert_close(att.score(Xq, yq).double(), ref, rtol=1e-5, atol=1e-7)  # scores are float32


@pytest.mark.slow
def test_many_steps_track_the_trajectory_response(problem):
    """Empirical-Fisher propagation: not exact, but the same ranking (plain SGD, no weight decay)."""
    mlp, X, y, Xq, yq = problem
    cfg = TrainConfig(epochs=4, lr=0.2, batch_size=10, weight_decay=0.0, dtype="float64")
    out, ref = exact_scores(mlp, X, y, Xq, yq, cfg)
    att = make_method("dvemb", mlp, [out], cfg, proj_dim=None).fit(X, y)
    got = att.score(Xq, yq).double()
    corr = np.corrcoef(got.flatten().numpy(), ref.flatten().numpy())[0, 1]
    assert corr > 0.9, corr
    grouped = make_method("dvemb", mlp, [out], cfg, proj_dim=None).fit(X, y, sources=np.arange(60) % 5)
    torch.testing.assert_close(
        grouped.score(Xq, yq).double(),
        torch.stack([got[:, np.arange(60) % 5 == j].sum(1) for j in range(5)], 1),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.slow
def test_a_replay_that_does_not_match_the_run_is_refused(problem):
    mlp, X, y, _, _ = problem
    cfg = TrainConfig(epochs=1, lr=0.3, batch_size=20, weight_decay=0.0, dtype="float64")
    out = train(mlp, X, y, cfg)
    wrong = TrainConfig(epochs=1, lr=0.3, batch_size=20, weight_decay=0.0, dtype="float64", seed=1)
    with pytest.raises(ConfigError, match="did not reproduce"):
        make_method("dvemb", mlp, [out], wrong, proj_dim=None).fit(X, y)
