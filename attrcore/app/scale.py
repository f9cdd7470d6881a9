"""The scaling benchmark's report (``benchmarks/scale.json``) as series for the Cost page.

:func:`scale_report` reads it (None when absent or unreadable); :func:`scale_series` turns
its rows into ``{method: (x, y)}`` for :func:`attrcore.plots.scaling_lines`, at one fixed
model size (against n) or one fixed n (against p); :func:`speedups` gives, per measured cell,
TRAK-10's time per query over each method's, from the same run, for
:func:`attrcore.plots.speedup_bars`.
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


# costs that grow with the training length: a line joins cells of one recipe (epochs) only
PER_RECIPE = ("setup_seconds", "simulate_seconds")


def scale_series(doc: dict, y: str = "seconds_per_query", against: str = "n", fixed=None, epochs=None) -> dict:
    """``{method: (x, y)}`` of the measured rows; ``against`` "n" (rows of model size ``fixed``,
    default the smallest) or "p" (rows of training-set size ``fixed``, default the smallest).
    Setup and simulation seconds keep one recipe per line: rows of ``epochs`` epochs only
    (default: per method, the number of epochs with the most distinct x, the larger on a tie),
    so a line never joins cells trained for different lengths. Per-query time, bytes and
    memory do not grow with the epochs: one point per x, the newest run's (as for a cell
    measured in two runs). Times come out in milliseconds per query or seconds; failed cells
    are left out."""
    rows = [r for r in doc.get("rows", []) if "error" not in r and r.get(y) is not None]
    if y == "setup_seconds":  # a store-timing TRAK-10 row's setup is its store's, not TRAK-10's
        rows = [r for r in rows if not r.get("store_timing")]
    key = "params" if against == "n" else "n"
    if fixed is None and rows:  # the smallest model, or the smallest training set
        fixed = min(rows, key=lambda r: r["p"])["params"] if against == "n" else min(r["n"] for r in rows)
    scale = 1000.0 if y in ("seconds_per_query", "cpu_seconds_per_query") else 1.0
    xkey = "n" if against == "n" else "p"
    per_recipe = y in PER_RECIPE or epochs is not None
    newest: dict = {}  # one row per (method, x[, epochs]): the newest run's
    for r in rows:
        if r[key] == fixed:
            cell = (r["method"], r[xkey], r.get("epochs") if per_recipe else None)
            if cell not in newest or r.get("run", 0) >= newest[cell].get("run", 0):
                newest[cell] = r
    mine: dict[str, list[dict]] = {}
    for r in newest.values():
        mine.setdefault(r["method"], []).append(r)
    out: dict = {}
    for method, rs in mine.items():
        if per_recipe:
            if epochs is not None:
                want = epochs
            else:
                per: dict = {}
                for r in rs:
                    per.setdefault(r.get("epochs"), set()).add(r[xkey])
                want = max(per, key=lambda e: (len(per[e]), e or 0))
            rs = [r for r in rs if r.get("epochs") == want]
        sel = sorted(rs, key=lambda r: r[xkey])
        if sel:
            out[method] = ([r[xkey] for r in sel], [scale * float(r[y]) for r in sel])
    return out


def speedups(doc: dict, timing: str = "seconds_per_query") -> dict[str, dict[str, float]]:
    """``{"n=…, p=…": {method: TRAK-10 s/query ÷ method s/query}}`` for the cells where TRAK-10
    was measured in the same run (same ``run``, n, model and epochs); others are left out.
    ``timing`` "seconds_per_query" (wall clock) or "cpu_seconds_per_query" (process CPU time,
    which the other jobs on a shared machine do not inflate; runs that recorded it only)."""
    rows = [r for r in doc.get("rows", []) if "error" not in r and r.get(timing)]

    def cell(r: dict) -> tuple:
        return (r.get("run"), r["n"], r["params"], r.get("epochs"))

    peers = {cell(r): r[timing] for r in rows if r["method"] == "trak-10"}
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        t10 = peers.get(cell(r))
        if t10 is None or r["method"] == "trak-10":
            continue
        label = f"n={r['n']:,}, p={r.get('p', r['params']):,}" if isinstance(r.get("p"), int) else f"n={r['n']}"
        out.setdefault(label, {})[r["method"]] = t10 / r[timing]
    return out
