"""Tests of the local run store: round trips, crash safety, lookup errors, artifacts."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import attrcore
from attrcore.errors import ConfigError, RunNotFoundError, ShapeError
from attrcore.store import RUNS_TABLE_COLUMNS, LazyTensors, RunStore, default_home
from attrcore.store import runstore as store_mod  # the module RunStore looks its helpers up in

REPO = Path(attrcore.__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("ATTRCORE_HOME", str(path))
    return path


@pytest.fixture
def store(home: Path) -> RunStore:
    return RunStore()


def make_config(source: str = "digits", scheme: str = "trajectory", horizon: object = "full") -> dict:
    return {
        "data": {"source": source, "seed": 0},
        "train": {"epochs": 3, "lr": 0.1},
        "simulation": {"scheme": scheme, "horizon": horizon},
    }


def make_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(4, 6, generator=g, dtype=torch.float64)
    return {
        "theta": torch.randn(30, generator=g),  # float32
        "responses": base,  # float64
        "half": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(5, generator=g).bfloat16(),
        "index": torch.randint(0, 2**40, (7,), generator=g),  # int64, beyond int32
        "int32": torch.arange(-3, 3, dtype=torch.int32),
        "bytes": torch.arange(250, 256, dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 3),
        "transposed": base.t(),  # non-contiguous view sharing storage with "responses"
        "param": torch.nn.Parameter(torch.ones(2)),  # requires grad
    }


def version_dirs(home: Path, name: str) -> list[Path]:
    parent = home / "runs" / name
    return sorted(p for p in parent.iterdir()) if parent.exists() else []


def assert_same_tensors(got: dict, want: dict) -> None:
    assert list(got) == list(want)  # saved order is kept
    for k, w in want.items():
        g = got[k]
        assert g.dtype == w.dtype and g.shape == w.shape, k
        if w.dtype.is_floating_point:
            torch.testing.assert_close(g, w.detach(), rtol=0, atol=0)
        else:
            assert torch.equal(g, w), k


# ----------------------------------------------------------------------------- basics


def test_default_home_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTRCORE_HOME", str(tmp_path / "h"))
    assert default_home() == tmp_path / "h"
    assert RunStore().home == tmp_path / "h"
    monkeypatch.delenv("ATTRCORE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_home() == tmp_path / ".attrcore"


def test_folder_created_on_first_use(home: Path) -> None:
    s = RunStore()
    assert not s.exists("anything")
    assert (home / "index.sqlite").is_file()


def test_unreadable_index_is_a_readable_error(home: Path) -> None:
    home.mkdir()
    (home / "index.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="cannot be read.*ATTRCORE_HOME"):
        RunStore().list_runs()


def test_round_trip_every_field_and_dtype(store: RunStore) -> None:
    tensors = make_tensors()
    history = [
        {"epoch": 1, "loss": np.float32(0.5), "acc": 0.25},
        {"epoch": 2, "loss": 0.25},
    ]
    info = store.save_run(
        "digits-1",
        config=make_config(),
        tensors=tensors,
        history=history,
        timings={"train_seconds": 1.25, "simulate_seconds": np.float64(0.5)},
        metrics={"test_accuracy": 0.875, "n_sources": 4, "missing": None},
        meta={"note": "hello", "seeds": (1, 2), "nested": {"a": [1, 2.5]}},
    )
    run = store.load_run("digits-1")

    assert_same_tensors(dict(run.tensors), tensors)
    assert run.name == info.name == "digits-1"
    assert run.config == make_config()
    assert run.history == [
        {"epoch": 1, "loss": 0.5, "acc": 0.25},
        {"epoch": 2, "loss": 0.25},
    ]
    assert run.timings == {"train_seconds": 1.25, "simulate_seconds": 0.5}
    assert run.metrics == {"test_accuracy": 0.875, "n_sources": 4, "missing": None}
    assert run.meta == {"note": "hello", "seeds": [1, 2], "nested": {"a": [1, 2.5]}}
    assert run.created_at == info.created_at
    assert pd.Timestamp(run.created_at).tzinfo is not None
    assert run.fingerprint == info.fingerprint == store_mod.fingerprint(make_config())
    assert run.path.is_dir() and run.path.parent == store.home / "runs" / "digits-1"
    assert info.nbytes == (run.path / "tensors.safetensors").stat().st_size
    assert info.tensor_specs["index"] == {"dtype": "int64", "shape": [7]}
    assert "tensor(" not in repr(run)  # the repr stays short


def test_fingerprint_matches_the_config_module() -> None:
    from attrcore.config import fingerprint as config_fingerprint

    cfg = make_config()
    assert store_mod.fingerprint(cfg) == config_fingerprint(cfg)


def test_fingerprint_ignores_key_order(store: RunStore) -> None:
    a = store.save_run("a", config={"x": 1, "y": {"p": 1, "q": 2}}, tensors={})
    b = store.save_run("b", config={"y": {"q": 2, "p": 1}, "x": 1}, tensors={})
    c = store.save_run("c", config={"x": 2, "y": {"p": 1, "q": 2}}, tensors={})
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_load_some_keys_or_lazily(store: RunStore) -> None:
    tensors = make_tensors()
    store.save_run("r", config={}, tensors=tensors)

    some = store.load_run("r", keys=["theta", "index"]).tensors
    assert list(some) == ["theta", "index"]
    assert torch.equal(some["index"], tensors["index"])

    lazy = store.load_run("r", lazy=True).tensors
    assert isinstance(lazy, LazyTensors) and list(lazy) == list(tensors)
    torch.testing.assert_close(lazy["responses"], tensors["responses"], rtol=0, atol=0)

    with pytest.raises(ShapeError, match="'nope'.*it has 'theta'"):
        store.load_run("r", keys=["theta", "nope"])


def test_lazy_tensors_of_a_replaced_run_say_so(store: RunStore) -> None:
    store.save_run("r", config={}, tensors={"a": torch.ones(2)})
    lazy = store.load_run("r", lazy=True).tensors
    store.save_run("r", config={}, tensors={"a": torch.zeros(2)}, overwrite=True)
    with pytest.raises(RunNotFoundError, match="load it again"):
        lazy["a"]


def test_another_process_reads_the_run(store: RunStore, home: Path) -> None:
    tensors = {
        "w": torch.arange(12, dtype=torch.float64).reshape(3, 4),
        "i": torch.arange(5),
    }
    store.save_run("shared", config=make_config(), tensors=tensors, metrics={"test_accuracy": 0.5})
    code = textwrap.dedent(
        """
        from attrcore.store import RunStore
        run = RunStore().load_run("shared")
        print(float(run.tensors["w"].sum()), int(run.tensors["i"].sum()), run.metrics["test_accuracy"])
        """
    )
    env = {**os.environ, "ATTRCORE_HOME": str(home), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["66.0", "10", "0.5"]


# ----------------------------------------------------------------------------- overwrite


def test_refuses_to_overwrite(store: RunStore) -> None:
    store.save_run("r", config={"v": 1}, tensors={"a": torch.ones(2)})
    with pytest.raises(ConfigError, match="run 'r' exists; pick another name or pass overwrite=True"):
        store.save_run("r", config={"v": 2}, tensors={"a": torch.zeros(2)})
    assert store.load_run("r").config == {"v": 1}
    assert len(version_dirs(store.home, "r")) == 1


def test_overwrite_replaces(store: RunStore) -> None:
    store.save_run("r", config={"v": 1}, tensors={"a": torch.ones(2), "b": torch.ones(1)})
    store.save_run("r", config={"v": 2}, tensors={"a": torch.zeros(3)}, overwrite=True)
    run = store.load_run("r")
    assert run.config == {"v": 2}
    assert list(run.tensors) == ["a"] and torch.equal(run.tensors["a"], torch.zeros(3))
    assert [i.name for i in store.list_runs()] == ["r"]
    assert version_dirs(store.home, "r") == [run.path]  # the old version is gone


# ----------------------------------------------------------------------------- crash safety


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


def _upsert_then_interrupt(conn: object, row: dict) -> None:
    _real_upsert(conn, row)  # the row is written but the transaction never commits
    raise KeyboardInterrupt


_real_upsert = store_mod._upsert_run


@pytest.mark.parametrize("crash_in", ["_save_tensors", "_write_json", "_upsert_run"])
@pytest.mark.parametrize("previous", [True, False], ids=["overwrite", "first-save"])
def test_ctrl_c_mid_save_keeps_previous_state(
    store: RunStore, monkeypatch: pytest.MonkeyPatch, crash_in: str, previous: bool
) -> None:
    old = {"a": torch.arange(4.0)}
    if previous:
        store.save_run("r", config={"v": 1}, tensors=old, metrics={"m": 1.0})
    store.put_artifact("unit", {"i": 0}, {"x": np.ones(2)})  # an unrelated artifact survives too
    fake = _upsert_then_interrupt if crash_in == "_upsert_run" else _interrupt
    monkeypatch.setattr(store_mod, crash_in, fake)

    with pytest.raises(KeyboardInterrupt):
        store.save_run("r", config={"v": 2}, tensors={"a": torch.zeros(9)}, overwrite=True)
    monkeypatch.undo()

    if previous:
        run = store.load_run("r")
        assert run.config == {"v": 1} and run.metrics == {"m": 1.0}
        assert torch.equal(run.tensors["a"], old["a"])
        assert [i.name for i in store.list_runs()] == ["r"]
        assert version_dirs(store.home, "r") == [run.path]  # the half-written version was removed
    else:
        assert store.list_runs() == [] and not store.exists("r")
        with pytest.raises(RunNotFoundError):
            store.load_run("r")
        assert version_dirs(store.home, "r") == []
    assert store.get_artifact("unit", {"i": 0}) is not None
    assert store.gc(grace_seconds=0) == []


def test_ctrl_c_just_after_commit_keeps_the_new_run(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.save_run("r", config={"v": 1}, tensors={"a": torch.ones(1)})
    real = RunStore._transaction

    @contextlib.contextmanager
    def commit_then_interrupt(self: RunStore) -> Iterator[sqlite3.Connection]:
        with real(self) as conn:
            yield conn
        raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "_transaction", commit_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        store.save_run("r", config={"v": 2}, tensors={"a": torch.zeros(1)}, overwrite=True)
    monkeypatch.undo()
    run = store.load_run("r")  # the commit landed, so its files must still be there
    assert run.config == {"v": 2} and torch.equal(run.tensors["a"], torch.zeros(1))
    store.gc(grace_seconds=0)  # the replaced version the interrupted save left behind
    assert version_dirs(store.home, "r") == [run.path]


HARD_CRASH = """
import os, torch
from attrcore.store import runstore as s

