"""One method end to end: train the models it needs, build it, fit, score.

Interface: :func:`attribute` ``(method, mlp, X, y, X_q, y_q, train_config, ...) ->``
:class:`Attribution`; :func:`prepare` (everything but the scoring: the fitted attributor)
and :func:`train_models` (the training part alone). The app (baseline scores) and the
benchmark (every row) call :func:`attribute`, the CLI (``attribute --method``, every
method, and ``score``) calls :func:`prepare` and scores as asked (forward-only streams);
already trained models are passed as ``trained`` and reused when they have what the
method needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from torch import Tensor

from ..config import SimulationConfig, TrainConfig
from ..engine.choose import choose_simulation
from ..engine.model import MLP
from ..engine.train import ProgressFn, train
from ..errors import ConfigError
from .base import Attributor
from .registry import METHODS, make_method, resolve_method
from .tracin import tracin_checkpoint_epochs


@dataclass
class Attribution:
    """What :func:`attribute` returns (the attributor itself is closed unless ``keep``)."""

    method: str
    scores: Tensor  # [Q, m] float32, positive = proponent
    runs: list  # the TrainOutput of every model used
    timings: dict  # setup_seconds, score_seconds, n_queries (after the warm-up)
    seconds_per_query: float
    state_bytes: int
    meta: dict = field(default_factory=dict)
    attributor: Attributor | None = None  # with ``attribute(..., keep=True)``: open; the caller closes it


def _usable(method: str, run, first: bool) -> bool:
    info = METHODS[method]
    if info.needs_simulation and getattr(run, "responses", None) is None:
        return False
    return not (info.needs_checkpoints and first and not getattr(run, "checkpoints", None))


def train_models(
    method: str,
    mlp: MLP,
    X,
    y,
    train_config: TrainConfig,
    *,
    models: int = 1,
    simulation: SimulationConfig | None = None,
    sources=None,
    trained: Sequence = (),
    progress: ProgressFn | None = None,
) -> list:
    """The models ``method`` needs: ``models`` seeds ``seed, seed + 1, …`` for an ensemble
    method (forward-only, TRAK), else one. Model i of ``trained`` is reused when it has
    what the method needs (simulated responses, checkpoints); the others are trained."""
    method = resolve_method(method)
    info = METHODS[method]
    if int(models) < 1:
        raise ConfigError(f"the number of models (`models`) must be ≥ 1, got {models}.")
    n = int(models) if info.ensemble else 1
    out = []
    for i in range(n):
        if i < len(trained) and _usable(method, trained[i], i == 0):
            out.append(trained[i])
            continue
        kwargs: dict = {}
        if info.needs_simulation:
            if simulation is None:  # the measured default for this model and data (engine/choose.py)
                m = getattr(sources, "m", None) if sources is not None else None
                simulation = choose_simulation(mlp.config, train_config, len(X), m).config
            sim = simulation
            if sim.scheme == "none":
                raise ConfigError("forward-only attribution needs a simulation scheme other than 'none'.")
            kwargs["sim"] = sim
            if sources is not None:
                kwargs["source_index"] = np.asarray(getattr(sources, "index", sources))
                kwargs["n_sources"] = getattr(sources, "m", None)
        if info.needs_checkpoints and i == 0:
            kwargs["checkpoint_epochs"] = tracin_checkpoint_epochs(train_config.epochs)
        out.append(train(mlp, X, y, replace(train_config, seed=train_config.seed + i), progress=progress, **kwargs))
    return out


def prepare(
    method: str,
    mlp: MLP,
    X,
    y,
    train_config: TrainConfig,
    *,
    sources=None,
    models: int = 1,
    simulation: SimulationConfig | None = None,
    measure: str = "margin",
    target_class: int | None = None,
    options: dict | None = None,
    trained: Sequence = (),
    progress: ProgressFn | None = None,
) -> tuple[Attributor, list]:
    """``method`` ready to score: trains what :func:`train_models` says, builds the method
    (``options`` go to its constructor) and fits it on the training set and ``sources``.
    Returns ``(attributor, training outputs)``; the caller scores and closes it
    (:func:`attribute` does both)."""
    method = resolve_method(method)
    runs = train_models(
        method,
        mlp,
        X,
        y,
        train_config,
        models=models,
        simulation=simulation,
        sources=sources,
        trained=trained,
        progress=progress,
    )
    a = make_method(method, mlp, runs, train_config, measure=measure, target_class=target_class, **(options or {}))
    try:
        a.fit(X, y, sources=sources)
    except BaseException:
        close(a)
        raise
    return a, runs


def close(a: Attributor) -> None:
    """Release what an attributor holds (TRAK's feature store); a no-op for the others."""
    if hasattr(a, "close"):
        a.close()


def attribute(
    method: str,
    mlp: MLP,
    X,
    y,
    X_q,
    y_q,
    train_config: TrainConfig,
    *,
    sources=None,
    models: int = 1,
    simulation: SimulationConfig | None = None,
    measure: str = "margin",
    target_class: int | None = None,
    options: dict | None = None,
    trained: Sequence = (),
    warmup: int = 0,
    keep: bool = False,
    progress: ProgressFn | None = None,
) -> Attribution:
    """Scores ``[Q, m]`` of ``method`` for queries ``X_q`` on training data ``X``, ``y``.

    :func:`prepare` (train what the method needs, build, fit), then score. ``warmup > 0``
    scores the first ``warmup`` queries once before the timed call (so one-off costs are
    not counted per query). ``keep=True`` leaves the fitted attributor open in the result
    (to time it again; the caller then calls :func:`close`).
    """
    method = resolve_method(method)
    a, runs = prepare(
        method,
        mlp,
        X,
        y,
        train_config,
        sources=sources,
        models=models,
        simulation=simulation,
        measure=measure,
        target_class=target_class,
        options=options,
        trained=trained,
        progress=progress,
    )
    try:
        if warmup:
            a.score(X_q[:warmup], None if y_q is None else y_q[:warmup])
            a.timings.update(score_seconds=0.0, n_queries=0)
        scores = a.score(X_q, y_q)
        result = Attribution(
            method=method,
            scores=scores,
            runs=runs,
            timings=dict(a.timings),
            seconds_per_query=a.seconds_per_query,
            state_bytes=int(a.state_bytes()),
            meta=dict(a.meta),
            attributor=a if keep else None,
        )
    except BaseException:
        close(a)
        raise
    if not keep:
        close(a)
    return result
