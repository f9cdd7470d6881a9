"""Mislabeled data page view model: noisy runs, stored signals, review, retrain results.

Everything the page computes goes through here and is stored in the run store (signals
and retrain results as artifacts keyed by the run's version, marks by
:mod:`attrcore.mislabel.marks`), so an app restart or a browser refresh loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..config import SimulationConfig, TrainConfig, fingerprint
from ..errors import ConfigError
from ..mislabel import (
    SIGNALS,
    Mark,
    NoiseSpec,
    SignalResult,
    compute_signal,
    curves,
    detection_rows,
    finding,
    retrain_with_marks,
)
from ..mislabel.trajectory import TRAJECTORY_SIGNALS, check_recordable, recorder_for
from ..run import TrainedRun, fit
from .runs import run_version

SIGNAL_KIND = "app-mislabel-signal"
RETRAIN_KIND = "app-mislabel-retrain"
# instant: read out from the run itself; the others train extra models (TRAK, cleanlab)
QUICK_SIGNALS = ("forward-only", "forward-only-margin", "loss", "confidence")


@dataclass(frozen=True)
class NoisyRunRequest:
    """A run on a built-in dataset with injected label noise, the mislabel recipe
    (the digits preset's optimiser, trajectory response at horizon ``horizon``)."""

    source: str = "digits"
    rate: float = 0.1
    pairs: str | None = None
    seed: int = 0
    name: str = "digits-noisy"
    hidden: tuple[int, ...] = (128,)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, lr=0.1, batch_size=64, weight_decay=1e-4))
    horizon: int | None = 0
    overwrite: bool = False

    def noise(self) -> NoiseSpec:
        return NoiseSpec(self.rate, self.pairs or None, self.seed)

    def fit_and_save(self, store, progress: Callable | None = None) -> TrainedRun:
        """Train, simulate and save atomically; a cancelled or failed run saves nothing.
        The trajectory signals are recorded while it trains and stored with it."""
        if not self.overwrite and store.exists(self.name):
            raise ConfigError(f"a run named {self.name!r} exists; pick another name or tick 'overwrite'.")
        data = self.noise().load(self.source)
        recorder = recorder_for(data, self.hidden, "relu", self.train)
        run = fit(
            data,
            hidden=self.hidden,
            train_config=self.train,
            simulation=SimulationConfig(horizon=self.horizon),
            progress=progress,
            on_epoch=recorder,
        )
        run.save(store, self.name, overwrite=self.overwrite)
        version = run_version(store, self.name)
        for sid in TRAJECTORY_SIGNALS:
            _put(store, run.name or self.name, version, compute_signal(run, sid, recorder=recorder))
        return run


def mislabel_runs(store) -> list[str]:
    """Runs that can rank their own examples: simulated responses, one source per example."""
    out = []
    for info in store.list_runs():
        cfg = info.config
        if (cfg.get("simulation") or {}).get("scheme", "none") != "none" and (cfg.get("sources") or {}).get(
            "kind", "example"
        ) == "example":
            out.append(info.name)
    return out


def _key(run_name: str, version: str, signal: str) -> dict:
    return {"run": run_name, "version": version, "signal": signal}


def signal_result(store, run: TrainedRun, version: str, signal: str, progress: Callable | None = None) -> SignalResult:
    """One signal over the run's training set, computed once and stored."""
    key = _key(run.name, version, signal)
    found = store.get_artifact(SIGNAL_KIND, key)
    if found is not None:
        m = found.meta
        return SignalResult(
            signal,
            SIGNALS[signal].title,
            found.arrays["scores"].astype(np.float64),
            m.get("seconds", 0.0),
            m.get("setup_seconds", 0.0),
            m.get("meta", {}),
        )
    res = compute_signal(run, signal, progress)
    _put(store, run.name, version, res)
    return res


def _put(store, run_name: str, version: str, res: SignalResult) -> None:
    store.put_artifact(
        SIGNAL_KIND,
        _key(run_name, version, res.id),
        {"scores": res.scores},
        meta={"seconds": res.seconds, "setup_seconds": res.setup_seconds, "meta": res.meta},
    )


def available_signals(run: TrainedRun) -> list[str]:
    """The signals this run can compute: forward-only self-influence over the trajectory
    needs a trajectory run with dense responses (the rest work on every mislabel run)."""
    try:
        check_recordable(
            run.spec.simulation, run.config.get("sources", {}).get("kind", "example"), run.n_sources, run.mlp.n_params
        )
    except ConfigError:
        return [s for s in SIGNALS if s != "forward-only-trajectory"]
    return list(SIGNALS)


def stored_signals(store, run_name: str, version: str) -> set[str]:
    return {
        a["key"]["signal"]
        for a in store.list_artifacts(SIGNAL_KIND)
        if a["key"].get("run") == run_name and a["key"].get("version") == version
    }


def flipped_flags(dataset) -> np.ndarray:
    flags = np.zeros(dataset.n_train, dtype=bool)
    flags[dataset.flipped] = True
    return flags


def judge(results: Mapping[str, SignalResult], dataset) -> dict:
    """Detection rows, curves and the finding when the flips are known (else empty)."""
    flags = flipped_flags(dataset)
    if not flags.any() or flags.all():
        return {"rows": detection_rows(results, flags), "curves": {}, "finding": None, "known": False}
    rows = detection_rows(results, flags)
    return {"rows": rows, "curves": curves(results, flags), "finding": finding(rows), "known": True}


def most_suspicious(scores: np.ndarray, k: int, skip: set[int] | None = None) -> np.ndarray:
    """Indices of the ``k`` highest scores (ties by index), leaving out ``skip``."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    if skip:
        order = order[~np.isin(order, list(skip))]
    return order[:k]


def influence_row(run: TrainedRun, index: int, measure: str = "margin") -> np.ndarray:
    """Scores ``[m]`` of training example ``index`` as a query (its own label): which
    training examples pushed its measurement up (proponents) or down (opponents)."""
    ds = run.dataset
    return run.score(ds.X_train[index : index + 1], ds.y_train[index : index + 1], measure=measure)[0]


def _marks_key(run_name: str, version: str, marks: Mapping[int, Mark]) -> dict:
    items = sorted((int(i), m.action, -1 if m.label is None else int(m.label)) for i, m in marks.items())
    return {"run": run_name, "version": version, "marks": fingerprint(items)}


def stored_retrain(store, run_name: str, version: str, marks: Mapping[int, Mark]) -> dict | None:
    found = store.get_artifact(RETRAIN_KIND, _marks_key(run_name, version, marks))
    return None if found is None else dict(found.meta)


def retrain_result(
    store, run: TrainedRun, version: str, marks: Mapping[int, Mark], progress: Callable | None = None
) -> dict:
    """:func:`attrcore.mislabel.retrain_with_marks`, stored per set of marks. A cancelled
    or failed retrain stores nothing and leaves the marks as they were."""
    if not marks:
        raise ConfigError("there are no marks to apply yet; mark some examples first.")
    found = stored_retrain(store, run.name, version, marks)
    if found is not None:
        return found
    res = retrain_with_marks(run, marks, progress=progress)
    store.put_artifact(RETRAIN_KIND, _marks_key(run.name, version, marks), {"done": np.ones(1)}, meta=res)
    return res
