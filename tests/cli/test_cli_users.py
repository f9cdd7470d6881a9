"""The command line for real users' files: any size scored within a memory budget (streamed
or refused with one ``error:`` line), their own split, a dry run, and ``gc``."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

import attrcore.cli.common as cli_common
import attrcore.cli.run_commands as run_commands
from attrcore.cli.main import main
from attrcore.engine import readout
from attrcore.run import TrainedRun
from attrcore.store import RunStore

TINY = ["--epochs", "1", "--hidden", "8", "--batch-size", "64", "--horizon", "0"]


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def synthetic_csv(path, n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)) * np.array([1, 10, 100, 0.1, 1])
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    df["label"] = np.where(X[:, 0] + X[:, 1] / 10 > 0, "yes", "no")
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def big_run(tmp_path, capsys):
    """A user CSV run with 1,600 sources and a 5,000-row query file."""
    train = synthetic_csv(tmp_path / "train.csv", 2000)
    queries = synthetic_csv(tmp_path / "queries.csv", 5000, seed=1)
    code, _, err = cli(capsys, "train", "--train", train, "--label-column", "label", *TINY, "--run", "big")
    assert code == 0, err
    return queries


def record_chunks(monkeypatch):
    seen = []
    kernel = readout._score_jvp

    def spy(mlp, theta, stack, X, *args):
        seen.append((X.shape[0], len(stack)))
        return kernel(mlp, theta, stack, X, *args)

    monkeypatch.setattr(readout, "_score_jvp", spy)
    return seen


def test_a_large_file_is_scored_in_chunks_under_a_small_budget(big_run, tmp_path, capsys, monkeypatch):
    seen = record_chunks(monkeypatch)
    out = tmp_path / "scores.npy"
    code, _, err = cli(capsys, "score", "--run", "big", "--test", big_run, "--memory-budget", "2", "--out", out)
    assert code == 0, err
    scores = np.load(out, mmap_mode="r")
    assert scores.shape == (5000, 1600) and scores.dtype == np.float32
    assert len(seen) > 10 and all(2 * q * m * 4 <= 2 * 2**20 for q, m in seen)  # never [5000, 1600] at once
    run = TrainedRun.load(RunStore(), "big")
    from attrcore.data.datasets import load_queries

    X, y = load_queries(big_run, run.dataset)
    torch.testing.assert_close(
        torch.from_numpy(np.array(scores[123:130])), torch.from_numpy(run.score(X[123:130], y[123:130]))
    )
    assert sorted(p.name for p in tmp_path.iterdir() if "scores" in p.name) == ["scores.npy"]


def test_top_k_and_a_query_subset_write_only_what_was_asked(big_run, tmp_path, capsys, monkeypatch):
    seen = record_chunks(monkeypatch)
    out = tmp_path / "top.npz"
    code, _, err = cli(
        capsys, "score", "--run", "big", "--test", big_run, "--top-k", "4", "--out", out, "--memory-budget", "2"
    )
    assert code == 0, err
    with np.load(out) as top:
        assert top["top_indices"].shape == top["bottom_scores"].shape == (5000, 4)
        assert (np.diff(top["top_scores"], axis=1) <= 0).all() and (np.diff(top["bottom_scores"], axis=1) >= 0).all()
    assert max(q for q, _ in seen) < 5000
    sub = tmp_path / "sub.npy"
    assert cli(capsys, "score", "--run", "big", "--test", big_run, "--queries", "100:350", "--out", sub)[0] == 0
    assert np.load(sub).shape == (250, 1600)
    code, _, err = cli(capsys, "score", "--run", "big", "--test", big_run, "--queries", "10:5", "--out", sub)
    assert code == 2 and err.startswith("error: ") and "--queries" in err


def test_a_matrix_the_disk_cannot_hold_is_refused_with_what_fits(big_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_commands.shutil, "disk_usage", lambda _p: type("U", (), {"free": 10_000})())
    out = tmp_path / "scores.npy"
    code, _, err = cli(capsys, "score", "--run", "big", "--test", big_run, "--out", out)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "--top-k" in err and "--queries" in err and "30.5 MB" in err
    assert not out.exists()


def test_without_out_only_the_first_queries_top_sources_are_computed(big_run, capsys, monkeypatch):
    seen = record_chunks(monkeypatch)
    code, out, err = cli(capsys, "score", "--run", "big", "--test", big_run)
    assert code == 0, err
    assert out.count("top proponents") == 3 and sum(q for q, _ in seen) == 3


def test_test_fraction_zero_and_an_evaluation_file(tmp_path, capsys):
    train = synthetic_csv(tmp_path / "train.csv", 300)
    evaluation = synthetic_csv(tmp_path / "eval.csv", 40, seed=2)
    code, _, err = cli(
        capsys,
        "train",
        "--train",
        train,
        "--label-column",
        "label",
        "--test-fraction",
        "0",
        *TINY,
        "--run",
        "every-row",
    )
    assert code == 0, err
    ds = TrainedRun.load(RunStore(), "every-row").dataset
    assert ds.n_train == 300 and ds.n_test == 0
    code, _, err = cli(
        capsys,
        "train",
        "--train",
        train,
        "--label-column",
        "label",
        "--eval",
        evaluation,
        *TINY,
        "--run",
        "own-eval",
        "--standardize",
        "off",
        "--lr",
        "0.0005",  # unscaled features (one column ×100) diverge at lr 0.1
    )
    assert code == 0, err
    ds = TrainedRun.load(RunStore(), "own-eval").dataset
    assert ds.n_train == 300 and ds.n_test == 40 and ds.feature_mean is None
    code, _, err = cli(
        capsys,
        "train",
        "--train",
        train,
        "--label-column",
        "label",
        "--eval",
        evaluation,
        "--test-fraction",
        "0.2",
        *TINY,
    )
    assert code == 2 and "--test-fraction" in err


def test_dry_run_checks_and_estimates_without_training(capsys):
    code, out, err = cli(capsys, "train", "--train", "digits", "--dry-run", "--run", "later")
    assert code == 0, err
    assert "peak memory" in out and "nothing was trained" in out and "9610 parameters" in out
    assert RunStore().list_runs() == []
    code, out, err = cli(capsys, "train", "--train", "digits", "--memory-budget", "20", "--dry-run")
    assert code == 2 and "memory budget of 20 MB" in err and "--sources" in err and "--horizon" in err
    code, out, err = cli(capsys, "train", "--train", "digits", "--dry-run", "--run", "")
    assert code == 2 and "invalid run name" in err


def test_gc_command_removes_what_a_dead_writer_left(capsys, attrcore_home):
    store = RunStore()
    store.save_run("kept", config={}, tensors={"a": torch.ones(1)})
    orphan = attrcore_home / "runs" / "dead" / ("0" * 32)
    orphan.mkdir(parents=True)
    (orphan / "tensors.safetensors").write_bytes(b"half")
    (orphan / ".writing").write_text("")  # its writer's lock file, nobody holds the lock
    old = os.stat(orphan).st_mtime
    assert old > 0
    code, out, _ = cli(capsys, "gc")
    assert code == 0 and str(orphan) in out and "1 orphan(s) removed" in out
    assert not orphan.exists() and RunStore().exists("kept")


def test_a_run_without_a_test_split_says_where_queries_come_from(tmp_path, capsys, monkeypatch, attrcore_home):
    """--test-fraction 0 and no --eval: score, evaluate and attribute refuse with one error
    line saying what to pass (before any retraining or training); with --eval FILE the
    evaluation file is the query set of score and evaluate."""
    train = synthetic_csv(tmp_path / "train.csv", 300)
    evaluation = synthetic_csv(tmp_path / "eval.csv", 40, seed=2)
    data = ["--train", train, "--label-column", "label"]
    model = ["--epochs", "1", "--hidden", "8", "--batch-size", "64"]
    code, _, err = cli(capsys, "train", *data, "--test-fraction", "0", *model, "--horizon", "0", "--run", "rows")
    assert code == 0, err
    assert "no test split" in err and "nan" not in err

    code, _, err = cli(capsys, "score", "--run", "rows", "--out", tmp_path / "s.npy")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "no test split" in err and "--test" in err and "--eval" in err and "--test-fraction" in err
    assert not (tmp_path / "s.npy").exists()
    code, _, err = cli(capsys, "score", "--run", "rows", "--test", evaluation, "--out", tmp_path / "s.npy")
    assert code == 0, err
    assert np.load(tmp_path / "s.npy").shape == (40, 300)

    def no_retraining(*args, **kwargs):
        raise AssertionError("retrained although there are no queries")

    import attrcore.evaluation.ground_truth as ground_truth

    evaluate = ["evaluate", *data, "--test-fraction", "0", *model, "--scores", tmp_path / "s.npy", "--subsets", "3"]
    with monkeypatch.context() as patched:  # not monkeypatch.undo(): that would drop ATTRCORE_HOME too
        patched.setattr(ground_truth, "_run_units", no_retraining)
        code, _, err = cli(capsys, *evaluate, "--jobs", "1")
    assert code == 2 and err.count("\n") == 1 and "no test split" in err and "--eval" in err, err

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the queries are missing")

    attribute = ["attribute", *data, "--test-fraction", "0", *model, "--horizon", "0", "--out", tmp_path / "a.npy"]
    with monkeypatch.context() as patched:
        patched.setattr(cli_common, "fit", no_training)  # the one place the CLI trains
        code, _, err = cli(capsys, *attribute)
    assert code == 2 and "no test split" in err and "--test" in err, err
    assert RunStore().home == attrcore_home  # the temporary patches left the test's own store in place

    # the user's own evaluation file: the test split of the run, scored and evaluated on
    code, _, err = cli(capsys, "train", *data, "--eval", evaluation, *model, "--horizon", "0", "--run", "own")
    assert code == 0, err
    code, _, err = cli(capsys, "score", "--run", "own", "--out", tmp_path / "own.npy")
    assert code == 0, err
    assert np.load(tmp_path / "own.npy").shape == (40, 300)
    code, out, err = cli(
        capsys,
        "evaluate",
        *data,
        "--eval",
        evaluation,
        *model,
        "--scores",
        tmp_path / "own.npy",
        "--subsets",
        "3",
        "--ceiling-seeds",
        "0",
        "--jobs",
        "1",
    )
    assert code == 0, err
    assert "over 40 queries" in out and "LDS nan" not in out


def test_a_diverging_run_at_an_in_range_lr_is_one_error_line_and_saves_nothing(capsys):
    """The issue's run (lr 100 on moons: loss 1e31, chance accuracy, saved) from the command
    line and from the Train page's request: stopped, "lower the learning rate", no run."""
    from attrcore import app as sup
    from attrcore.config import SimulationConfig, TrainConfig
    from attrcore.errors import DivergenceError

    code, _, err = cli(
        capsys, "train", "--train", "moons", "--lr", "100", "--epochs", "10", "--horizon", "0", "--run", "blown"
    )
    assert code == 2 and err.startswith("error: ") and "lower the learning rate" in err, err
    assert RunStore().list_runs() == [] and not (RunStore().home / "runs" / "blown").exists()
    request = sup.TrainRequest(
        data=sup.DataChoice("moons"),
        name="blown",
        train=TrainConfig(lr=100.0, epochs=10),
        simulation=SimulationConfig(horizon=0),
    )
    with pytest.raises(DivergenceError, match="lower the learning rate"):
        request.fit_and_save(RunStore())
    assert RunStore().list_runs() == []
