"""Method names and the factory that builds an :class:`Attributor` from training outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import TrainConfig
from ..engine.model import MLP
from ..errors import ConfigError
from .base import Attributor
from .influence import InfluenceCG, InfluenceExplicit
from .simple import GradDot, RandomScores
from .tracin import TracIn, tracin_weights
from .trak import TRAK

METHODS = ("trak", "if-explicit", "if-cg", "tracin", "grad-dot", "random")


# ========================================================================== factory


def train_ensemble(mlp: MLP, X, y, cfg: TrainConfig, seeds: Sequence[int], **train_kwargs) -> list:
    """Train one model per seed (everything else as ``cfg``): ``[TrainOutput]``."""
    from dataclasses import replace

    from ..engine.train import train

    return [train(mlp, X, y, replace(cfg, seed=int(s)), **train_kwargs) for s in seeds]


def make_baseline(method: str, mlp: MLP, runs: Sequence, train_cfg: TrainConfig, *,
                  measure: str = "margin", target_class: int | None = None, **options) -> Attributor:
    """Build baseline ``method`` from training outputs ``runs`` (``[TrainOutput]``).

    TRAK uses every run (its ensemble); the others use ``runs[0]``; TracIn needs
    ``runs[0].checkpoints`` (train with ``checkpoint_epochs=tracin_checkpoint_epochs(E)``).
    ``options`` go to the method's constructor (``proj_dim``, ``damping``, ``layers``, …).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}.")
    if not runs:
        raise ConfigError("a baseline needs at least one trained model.")
    common = {"measure": measure, "target_class": target_class}
    run = runs[0]
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
    epochs = sorted(e for e in run.checkpoints if e < train_cfg.epochs)
    if not epochs:
        raise ConfigError(
            "TracIn needs checkpoints before the last epoch; train with "
            "checkpoint_epochs=tracin_checkpoint_epochs(epochs)."
        )
    weights = tracin_weights(epochs, [run.checkpoint_lrs[e] for e in epochs], train_cfg.epochs,
                             train_cfg.batch_size)
    return TracIn(mlp, [run.checkpoints[e] for e in epochs], weights, **common, **options)
