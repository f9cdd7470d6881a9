"""Runs saved by an older attrcore still open, list and score (issue #7: no silent format break).

``tests/fixtures/store_format1/home`` is a run store written by the code of the ``Layout:``
commit (store format 1, the config recorded as a plain dict with the horizon as ``"full"`` /
``"3"``), made by saving three tiny moons runs: a full-horizon trajectory, a short-horizon
trajectory with class sources, and a stationary run. ``expected_scores.npz`` holds the scores
that code gave for the dataset's test split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attrcore import RunStore, TrainedRun
from attrcore.cli.main import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store_format1"
RUNS = {  # name -> (scheme, horizon as recorded, sources kind, n sources)
    "old-trajectory": ("trajectory", "full", "example", 32),
    "old-short": ("trajectory", "3", "class", 2),
    "old-stationary": ("stationary", "5", "example", 32),
}


@pytest.fixture
def old_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    shutil.copytree(FIXTURE / "home", home)  # a copy: opening the store may write to it
    monkeypatch.setenv("ATTRCORE_HOME", str(home))
    return home


def expected(name: str) -> np.ndarray:
    with np.load(FIXTURE / "expected_scores.npz") as z:
        return z[name.replace("-", "_")]


def test_the_old_store_lists_its_runs(old_home: Path) -> None:
    store = RunStore(old_home)
    assert sorted(i.name for i in store.list_runs()) == sorted(RUNS)
    table = store.runs_table()
    assert sorted(table["name"]) == sorted(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_an_old_run_opens_and_scores_as_before(old_home: Path, name: str) -> None:
    scheme, horizon, kind, m = RUNS[name]
    run = TrainedRun.load(RunStore(old_home), name)
    assert run.simulation.scheme == scheme
    assert run.simulation.horizon_label == horizon
    assert run.n_sources == m and run.config["sources"]["kind"] == kind
    ds = run.dataset
    scores = run.score(ds.X_test, ds.y_test)
    assert scores.shape == (ds.X_test.shape[0], m)
    torch.testing.assert_close(torch.from_numpy(scores), torch.from_numpy(expected(name)))


def test_the_cli_scores_an_old_run(old_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.npy"
    assert main(["score", "--run", "old-trajectory", "--out", str(out)]) == 0
    torch.testing.assert_close(torch.from_numpy(np.load(out)), torch.from_numpy(expected("old-trajectory")))
