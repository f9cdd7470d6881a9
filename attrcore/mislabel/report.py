"""Judging the signals when the flips are known, and the tables the CLI and app show.

Interface: :func:`detection_rows` ``(results, is_flipped) -> [row]`` (ROC-AUC, average
precision, the share of flips found in the top 10 % / 15 %, time); :func:`finding`
(the plain sentence when a simple control beats every attribution signal);
:func:`ranking_frame` (one row per training example, each signal's score and rank);
:func:`report_dict` (what ``--report REPORT.json`` holds: ``{"signals": {NAME: {"auc",
"ap", ...}}, ...}``); :func:`format_table` (the text table the CLI prints).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..evaluation.metrics import average_precision, found_at, found_vs_inspected, roc_auc
from .signals import SIGNALS, SignalResult

__all__ = ["curves", "detection_rows", "finding", "format_table", "ranking_frame", "report_dict"]


def detection_rows(results: Mapping[str, SignalResult], is_flipped) -> list[dict]:
    """One row per signal, in the given order (metrics are None when nothing is flipped)."""
    flags = np.asarray(is_flipped, dtype=bool)
    known = bool(flags.any()) and not bool(flags.all())
    rows = []
    for sid, r in results.items():
        row = {
            "id": sid,
            "signal": r.title,
            "kind": SIGNALS[sid].kind,
            "seconds": r.seconds,
            "setup_seconds": r.setup_seconds,
        }
        if known:
            row.update(
                auc=roc_auc(flags, r.scores),
                ap=average_precision(flags, r.scores),
                found_at_10=found_at(flags, r.scores, 0.10),
                found_at_15=found_at(flags, r.scores, 0.15),
            )
        else:
            row.update(auc=None, ap=None, found_at_10=None, found_at_15=None)
        rows.append(row)
    return rows


def curves(results: Mapping[str, SignalResult], is_flipped) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Found-vs-inspected curves ``{title: (inspected [n+1], found [n+1])}``."""
    return {r.title: found_vs_inspected(is_flipped, r.scores) for r in results.values()}


def finding(rows: list[dict]) -> str | None:
    """A sentence when a simple control has a higher ROC-AUC than every attribution
    signal that was run (None otherwise, or when there is nothing to compare)."""
    scored = [r for r in rows if r.get("auc") is not None]
    attr = [r for r in scored if r["kind"] == "attribution"]
    ctrl = [r for r in scored if r["kind"] == "control"]
    if not attr or not ctrl:
        return None
    best_a = max(attr, key=lambda r: r["auc"])
    best_c = max(ctrl, key=lambda r: r["auc"])
    if best_c["auc"] > best_a["auc"]:
        return (
            f"A simple control beats every attribution signal here: {best_c['signal']} reaches ROC-AUC "
            f"{best_c['auc']:.3f}, the best attribution signal ({best_a['signal']}) {best_a['auc']:.3f}."
        )
    return None


def ranking_frame(dataset, results: Mapping[str, SignalResult]):
    """One row per training example: ``index, given_label`` (``clean_label``, ``flipped``
    when noise was injected), then ``<id>`` score and ``<id>_rank`` (1 = most suspicious)
    per signal; sorted by the first signal's rank."""
    names = [str(c) for c in dataset.class_names]
    df = pd.DataFrame({"index": np.arange(dataset.n_train), "given_label": [names[c] for c in dataset.y_train]})
    if len(dataset.flipped):
        df["clean_label"] = [names[c] for c in dataset.y_train_clean]
        df["flipped"] = dataset.y_train != dataset.y_train_clean
    for sid, r in results.items():
        df[sid] = r.scores
        order = np.argsort(-r.scores, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        df[f"{sid}_rank"] = rank
    if results:
        df = df.sort_values(f"{next(iter(results))}_rank", kind="stable")
    return df


def report_dict(dataset, results: Mapping[str, SignalResult], rows: list[dict] | None = None, **extra) -> dict:
    """The JSON report: ``{"signals": {title: {"id", "auc", "ap", "found_at_10",
    "found_at_15", "seconds", "setup_seconds", ...meta}}, "data", "n_train", "n_flipped",
    "finding", **extra}``."""
    rows = detection_rows(results, _flags(dataset)) if rows is None else rows
    signals = {}
    for row in rows:
        r = results[row["id"]]
        signals[row["signal"]] = {
            k: row[k] for k in ("id", "kind", "auc", "ap", "found_at_10", "found_at_15", "seconds", "setup_seconds")
        } | {"meta": r.meta}
    return {
        "signals": signals,
        "data": dataset.spec,
        "n_train": dataset.n_train,
        "n_flipped": int(len(dataset.flipped)),
        "finding": finding(rows),
        **extra,
    }


def _flags(dataset) -> np.ndarray:
    flags = np.zeros(dataset.n_train, dtype=bool)
    flags[dataset.flipped] = True
    return flags


def format_table(rows: list[dict]) -> str:
    """Fixed-width text: signal, ROC-AUC, AP, found in top 10 %, seconds."""
    w = max([len("signal")] + [len(r["signal"]) for r in rows])
    head = f"{'signal':<{w}}  {'ROC-AUC':>7}  {'AP':>6}  {'top10%':>6}  {'seconds':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:

        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"

        secs = r["seconds"] + r.get("setup_seconds", 0.0)
        lines.append(
            f"{r['signal']:<{w}}  {f(r['auc'], '7.4f'):>7}  {f(r['ap'], '6.3f'):>6}  "
            f"{f(r['found_at_10'], '6.3f'):>6}  {secs:8.2f}"
        )
    return "\n".join(lines)
