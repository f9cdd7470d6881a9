"""Attribution methods other than the forward-only readout, behind one interface.

Interface: :class:`~attrcore.methods.base.Attributor` — built with what the method needs from
training, then ``fit(X, y, sources)`` (setup) and ``score(X_q, y_q) -> [Q, m]`` (positive = a
proponent); :func:`~attrcore.methods.registry.make_baseline` builds one by name
(``METHODS``) from training outputs.

Implementations:

- ``base`` — the :class:`Attributor` interface and the shared gradient-factor helpers;
- ``trak`` — TRAK (the official ``traker`` package);
- ``influence`` — influence functions (explicit last-layer Hessian, or CG on the network);
- ``tracin`` — TracIn over checkpoints;
- ``simple`` — gradient dot product and random scores (the control);
- ``registry`` — method names, the factory and ensemble training.
"""

from .base import Attributor, output_factors
from .influence import InfluenceCG, InfluenceExplicit
from .registry import METHODS, make_baseline, train_ensemble
from .simple import GradDot, RandomScores
from .tracin import TracIn, tracin_checkpoint_epochs, tracin_weights
from .trak import TRAK

__all__ = [
    "Attributor",
    "GradDot",
    "InfluenceCG",
    "InfluenceExplicit",
    "METHODS",
    "RandomScores",
    "TRAK",
    "TracIn",
    "make_baseline",
    "output_factors",
    "tracin_checkpoint_epochs",
    "tracin_weights",
    "train_ensemble",
]
