"""Evaluate page view model: LDS / LOO settings and ground truth for a run, summaries,
and the committed benchmark reports as curves.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import Horizon
from ..data.sources import Sources
from ..evaluation.ground_truth import lds_ground_truth, loo_ground_truth
from ..evaluation.metrics import summarize
from ..run import TrainedRun
from ..store.runstore import RunStore

# ----------------------------------------------------------------------------- evaluation

LDS_DONE_KIND = "app-lds"
LOO_DONE_KIND = "app-loo"


def evaluation_available() -> str | None:
    """None when ground truth by retraining can run here, else why not: it runs the
    retrainings through the ``joblib`` package."""
    if importlib.util.find_spec("joblib") is None:
        return "ground truth by retraining needs the 'joblib' package (pip install -r requirements.txt)."
    return None


def evaluation_queries_missing(run: TrainedRun) -> str | None:
    """None when the run has held-out queries to evaluate on (its test split, or the
    evaluation file it was trained with), else what to do: a run trained on every row
    (``test_fraction=0``, no evaluation file) has none, and LDS / leave-one-out on the
    training rows themselves would measure memorisation, not attribution."""
    if run.dataset.n_test > 0:
        return None
    return (
        f"Run {run.name!r} was trained on every row of {run.dataset.name!r} (test fraction 0, no evaluation "
        "file), so there are no held-out queries to evaluate the attributions on. On the **Train** page, "
        "train the same data again either with **Your evaluation set** (a second upload with the same "
        "columns: every row is still trained on) or with a **test fraction** above 0, then open that run "
        "here. From the command line: `python -m attrcore evaluate --train FILE --eval HOLDOUT.csv "
        "--scores SCORES.npy` (the scores of HOLDOUT's rows)."
    )


@dataclass(frozen=True)
class LDSSettings:
    """How much retraining the LDS ground truth costs: ``n_subsets × (1 + ceiling_seeds)``
    trainings, each on ``fraction`` of the sources, measured on the first ``n_queries``
    test examples."""

    n_subsets: int = 20
    fraction: float = 0.5
    n_queries: int = 50
    ceiling_seeds: int = 1
    n_jobs: int = 1
    measure: str = "margin"

    def key(self, run_name: str, version: str) -> dict:
        d = asdict(self)
        d.pop("n_jobs")  # how it is computed does not change the result
        return {"run": run_name, "version": version, **d}


@dataclass(frozen=True)
class LOOSettings:
    """Leave-one-out: ``n_sources`` random sources removed one at a time (weight zero, same
    seed and batch order) for each of ``n_seeds`` seeds."""

    n_sources: int = 10
    n_seeds: int = 2
    n_queries: int = 50
    n_jobs: int = 1
    measure: str = "margin"

    def key(self, run_name: str, version: str) -> dict:
        d = asdict(self)
        d.pop("n_jobs")
        return {"run": run_name, "version": version, **d}


def _run_sources(run: TrainedRun):
    if run.sources_kind == "example":
        return None
    return Sources(run.sources_kind, run.source_index, run.source_names)


def _queries(run: TrainedRun, n: int) -> tuple[np.ndarray, np.ndarray]:
    ds = run.dataset
    n = max(1, min(int(n), ds.n_test))
    return ds.X_test[:n], ds.y_test[:n]


def lds_truth(store: RunStore, run: TrainedRun, version: str, settings: LDSSettings, progress: Callable | None = None):
    """LDS ground truth (:func:`attrcore.evaluation.ground_truth.lds_ground_truth`) for the run's model and
    training config; finished retrainings are stored and reused, so it resumes."""

    gt = lds_ground_truth(
        run.dataset,
        run.mlp.config,
        run.train_config,
        n_subsets=settings.n_subsets,
        fraction=settings.fraction,
        seed=0,
        measure=settings.measure,
        queries=_queries(run, settings.n_queries),
        sources=_run_sources(run),
        ceiling_seeds=settings.ceiling_seeds,
        store=store,
        n_jobs=settings.n_jobs,
        progress=progress,
    )
    store.put_artifact(
        LDS_DONE_KIND, settings.key(run.name, version), {"done": np.ones(1)}, meta={"seconds": gt.seconds}
    )
    return gt


def loo_truth(store: RunStore, run: TrainedRun, version: str, settings: LOOSettings, progress: Callable | None = None):
    """Leave-one-out ground truth (weight-zero protocol) for ``settings.n_sources`` sources
    drawn with a fixed seed."""

    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(run.n_sources, size=min(settings.n_sources, run.n_sources), replace=False))
    cfg = run.train_config
    gt = loo_ground_truth(
        run.dataset,
        run.mlp.config,
        cfg,
        idx,
        seeds=[cfg.seed + i for i in range(settings.n_seeds)],
        measure=settings.measure,
        protocol="weight-zero",
        queries=_queries(run, settings.n_queries),
        sources=_run_sources(run),
        store=store,
        n_jobs=settings.n_jobs,
        progress=progress,
    )
    store.put_artifact(
        LOO_DONE_KIND, settings.key(run.name, version), {"done": np.ones(1)}, meta={"seconds": gt.seconds}
    )
    return gt


def truth_known(store: RunStore, kind: str, settings, run_name: str, version: str) -> bool:
    """Whether this ground truth was computed before (so loading it retrains nothing)."""
    return store.get_artifact(kind, settings.key(run_name, version)) is not None


def lds_summary(gt, scores: dict[str, np.ndarray]) -> list[dict]:
    """One row per method: mean LDS, its standard error and the per-query values."""

    Q = gt.outputs.shape[1]
    rows = []
    for name, S in scores.items():
        per_query = gt.score(np.asarray(S)[:Q])
        s = summarize(per_query)
        rows.append({"method": name, "LDS": s["mean"], "± s.e.": s["sem"], "queries": s["n"], "per_query": per_query})
    return rows


def subset_predictions(gt, row: np.ndarray) -> np.ndarray:
    """Predicted output change per subset ``[M]``: Σ of the query's scores over each subset."""
    return gt.subsets.astype(np.float64) @ np.asarray(row, np.float64)


