"""The scaling benchmark's report (``benchmarks/scale.json``) as series for the Cost page.

:func:`scale_report` reads it (None when absent or unreadable); :func:`scale_series` turns
its rows into ``{method: (x, y)}`` for :func:`attrcore.plots.scaling_lines`, at one fixed
model size (against n) or one fixed n (against p).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale.json"


def scale_report(path: str | os.PathLike = DEFAULT_REPORT) -> dict | None:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("rows"), list) else None


def scale_series(doc: dict, y: str = "seconds_per_query", against: str = "n", fixed=None) -> dict:
    """``{method: (x, y)}`` of the measured rows; ``against`` "n" (rows of model size ``fixed``,
    default the smallest) or "p" (rows of training-set size ``fixed``, default the smallest).
    Times come out in milliseconds per query or seconds; failed cells are left out."""
    rows = [r for r in doc.get("rows", []) if "error" not in r and r.get(y) is not None]
    key = "params" if against == "n" else "n"
    if fixed is None and rows:  # the smallest model, or the smallest training set
        fixed = min(rows, key=lambda r: r["p"])["params"] if against == "n" else min(r["n"] for r in rows)
    scale = 1000.0 if y == "seconds_per_query" else 1.0
    out: dict = {}
    for r in rows:
        if r[key] != fixed:
            continue
        xs, ys = out.setdefault(r["method"], ([], []))
        xs.append(r["n"] if against == "n" else r["p"])
        ys.append(scale * float(r[y]))
    return out
