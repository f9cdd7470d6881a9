"""Streaming readout: any number of queries × sources under a memory budget.

The oracle is the whole matrix from :func:`score` (itself held to reverse mode and central
differences in ``test_readout.py``); the streamed paths must reproduce it, chunk by chunk,
without ever holding more than one query chunk's ``[q, m]`` block.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine import readout, train
from attrcore.engine.model import MLP, MLPConfig
from attrcore.errors import CancelledError, ConfigError


def trained(problem, hidden=(5, 4), dtype="float64"):
    mlp = MLP(MLPConfig(problem.d, problem.n_classes, hidden, "tanh"))
    cfg = TrainConfig(epochs=2, lr=0.3, batch_size=8, dtype=dtype)
    X = problem.X.to(torch.float64 if dtype == "float64" else torch.float32)
    out = train(mlp, X, problem.y, cfg, SimulationConfig())
    return mlp, out.theta, out.responses


@pytest.fixture(scope="module")
def wide(make_problem):
    """60 sources and 50 queries: enough for several query chunks under a small budget."""
    problem = make_problem(n=60, n_query=50, seed=3)
    return problem, *trained(problem)


def record_chunks(monkeypatch):
    """Wrap the chunk kernel and record each chunk's ``(queries, sources)``."""
    seen = []
    kernel = readout._score_jvp

    def spy(mlp, theta, stack, X, *args):
        seen.append((X.shape[0], len(stack)))
        return kernel(mlp, theta, stack, X, *args)

    monkeypatch.setattr(readout, "_score_jvp", spy)
    return seen


def test_query_chunks_stay_under_the_budget_and_match_the_whole_matrix(wide, monkeypatch):
    problem, mlp, theta, R = wide
    whole = readout.score(mlp, theta, R, problem.X_query, problem.y_query)
    budget_mb = 2.0 * 10 * 60 * 4 / 2**20  # room for ~10 queries' [q, m] blocks (twice)
    seen = record_chunks(monkeypatch)
    chunks = list(readout.iter_scores(mlp, theta, R, problem.X_query, problem.y_query, memory_budget_mb=budget_mb))
    assert len(chunks) > 3 and all(q < 10 for q, _m in seen)
    assert [c[0] for c in chunks] == list(range(0, 50, chunks[0][1]))  # consecutive, in order
    assert_close(torch.cat([c[2] for c in chunks]), whole)
    streamed = readout.score(mlp, theta, R, problem.X_query, problem.y_query, memory_budget_mb=budget_mb)
    assert_close(streamed, whole)


def test_top_k_equals_sorting_the_whole_matrix(wide, monkeypatch):
    problem, mlp, theta, R = wide
    whole = readout.score(mlp, theta, R, problem.X_query, problem.y_query).double()
    seen = record_chunks(monkeypatch)
    top = readout.top_k(mlp, theta, R, problem.X_query, problem.y_query, k=7, memory_budget_mb=0.005)
    assert len(seen) > 1 and max(q for q, _ in seen) < 50  # never the whole [Q, m]
    order = torch.argsort(whole, dim=1, descending=True)
    assert top.top_indices.shape == top.bottom_indices.shape == (50, 7)
    assert torch.equal(top.top_indices, order[:, :7])
    assert torch.equal(top.bottom_indices, torch.flip(order, dims=[1])[:, :7])
    assert_close(top.top_scores.double(), torch.gather(whole, 1, order[:, :7]), rtol=1e-6, atol=1e-7)
    assert_close(top.bottom_scores.double(), torch.gather(whole, 1, top.bottom_indices), rtol=1e-6, atol=1e-7)
    arrays = top.arrays()
    assert set(arrays) == {"top_indices", "top_scores", "bottom_indices", "bottom_scores"}
    # k larger than the number of sources: every source, in order
    every = readout.top_k(mlp, theta, R, problem.X_query[:2], problem.y_query[:2], k=1000)
    assert every.top_indices.shape == (2, 60)
    with pytest.raises(ConfigError, match="top_k"):
        readout.top_k(mlp, theta, R, problem.X_query, problem.y_query, k=0)


