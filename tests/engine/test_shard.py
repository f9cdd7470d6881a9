"""Sharded simulation on a real Dask LocalCluster (2 worker processes): merged == in process."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine.compress import CompressedResponses
from attrcore.engine.model import MLP, MLPConfig
from attrcore.engine.shard import column_blocks, dense_shards
from attrcore.engine.train import train
from attrcore.executors import Executor

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with Executor.resolve(workers=2) as ex:
        yield ex


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    n, d = 96, 5
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int)
    mlp = MLP(MLPConfig(d, 2, (8,), "tanh"))
    cfg = TrainConfig(epochs=3, lr=0.1, batch_size=16, momentum=0.9, weight_decay=1e-3, dtype="float64")
    return mlp, X, y, cfg


def _dense(responses) -> torch.Tensor:
    return responses.dense(torch.float64) if isinstance(responses, CompressedResponses) else responses.double()


@pytest.mark.parametrize(
    "sim, groups",
    [
        (SimulationConfig(rank=None), None),  # dense full horizon, one source per example
        (SimulationConfig(rank=None, horizon=4), None),  # dense short horizon
        (SimulationConfig(rank=10, power_iterations=1), None),  # compressed full horizon: Ω's columns
        (SimulationConfig(rank=None), np.arange(96) % 7),  # grouped sources
        (SimulationConfig(curvature="ekfac", rank=None), None),  # EK-FAC full horizon: sources
        (SimulationConfig(curvature="ekfac", rank=None, horizon=4), None),  # EK-FAC finite horizon
        (SimulationConfig(curvature="ekfac", rank=None, segment_steps=4), np.arange(96) % 7),  # EK-FAC groups
    ],
    ids=["dense-full", "dense-short", "compressed", "groups", "ekfac-full", "ekfac-short", "ekfac-groups"],
)
def test_sharded_equals_in_process(cluster, problem, sim, groups):
    mlp, X, y, cfg = problem
    m = None if groups is None else 7
    ref = train(mlp, X, y, cfg, sim, source_index=groups, n_sources=m)
    reports = []
    out = train(mlp, X, y, cfg, sim, source_index=groups, n_sources=m, executor=cluster, progress=reports.append)
    torch.testing.assert_close(out.theta, ref.theta, rtol=0, atol=0)  # the parent's run is the same run
    assert type(out.responses) is type(ref.responses)
    torch.testing.assert_close(_dense(out.responses), _dense(ref.responses), rtol=1e-9, atol=1e-12)
    rep = out.extras["sharding"]
    assert rep["engine"] == "dask" and rep["retried_shards"] == 0
    assert all(p["shards"] >= 2 for p in rep["phases"])  # really split over the two workers
    shard_reports = [p for p in reports if p.stage == "shards"]
    assert shard_reports and shard_reports[-1].done == shard_reports[-1].total
    if isinstance(ref.responses, CompressedResponses):
        assert [p["phase"] for p in rep["phases"]] == ["forward", "adjoint", "forward", "adjoint"]


def test_shard_plans():
    # a state of 4 MB under a 1 MB budget needs more shards than workers; all sources covered once
    shards = dense_shards(1000, 1000, 4, False, 2**20, workers=2)
    assert len(shards) >= 5
    np.testing.assert_array_equal(np.concatenate(shards), np.arange(1000))
    blocks = column_blocks(10, 3)
    assert [b.stop - b.start for b in blocks] == [3, 4, 3]
    assert column_blocks(2, 8) == [slice(0, 1), slice(1, 2)]


def test_no_source_examples_are_never_injected(problem):
    """Source id −1 (another shard's example) gives exactly the rows of the full run."""
    mlp, X, y, cfg = problem
    sim = SimulationConfig(rank=None)
    full = train(mlp, X, y, cfg, sim).responses
    part = np.full(len(y), -1)
    part[10:20] = np.arange(10)
    out = train(mlp, X, y, cfg, sim, source_index=part, n_sources=10).responses
    torch.testing.assert_close(out, full[10:20], rtol=1e-12, atol=1e-15)  # GEMM blocking differs


def test_dead_worker_is_retried_and_reported(cluster, tmp_path):
    marker = str(tmp_path / "died-once")

    def task(item, offset):  # kills its own worker process the first time it sees item 1
        if item == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return item * 10 + offset

    base = cluster.report.tasks
    results = dict(cluster.map_unordered(task, [0, 1, 2, 3], shared=(5,)))
    assert results == {0: 5, 1: 15, 2: 25, 3: 35}  # nothing dropped
    assert os.path.exists(marker)
    assert cluster.report.retried.get(base + 1, 0) >= 1, cluster.report.to_dict()  # reported, by task number
    assert not cluster.report.unknown
    assert "retried after a worker died" in cluster.report.summary()


def test_shared_data_lost_with_its_worker_is_sent_again(tmp_path):
    """One worker holds the only copy of the shared data and dies: the map must still finish
    (with scattered data the waiting tasks were cancelled, "lost scattered data": CI stop 13),
    the dead task reported as retried."""
    marker = str(tmp_path / "died-once")

    def task(item, offset):
        if item == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return item * 10 + offset

    with Executor.resolve(workers=1) as single:
        results = dict(single.map_unordered(task, [0, 1, 2], shared=(np.arange(3),)))
        assert sorted(results) == [0, 1, 2]
        for i, out in results.items():
            np.testing.assert_array_equal(out, i * 10 + np.arange(3))
        assert single.report.retried.get(0, 0) >= 1, single.report.to_dict()
        assert "retried after a worker died" in single.report.summary()


def test_a_worker_that_does_not_restart_is_replaced(tmp_path, monkeypatch):
    """On a loaded machine a nanny can fail to restart its dead worker (a slow start past its
    timeout): with no live worker the tasks would wait forever (a test of this file hung so).
    The nanny is made never to restart; the executor must start a new worker and finish."""
    import distributed.nanny

    import attrcore.executors as executors

    async def never_restart(self, exitcode):
        return None

    monkeypatch.setattr(distributed.nanny.Nanny, "_on_worker_exit", never_restart)
    monkeypatch.setattr(executors, "DASK_WATCH_SECONDS", 0.5)
    monkeypatch.setattr(executors, "DASK_NO_WORKER_SECONDS", 1.0)
    marker = str(tmp_path / "died-once")

    def task(item):
        if item == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return item * 10

    with Executor.resolve(workers=1) as single:
        assert dict(single.map_unordered(task, [0, 1, 2])) == {0: 0, 1: 10, 2: 20}
        assert single.report.replaced >= 1  # (more than one if a replacement took over 2 min to start)
        assert "did not restart replaced" in single.report.summary()


def test_in_process_executor_is_not_sharded(problem):
    mlp, X, y, cfg = problem
    with Executor.resolve() as ex:
        assert not ex.distributed
        out = train(mlp, X, y, cfg, SimulationConfig(rank=None), executor=ex)
    assert "sharding" not in out.extras


@pytest.mark.parametrize(
    "sim",
    [
        SimulationConfig(rank=None, horizon=2),
        SimulationConfig(rank=None, horizon=0),
        SimulationConfig(scheme="stationary", horizon=3, rank=None),
        SimulationConfig(curvature="ekfac", rank=None),
        SimulationConfig(curvature="ekfac", rank=None, horizon=3),
    ],
    ids=["short", "k0", "stationary", "ekfac", "ekfac-short"],
)
def test_no_source_rows_other_schemes(problem, sim):
    mlp, X, y, cfg = problem
    full = train(mlp, X, y, cfg, sim).responses
    part = np.full(len(y), -1)
    part[3] = 0  # one source: most batches hold none
    out = train(mlp, X, y, cfg, sim, source_index=part, n_sources=1).responses
    torch.testing.assert_close(out, full[3:4], rtol=1e-12, atol=1e-15)


def test_cli_scale_out_flags(tmp_path, monkeypatch, capsys):
    import attrcore.executors as executors
    from attrcore.cli.main import main

    monkeypatch.setenv("ATTRCORE_HOME", str(tmp_path))
    monkeypatch.setattr(executors, "DASK_CONNECT_TIMEOUT", "1s")
    argv = ["train", "--train", "moons", "--n-samples", "60", "--epochs", "1", "--hidden", "4"]
    assert main([*argv, "--scheduler", "tcp://127.0.0.1:1"]) != 0
    assert "could not connect to the Dask scheduler" in capsys.readouterr().err
    assert main([*argv, "--workers", "0"]) != 0
    assert "workers must be a whole number" in capsys.readouterr().err


@pytest.mark.parametrize(
    "sim",
    [SimulationConfig(scheme="stationary", horizon=3, rank=4)],
    ids=["stationary-sketch"],
)
def test_schemes_that_do_not_shard_run_in_process(cluster, problem, sim):
    """The compressed stationary sketch has no sharded form: in process, same result."""
    mlp, X, y, cfg = problem
    ref = train(mlp, X, y, cfg, sim)
    out = train(mlp, X, y, cfg, sim, executor=cluster)
    assert "sharding" not in out.extras
    torch.testing.assert_close(_dense(out.responses), _dense(ref.responses), rtol=0, atol=0)
