"""Compressed responses in the app: the Train page's estimate before training, compressed
variants of dense runs for Cost and Evaluate, and the compression benchmark's curves.

- :func:`simulation_estimate` — which representation a setting gets (dense or rank r, and
  why), the stored bytes, the simulation's working memory and a rough time, before training;
- :func:`compressed_variant` — a dense run's responses compressed by
  :func:`~attrcore.engine.compress.compress_dense` (the same model, Δ ≈ C Qᵀ);
- :func:`compress_docs` / :func:`rank_curves` — ``benchmarks/compress-*.json`` as LDS-vs-rank
  series with the dense and TRAK references; :func:`rank_curve_docs` orders the reports
  with a curve for a run (its own task first), :func:`rank_curve_label` names one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

from ..config import SimulationConfig, TrainConfig
from ..data.datasets import Dataset
from ..data.sources import make_sources
from ..engine.compress import CompressedResponses, compress_dense, rank_for
from ..engine.estimate import check_estimate, estimate_training
from ..errors import ConfigError
from ..run import TrainedRun


def _n_sources(dataset: Dataset, sources: str) -> int:
    try:
        return make_sources(dataset, sources).m
    except Exception:  # noqa: BLE001 - an estimate: fall back to one source per example
        return dataset.n_train


def simulation_estimate(
    dataset: Dataset, hidden: tuple[int, ...], train: TrainConfig, sim: SimulationConfig, sources: str = "example"
) -> dict:
    """What a Train setting will cost, before training: the engine's estimate
    (:func:`attrcore.engine.estimate.estimate_training`, the one ``fit`` refuses with).

    Returns ``rank`` (None = dense), ``reason``, ``stored_bytes`` (all sources),
    ``dense_bytes`` (what dense would store), ``working_bytes`` (responses + simulation
    state, what the memory budget is checked against), ``fits`` (within
    ``sim.memory_budget_mb``), ``peak_bytes`` (the process), ``seconds`` with its likely
    range ``seconds_low``/``seconds_high``, ``problem`` (why training would be refused, or
    None), ``warnings`` and ``m``, ``p``.
    """
    m = _n_sources(dataset, sources)
    est = estimate_training(dataset.n_train, dataset.n_features, dataset.n_classes, tuple(hidden), train, sim, m)
    p = est.n_params
    isz = 8 if train.dtype == "float64" else 4
    rank, reason = (None, "no simulation") if sim.scheme == "none" else rank_for(sim, m, p)
    try:
        problem, warnings = None, check_estimate(est, sim)
    except ConfigError as err:
        problem, warnings = str(err), []
    return {
        "rank": rank,
        "reason": reason,
        "stored_bytes": est.response_bytes,
        "dense_bytes": 0 if sim.scheme == "none" else m * p * isz,
        "working_bytes": est.budget_bytes,
        "fits": sim.scheme == "none" or est.budget_bytes <= sim.memory_budget_mb * 2**20,
        "peak_bytes": est.peak_bytes,
        "seconds": est.seconds,
        "seconds_low": est.seconds_low,
        "seconds_high": est.seconds_high,
        "problem": problem,
        "warnings": warnings,
        "m": m,
        "p": p,
    }


def estimate_text(est: dict) -> str:
    """One line for the Train page."""
    if est["reason"] == "no simulation":
        return "No simulation: the run cannot attribute."

    def mb(b: float) -> str:
        return f"{b / 2**20:,.1f} MB" if b >= 2**20 else f"{b / 1024:,.0f} KB"

    def secs(x: float) -> str:
        return f"{x:,.0f} s" if x < 90 else f"{x / 60:,.0f} min"

    saved = "" if est["rank"] is None else f" instead of {mb(est['dense_bytes'])} dense"
    fit = "" if est["fits"] else " — more than the memory budget: training will be refused"
    return (
        f"Responses: {est['reason']}. Stores {mb(est['stored_bytes'])}{saved}; the simulation needs about "
        f"{mb(est['working_bytes'])} of memory{fit} (peak of the process ≈ {mb(est['peak_bytes'])}); training "
        f"takes about {secs(est['seconds'])} (likely {secs(est['seconds_low'])} to {secs(est['seconds_high'])} "
        "on a machine like this one)."
    )


def compressed_variant(run: TrainedRun, rank: int = 256, power_iterations: int = 1) -> TrainedRun | None:
    """The run with its dense responses compressed to rank ``rank`` (capped at m and p), or None
    when the run is already compressed or has no responses. Timings gain ``compress_seconds``."""
    if run.responses is None or isinstance(run.responses, CompressedResponses):
        return None
    r = max(1, min(int(rank), run.n_sources, run.mlp.n_params))
    t0 = time.perf_counter()
    comp = compress_dense(run.responses, r, power_iterations, run.train_config.seed)
    comp.info["reason"] = f"rank {r}, compressed after training"
    timings = dict(run.timings, compress_seconds=time.perf_counter() - t0)
    timings["simulate_seconds"] = float(run.timings.get("simulate_seconds", 0.0)) + timings["compress_seconds"]
    return replace(run, responses=comp, timings=timings)


# the factorisations of benchmarks/query_compress_bench.py, as the curves are labelled
QUERY_COMPRESS_KINDS = {
    "query-aware": "query-aware",
    "query-aware-proj": "query-aware, C = ΔQ",
    "gradient": "gradient subspace",
    "svd": "svd of Δ",
}


def compress_docs(folder: str | os.PathLike) -> list[dict]:
    """The compression benchmarks' reports: ``<folder>/query-compress-*.json`` (query-aware
    against the other factorisations) first, then ``<folder>/compress-*.json``."""
    out = []
    folder = Path(folder)
    for path in [*sorted(folder.glob("query-compress-*.json")), *sorted(folder.glob("compress-*.json"))]:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("rows"), list):
            doc["_file"] = path.name
            out.append(doc)
    return out


def rank_curves(doc: dict, protocol: str | None = None) -> tuple[dict, dict]:
    """``({series: (ranks, LDS)}, {reference: LDS})`` from a compression report: the real
    rank-r runs, the truncations of the largest one, and the dense run and TRAK as references."""
    protocol = protocol or (doc.get("protocols") or ["random-seed"])[0]
    series: dict[str, list] = {}
    refs: dict[str, float] = {}
    for r in doc.get("rows", []):
        v = ((r.get("lds") or {}).get(protocol) or {}).get("mean")
        if v is None:
            continue
        kind = r.get("kind")
        if kind == "compressed":
            series.setdefault("compressed (rank-r run)", []).append((int(r["rank"]), float(v)))
        elif kind == "truncated":
            series.setdefault("truncated from the largest rank", []).append((int(r["rank"]), float(v)))
        elif kind in QUERY_COMPRESS_KINDS:
            series.setdefault(QUERY_COMPRESS_KINDS[kind], []).append((int(r["rank"]), float(v)))
        elif kind in ("dense", "trak"):
            refs[r["method"]] = float(v)
    return {k: tuple(map(list, zip(*sorted(p)))) for k, p in series.items()}, refs


def rank_curve_docs(docs: list[dict], data_source: str = "") -> list[dict]:
    """The reports of :func:`compress_docs` that have an LDS-vs-rank curve, the run's own task
    first (its data source, e.g. ``"digits"``, starts the task name), then the longest curve."""

    def key(doc: dict) -> tuple[bool, int]:
        task = str(doc.get("task") or "")
        own = bool(task) and bool(data_source) and task.split("-")[0] in data_source
        longest = max((len(x) for x, _ in rank_curves(doc)[0].values()), default=0)
        return (not own, -longest)

    return sorted((d for d in docs if rank_curves(d)[0]), key=key)


def rank_curve_label(doc: dict) -> str:
    """How the Evaluate page names a compression report: task, horizon and file."""
    return f"{doc.get('task', '?')}, horizon {doc.get('horizon', '?')} ({doc.get('_file', '?')})"


__all__ = [
    "compress_docs",
    "compressed_variant",
    "estimate_text",
    "rank_curve_docs",
    "rank_curve_label",
    "rank_curves",
    "simulation_estimate",
]
