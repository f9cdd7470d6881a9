"""Baseline methods in the app: which are available, their options, stored baseline scores."""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from ..data.sources import Sources
from ..errors import ConfigError
from ..methods import registry
from ..methods.pipeline import attribute
from ..methods.registry import METHODS
from ..run import TrainedRun
from ..store.runstore import RunStore
from .explore import query_pool

BASELINE_KIND = "app-baseline"


# ----------------------------------------------------------------------------- baselines

# the baseline methods of the registry, with the labels the pages show (the app's TRAK
# uses one model unless asked for more)
BASELINES: dict[str, str] = {
    name: METHODS[name].label + (" (1 model)" if name == "trak" else "") for name in registry.BASELINES
}


def baselines_available() -> str | None:
    """None when the baseline methods can run, else why not (a readable note): TRAK needs
    the optional ``traker`` package."""
    if importlib.util.find_spec("trak") is None:
        return "the baseline methods need the 'traker' package (pip install -r requirements.txt)."
    return None


def _baseline_options(method: str, n_train: int, models: int, proj_dim: int | None) -> dict:
    if method == "trak":
        k = proj_dim or min(512, max(16, n_train // 2))
        return {"proj_dim": int(k)}
    if method == "if-explicit":
        return {"layers": "last"}
    return {}


def baseline_scores(
    store: RunStore,
    run: TrainedRun,
    version: str,
    method: str,
    measure: str = "margin",
    models: int = 1,
    proj_dim: int | None = None,
    progress: Callable | None = None,
) -> np.ndarray:
    """Scores ``[Q, m]`` of a baseline method for the run's queries (:func:`query_pool`), on the same
    sources; stored as an artifact. TRAK uses ``models`` independently trained models (the
    run's own model and ``models − 1`` more seeds); TracIn retrains once with checkpoints."""

    if method not in BASELINES:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(BASELINES)}.")
    ds = run.dataset
    X_q, y_q, kind = query_pool(ds)  # Explore's queries: the test split, or the training rows without one
    opts = _baseline_options(method, ds.n_train, models, proj_dim)
    key = {
        "run": run.name,
        "version": version,
        "method": method,
        "measure": measure,
        "models": int(models),
        "options": opts,
        "queries": kind,
    }
    found = store.get_artifact(BASELINE_KIND, key)
    if found is not None:
        return found.arrays["scores"]
    t0 = time.perf_counter()
    own = SimpleNamespace(theta=run.theta, checkpoints={}, checkpoint_lrs={})
    sources = None
    if run.sources_kind != "example":
        sources = Sources(run.sources_kind, run.source_index, run.source_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRAK's automatic ridge warning: recorded in meta
        result = attribute(
            method,
            run.mlp,
            ds.X_train,
            ds.y_train,
            X_q,
            y_q,
            run.train_config,
            sources=sources,
            models=models,
            measure=measure,
            options=opts,
            trained=[own],
            progress=progress,
        )
    scores = result.scores.numpy().astype(np.float32)
    meta = {"seconds": time.perf_counter() - t0, **result.timings, "state_bytes": result.state_bytes}
    store.put_artifact(BASELINE_KIND, key, {"scores": scores}, meta=meta)
    return scores


def stored_baselines(store: RunStore, run_name: str, version: str) -> list[dict]:
    """Keys and meta of the baseline scores already stored for a run version."""
    return [
        a
        for a in store.list_artifacts(BASELINE_KIND)
        if a["key"].get("run") == run_name and a["key"].get("version") == version
    ]
