"""Evaluation: metric functions against hand-computed values, and the ground truth
machinery (stored, resumable, identical on every engine)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from attrcore import evaluation as E
from attrcore.config import TrainConfig
from attrcore.data import load_dataset
from attrcore.engine import MLP, MLPConfig, train
from attrcore.engine import measure as measure_fn
from attrcore.errors import CancelledError, ConfigError, ShapeError
from attrcore.evaluation import executors
from attrcore.store import RunStore

# ------------------------------------------------------------------------------ metrics


def test_pearson_and_spearman_by_hand():
    a = np.array([[1.0], [2.0], [3.0], [4.0]])
    b = np.array([[1.0], [3.0], [2.0], [4.0]])
    # deviations (−1.5, −.5, .5, 1.5) and (−1.5, .5, −.5, 1.5): cov 4, variances 5 and 5
    assert E.pearson(a, b)[0] == pytest.approx(0.8)
    # rank differences (0, −1, 1, 0): 1 − 6·2 / (4·15) = 0.8
    assert E.spearman(a, b)[0] == pytest.approx(0.8)
    # ties get average ranks: (1.5, 1.5, 3) against (1, 2, 3) → 1.5 / sqrt(1.5 · 2)
    assert E.spearman(np.array([[1.0], [1.0], [2.0]]), np.array([[1.0], [2.0], [3.0]]))[0] == pytest.approx(
        1.5 / math.sqrt(3.0)
    )
    # columns are independent queries; a constant column has no correlation
    two = E.spearman(np.c_[a, np.ones(4)], np.c_[-b, b])
    assert two[0] == pytest.approx(-0.8) and np.isnan(two[1])


def test_lds_by_hand():
    scores = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])  # [Q=2, m=3]
    subsets = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=bool)  # [M=3, m]
    # predicted sums: query 0 → (3, 5, 4); query 1 → (5, 3, 4)
    outputs = np.array([[10.0, 10.0], [30.0, 30.0], [20.0, 20.0]])  # [M, Q]
    np.testing.assert_allclose(E.lds(scores, subsets, outputs), [1.0, -1.0])
    np.testing.assert_allclose(E.lds(torch.tensor(scores), subsets, outputs), [1.0, -1.0])
    with pytest.raises(ShapeError, match="sources"):
        E.lds(scores[:, :2], subsets, outputs)
    with pytest.raises(ShapeError, match="n_subsets, n_queries"):
        E.lds(scores, subsets, outputs[:2])
    with pytest.raises(ShapeError, match="NaN"):
        E.lds(np.full((2, 3), np.nan), subsets, outputs)


def test_loo_correlation_by_hand():
    scores = np.array([[0.0, 1.0, 9.0, 2.0, 3.0]])  # [Q=1, m=5]
    effects = np.array([[1.0, 2.0, 4.0, 3.0]])  # removed sources 0, 1, 3, 4 → scores 0,1,2,3
    c = E.loo_correlation(scores, effects, indices=[0, 1, 3, 4])
    # ranks (1, 2, 3, 4) vs (1, 2, 4, 3): 1 − 6·2 / (4·15) = 0.8; Pearson of 0..3 vs (1,2,4,3) = 0.8
    assert c.spearman[0] == pytest.approx(0.8) and c.pearson[0] == pytest.approx(0.8)
    with pytest.raises(ShapeError, match="indices"):
        E.loo_correlation(scores, effects)


def test_summarize_ignores_nan():
    s = E.summarize([0.2, np.nan, 0.4])
    assert s["n"] == 2 and s["mean"] == pytest.approx(0.3) and s["sem"] == pytest.approx(0.1)
    assert E.summarize([np.nan])["n"] == 0


def test_subsets_are_stable_and_sized():
    a = E.draw_subset(7, 101, 0.5, seed=3)
    assert a.dtype == bool and a.sum() == 50
    np.testing.assert_array_equal(a, E.draw_subset(7, 101, 0.5, seed=3))
    assert not np.array_equal(a, E.draw_subset(8, 101, 0.5, seed=3))


# ------------------------------------------------------------------------- ground truth


@pytest.fixture(scope="module")
def setting():
    ds = load_dataset("moons", n_samples=120, noise=0.2)
    mcfg = MLPConfig(ds.n_features, ds.n_classes, (8,))
    cfg = TrainConfig(epochs=2, lr=0.1, batch_size=16)
    return ds, mcfg, cfg


def test_a_unit_is_a_plain_training_run(setting, tmp_path):
    ds, mcfg, cfg = setting
    gt = E.lds_ground_truth(ds, mcfg, cfg, n_subsets=3, ceiling_seeds=1, store=RunStore(tmp_path), n_jobs=1)
    assert gt.subsets.shape == (3, ds.n_train) and gt.outputs.shape == (3, ds.n_test)
    assert gt.ceiling_outputs.shape == (1, 3, ds.n_test) and gt.n_trained == 6
    rows = np.flatnonzero(gt.subsets[1])
    mlp = MLP(mcfg)
    out = train(mlp, ds.X_train[rows], ds.y_train[rows], cfg)
    f = measure_fn(mlp.forward(out.theta, torch.as_tensor(ds.X_test)), torch.as_tensor(ds.y_test))
    np.testing.assert_array_equal(gt.outputs[1], f.double().numpy())
    # the ceiling runs are the same subsets with seed + 1000
    from dataclasses import replace

    out = train(mlp, ds.X_train[rows], ds.y_train[rows], replace(cfg, seed=1000))
    f = measure_fn(mlp.forward(out.theta, torch.as_tensor(ds.X_test)), torch.as_tensor(ds.y_test))
    np.testing.assert_array_equal(gt.ceiling_outputs[0, 1], f.double().numpy())
    assert gt.ceiling().shape == (ds.n_test,)


def test_ground_truth_resumes_without_retraining(setting, tmp_path, monkeypatch):
    ds, mcfg, cfg = setting
    calls = []
    real = executors._train_and_measure

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(executors, "_train_and_measure", counting)

    class Killed(Exception):
        pass

    def kill_after_four(p):
        if p.done - p.metrics["cached"] >= 4:
            raise Killed

    store = RunStore(tmp_path / "a")
    with pytest.raises(Killed):
        E.lds_ground_truth(ds, mcfg, cfg, n_subsets=5, store=store, n_jobs=1, progress=kill_after_four)
    assert len(calls) == 4
    calls.clear()
    seen = []
    gt = E.lds_ground_truth(ds, mcfg, cfg, n_subsets=5, store=store, n_jobs=1, progress=seen.append)
    assert len(calls) == 10 - 4 and gt.n_trained == 6  # 5 subsets × (main + ceiling)
    assert seen[0].done == 4 and seen[-1].done == 10
    calls.clear()
    again = E.lds_ground_truth(ds, mcfg, cfg, n_subsets=5, store=store, n_jobs=1)
    assert calls == [] and again.n_trained == 0
    fresh = E.lds_ground_truth(ds, mcfg, cfg, n_subsets=5, store=RunStore(tmp_path / "b"), n_jobs=1)
    np.testing.assert_array_equal(gt.outputs, fresh.outputs)
    np.testing.assert_array_equal(gt.ceiling_outputs, fresh.ceiling_outputs)
    # more subsets reuse the first five; a different config shares nothing
    calls.clear()
    E.lds_ground_truth(ds, mcfg, cfg, n_subsets=6, ceiling_seeds=0, store=store, n_jobs=1)
    assert len(calls) == 1
    calls.clear()
    from dataclasses import replace

    E.lds_ground_truth(ds, mcfg, replace(cfg, lr=0.05), n_subsets=2, ceiling_seeds=0, store=store, n_jobs=1)
    assert len(calls) == 2


def test_cancel_through_progress(setting, tmp_path):
    ds, mcfg, cfg = setting
    with pytest.raises(CancelledError, match="resumes"):
        E.lds_ground_truth(
            ds, mcfg, cfg, n_subsets=3, store=RunStore(tmp_path), n_jobs=1, progress=lambda p: p.done < 2
        )


def test_bad_settings_are_refused(setting, tmp_path):
    ds, mcfg, cfg = setting
    store = RunStore(tmp_path)
    with pytest.raises(ConfigError, match="fraction"):
        E.lds_ground_truth(ds, mcfg, cfg, n_subsets=3, fraction=1.0, store=store)
    with pytest.raises(ShapeError, match="model"):
        E.lds_ground_truth(ds, MLPConfig(5, 2), cfg, n_subsets=3, store=store)
    with pytest.raises(ConfigError, match="labels"):
        E.lds_ground_truth(ds, mcfg, cfg, n_subsets=3, store=store, queries=(ds.X_test, None))
    with pytest.raises(ConfigError, match="distinct"):
        E.loo_ground_truth(ds, mcfg, cfg, [1, 1], store=store)
    with pytest.raises(ConfigError, match="protocol"):
        E.loo_ground_truth(ds, mcfg, cfg, [1], protocol="random", store=store)


def test_loo_weight_zero_and_reshuffled(setting, tmp_path):
    ds, mcfg, cfg = setting
    store = RunStore(tmp_path)
    idx = [0, 5, 9]
    wz = E.loo_ground_truth(ds, mcfg, cfg, idx, seeds=(0, 1), store=store, n_jobs=1)
    assert wz.full_outputs.shape == (2, ds.n_test) and wz.removed_outputs.shape == (2, 3, ds.n_test)
    assert wz.effects.shape == (ds.n_test, 3) and wz.n_trained == 2 * 4
    mlp = MLP(mcfg)
    w = np.ones(ds.n_train)
    w[5] = 0.0
    out = train(mlp, ds.X_train, ds.y_train, cfg, weights=w)
    f = measure_fn(mlp.forward(out.theta, torch.as_tensor(ds.X_test)), torch.as_tensor(ds.y_test))
    np.testing.assert_array_equal(wz.removed_outputs[0, 1], f.double().numpy())
    rs = E.loo_ground_truth(ds, mcfg, cfg, idx, seeds=(0, 1), protocol="reshuffled", store=store, n_jobs=1)
    assert rs.n_trained == 2 * 3  # the full runs are shared with the weight-zero protocol
    keep = np.delete(np.arange(ds.n_train), 5)
    out = train(mlp, ds.X_train[keep], ds.y_train[keep], cfg)
    f = measure_fn(mlp.forward(out.theta, torch.as_tensor(ds.X_test)), torch.as_tensor(ds.y_test))
    np.testing.assert_array_equal(rs.removed_outputs[0, 1], f.double().numpy())
    assert wz.seed_agreement().shape == (ds.n_test,)
    c = wz.score(np.random.default_rng(0).normal(size=(ds.n_test, ds.n_train)))
    assert c.pearson.shape == (ds.n_test,)


def test_engines_give_identical_ground_truth(setting, tmp_path):
    """In process, joblib (2 workers) and a real Dask LocalCluster: bit-identical outputs."""
    distributed = pytest.importorskip("distributed")
    ds, mcfg, cfg = setting
    kw = {"n_subsets": 4, "ceiling_seeds": 1}
    local = E.lds_ground_truth(ds, mcfg, cfg, store=RunStore(tmp_path / "local"), n_jobs=1, **kw)
    a = E.lds_ground_truth(ds, mcfg, cfg, store=RunStore(tmp_path / "a"), n_jobs=2, **kw)
    idx = [2, 7]
    la = E.loo_ground_truth(ds, mcfg, cfg, idx, seeds=(0, 1), store=RunStore(tmp_path / "a"), n_jobs=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        b = E.lds_ground_truth(ds, mcfg, cfg, store=RunStore(tmp_path / "b"), scheduler=cluster.scheduler_address, **kw)
        with distributed.Client(cluster) as client:  # a Client object works as well
            lb = E.loo_ground_truth(ds, mcfg, cfg, idx, seeds=(0, 1), store=RunStore(tmp_path / "b"), scheduler=client)
    assert a.n_trained == b.n_trained == 8
    for other in (a, b):
        np.testing.assert_array_equal(local.outputs, other.outputs)
        np.testing.assert_array_equal(local.ceiling_outputs, other.ceiling_outputs)
    np.testing.assert_array_equal(la.removed_outputs, lb.removed_outputs)
    np.testing.assert_array_equal(la.full_outputs, lb.full_outputs)


def test_unreachable_scheduler_is_a_config_error(setting, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import attrcore.executors as shared_executors

    monkeypatch.setattr(shared_executors, "DASK_CONNECT_TIMEOUT", "1s")
    ds, mcfg, cfg = setting
    with pytest.raises(ConfigError, match="Dask scheduler"):
        E.lds_ground_truth(
            ds, mcfg, cfg, n_subsets=2, ceiling_seeds=0, store=RunStore(tmp_path), scheduler="tcp://127.0.0.1:1"
        )


# -------------------------------------------------------------------------------- CLI


def test_cli_evaluate(tmp_path, monkeypatch, capsys):
    from attrcore.cli.main import main

    monkeypatch.setenv("ATTRCORE_HOME", str(tmp_path / "home"))
    ds = load_dataset("moons", n_samples=120, noise=0.2)
    path = tmp_path / "scores.npy"
    np.save(path, np.random.default_rng(0).normal(size=(ds.n_test, ds.n_train)).astype(np.float32))
    argv = [
        "evaluate",
        "--train",
        "moons",
        "--n-samples",
        "120",
        "--noise",
        "0.2",
        "--scores",
        str(path),
        "--hidden",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--subsets",
        "3",
        "--jobs",
        "1",
        "--loo",
        "--loo-k",
        "2",
        "--loo-seeds",
        "0",
        "1",
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "LDS" in out and "ceiling" in out and "LOO" in out
    assert (tmp_path / "r.json").is_file()
    np.save(path, np.zeros((3, 4)))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    i = argv.index("--scores") + 1
    assert main([*argv[:i], str(Path(tmp_path / "missing.npy")), *argv[i + 1 :]]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bench_small_end_to_end(tmp_path):
    from attrcore.evaluation.bench import run_bench

    doc = run_bench(
        "digits-mlp",
        out_dir=tmp_path,
        name="t",
        n_subsets=4,
        epochs=1,
        horizons=(0,),
        stationary_horizons=(),
        ensemble=1,
        trak_models=(1,),
        trak_proj_dims=(32,),
        loo_k=3,
        loo_seeds=(0, 1),
        n_queries=10,
        n_jobs=1,
        store=RunStore(tmp_path / "s"),
        methods=("forward-only", "trak", "if-explicit", "tracin", "grad-dot", "random"),
    )
    methods = {r["method"] for r in doc["rows"]}
    assert methods == {"forward-only", "trak", "if-explicit", "tracin", "grad-dot", "random"}
    assert (tmp_path / "t.md").is_file() and (tmp_path / "t.json").is_file()
    assert all("time_vs_trak1" in r for r in doc["rows"])
    # the setting `attribute` picks by default is a row of its own, with the reason recorded
    default = [r for r in doc["rows"] if r["setting"].startswith("default: ")]
    assert len(default) == 1 and default[0]["curvature"] == "hessian" and default[0]["horizon"] == "16"
    assert "exact" in doc["default_simulation_reason"] and "Default simulation" in (tmp_path / "t.md").read_text()
    # readout timed again round-robin (the first timing included), the median kept
    for r in doc["rows"]:
        rounds = r["seconds_per_query_rounds"]
        assert r["timing_rounds"] == len(rounds) == 5
        assert r["seconds_per_query"] == pytest.approx(float(np.median(rounds)))
        assert r["train_seconds"] >= 0  # plain training = the whole call less the simulation
    # the settings are the run's (not a method's options), the standard protocol first
    assert doc["settings"]["lds_protocols"] == ("random-seed", "fixed-seed")
    table = (tmp_path / "t.md").read_text()
    assert table.index("LDS random-seed") < table.index("LDS fixed-seed")


def test_round_robin_timing_takes_medians_caps_slow_methods_and_closes():
    from attrcore.evaluation.bench import _time_round_robin

    class Fake:
        def __init__(self, seconds):
            self.seconds, self.calls, self.closed = seconds, 0, False

        def score(self, X, y):
            self.calls += 1
            return X

        def close(self):
            self.closed = True

    fast, slow = Fake(0.0), Fake(0.0)
    rows = [{"seconds_per_query": 0.5}, {"seconds_per_query": 100.0}]  # 4 queries: 2 s and 400 s a call
    _time_round_robin(list(zip(rows, (fast, slow))), np.zeros((4, 2)), None, rounds=3, cap_seconds=60.0)
    assert fast.calls == 3 and slow.calls == 0  # a warm-up and 2 rounds; the slow one keeps its single timing
    assert rows[0]["timing_rounds"] == 3 and rows[1]["timing_rounds"] == 1
    assert rows[0]["seconds_per_query"] == float(np.median(rows[0]["seconds_per_query_rounds"]))
    assert rows[0]["seconds_per_query"] < 0.5 and rows[1]["seconds_per_query"] == 100.0
    assert fast.closed and slow.closed
