"""The scaling benchmark's own measuring helpers (benchmarks/scale_bench.py).

The grouped factorisation it times must be the package's query-aware compression of grouped
sources, and its TRAK-10 store timing must run traker's own scoring path over every model
(so its time per query is TRAK-10's), with model 0 alone a genuine TRAK-1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine.model import MLP, MLPConfig
from attrcore.engine.readout import score
from attrcore.engine.train import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import scale_bench  # noqa: E402 - the benchmark script, importable from its folder


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 6)).astype(np.float32)
    y = (X[:, :3].argmax(1)).astype(np.int64)
    return X, y


def test_group_factorisation_is_the_query_aware_compression_of_the_groups(problem):
    X, y = problem
    mlp = MLP(MLPConfig(6, 3, (8,), "tanh"))
    cfg = TrainConfig(epochs=2, lr=0.1, batch_size=40, momentum=0.9, seed=0, dtype="float64")
    groups = np.random.default_rng(1).integers(0, 12, size=len(X))
    dense = train(mlp, X, y, cfg, SimulationConfig(rank=None), source_index=groups, n_sources=12)
    Xq, yq = torch.as_tensor(X[:7]).double(), torch.as_tensor(y[:7]).long()
    rows = scale_bench.group_factorisations(
        mlp, dense.theta, dense.responses, torch.as_tensor(X), y, Xq, yq, [3, 5, 12], rounds=3, cap=1.0
    )
    assert [r["rank"] for r in rows] == [3, 5]  # a rank ≥ the number of groups is no compression
    for r in rows:
        sim = SimulationConfig(rank=r["rank"], compression="query-aware")
        qa = train(mlp, X, y, cfg, sim, source_index=groups, n_sources=12)
        torch.testing.assert_close(dense.theta, qa.theta)
        want = score(mlp, qa.theta, qa.responses, Xq, yq, measure="margin")
        torch.testing.assert_close(torch.as_tensor(r["scores"]), want)
        assert r["bytes_per_source"] == qa.responses.nbytes() / 12


@pytest.mark.parametrize("blocks", [1, 4], ids=["one-sketch-block", "four-blocks"])
def test_store_timing_runs_trakers_scoring_path(problem, blocks, monkeypatch):
    pytest.importorskip("trak")
    from attrcore.methods import trak as trak_mod
    from attrcore.methods.trak import TRAK

    X, y = problem
    mlp = MLP(MLPConfig(6, 3, (8,), "tanh"))
    theta = train(mlp, X, y, TrainConfig(epochs=2, lr=0.1, batch_size=40, seed=0)).theta
    if blocks > 1:  # a sketch larger than the budget is drawn in blocks (p ≈ 1M at proj 512)
        monkeypatch.setattr(trak_mod, "MEMORY_BUDGET", 4 * mlp.n_params * 16 // blocks)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y).long()
    Xq, yq = Xt[:5], yt[:5]
    thetas = [theta, theta * 1.01, theta * 0.99]
    store = scale_bench.store_timing_trak(mlp, thetas, Xt, yt, proj_dim=16)
    one = TRAK(mlp, [theta], proj_dim=16).fit(Xt, yt)
    try:
        # model 0 scored alone is TRAK-1: the same numbers as a genuinely featurized one-model TRAK
        torch.testing.assert_close(store.score_models(Xq, yq, [0]), one.score(Xq, yq))
        assert store._projector.num_blocks == blocks
        saver = store.traker.saver
        assert {i: saver.model_ids[i] for i in range(3)} == {
            i: {"is_featurized": 1, "is_finalized": 1} for i in range(3)
        }
        saver.load_current_store(0)
        g0 = np.array(saver.current_store["grads"])
        for i in (1, 2):  # models 1-2 hold model 0's projected gradients, finalized by traker
            saver.load_current_store(i)
            np.testing.assert_array_equal(np.array(saver.current_store["grads"]), g0)
            assert np.isfinite(np.array(saver.current_store["features"])).all()
        # the three-model path scores every checkpoint (its own query gradients and sketch)
        S = store.score_models(Xq, yq, range(3))
        assert S.shape == (5, len(X)) and torch.isfinite(S).all()
        assert not torch.allclose(S, store.score_models(Xq, yq, [0]))
        assert list(saver.experiments.values())[-1]["num_targets"] == 5
    finally:
        store.close()
        one.close()


def test_slopes_join_recipes_only_for_costs_that_do_not_grow_with_the_epochs():
    def row(n, epochs, run, spq, setup):
        return {"run": run, "n": n, "params": "80k", "p": 78858, "epochs": epochs, "method": "trak-1"} | {
            "seconds_per_query": spq,
            "setup_seconds": setup,
            "bytes_per_source": 100.0,
            "peak_mb": 900.0,
        }

    rows = [
        row(4000, 2, 0, 0.004, 17.0),
        row(4000, 1, 5, 0.003, 9.0),  # the same n in a later run, another recipe: it is the one fitted
        row(20000, 1, 5, 0.015, 45.0),
        row(50000, 1, 6, 0.0375, 113.0),
        {"run": 6, "n": 20000, "params": "80k", "epochs": 1, "method": "trak-1", "error": "x"},
    ]
    fits = {(e["cost"], e["against"], e["fixed"]): e for e in scale_bench.slopes(rows)}
    per_query = fits[("ms per query", "n", "params=80k")]
    assert per_query["points"] == 3 and per_query["slope"] == pytest.approx(1.0)
    setup = fits[("setup s", "n", "params=80k, epochs=1")]  # setup grows with the epochs: one recipe
    assert setup["points"] == 3
    assert ("setup s", "n", "params=80k") not in fits
    assert ("setup s", "n", "params=80k, epochs=2") not in fits  # one 2-epoch cell: no slope
