"""The package is installed by the README's set-up command, so ``attrcore`` (the console
script) and ``python -m attrcore`` work from any folder, not only the repository root."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_setup_command_installs_the_package_with_its_console_script():
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert "-e ." in lines  # `pip install -r requirements.txt` installs attrcore itself (editable)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    target = project["project"]["scripts"]["attrcore"]
    module, func = target.split(":")
    assert getattr(importlib.import_module(module), func).__module__ == "attrcore.cli.main"
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["attrcore*"]  # every subpackage


@pytest.mark.slow  # a venv and an editable install: ~10 s quiet, ~1 min on a loaded machine
def test_the_console_script_works_from_another_folder(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"ATTRCORE_HOME": str(tmp_path / "home")}
    for argv in ([str(venv / "bin" / "attrcore"), "runs"], [str(python), "-m", "attrcore", "runs"]):
        out = subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "no runs yet" in out.stdout.lower()
    where = subprocess.run(
        [str(python), "-c", "import attrcore; print(attrcore.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(where.strip()).resolve().is_relative_to(REPO.resolve())  # this checkout, editable
