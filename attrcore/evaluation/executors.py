"""Where retraining units run: in process, through ``joblib``, or on a Dask cluster.

A unit is one retraining on a subset with one seed followed by the query measurement;
:func:`_run_units` reads the stored units, runs the missing ones on the chosen engine and
stores each as it finishes (so a killed job resumes). Every unit trains with one torch
thread, so its result depends only on its definition, whatever the engine.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import TrainConfig
from ..engine.measures import measure as measure_fn
from ..engine.model import MLP, MLPConfig
from ..engine.train import Progress, ProgressFn, train
from ..errors import CancelledError
from ..executors import Executor

# ----------------------------------------------------------------------------- units


def _train_and_measure(
    X: np.ndarray,
    y: np.ndarray,
    X_q: np.ndarray,
    y_q: np.ndarray | None,
    model: dict,
    train_cfg: dict,
    rows: np.ndarray | None,
    zero: np.ndarray | None,
    measure: str,
    target_class: int | None,
) -> np.ndarray:
    """Train on ``X[rows]`` (all rows if None) with loss weight 0 on ``zero``; measure queries.

    Runs with one torch thread (restored afterwards), so the result does not depend on
    where it runs. Returns ``f(z_q)`` for every query, float64 ``[Q]``.
    """

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mlp = MLP(MLPConfig.from_dict(model))
        cfg = TrainConfig.from_dict(train_cfg)
        Xs, ys = (X, y) if rows is None else (X[rows], y[rows])
        weights = None
        if zero is not None:
            weights = np.ones(len(Xs), dtype=np.float64)
            weights[zero] = 0.0
        out = train(mlp, Xs, ys, cfg, weights=weights)
        with torch.no_grad():
            dtype = out.theta.dtype
            logits = mlp.forward(out.theta, torch.as_tensor(X_q).to(dtype))
            yq = None if y_q is None else torch.as_tensor(y_q).long()
            f = measure_fn(logits, yq, measure, target_class)
        return f.double().numpy()
    finally:
        torch.set_num_threads(threads)


def _unit_task(spec: dict, X, y, X_q, y_q) -> np.ndarray:
    """A worker's unit of work (module level so that joblib and Dask can import it)."""
    return _train_and_measure(X, y, X_q, y_q, **spec)


@dataclass
class _Unit:
    key: dict  # the artifact key
    spec: dict  # arguments of _train_and_measure besides the data
    slot: tuple  # where the result goes
    extra: dict = field(default_factory=dict)  # arrays stored next to the outputs


def _run_units(
    units: list[_Unit],
    kind: str,
    data: tuple,
    store,
    scheduler,
    n_jobs: int,
    progress: ProgressFn | None,
    stage: str,
) -> tuple[dict[tuple, np.ndarray], int]:
    """Results of every unit by slot: stored ones read, missing ones trained and stored.

    Returns ``(results, n_trained)``. ``progress`` gets one report before training and one
    per finished unit; returning False stops the job with :class:`CancelledError` (the
    finished units stay stored, so a rerun resumes).
    """
    results: dict[tuple, np.ndarray] = {}
    todo: list[_Unit] = []
    for u in units:
        art = store.get_artifact(kind, u.key)
        if art is not None and "outputs" in art.arrays:
            results[u.slot] = np.asarray(art.arrays["outputs"], dtype=np.float64)
        else:
            todo.append(u)
    total, cached = len(units), len(units) - len(todo)

    def report(done: int) -> None:
        if progress is None:
            return
        info = {"cached": cached, "trained": done - cached}
        if progress(Progress(stage, done, total, info)) is False:
            raise CancelledError(
                f"the ground truth was cancelled after {done} of {total} retrainings; "
                "the finished ones are stored, so running the same command again resumes."
            )

    report(cached)
    done = cached

    def finish(uid: int, outputs: np.ndarray) -> None:
        nonlocal done
        u = todo[uid]
        store.put_artifact(kind, u.key, {"outputs": outputs, **u.extra}, meta={"stage": stage})
        results[u.slot] = outputs
        done += 1
        report(done)

    if not todo:
        return results, 0
    # closing: a failure or cancel while storing stops the engine now (joblib aborts its
    # queue, Dask futures are cancelled), not whenever the generator is collected
    with contextlib.closing(_execute(todo, data, scheduler, n_jobs)) as finished:
        for uid, outputs in finished:
            finish(uid, outputs)
    return results, len(todo)


def _execute(todo: list[_Unit], data: tuple, scheduler, n_jobs: int):
    """Yield ``(uid, outputs)`` as units finish, on the chosen engine (:mod:`attrcore.executors`)."""
    ex = Executor.resolve(scheduler=scheduler, n_jobs=n_jobs)
    try:
        yield from ex.map_unordered(_unit_task, [u.spec for u in todo], shared=data)
    finally:
        if ex is not scheduler:
            ex.close()
