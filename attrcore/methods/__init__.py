"""Attribution methods behind one interface: forward-only and the baselines.

Interface: :class:`~attrcore.methods.base.Attributor` — built with what the method needs from
training, then ``fit(X, y, sources)`` (setup) and ``score(X_q, y_q) -> [Q, m]`` (positive = a
proponent); :data:`~attrcore.methods.registry.METHODS` is the one list of method names,
:func:`~attrcore.methods.registry.make_method` builds one by name from training outputs and
:func:`~attrcore.methods.pipeline.attribute` runs one end to end (train → build → fit → score).

Implementations:

- ``base`` — the :class:`Attributor` interface and the shared gradient-factor helpers;
- ``forward_only`` — the project's own method: simulated responses read out forward-only;
- ``trak`` — TRAK (the official ``traker`` package);
- ``influence`` — influence functions (explicit last-layer Hessian, or CG on the network);
- ``tracin`` — TracIn over checkpoints;
- ``simple`` — gradient dot product and random scores (the control);
- ``registry`` — method names (and aliases), the factory and ensemble training;
- ``pipeline`` — one method end to end (``attribute``; ``prepare``: up to the fitted attributor).
"""

from .base import Attributor, output_factors
from .forward_only import ForwardOnly
from .influence import InfluenceCG, InfluenceExplicit
from .pipeline import Attribution, attribute, prepare, train_models
from .registry import ALIASES, BASELINES, METHODS, MethodInfo, make_method, resolve_method, train_ensemble
from .simple import GradDot, RandomScores
from .tracin import TracIn, tracin_checkpoint_epochs, tracin_weights
from .trak import TRAK

__all__ = [
    "ALIASES",
    "Attribution",
    "Attributor",
    "BASELINES",
    "ForwardOnly",
    "GradDot",
    "InfluenceCG",
    "InfluenceExplicit",
    "METHODS",
    "MethodInfo",
    "RandomScores",
    "TRAK",
    "TracIn",
    "attribute",
    "prepare",
    "make_method",
    "output_factors",
    "resolve_method",
    "tracin_checkpoint_epochs",
    "tracin_weights",
    "train_ensemble",
    "train_models",
]