def horizon_x(label) -> float:
    """A plotting position for a horizon in any written form (``'full'`` goes to the right of
    any K): :meth:`attrcore.config.Horizon.plot_x`."""
    return Horizon.parse(label).plot_x()


def horizon_tick(x: float) -> str:
    """The tick label of a plotting position from :func:`horizon_x`."""
    return str(Horizon.from_plot_x(x))


def bench_docs(folder: str | os.PathLike) -> list[dict]:
    """Benchmark reports (``<folder>/*.json`` written by :mod:`attrcore.evaluation.bench`)."""

    out = []
    for path in sorted(Path(folder).glob("*.json")):
        if path.name.startswith("compress-"):  # the compression benchmark: see compression.compress_docs
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("rows"), list) and doc.get("task"):
            doc["_file"] = path.name
            out.append(doc)
    return out


def bench_curves(doc: dict, protocol: str = "fixed-seed") -> dict[str, dict[str, tuple[list, list]]]:
    """LDS curves from a benchmark report: ``{"horizon": {scheme: (K, LDS)}, "ensemble":
    {"forward-only K=..": (models, LDS)}, "trak_models": {"proj k": (M, LDS)},
    "trak_proj": {"M models": (k, LDS)}}``; empty dicts where the report has no such rows."""

    def lds_of(r):
        v = (r.get(f"lds_{protocol}") or {}).get("mean")
        return None if v is None or v != v else float(v)

    horizon: dict[str, list] = {}
    ensemble: dict[str, list] = {}
    trak_m: dict[str, list] = {}
    trak_k: dict[str, list] = {}
    for r in doc.get("rows", []):
        v = lds_of(r)
        if v is None:
            continue
        if r.get("method") == "forward-only":
            models = int(r.get("models", 1))
            if models == 1:
                horizon.setdefault(r.get("scheme", "trajectory"), []).append((horizon_x(r.get("horizon")), v))
            ensemble.setdefault(f"{r.get('scheme', 'trajectory')} K={r.get('horizon')}", []).append((models, v))
        elif r.get("method") == "trak":
            meta = r.get("meta") or {}
            M, k = int(r.get("models", meta.get("ensemble", 1))), meta.get("proj_dim")
            # a row with an explicit ridge is another method, not a point of the plain curve
            # (mixed in, it made the TRAK curves zig-zag)
            ridge = meta.get("ridge")
            tag = "" if ridge is None else f", ridge {ridge:g}× mean eigenvalue"
            if k is not None:
                trak_m.setdefault(f"proj {k}{tag}", []).append((M, v))
                trak_k.setdefault(f"{M} model(s){tag}", []).append((int(k), v))

    def series(d):
        return {name: tuple(map(list, zip(*sorted(pts)))) for name, pts in d.items() if pts}

    return {
        "horizon": series(horizon),
        "ensemble": {k: v for k, v in series(ensemble).items() if len(v[0]) > 1},
        "trak_models": series(trak_m),
        "trak_proj": series(trak_k),
    }


def bench_protocols(doc: dict) -> list[str]:
    """LDS protocols a benchmark report has, in the report's own order; a report that does
    not list its order (written before the benchmark kept its settings) gets the standard
    protocol, random-seed, first."""
    listed = list((doc.get("settings") or {}).get("lds_protocols") or ())
    present = [p for p in ("random-seed", "fixed-seed") if p in doc.get("ground_truth", {})]
    return [p for p in listed if p in present] + [p for p in present if p not in listed]


def bench_time_points(doc: dict, protocol: str) -> dict[str, list]:
    """Every row of a benchmark report as a point for :func:`attrcore.plots.lds_vs_time`:
    ``{"labels", "seconds", "lds", "errors", "families"}``; seconds = training + setup
    (simulation for forward-only, featurize + finalize for TRAK, the Hessian for IF)."""
    out: dict[str, list] = {"labels": [], "seconds": [], "lds": [], "errors": [], "families": []}
    for r in doc.get("rows", []):
        s = r.get(f"lds_{protocol}") or {}
        v, sec = s.get("mean"), (r.get("setup_seconds") or 0.0) + (r.get("train_seconds") or 0.0)
        if v is None or v != v or r.get("method") == "random" or not sec > 0:
            continue
        method = str(r.get("method"))
        family = "if" if method.startswith("if") else method if method in ("forward-only", "trak") else "other"
        out["labels"].append(f"{method}: {r.get('setting', '')}" if family != "forward-only" else str(r.get("setting")))
        out["seconds"].append(float(sec))
        out["lds"].append(float(v))
        e = s.get("sem")
        out["errors"].append(float(e) if e is not None and e == e else 0.0)
        out["families"].append(family)
    return out
