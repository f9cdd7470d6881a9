"""Running the tests leaves ``git status`` as it was: the session fails otherwise (the
check is ``pytest_sessionfinish`` in conftest.py); here the check itself is tested."""

from __future__ import annotations

import subprocess

import pytest
from conftest import REPO, repo_state, unexpected_changes


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


def test_only_the_asked_screenshot_folder_may_change(tmp_path, monkeypatch):
    git(tmp_path, "init", "-q")
    (tmp_path / "assets" / "screenshots").mkdir(parents=True)
    for name in ("assets/screenshots/home.png", "README.md"):
        (tmp_path / name).write_text("old")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "a")
    before = repo_state(tmp_path)
    (tmp_path / "assets" / "screenshots" / "home.png").write_text("refreshed")
    after = repo_state(tmp_path)
    assert unexpected_changes(before, after, None, tmp_path) == ["assets/screenshots/home.png"]  # the test command
    monkeypatch.chdir(tmp_path)  # the refresh command runs from the repository root
    assert unexpected_changes(before, after, "assets/screenshots", tmp_path) == []
    (tmp_path / "README.md").write_text("changed")
    assert unexpected_changes(before, repo_state(tmp_path), "assets/screenshots", tmp_path) == ["README.md"]
