"""Running the tests leaves ``git status`` as it was: the session fails otherwise (the
check is ``pytest_sessionfinish`` in conftest.py); here the check itself is tested."""

from __future__ import annotations

import subprocess

import pytest
from conftest import REPO, repo_state


def git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_repo_state_sees_new_and_changed_files(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "a")
    clean = repo_state(tmp_path)
    assert clean == {}
    (tmp_path / "shot.png").write_bytes(b"png")
    assert set(repo_state(tmp_path)) == {"shot.png"}
    (tmp_path / "shot.png").unlink()
    (tmp_path / "a.txt").write_text("two")
    first = repo_state(tmp_path)
    (tmp_path / "a.txt").write_text("three")  # a file already dirty that changes again is seen too
    assert repo_state(tmp_path) != first and set(first) == {"a.txt"}


def test_the_guard_watches_this_repository():
    if repo_state() is None:
        pytest.skip("not a git checkout")
    assert (REPO / "tests" / "conftest.py").is_file()
