"""The library never imports Streamlit: only the app and its pages may."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import attrcore

PACKAGE = Path(attrcore.__file__).resolve().parent
REPO = PACKAGE.parent


def library_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert files, f"no sources found under {PACKAGE}"
    return files


def streamlit_mentions(tree: ast.AST) -> list[tuple[int, str]]:
    """Import statements of streamlit, and dynamic imports by name (importlib / __import__)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "streamlit"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "streamlit":
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and str(arg.value).split(".")[0] == "streamlit":
                    found.append((node.lineno, f"{name}({arg.value!r})"))
    return found


def test_no_library_source_imports_streamlit():
    offenders = {}
    for path in library_files():
        hits = streamlit_mentions(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        if hits:
            offenders[str(path.relative_to(REPO))] = hits
    assert offenders == {}, f"attrcore/ must not import streamlit: {offenders}"


def test_the_detector_finds_every_import_form():
    src = (
        "import streamlit as st\n"
        "from streamlit.runtime import x\n"
        "importlib.import_module('streamlit')\n"
        "__import__('streamlit.web')\n"
    )
    assert [line for line, _ in streamlit_mentions(ast.parse(src))] == [1, 2, 3, 4]
    assert streamlit_mentions(ast.parse("import streamlitish\nimport numpy")) == []


def test_importing_every_library_module_leaves_streamlit_unloaded():
    code = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys
        import attrcore
        failed = {}
        names = [m.name for m in pkgutil.walk_packages(attrcore.__path__, "attrcore.")]
        names = [n for n in names if not n.endswith(".__main__")]  # runs the CLI on import
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as err:  # reported, so a broken module is not mistaken for a pass
                failed[name] = repr(err)
        print(json.dumps({"modules": names, "failed": failed, "streamlit": "streamlit" in sys.modules}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, report["failed"]
    expected = {"attrcore.engine.readout", "attrcore.engine.simulate", "attrcore.cli.main", "attrcore.run"}
    assert expected <= set(report["modules"])
    assert report["streamlit"] is False, "importing attrcore pulled in streamlit"
