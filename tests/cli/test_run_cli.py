"""Runs through the store and the command line: round trips (also across processes), the
CLI contract, and the errors a user can cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.testing import assert_close

import attrcore
from attrcore import fit, load_dataset, load_queries
from attrcore.cli.main import main
from attrcore.config import SimulationConfig, TrainConfig, parse_horizon
from attrcore.errors import ConfigError, DataError, RunNotFoundError, ShapeError
from attrcore.run import TrainedRun
from attrcore.store import RunStore

REPO = Path(attrcore.__file__).resolve().parents[1]
MOONS = ["--train", "moons", "--n-samples", "80", "--epochs", "2", "--hidden", "8", "--batch-size", "16"]


def tiny_run(**fit_kwargs) -> TrainedRun:
    ds = load_dataset("moons", n_samples=80)
    kwargs = {"hidden": (8,), "train_config": TrainConfig(epochs=2, batch_size=16), **fit_kwargs}
    return fit(ds, **kwargs)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


# ---- the run store ----------------------------------------------------------------------


def test_a_saved_run_reopens_in_another_process_with_the_same_scores(tmp_path):
    run = tiny_run()
    run.save(RunStore(), "round-trip")
    ds = run.dataset
    expected = run.score(ds.X_test, ds.y_test)

    # in this process: every stored piece comes back
    loaded = TrainedRun.load(RunStore(), "round-trip")
    assert loaded.name == "round-trip" and loaded.config == run.config
    assert torch.equal(loaded.theta, run.theta)
    assert torch.equal(loaded.responses.flat(), run.responses.flat())
    np.testing.assert_array_equal(loaded.source_index, run.source_index)
    assert loaded.source_names == run.source_names and loaded.history == run.history

    # in another process, which knows only the store and the name
    out = tmp_path / "scores.npy"
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from attrcore import RunStore, TrainedRun
        run = TrainedRun.load(RunStore(), "round-trip")
        ds = run.dataset
        np.save(sys.argv[1], run.score(ds.X_test, ds.y_test), allow_pickle=False)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out)], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    other = np.load(out, allow_pickle=False)
    assert other.dtype == np.float32 and other.shape == (ds.n_test, ds.n_train)
    assert_close(as_tensor(other), as_tensor(expected), rtol=1e-6, atol=1e-7)


def test_a_run_without_simulation_refuses_to_score():
    run = tiny_run(simulation=SimulationConfig(scheme="none"))
    assert run.responses is None
    with pytest.raises(ConfigError, match="scheme"):
        run.score(run.dataset.X_test[:2], run.dataset.y_test[:2])


def test_unknown_run_name():
    with pytest.raises(RunNotFoundError, match="no-such-run") as info:
        TrainedRun.load(RunStore(), "no-such-run")
    assert isinstance(info.value, KeyError)


def test_queries_must_have_the_saved_runs_features(tmp_path):
    tiny_run().save(RunStore(), "two-features")
    run = TrainedRun.load(RunStore(), "two-features")
    with pytest.raises(ShapeError, match="same features"):
        run.score(np.zeros((3, 5), dtype=np.float32), np.zeros(3, dtype=np.int64))
    path = tmp_path / "wide.npz"
    np.savez(path, X=np.zeros((3, 5), dtype=np.float32), y=np.zeros(3, dtype=np.int64))
    with pytest.raises(ShapeError, match="features"):
        load_queries(str(path), run.dataset)


# ---- the command line -------------------------------------------------------------------


def test_cli_train_then_score_writes_the_float32_score_matrix(capsys, tmp_path):
    code, err = run_cli(capsys, "train", *MOONS, "--run", "cli-run")
    assert code == 0, err
    out = tmp_path / "sub" / "scores.npy"
    code, err = run_cli(capsys, "score", "--run", "cli-run", "--out", str(out))
    assert code == 0, err
    scores = np.load(out, allow_pickle=False)

    run = TrainedRun.load(RunStore(), "cli-run")
    ds = run.dataset
    assert scores.dtype == np.float32 and scores.shape == (ds.n_test, ds.n_train)
    # columns are the training examples in training-set order
    np.testing.assert_array_equal(run.source_index, np.arange(ds.n_train))
    assert run.source_names == tuple(f"#{j}" for j in range(ds.n_train))
    assert_close(as_tensor(scores), as_tensor(run.score(ds.X_test, ds.y_test)), rtol=0, atol=0)

    # rows follow the order of the query file
    queries = tmp_path / "queries.npz"
    np.savez(queries, X=ds.X_test[::-1].copy(), y=ds.y_test[::-1].copy())
    reversed_out = tmp_path / "reversed.npy"
    code, err = run_cli(capsys, "score", "--run", "cli-run", "--test", str(queries), "--out", str(reversed_out))
    assert code == 0, err
    assert_close(as_tensor(np.load(reversed_out)), as_tensor(scores[::-1].copy()))

    # other measurements and the central-difference readout go through the same contract
    cd_out = tmp_path / "prob.npy"
    code, err = run_cli(
        capsys,
        "score",
        "--run",
        "cli-run",
        "--measure",
        "prob",
        "--target-class",
        "1",
        "--readout",
        "cd",
        "--out",
        str(cd_out),
    )
    assert code == 0, err
    expected = run.score(ds.X_test, ds.y_test, measure="prob", readout="cd", target_class=1)
    assert_close(as_tensor(np.load(cd_out)), as_tensor(expected))


def test_cli_attribute_is_train_plus_score(capsys, tmp_path):
    a, b = tmp_path / "attribute.npy", tmp_path / "score.npy"
    code, err = run_cli(capsys, "attribute", *MOONS, "--out", str(a))
    assert code == 0, err
    assert RunStore().list_runs() == []  # no --run: nothing saved
    assert run_cli(capsys, "train", *MOONS, "--run", "same")[0] == 0
    assert run_cli(capsys, "score", "--run", "same", "--out", str(b))[0] == 0
    assert_close(as_tensor(np.load(a)), as_tensor(np.load(b)), rtol=0, atol=0)


def test_cli_stationary_scheme_with_class_sources(capsys, tmp_path):
    code, err = run_cli(
        capsys,
        "train",
        *MOONS,
        "--scheme",
        "stationary",
        "--horizon",
        "20",
        "--damping",
        "0.5",
        "--sources",
        "class",
        "--run",
        "stationary",
    )
    assert code == 0, err
    out = tmp_path / "s.npy"
    assert run_cli(capsys, "score", "--run", "stationary", "--out", str(out))[0] == 0
    run = TrainedRun.load(RunStore(), "stationary")
    assert np.load(out).shape == (run.dataset.n_test, 2)
    assert run.simulation.scheme == "stationary" and run.simulation.horizon == 20


def test_cli_runs_show_and_delete(capsys):
    # an explicit horizon: without simulation flags the horizon is chosen (engine/choose.py)
    assert run_cli(capsys, "train", *MOONS, "--horizon", "full", "--run", "listed")[0] == 0
    assert main(["runs"]) == 0
    assert "listed" in capsys.readouterr().out
    assert main(["show", "listed"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["n_sources"] == 64 and shown["config"]["simulation"]["horizon"] == "full"
    code, err = run_cli(capsys, "train", *MOONS, "--run", "listed")
    assert code == 2 and "--overwrite" in err
    assert main(["delete", "listed"]) == 0
    with pytest.raises(RunNotFoundError):
        TrainedRun.load(RunStore(), "listed")


def bad_csv(tmp_path: Path) -> str:
    path = tmp_path / "points.csv"
    pd.DataFrame({"f1": [0.0, 1.0, 2.0, 3.0] * 3, "f2": [1.0, 0.0, 1.0, 0.0] * 3, "label": [0, 1] * 6}).to_csv(
        path, index=False
    )
    return str(path)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["train", *MOONS, "--horizon", "-1"], ["horizon", "full"]),
        (["train", *MOONS, "--horizon", "abc"], ["horizon", "whole number"]),
        (["train", *MOONS, "--horizon", "2.5"], ["horizon"]),
        (["train", *MOONS, "--scheme", "stationary"], ["--horizon"]),
        (["train", *MOONS, "--lr", "0"], ["learning rate"]),
        (["train", *MOONS, "--lr", "101"], ["learning rate"]),
        (["train", *MOONS, "--memory-budget", "0.0001"], ["--memory-budget"]),
        (["score", "--run", "missing-run"], ["missing-run", "runs"]),
        (
            ["train", "--train", "CSV", "--label-column", "target", "--epochs", "2", "--hidden", "8"],
            ["no column 'target'", "label"],
        ),
        (["train", "--train", "nonexistent-data", "--epochs", "2"], ["unknown dataset"]),
        (["train", *MOONS, "--hidden", "eight"], ["--hidden"]),
    ],
)
def test_cli_errors_exit_2_with_one_readable_line(capsys, tmp_path, argv, words):
    argv = [bad_csv(tmp_path) if a == "CSV" else a for a in argv]
    code, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in err


def test_cli_diverging_training_saves_nothing(capsys):
    code, err = run_cli(
        capsys, "train", "--train", "breast_cancer", "--epochs", "2", "--hidden", "8", "--lr", "50", "--run", "diverged"
    )
    assert code == 2 and err.startswith("error: ") and "diverged" in err and "learning rate" in err
    store = RunStore()
    assert not store.exists("diverged") and store.list_runs() == []


def test_cli_score_refuses_queries_with_other_features(capsys, tmp_path):
    assert run_cli(capsys, "train", *MOONS, "--run", "narrow")[0] == 0
    path = tmp_path / "wide.npz"
    np.savez(path, X=np.zeros((3, 5), dtype=np.float32), y=np.zeros(3, dtype=np.int64))
    code, err = run_cli(capsys, "score", "--run", "narrow", "--test", str(path), "--out", str(tmp_path / "x.npy"))
    assert code == 2 and err.startswith("error: ") and "features" in err
    assert not (tmp_path / "x.npy").exists()


# ---- parsing and data errors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [("full", None), (" Full ", None), (None, None), ("0", 0), ("16", 16), (16, 16), (" 3 ", 3)]
)
def test_parse_horizon_accepts_whole_numbers_and_full(value, expected):
    assert parse_horizon(value) == expected


@pytest.mark.parametrize("value", ["-1", -1, "abc", "1.5", 2.5, "", "full-ish", "1e3"])
def test_parse_horizon_refuses_anything_else(value):
    with pytest.raises(ConfigError, match="horizon must be a whole number"):
        parse_horizon(value)


def test_csv_label_column_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="no column 'target'") as info:
        load_dataset(bad_csv(tmp_path), label_column="target")
    assert "'label'" in str(info.value)  # the message lists the columns to choose from


@pytest.mark.parametrize("suffix", ["npz", "csv"])
def test_one_class_only(tmp_path, suffix):
    X = np.random.default_rng(0).normal(size=(12, 2)).astype(np.float32)
    y = np.ones(12, dtype=np.int64)
    path = tmp_path / f"one.{suffix}"
    if suffix == "npz":
        np.savez(path, X=X, y=y)
        kwargs = {}
    else:
        pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "y": y}).to_csv(path, index=False)
        kwargs = {"label_column": "y"}
    with pytest.raises(DataError, match="only one class"):
        load_dataset(str(path), **kwargs)


def test_nan_features_in_a_file(tmp_path):
    X = np.random.default_rng(0).normal(size=(12, 2)).astype(np.float32)
    X[4, 1] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, X=X, y=np.arange(12) % 2)
    with pytest.raises(DataError, match="NaN"):
        load_dataset(str(path))
