"""Shared test setup: an isolated run store for every test and a tiny float64 problem.

Every test runs with ``ATTRCORE_HOME`` pointed at its own temporary directory, so no test
reads or writes ``~/.attrcore``. The problems are tiny on purpose: the oracle tests
compare against explicit Hessians and finite-difference retraining, which only stay
cheap (and precise) for a few dozen parameters in float64.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor

# At these sizes a kernel is microseconds of arithmetic; with the machine's two cores
# shared by several jobs, waking a thread pool per op costs ~10x more than the op itself.
torch.set_num_threads(1)


REPO = Path(__file__).resolve().parents[1]


def repo_state(root: Path = REPO) -> dict[str, str] | None:
    """``git status`` of ``root`` with a hash of every changed file: what a test run must not
    change. None when git or the repository is not available (e.g. an installed copy)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    state = {}
    for line in out.stdout.splitlines():
        path = root / line[3:].split(" -> ")[-1].strip('"')
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"
        state[line[3:]] = f"{line[:2]} {digest}"
    return state


def unexpected_changes(before: dict, after: dict, asked: str | None = None, root: Path = REPO) -> list[str]:
    """Paths whose state differs between two :func:`repo_state` snapshots, except under the
    folder ``asked`` (``$ATTRCORE_SCREENSHOTS``: the README's refresh command writes there on
    purpose)."""
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if asked:
        folder = Path(asked).resolve()
        changed = [k for k in changed if not (root / k).resolve().is_relative_to(folder)]
    return changed


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_REPO_KEY] = repo_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if the tests changed the repository's working tree (e.g. screenshots)."""
    before = session.config.stash.get(_REPO_KEY, None)
    after = repo_state() if before is not None else None
    if before is None or after is None or after == before:
        return
    changed = unexpected_changes(before, after, os.environ.get("ATTRCORE_SCREENSHOTS"))
    if not changed:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            "error: the tests changed the repository's working tree: "
            + ", ".join(changed)
            + " (tests must write to temporary folders)",
            red=True,
        )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


_REPO_KEY = pytest.StashKey[dict | None]()


def pytest_configure(config: pytest.Config) -> None:
    if not any(line.startswith("slow:") for line in config.getini("markers")):  # pyproject may have it
        config.addinivalue_line("markers", "slow: long-running test, deselect with -m 'not slow'")


@pytest.fixture(autouse=True)
def attrcore_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty store directory for this test (``ATTRCORE_HOME``)."""
    home = tmp_path / "attrcore-home"
    monkeypatch.setenv("ATTRCORE_HOME", str(home))
    return home


@dataclass(frozen=True)
class TinyProblem:
    """A 3-class, 3-feature problem: ``X [n, d]`` float64, ``y [n]`` int64, and queries.

    ``groups [n]`` assigns the examples to 5 uneven, interleaved groups (sizes 5,5,5,5,4),
    for tests of group sources.
    """

    X: Tensor
    y: Tensor
    X_query: Tensor
    y_query: Tensor
    groups: Tensor
    n_classes: int

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def n_groups(self) -> int:
        return int(self.groups.max()) + 1


def make_tiny_problem(n: int = 24, d: int = 3, n_classes: int = 3, n_query: int = 7, seed: int = 0) -> TinyProblem:
    g = torch.Generator().manual_seed(seed)
    centers = 1.5 * torch.randn(n_classes, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % n_classes  # every class present
    X = centers[y] + torch.randn(n, d, generator=g, dtype=torch.float64)
    yq = torch.arange(n_query) % n_classes
    Xq = centers[yq] + torch.randn(n_query, d, generator=g, dtype=torch.float64)
    return TinyProblem(X=X, y=y, X_query=Xq, y_query=yq, groups=torch.arange(n) % 5, n_classes=n_classes)


@pytest.fixture(scope="session")
def tiny() -> TinyProblem:
    """The shared tiny problem (read-only: tests must not modify its tensors)."""
    return make_tiny_problem()


@pytest.fixture(scope="session")
def make_problem():
    """Factory for other sizes: ``make_problem(n=..., d=..., n_classes=..., seed=...)``."""
    return make_tiny_problem
