"""Nothing a user does fills the disk: orphans of a killed save are removed when a store is
opened (never a save in progress), and uploads are kept only while a run uses them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import attrcore
from attrcore.errors import RunNotFoundError
from attrcore.store import RunStore

REPO = Path(attrcore.__file__).resolve().parents[1]

KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys, torch
    from attrcore.store import runstore as s

    def write_then_die(path, tensors):
        path.write_bytes(b"x" * 1_000_000)  # half a tensors file
        (path.parent / ".tmpAbC123").write_bytes(b"y" * 1_000_000)  # safetensors' own temp file
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9

    s._save_tensors = write_then_die
    store = s.RunStore()
    if sys.argv[1] == "run":
        store.save_run("victim", config={"v": 1}, tensors={"a": torch.zeros(9)})
    else:
        store.put_artifact("unit", {"i": 1}, {"x": torch.zeros(3).numpy()})
    """
)

PAUSED_SAVE = textwrap.dedent(
    """
    import pathlib, sys, time, torch
    from attrcore.store import runstore as s

    go, ready = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    real = s._write_json

    def wait_then_write(path, doc):
        ready.write_text("staged")  # the tensors are on disk, run.json not yet
        while not go.exists():
            time.sleep(0.05)
        real(path, doc)

    s._write_json = wait_then_write
    s.RunStore().save_run("slow", config={"v": 1}, tensors={"a": torch.arange(4.0)})
    print("committed")
    """
)


