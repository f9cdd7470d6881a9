"""Compressed responses in the app: the Train page's estimate before training, compressed
variants of dense runs for Cost and Evaluate, and the compression benchmark's curves.

- :func:`simulation_estimate` — which representation a setting gets (dense or rank r, and
  why), the stored bytes, the simulation's working memory and a rough time, before training;
- :func:`compressed_variant` — a dense run's responses compressed by
  :func:`~attrcore.engine.compress.compress_dense` (the same model, Δ ≈ C Qᵀ);
- :func:`compress_docs` / :func:`rank_curves` — ``benchmarks/compress-*.json`` as LDS-vs-rank
  series with the dense and TRAK references.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

from ..config import SimulationConfig, TrainConfig
from ..data.datasets import Dataset
from ..engine.compress import CompressedResponses, compress_dense, full_horizon_memory, resolve_rank
from ..engine.model import MLPConfig
from ..run import TrainedRun

# Seconds per (tangent × training step × parameter × batch example), measured on the
# 2-core reference machine (digits-mlp, dense full horizon: 40 s for 1437 tangents × 690
# steps × 9610 parameters × 64 examples). Only a rough guide: load varies 2–3×.
SECONDS_PER_TANGENT_UNIT = 6.6e-11


def _n_sources(dataset: Dataset, sources: str) -> int:
    from ..data.sources import make_sources

    try:
        return make_sources(dataset, sources).m
    except Exception:  # noqa: BLE001 - an estimate: fall back to one source per example
        return dataset.n_train


def simulation_estimate(
    dataset: Dataset, hidden: tuple[int, ...], train: TrainConfig, sim: SimulationConfig, sources: str = "example"
) -> dict:
    """What a Train setting will cost, before training.

    Returns ``rank`` (None = dense), ``reason``, ``stored_bytes`` (all sources),
    ``dense_bytes`` (what dense would store), ``working_bytes`` (peak simulation state the
    memory budget is checked against), ``fits`` (within ``sim.memory_budget_mb``),
    ``seconds`` (rough simulation time on the reference machine) and ``m``, ``p``.
    """
    m = _n_sources(dataset, sources)
    p = MLPConfig(dataset.n_features, dataset.n_classes, tuple(hidden)).n_params
    isz = 8 if train.dtype == "float64" else 4
    B = min(train.batch_size, dataset.n_train)
    steps = train.epochs * math.ceil(dataset.n_train / train.batch_size)
    mom = 2 if train.momentum else 1
    budget = sim.memory_budget_mb * 2**20
    if sim.scheme == "none":
        return {
            "rank": None,
            "reason": "no simulation",
            "stored_bytes": 0,
            "dense_bytes": 0,
            "working_bytes": 0,
            "fits": True,
            "seconds": 0.0,
            "m": m,
            "p": p,
        }
    rank, reason = resolve_rank(sim.rank, m, p)
    dense_bytes = m * p * isz
    stored = dense_bytes if rank is None else rank * (p + m) * isz
    full = sim.scheme == "trajectory" and (sim.horizon is None or sim.horizon >= steps)
    q = sim.power_iterations
    if sim.scheme == "trajectory" and full:
        if rank is None:
            working, tangent_steps = m * p * isz * mom, m * steps * B
        else:
            est = full_horizon_memory(rank, p, m, steps, isz, bool(train.momentum))
            working = min(est["all_bytes"], max(est["min_bytes"], budget))
            tangent_steps = 2 * (q + 1) * rank * steps * B * 1.25  # injections and inner products
    elif sim.scheme == "trajectory":
        ring = sim.horizon * min(B, m) * p * isz * mom
        working, tangent_steps = (
            ring + (dense_bytes if rank is None or dense_bytes + ring <= budget else 0),
            (sim.horizon * min(B, m) * steps * B),
        )
    else:  # stationary: every Neumann step applies the curvature of the whole training set
        working, tangent_steps = 2 * dense_bytes, m * sim.horizon * dataset.n_train
    seconds = tangent_steps * p * SECONDS_PER_TANGENT_UNIT * (1.5 if train.momentum else 1.0)
    if rank is not None and not full:  # the randomized SVD of the dense responses afterwards
        seconds += 2 * (q + 1) * m * p * rank * 2e-11
    return {
        "rank": rank,
        "reason": reason,
        "stored_bytes": stored,
        "dense_bytes": dense_bytes,
        "working_bytes": working,
        "fits": working <= budget,
        "seconds": seconds,
        "m": m,
        "p": p,
    }


def estimate_text(est: dict) -> str:
    """One line for the Train page."""
    if est["reason"] == "no simulation":
        return "No simulation: the run cannot attribute."

    def mb(b: float) -> str:
        return f"{b / 2**20:,.1f} MB" if b >= 2**20 else f"{b / 1024:,.0f} KB"

    saved = "" if est["rank"] is None else f" instead of {mb(est['dense_bytes'])} dense"
    fit = "" if est["fits"] else " — more than the memory budget: training will be refused"
    return (
        f"Responses: {est['reason']}. Stores {mb(est['stored_bytes'])}{saved}; simulation needs about "
        f"{mb(est['working_bytes'])} of working memory{fit} and roughly {est['seconds']:,.0f} s on a 2-core "
        "machine (a rough guide)."
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


def compress_docs(folder: str | os.PathLike) -> list[dict]:
    """The compression benchmark's reports (``<folder>/compress-*.json``)."""
    out = []
    for path in sorted(Path(folder).glob("compress-*.json")):
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
        elif kind in ("dense", "trak"):
            refs[r["method"]] = float(v)
    return {k: tuple(map(list, zip(*sorted(p)))) for k, p in series.items()}, refs


__all__ = [
    "compress_docs",
    "compressed_variant",
    "estimate_text",
    "rank_curves",
    "simulation_estimate",
]
