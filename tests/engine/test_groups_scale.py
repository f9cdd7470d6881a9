"""Grouped sources at scale: 300 groups over 20,000 examples are simulated as 300 tangents.

The group's summed gradient share is one injection (linearity of the response, tested in
test_simulate.py), so no per-example response is ever materialised: this measures every
tangent stack the simulation allocates and the time it takes.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine import tangents as tangents_mod
from attrcore.engine.compress import CompressedResponses
from attrcore.engine.model import MLP, MLPConfig
from attrcore.engine.train import train

N, GROUPS, BATCH = 20_000, 300, 256


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 10)).astype(np.float32)
    y = (X[:, :3].argmax(1)).astype(np.int64)
    groups = rng.integers(0, GROUPS, size=N)
    return X, y, groups


@pytest.fixture
def stacks(monkeypatch):
    """Rows of every tangent stack the run allocates (zeros/empty/from_flat)."""
    rows: list[int] = []
    T = tangents_mod.Tangents
    for name in ("zeros", "empty"):
        orig = getattr(T, name).__func__

        def wrapped(cls, mlp, n, dtype, _orig=orig):
            rows.append(int(n))
            return _orig(cls, mlp, n, dtype)

        monkeypatch.setattr(T, name, classmethod(wrapped))
    return rows


@pytest.mark.parametrize(
    "sim",
    [
        pytest.param(SimulationConfig(rank=None), id="full"),
        pytest.param(SimulationConfig(rank=None, horizon=2), id="short", marks=pytest.mark.slow),
        pytest.param(SimulationConfig(rank=32), id="compressed"),
    ],
)
def test_groups_never_materialise_examples(big, stacks, sim):
    X, y, groups = big
    mlp = MLP(MLPConfig(10, 3, (16,), "relu"))
    cfg = TrainConfig(epochs=1, lr=0.1, batch_size=BATCH)
    t0 = time.perf_counter()
    out = train(mlp, X, y, cfg, sim, source_index=groups, n_sources=GROUPS)
    seconds = time.perf_counter() - t0
    r = out.responses
    if isinstance(r, CompressedResponses):
        assert len(r) == GROUPS and r.rank == 32 and r.C.shape == (GROUPS, 32)
        assert r.nbytes() == 4 * 32 * (mlp.n_params + GROUPS)
    else:
        assert r.shape == (GROUPS, mlp.n_params)
    # the largest stack: one tangent per group (full), the ring of K cohorts of ≤ B (short),
    # or r sketch columns (compressed); never one per training example
    cap = {"full": GROUPS, "short": 2 * BATCH, "compressed": GROUPS}
    largest = max(stacks)
    assert largest <= max(cap.values()) < N
    assert seconds < 60, f"{seconds:.1f} s for {N} examples in {GROUPS} groups"
    print(f"{sim.horizon_label}/{sim.rank}: {seconds:.2f} s, largest stack {largest} rows × {mlp.n_params}")


@pytest.mark.slow
def test_state_is_groups_times_params(big):
    """The memory check of the full horizon counts m = groups, not n = examples."""
    from attrcore.errors import ConfigError

    X, y, groups = big
    mlp = MLP(MLPConfig(10, 3, (16,), "relu"))
    cfg = TrainConfig(epochs=1, lr=0.1, batch_size=BATCH)
    budget_mb = 1.5 * GROUPS * mlp.n_params * 4 / 2**20  # fits 300 tangents, far from 20,000
    out = train(
        mlp, X, y, cfg, SimulationConfig(rank=None, memory_budget_mb=budget_mb), source_index=groups, n_sources=GROUPS
    )
    assert out.responses.shape == (GROUPS, mlp.n_params)
    with pytest.raises(ConfigError, match="memory budget"):
        train(mlp, X, y, cfg, SimulationConfig(rank=None, memory_budget_mb=budget_mb))  # one per example
    assert torch.isfinite(out.responses).all()