def run_child(script: str, *args: str, home: Path, wait: bool = True) -> subprocess.Popen:
    env = {**os.environ, "ATTRCORE_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if wait:
        proc.communicate(timeout=120)
    return proc


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("what", ["run", "artifact"])
def test_a_killed_save_leaves_orphans_that_the_next_open_removes(attrcore_home, what):
    RunStore(attrcore_home).save_run("kept", config={}, tensors={"a": torch.ones(2)})
    proc = run_child(KILLED_SAVE, what, home=attrcore_home)
    assert proc.returncode == -9
    if what == "run":
        (orphan,) = (attrcore_home / "runs" / "victim").iterdir()
        assert {".tmpAbC123", "tensors.safetensors"} <= set(entries(orphan))  # the leftovers
        assert "run.json" not in entries(orphan)
    else:
        (orphan,) = (attrcore_home / "artifacts" / "unit").iterdir()
        assert orphan.name.startswith(".stage-")
    store = RunStore(attrcore_home)
    assert [i.name for i in store.list_runs()] == ["kept"]  # the first use opens it and cleans up
    assert not orphan.exists()  # the dead writer's lock was free: not a save in progress
    assert not (attrcore_home / "runs" / "victim").exists()
    assert entries(attrcore_home / "artifacts" / "unit") == []
    assert [i.name for i in store.list_runs()] == ["kept"]
    assert store.load_run("kept").tensors["a"].sum() == 2


def test_a_save_in_progress_survives_other_processes_opening_the_store(attrcore_home, tmp_path):
    go, ready = tmp_path / "go", tmp_path / "ready"
    proc = run_child(PAUSED_SAVE, str(go), str(ready), home=attrcore_home, wait=False)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the writer never staged its save"
            time.sleep(0.05)
        (staged,) = (attrcore_home / "runs" / "slow").iterdir()
        RunStore(attrcore_home).list_runs()  # an open cleans up...
        assert RunStore(attrcore_home).gc(grace_seconds=0) == []  # ...and even a zero-grace gc keeps it
        assert staged.exists() and "tensors.safetensors" in entries(staged)
    finally:
        go.write_text("go")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "committed" in out, err
    run = RunStore(attrcore_home).load_run("slow")
    assert run.path == staged and torch.equal(run.tensors["a"], torch.arange(4.0))
    assert ".writing" not in entries(staged)  # the lock file goes with the commit


def age(path: Path, seconds: float) -> None:
    """Pretend ``path`` (a file or folder and its files) was last touched ``seconds`` ago."""
    then = time.time() - seconds
    for p in [path, *(path.iterdir() if path.is_dir() else [])]:
        os.utime(p, (then, then))


def csv_bytes(n: int = 12) -> bytes:
    rows = "\n".join(f"{i},{i % 2}" for i in range(n))
    return f"x,label\n{rows}\n".encode()


def test_uploads_are_deduplicated_by_content():
    store = RunStore()
    a = store.put_upload("first.csv", csv_bytes())
    b = store.put_upload("Second Name.csv", csv_bytes())
    assert a == b and a.read_bytes() == csv_bytes()
    c = store.put_upload("other.csv", csv_bytes(14))
    assert c != a and len(list((store.home / "uploads").iterdir())) == 2
    assert not list((store.home / "uploads").rglob("*.part"))


def test_uploads_are_kept_only_while_a_run_uses_them():
    from attrcore import fit, load_dataset
    from attrcore.config import SimulationConfig, TrainConfig

    store = RunStore()
    used = store.put_upload("used.csv", csv_bytes(40))
    shared_by_two = store.put_upload("shared.csv", csv_bytes(30))
    rejected = store.put_upload("rejected.csv", b"not,a\nvalid")
    idle = store.put_upload("idle.csv", csv_bytes(20))
    for name, path in (("r-used", used), ("r-shared-1", shared_by_two), ("r-shared-2", shared_by_two)):
        ds = load_dataset(path, label_column="label")
        run = fit(ds, hidden=(2,), train_config=TrainConfig(epochs=1), simulation=SimulationConfig(horizon=0))
        run.save(store, name)
    # a rejected file is removed at once; a file a run uses is not
    assert store.discard_upload(rejected) and not rejected.exists()
    assert not store.discard_upload(used) and used.exists()
    # an upload nobody uses goes once it is idle; the ones runs use stay
    store.gc(upload_grace_seconds=3600)
    assert idle.exists()  # recent: a Train page may be about to use it
    age(idle.parent, 7200)
    store.gc()
    assert not idle.exists() and used.exists() and shared_by_two.exists()
    # deleting a run deletes the uploads only it used
    for path in (used, shared_by_two):
        age(path.parent, 600)
    store.delete_run("r-used")
    assert not used.parent.exists()
    store.delete_run("r-shared-1")
    assert shared_by_two.exists()  # r-shared-2 still uses it
    store.delete_run("r-shared-2")
    assert not shared_by_two.parent.exists()
    assert list((store.home / "uploads").iterdir()) == []


def test_an_upload_in_use_by_a_training_is_not_deleted_with_another_run():
    store = RunStore()
    path = store.put_upload("d.csv", csv_bytes(40))
    from attrcore import fit, load_dataset
    from attrcore.config import SimulationConfig, TrainConfig

    run = fit(
        load_dataset(path, label_column="label"),
        hidden=(2,),
        train_config=TrainConfig(epochs=1),
        simulation=SimulationConfig(horizon=0),
    )
    run.save(store, "old")
    store.touch_upload(path)  # another training is reading it right now
    store.delete_run("old")
    assert path.exists()


def test_messages_point_to_cli_commands(attrcore_home):
    store = RunStore()
    store.save_run("broken", config={}, tensors={"a": torch.ones(1)})
    for f in store.load_run("broken").path.iterdir():
        f.unlink()
    with pytest.raises(RunNotFoundError) as info:
        store.load_run("broken")
    assert "python -m attrcore delete broken" in str(info.value) and "RunStore()" not in str(info.value)


def test_artifacts_still_round_trip_through_the_staging_folder():
    store = RunStore()
    store.put_artifact("k", {"i": 1}, {"x": np.arange(3.0)})
    store.put_artifact("k", {"i": 1}, {"x": np.arange(4.0)})  # replaces
    assert store.get_artifact("k", {"i": 1}).arrays["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert [p.name.startswith(".stage-") for p in (store.home / "artifacts" / "k").iterdir()] == [False]