def test_score_to_npy_writes_the_matrix_through_a_memory_map(wide, tmp_path):
    problem, mlp, theta, R = wide
    whole = readout.score(mlp, theta, R, problem.X_query, problem.y_query)
    path = readout.score_to_npy(
        tmp_path / "out" / "scores.npy", mlp, theta, R, problem.X_query, problem.y_query, memory_budget_mb=0.005
    )
    loaded = np.load(path, mmap_mode="r")
    assert loaded.dtype == np.float32 and loaded.shape == (50, 60)
    assert_close(torch.from_numpy(np.array(loaded)), whole)
    assert sorted(p.name for p in path.parent.iterdir()) == ["scores.npy"]  # no .part left
    with pytest.raises(ConfigError, match=r"\.npy"):
        readout.score_to_npy(tmp_path / "scores.csv", mlp, theta, R, problem.X_query, problem.y_query)


def test_score_to_npy_refuses_what_the_disk_cannot_hold(wide, tmp_path, monkeypatch):
    problem, mlp, theta, R = wide
    monkeypatch.setattr(readout.shutil, "disk_usage", lambda _p: type("U", (), {"free": 1000})())
    seen = record_chunks(monkeypatch)
    with pytest.raises(ConfigError, match="on disk") as info:
        readout.score_to_npy(tmp_path / "scores.npy", mlp, theta, R, problem.X_query, problem.y_query)
    assert "top_k" in str(info.value) and "subset of the queries" in str(info.value)
    assert seen == [] and not list(tmp_path.iterdir())  # refused before any work


def test_a_result_that_cannot_fit_is_refused_before_any_work(wide, monkeypatch):
    problem, mlp, theta, R = wide
    seen = record_chunks(monkeypatch)
    limit_mb = 0.5 * 50 * 60 * 4 / 2**20  # half of what the [50, 60] matrix needs
    with pytest.raises(ConfigError) as info:
        readout.score(mlp, theta, R, problem.X_query, problem.y_query, max_result_mb=limit_mb)
    msg = str(info.value)
    assert "50 queries × 60 sources" in msg and "top_k" in msg and ".npy" in msg and "subset" in msg
    assert seen == []
    # the default limit is the memory the machine has: a 200k × 160k matrix (128 GB) is refused
    monkeypatch.setattr(readout, "available_memory_bytes", lambda: 24 * 2**30)
    with pytest.raises(ConfigError, match="119.2 GB"):
        readout.check_result_fits(200_000, 160_000, None)
    readout.check_result_fits(360, 1437, None)  # digits' test split fits easily


def test_large_query_set_streams_in_bounded_chunks(make_problem, monkeypatch):
    """Many queries against many sources under a small budget: top-k never builds [Q, m]."""
    problem = make_problem(n=400, d=3, n_query=2, seed=5)
    mlp, theta, R = trained(problem, hidden=(8,), dtype="float32")
    g = torch.Generator().manual_seed(0)
    Xq = torch.randn(5000, 3, generator=g)
    yq = torch.randint(0, 3, (5000,), generator=g)
    budget_mb = 1.0
    seen = record_chunks(monkeypatch)
    top = readout.top_k(mlp, theta, R, Xq, yq, k=5, memory_budget_mb=budget_mb)
    assert top.top_indices.shape == (5000, 5)
    assert len(seen) > 2 and all(2 * q * m * 4 <= budget_mb * 2**20 for q, m in seen)
    # spot-check against the in-memory path on a slice
    part = readout.score(mlp, theta, R, Xq[1234:1240], yq[1234:1240])
    assert torch.equal(top.top_indices[1234:1240], torch.topk(part, 5, dim=1).indices)


def test_scoring_reports_progress_and_can_be_cancelled(wide):
    problem, mlp, theta, R = wide
    reports = []
    readout.score(mlp, theta, R, problem.X_query, problem.y_query, memory_budget_mb=0.005, progress=reports.append)
    assert [r.stage for r in reports] == ["score"] * len(reports) and len(reports) > 1
    assert reports[-1].done == reports[-1].total == 50
    assert [r.done for r in reports] == sorted(r.done for r in reports)
    with pytest.raises(CancelledError):
        readout.score(mlp, theta, R, problem.X_query, problem.y_query, memory_budget_mb=0.005, progress=lambda p: False)
