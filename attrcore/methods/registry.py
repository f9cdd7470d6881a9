"""The one list of attribution methods, and the factory that builds any of them.

Interface: :data:`METHODS` (name → :class:`MethodInfo`; the order is the display order),
:func:`resolve_method` (a name or alias → a name in :data:`METHODS`), :func:`make_method`
(name + training outputs → an :class:`~attrcore.methods.base.Attributor`) and
:func:`train_ensemble`. The CLI, the app and the benchmark all take their method names
from here; :func:`attrcore.methods.pipeline.attribute` runs one end to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..config import TrainConfig
from ..engine.model import MLP
from ..engine.train import train
from ..errors import ConfigError
from .base import Attributor
from .dvemb import DVEmb
from .forward_only import ForwardOnly
from .influence import InfluenceCG, InfluenceExplicit
from .simple import GradDot, RandomScores
from .tracin import TracIn, tracin_weights
from .trak import TRAK


@dataclass(frozen=True)
class MethodInfo:
    """What a method is and what it needs from training."""

    name: str
    label: str  # for people (the app's method picker)
    ensemble: bool = False  # uses every trained model (else the first only)
    needs_simulation: bool = False  # models trained with a SimulationConfig
    needs_checkpoints: bool = False  # the first model trained with checkpoints


METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo("forward-only", "Forward-only (this run)", ensemble=True, needs_simulation=True),
        MethodInfo("trak", "TRAK", ensemble=True),
        MethodInfo("if-explicit", "Influence function (last layer)"),
        MethodInfo("if-cg", "Influence function (CG, whole network)"),
        MethodInfo("tracin", "TracIn", needs_checkpoints=True),
        MethodInfo("dvemb", "DVEmb (dattri, trajectory-aware)"),
        MethodInfo("grad-dot", "Gradient dot product"),
        MethodInfo("random", "Random (control)"),
    )
}
BASELINES: tuple[str, ...] = tuple(name for name in METHODS if name != "forward-only")
# Other names accepted for a method: ``if`` is the CLI's name for the influence function,
# whose solver ``if_solver`` picks (explicit | cg).
ALIASES: dict[str, str] = {"if": "if-explicit"}
IF_SOLVERS = ("explicit", "cg")


def resolve_method(name: str, if_solver: str | None = None) -> str:
    """The name in :data:`METHODS` for ``name`` (a name or an alias)."""
    if name == "if":
        solver = if_solver or "explicit"
        if solver not in IF_SOLVERS:
            raise ConfigError(f"unknown influence-function solver {solver!r}; choose {', '.join(IF_SOLVERS)}.")
        return f"if-{solver}"
    name = ALIASES.get(name, name)
    if name not in METHODS:
        raise ConfigError(f"unknown baseline {name!r}; the methods are {', '.join(METHODS)}.")
    return name


# ========================================================================== factory


def train_ensemble(mlp: MLP, X, y, cfg: TrainConfig, seeds: Sequence[int], **train_kwargs) -> list:
    """Train one model per seed (everything else as ``cfg``): ``[TrainOutput]``."""
    return [train(mlp, X, y, replace(cfg, seed=int(s)), **train_kwargs) for s in seeds]


def make_method(
    method: str,
    mlp: MLP,
    runs: Sequence,
    train_cfg: TrainConfig,
    *,
    measure: str = "margin",
    target_class: int | None = None,
    **options,
) -> Attributor:
    """Build ``method`` (a name or alias) from training outputs ``runs`` (``[TrainOutput]``).

    Forward-only and TRAK use every run (their ensemble); the others use ``runs[0]``;
    forward-only needs ``responses`` (train with a simulation), TracIn
    ``runs[0].checkpoints`` (train with ``checkpoint_epochs=tracin_checkpoint_epochs(E)``).
    ``options`` go to the method's constructor (``proj_dim``, ``damping``, ``layers``,
    ``readout``, …).
    """
    method = resolve_method(method)
    if not runs:
        raise ConfigError(f"{method} needs at least one trained model.")
    common = {"measure": measure, "target_class": target_class}
    run = runs[0]
    if method == "forward-only":
        return ForwardOnly(mlp, runs, **common, **options)
    if method == "trak":
        return TRAK(mlp, [r.theta for r in runs], **common, **options)
    if method == "if-explicit":
        return InfluenceExplicit(mlp, run.theta, train_cfg.weight_decay, **common, **options)
    if method == "if-cg":
        return InfluenceCG(mlp, run.theta, train_cfg.weight_decay, **common, **options)
    if method == "grad-dot":
        return GradDot(mlp, run.theta, **common, **options)
    if method == "random":
        return RandomScores(mlp, **common, **options)
    if method == "dvemb":
        return DVEmb(mlp, run.theta, train_cfg, **common, **options)
    epochs = sorted(e for e in run.checkpoints if e < train_cfg.epochs)
    if not epochs:
        raise ConfigError(
            "TracIn needs checkpoints before the last epoch; train with "
            "checkpoint_epochs=tracin_checkpoint_epochs(epochs)."
        )
    weights = tracin_weights(epochs, [run.checkpoint_lrs[e] for e in epochs], train_cfg.epochs, train_cfg.batch_size)
    return TracIn(mlp, [run.checkpoints[e] for e in epochs], weights, **common, **options)
