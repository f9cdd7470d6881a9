"""The numerical engine: an MLP, its tangents and curvature, and training that simulates
every training source's parameter response on the fly; the forward-only readout.

Interface: :class:`~attrcore.engine.model.MLP` / :class:`~attrcore.engine.model.MLPConfig`
(the network, flat parameter vector θ), :func:`~attrcore.engine.train.train` (the SGD loop,
with an optional simulator and a progress callback), :func:`~attrcore.engine.readout.score`
(attribution of queries with forward evaluations only).

Implementations:

- ``model`` — the MLP and its activations;
- ``tangents`` — per-layer tangent (response) blocks ``[m, p]``;
- ``curvature`` — Hessian / Gauss–Newton vector products (``MLPCurvature``, ``FuncCurvature``);
- ``measures`` — query measurements f(z_q) (margin, loss, logit, prob);
- ``train`` — the training loop;
- ``simulate`` — the simulation schemes (``trajectory``: short / full propagation, ``stationary``:
  Neumann series of the damped curvature);
- ``readout`` — JVP and central-difference readouts of the simulated responses;
- ``compress`` — compressed responses Δ ≈ C Qᵀ (rank r): ``compress_dense`` (randomized SVD
  of dense responses), the one-pass ``StreamingSketch``, and the full-horizon forward sketch
  + adjoint pass (``SketchedTrajectory``) whose cost is independent of the number of sources.
"""

from .compress import CompressedResponses, compress_dense
from .measures import MEASURES, measure
from .model import ACTIVATIONS, MLP, MLPConfig
from .readout import score
from .tangents import Tangents
from .train import Progress, ProgressFn, TrainOutput, train

__all__ = [
    "CompressedResponses",
    "ACTIVATIONS",
    "MEASURES",
    "MLP",
    "MLPConfig",
    "Progress",
    "ProgressFn",
    "Tangents",
    "TrainOutput",
    "compress_dense",
    "measure",
    "score",
    "train",
]