real_upsert, real_save = s._upsert_run, s._save_tensors

def upsert_then_die(conn, row):
    real_upsert(conn, row)
    os._exit(3)  # like kill -9: no cleanup, no rollback, transaction left open

def half_write_then_die(path, tensors):
    path.write_bytes(b"half a safetensors file")
    os._exit(3)

s.{target} = {fake}
s.RunStore().save_run({name!r}, config={{"v": 2}}, tensors={{"a": torch.zeros(9)}}, overwrite=True)
"""


def test_hard_crash_leaves_an_orphan_that_gc_removes(store: RunStore, home: Path) -> None:
    store.save_run("kept", config={"v": 1}, tensors={"a": torch.arange(3.0)})
    env = {**os.environ, "ATTRCORE_HOME": str(home), "PYTHONPATH": str(REPO)}
    crashes = [  # (run, function replaced, replacement); both processes run at once
        ("kept", "_upsert_run", "upsert_then_die"),  # overwrite dies mid-transaction
        ("fresh", "_save_tensors", "half_write_then_die"),  # first save dies mid-file
    ]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                HARD_CRASH.format(name=name, target=target, fake=fake),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, target, fake in crashes
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, err

    # both crashes left an orphan (on the file system, before this store opens); each
    # writer's own open may already have removed the other's if it started after that one
    # died, but not both: so at least the live version and one orphan are there
    assert len(version_dirs(home, "kept")) + len(version_dirs(home, "fresh")) >= 2
    reopened = RunStore(home)
    assert [i.name for i in reopened.list_runs()] == ["kept"]
    run = reopened.load_run("kept")
    assert run.config == {"v": 1} and torch.equal(run.tensors["a"], torch.arange(3.0))
    # opening the store removed both: their writers' locks were free (the writers died),
    # so they were not saves in progress however young (issue #9: cleaned up on open)
    assert reopened.gc() == [] and reopened.gc(grace_seconds=0) == []
    assert version_dirs(home, "kept") == [run.path]
    assert not (home / "runs" / "fresh").exists()
    assert torch.equal(reopened.load_run("kept").tensors["a"], torch.arange(3.0))
    reopened.save_run("fresh", config={"v": 3}, tensors={})  # the name is free again
    assert reopened.exists("fresh")


def test_gc_leaves_live_versions_and_foreign_files(store: RunStore) -> None:
    store.save_run("r", config={}, tensors={"a": torch.ones(1)})
    store.put_artifact("k", {"i": 1}, {"x": np.ones(1)})
    (store.home / "runs" / "r" / "notes.txt").write_text("mine")
    assert store.gc(grace_seconds=0) == []
    assert (store.home / "runs" / "r" / "notes.txt").exists()
    assert store.load_run("r").tensors["a"].item() == 1.0
    assert store.get_artifact("k", {"i": 1}) is not None


# ----------------------------------------------------------------------------- names and lookup


@pytest.mark.parametrize("bad", ["", ".hidden", "a b", "a/b", "..", "x" * 101, "naïve", "a\\b", 3, None])
def test_bad_names_rejected(store: RunStore, bad: object) -> None:
    with pytest.raises(ConfigError, match="letters, digits, '-', '_'"):
        store.save_run(bad, config={}, tensors={})  # type: ignore[arg-type]
    assert store.list_runs() == []


@pytest.mark.parametrize("good", ["a", "A-b_c.1", "x" * 100, "2024.01.run", "-dash"])
def test_good_names_accepted(store: RunStore, good: str) -> None:
    store.save_run(good, config={}, tensors={})
    assert store.exists(good)


def test_run_not_found_suggests_close_names(store: RunStore) -> None:
    with pytest.raises(RunNotFoundError, match="no runs yet"):
        store.load_run("anything")
    for name in ("digits-mlp", "digits-mlp-2", "moons", "wine-long"):
        store.save_run(name, config={}, tensors={})
    with pytest.raises(RunNotFoundError) as err:
        store.load_run("digits-mpl")
    message = str(err.value)
    assert "'digits-mlp'" in message and "python -m attrcore runs" in message
    assert message.index("'digits-mlp'") < message.index("'wine-long'")  # closest first
    assert isinstance(err.value, KeyError)
    with pytest.raises(RunNotFoundError, match="digits-mlp"):
        store.delete_run("digits-mpl")


def test_non_json_inputs_rejected(store: RunStore) -> None:
    with pytest.raises(ConfigError, match="config must be plain JSON"):
        store.save_run("r", config={"f": object()}, tensors={})
    with pytest.raises(ConfigError, match=r"metrics\['acc'\] must be a number"):
        store.save_run("r", config={}, tensors={}, metrics={"acc": "high"})
    with pytest.raises(ConfigError, match="not a torch.Tensor"):
        store.save_run("r", config={}, tensors={"a": np.ones(2)})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="history must be a list"):
        store.save_run("r", config={}, tensors={}, history={"epoch": 1})  # type: ignore[arg-type]
    assert not store.exists("r")


# ----------------------------------------------------------------------------- listing


def _three_runs(store: RunStore) -> None:
    store.save_run(
        "old-digits",
        config=make_config("digits", "trajectory", "full"),
        tensors={},
        metrics={"test_accuracy": 0.9},
        timings={"train_seconds": 2.0},
    )
    store.save_run(
        "csv-stationary",
        config=make_config("/data/my_table.csv", "stationary", 100),
        tensors={"responses": torch.zeros(7, 3)},
    )
    store.save_run("bare", config={"whatever": 1}, tensors={"x": torch.zeros(250_000)})


def test_list_newest_first_and_filters(store: RunStore) -> None:
    _three_runs(store)
    assert [i.name for i in store.list_runs()] == [
        "bare",
        "csv-stationary",
        "old-digits",
    ]
    assert [i.name for i in store.list_runs(dataset="digits")] == ["old-digits"]
    assert [i.name for i in store.list_runs(dataset="my_table")] == ["csv-stationary"]
    assert [i.name for i in store.list_runs(scheme="stationary")] == ["csv-stationary"]
    assert [i.name for i in store.list_runs(name_contains="DIG")] == ["old-digits"]
    assert store.list_runs(dataset="digits", scheme="stationary") == []
    info = store.list_runs(name_contains="old")[0]
    assert info.metrics == {"test_accuracy": 0.9} and info.timings == {"train_seconds": 2.0}
    assert info.config == make_config("digits", "trajectory", "full")


def test_runs_table(store: RunStore) -> None:
    empty = store.runs_table()
    assert list(empty.columns) == list(RUNS_TABLE_COLUMNS) and len(empty) == 0

    _three_runs(store)
    table = store.runs_table().set_index("name")
    assert list(table.index) == ["bare", "csv-stationary", "old-digits"]
    assert table.loc["old-digits", "dataset"] == "digits"
    assert table.loc["old-digits", "horizon"] == "full"
    assert table.loc["csv-stationary", "horizon"] == "100"
    assert table.loc["csv-stationary", "n_sources"] == 7  # from the responses tensor
    assert table.loc["old-digits", "test_accuracy"] == 0.9
    assert table.loc["old-digits", "train_seconds"] == 2.0
    assert pd.isna(table.loc["bare", "scheme"]) and pd.isna(table.loc["bare", "test_accuracy"])
    assert table.loc["bare", "MB"] == pytest.approx(1.0, abs=0.01)  # 250k float32
    assert isinstance(table.loc["bare", "created"], pd.Timestamp)
    assert list(store.runs_table(scheme="stationary")["name"]) == ["csv-stationary"]


# ----------------------------------------------------------------------------- edits


def test_update_run_merges_and_keeps_tensors(store: RunStore) -> None:
    tensors = make_tensors()
    first = store.save_run(
        "r",
        config=make_config(),
        tensors=tensors,
        history=[{"epoch": 1}],
        metrics={"test_accuracy": 0.5},
        meta={"a": 1},
    )
    store.update_run("r", metrics={"tracin_lds": 0.3}, meta={"b": 2})
    run = store.load_run("r")
    assert run.metrics == {"test_accuracy": 0.5, "tracin_lds": 0.3}
    assert run.meta == {"a": 1, "b": 2}
    assert run.history == [{"epoch": 1}] and run.created_at == first.created_at
    assert run.updated_at > first.created_at
    assert_same_tensors(dict(run.tensors), tensors)

    extra = {"scores": torch.randn(3, 2), "theta": torch.zeros(30)}
    store.update_run("r", tensors=extra, timings={"score_seconds": 0.1})
    run = store.load_run("r")
    assert_same_tensors(dict(run.tensors), {**tensors, **extra})
    assert run.timings == {"score_seconds": 0.1}
    assert version_dirs(store.home, "r") == [run.path]
    with pytest.raises(RunNotFoundError):
        store.update_run("missing", metrics={"x": 1.0})


def test_concurrent_updates_lose_nothing(store: RunStore) -> None:
    store.save_run("r", config={}, tensors={"a": torch.ones(3)})
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for j in range(5):
                store.update_run("r", metrics={f"t{t}_{j}": float(j)})  # one shared store
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    run = store.load_run("r")
    assert len(run.metrics) == 15 and torch.equal(run.tensors["a"], torch.ones(3))
    assert version_dirs(store.home, "r") == [run.path]


def _child_after_fork(store: RunStore) -> None:
    run = store.load_run("r")
    store.put_artifact("from-child", {"pid": 1}, {"x": run.tensors["a"].numpy()})


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX only")
def test_store_used_across_fork(store: RunStore) -> None:
    store.save_run("r", config={}, tensors={"a": torch.arange(3.0)})  # opens a connection
    child = multiprocessing.get_context("fork").Process(target=_child_after_fork, args=(store,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    art = store.get_artifact("from-child", {"pid": 1})
    assert art is not None
    np.testing.assert_array_equal(art.arrays["x"], np.arange(3.0))
    store.update_run("r", metrics={"after": 1.0})  # the parent's connection still works
    assert store.load_run("r").metrics == {"after": 1.0}


def test_rename_delete_exists(store: RunStore) -> None:
    store.save_run("a", config={"v": 1}, tensors={"w": torch.arange(3)})
    store.save_run("b", config={"v": 2}, tensors={})
    with pytest.raises(ConfigError, match="'b' exists"):
        store.rename_run("a", "b")
    with pytest.raises(ConfigError, match="letters, digits"):
        store.rename_run("a", "bad name")
    info = store.rename_run("a", "c")
    assert info.name == "c" and not store.exists("a") and store.exists("c")
    run = store.load_run("c")
    assert run.name == "c" and run.config == {"v": 1} and torch.equal(run.tensors["w"], torch.arange(3))
    assert not (store.home / "runs" / "a").exists()

    store.delete_run("c")
    assert not store.exists("c") and not (store.home / "runs" / "c").exists()
    assert [i.name for i in store.list_runs()] == ["b"]
    with pytest.raises(RunNotFoundError):
        store.delete_run("c")


# ----------------------------------------------------------------------------- artifacts


def test_artifact_round_trip(store: RunStore) -> None:
    key = {"run": "r", "unit": 3, "measure": "loss"}
    arrays = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i64": np.array([2**40, -1], dtype=np.int64),
        "mask": np.array([True, False]),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "scalar": np.float64(2.5),
        "torch": torch.arange(4, dtype=torch.float64),
    }
    store.put_artifact("ground-truth", key, arrays, meta={"seconds": 0.25})
    art = store.get_artifact("ground-truth", {"measure": "loss", "unit": 3, "run": "r"})  # any key order
    assert art is not None and art.key == key and art.meta == {"seconds": 0.25}
    assert all(isinstance(a, np.ndarray) for a in art.arrays.values())
    np.testing.assert_array_equal(art.arrays["f32"], arrays["f32"])
    assert art.arrays["f32"].dtype == np.float32 and art.arrays["i64"].dtype == np.int64
    np.testing.assert_array_equal(art.arrays["i64"], arrays["i64"])
    np.testing.assert_array_equal(art.arrays["mask"], arrays["mask"])
    np.testing.assert_array_equal(art.arrays["fortran"], arrays["fortran"])
    assert art.arrays["scalar"].shape == () and art.arrays["scalar"] == 2.5
    np.testing.assert_array_equal(art.arrays["torch"], np.arange(4.0))
    assert store.get_artifact("ground-truth", {**key, "unit": 4}) is None
    assert store.get_artifact("other-kind", key) is None


def test_artifact_overwrite_and_coexisting_keys(store: RunStore) -> None:
    store.put_artifact("gt", {"unit": 0}, {"x": np.zeros(3)}, meta={"v": 1})
    store.put_artifact("gt", {"unit": 1}, {"x": np.ones(2)})
    store.put_artifact("gt", {"unit": 0}, {"x": np.full(4, 7.0)}, meta={"v": 2})

    zero, one = (
        store.get_artifact("gt", {"unit": 0}),
        store.get_artifact("gt", {"unit": 1}),
    )
    assert zero is not None and one is not None
    np.testing.assert_array_equal(zero.arrays["x"], np.full(4, 7.0))
    assert zero.meta == {"v": 2}
    np.testing.assert_array_equal(one.arrays["x"], np.ones(2))
    listed = store.list_artifacts("gt")
    assert sorted(a["key"]["unit"] for a in listed) == [0, 1]
    assert {"key", "fingerprint", "meta", "created_at", "nbytes"} <= set(listed[0])
    assert len(list((store.home / "artifacts" / "gt").iterdir())) == 2  # the replaced file is gone

    assert store.delete_artifact("gt", {"unit": 0}) is True
    assert store.delete_artifact("gt", {"unit": 0}) is False
    assert store.get_artifact("gt", {"unit": 0}) is None
    assert [a["key"] for a in store.list_artifacts("gt")] == [{"unit": 1}]


def test_artifact_crash_keeps_previous(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_artifact("gt", {"unit": 0}, {"x": np.zeros(3)})
    monkeypatch.setattr(store_mod, "_save_tensors", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        store.put_artifact("gt", {"unit": 0}, {"x": np.ones(3)})
    monkeypatch.undo()
    art = store.get_artifact("gt", {"unit": 0})
    assert art is not None
    np.testing.assert_array_equal(art.arrays["x"], np.zeros(3))
    assert len(list((store.home / "artifacts" / "gt").iterdir())) == 1


def test_artifact_inputs_validated(store: RunStore) -> None:
    with pytest.raises(ConfigError, match="artifact kind"):
        store.put_artifact("bad kind", {"a": 1}, {})
    with pytest.raises(ConfigError, match="cannot save"):
        store.put_artifact("k", {"a": 1}, {"s": np.array(["text"])})
    with pytest.raises(ConfigError, match="artifact key must be plain JSON"):
        store.put_artifact("k", {"a": object()}, {})
