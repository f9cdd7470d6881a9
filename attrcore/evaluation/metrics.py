"""Pure metrics: NumPy in, NumPy out (shapes in each docstring).

Interface: :func:`pearson`, :func:`spearman` (column-wise), :func:`lds`,
:func:`loo_correlation`, :func:`seed_ceiling`, :func:`summarize`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.stats import rankdata

from ..errors import ShapeError

# =============================================================================== metrics


def _as_np(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    arr = np.asarray(a, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ShapeError(f"{name} holds NaN or infinite values; recompute it before evaluating.")
    return arr


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns: ``a [M, Q]``, ``b [M, Q]`` → ``[Q]``.

    A column with zero variance has no correlation: its entry is NaN.
    """
    a, b = _as_np(a, "a"), _as_np(b, "b")
    if a.shape != b.shape or a.ndim != 2:
        raise ShapeError(f"pearson needs two [M, Q] arrays of the same shape, got {a.shape} and {b.shape}.")
    a = a - a.mean(0)
    b = b - b.mean(0)
    num = (a * b).sum(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    # relative threshold: a column that is constant up to rounding has no correlation
    flat = (den <= 1e-12 * (np.abs(a).sum(0) + np.abs(b).sum(0)) ** 2) | (den == 0)
    r[flat] = np.nan
    return np.clip(r, -1.0, 1.0)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of matching columns (ties get average ranks).

    ``a [M, Q]``, ``b [M, Q]`` → ``[Q]``; NaN for a constant column.
    """
    a, b = _as_np(a, "a"), _as_np(b, "b")
    if a.shape != b.shape or a.ndim != 2:
        raise ShapeError(f"spearman needs two [M, Q] arrays of the same shape, got {a.shape} and {b.shape}.")
    return pearson(rankdata(a, axis=0), rankdata(b, axis=0))


def lds(scores, subsets, outputs) -> np.ndarray:
    """Linear datamodeling score per query (Park et al. 2023).

    ``scores [Q, m]`` (attribution of query q to source j), ``subsets [M, m]`` bool (source
    j is in training subset s), ``outputs [M, Q]`` (measurement of query q by the model
    retrained on subset s) → ``[Q]``: per query, the Spearman correlation across the M
    subsets between the predicted ``Σ_{j∈S_s} scores[q, j]`` and ``outputs[s, q]``.
    Average it (``np.nanmean``) for the LDS.
    """
    scores = _as_np(scores, "scores")
    subsets = np.asarray(subsets)
    outputs = _as_np(outputs, "outputs")
    if scores.ndim != 2 or subsets.ndim != 2 or outputs.ndim != 2:
        raise ShapeError("lds needs scores [Q, m], subsets [M, m] and outputs [M, Q].")
    if subsets.shape[1] != scores.shape[1]:
        raise ShapeError(
            f"the scores have {scores.shape[1]} sources per query but the subsets cover "
            f"{subsets.shape[1]}; score the same training set the ground truth was made for."
        )
    if outputs.shape != (subsets.shape[0], scores.shape[0]):
        raise ShapeError(
            f"outputs have shape {outputs.shape}; expected [n_subsets, n_queries] = "
            f"[{subsets.shape[0]}, {scores.shape[0]}]. Score the queries the ground truth was made for."
        )
    predicted = subsets.astype(np.float64) @ scores.T  # [M, Q]
    return spearman(predicted, outputs)


class Correlations(NamedTuple):
    """Per-query correlations, each ``[Q]``."""

    pearson: np.ndarray
    spearman: np.ndarray


def loo_correlation(scores, effects, indices=None) -> Correlations:
    """Agreement of attributions with leave-one-out effects, per query.

    ``effects [Q, k]`` is ``f(full) − f(without source i)`` for k removed sources (≈ the
    attribution under the project's sign convention). ``scores`` is ``[Q, k]``, or
    ``[Q, m]`` with ``indices [k]`` naming the removed sources' columns.
    Returns Pearson and Spearman across the k sources, one value per query.
    """
    scores = _as_np(scores, "scores")
    effects = _as_np(effects, "effects")
    if indices is not None:
        scores = scores[:, np.asarray(indices, dtype=np.int64)]
    if scores.shape != effects.shape or scores.ndim != 2:
        raise ShapeError(
            f"scores {scores.shape} and LOO effects {effects.shape} must both be [Q, k]; "
            "pass indices= to select the removed sources' columns from a full score matrix."
        )
    return Correlations(pearson(scores.T, effects.T), spearman(scores.T, effects.T))


def seed_ceiling(outputs_a, outputs_b) -> np.ndarray:
    """Run-to-run agreement of retrained outputs: ``[M, Q]`` and ``[M, Q]`` → ``[Q]``.

    Per query, the Spearman correlation across the M subsets between two retrainings of
    every subset that differ only in the training seed. See :class:`LDSGroundTruth`.
    """
    return spearman(outputs_a, outputs_b)


def summarize(per_query) -> dict:
    """Mean, standard error and count of the finite entries of a ``[Q]`` array."""
    v = np.asarray(per_query, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": float("nan"), "sem": float("nan"), "n": 0}
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "sem": sem, "n": int(len(v))}
