"""Baseline methods in the app: which are available, their options, stored baseline scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..errors import ConfigError
from ..run import TrainedRun
from ..store.runstore import RunStore

BASELINE_KIND = "app-baseline"


# ----------------------------------------------------------------------------- baselines

BASELINES: dict[str, str] = {
    "trak": "TRAK (1 model)",
    "if-explicit": "Influence function (last layer)",
    "if-cg": "Influence function (CG, whole network)",
    "tracin": "TracIn",
    "grad-dot": "Gradient dot product",
    "random": "Random (control)",
}


def baselines_available() -> str | None:
    """None when :mod:`attrcore.methods` can be used, else why not (a readable note)."""
    try:
        from ..methods import registry  # noqa: F401  (import check only)
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return f"the baseline methods are not available yet ({type(err).__name__}: {err})."
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
    """Scores ``[n_test, m]`` of a baseline method for the run's test queries, on the same
    sources; stored as an artifact. TRAK uses ``models`` independently trained models (the
    run's own model and ``models − 1`` more seeds); TracIn retrains once with checkpoints."""
    import warnings
    from types import SimpleNamespace

    from ..data.sources import Sources
    from ..engine.train import train
    from ..methods import registry as bl

    if method not in bl.METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(bl.METHODS)}.")
    ds = run.dataset
    opts = _baseline_options(method, ds.n_train, models, proj_dim)
    key = {
        "run": run.name,
        "version": version,
        "method": method,
        "measure": measure,
        "models": int(models),
        "options": opts,
        "queries": "test",
    }
    found = store.get_artifact(BASELINE_KIND, key)
    if found is not None:
        return found.arrays["scores"]
    cfg = run.train_config
    t0 = time.perf_counter()
    own = SimpleNamespace(theta=run.theta, checkpoints={}, checkpoint_lrs={})
    if method == "tracin":
        outs = [
            train(
                run.mlp,
                ds.X_train,
                ds.y_train,
                cfg,
                checkpoint_epochs=bl.tracin_checkpoint_epochs(cfg.epochs),
                progress=progress,
            )
        ]
    elif method == "trak" and models > 1:
        from dataclasses import replace

        outs = [own] + [
            train(run.mlp, ds.X_train, ds.y_train, replace(cfg, seed=cfg.seed + i), progress=progress)
            for i in range(1, int(models))
        ]
    else:
        outs = [own]
    sources = None
    if run.config.get("sources", {}).get("kind", "example") != "example":
        sources = Sources(run.config["sources"]["kind"], run.source_index, run.source_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRAK's automatic ridge warning: recorded in meta
        attributor = bl.make_baseline(method, run.mlp, outs, cfg, measure=measure, **opts)
        attributor.fit(ds.X_train, ds.y_train, sources=sources)
        scores = attributor.score(ds.X_test, ds.y_test).numpy().astype(np.float32)
    if hasattr(attributor, "close"):
        attributor.close()
    meta = {"seconds": time.perf_counter() - t0, **attributor.timings, "state_bytes": int(attributor.state_bytes())}
    store.put_artifact(BASELINE_KIND, key, {"scores": scores}, meta=meta)
    return scores


def stored_baselines(store: RunStore, run_name: str, version: str) -> list[dict]:
    """Keys and meta of the baseline scores already stored for a run version."""
    return [
        a
        for a in store.list_artifacts(BASELINE_KIND)
        if a["key"].get("run") == run_name and a["key"].get("version") == version
    ]
