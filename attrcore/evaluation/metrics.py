"""Pure metrics: NumPy in, NumPy out (shapes in each docstring).

Interface: :func:`pearson`, :func:`spearman` (column-wise), :func:`lds`,
:func:`loo_correlation`, :func:`seed_ceiling`, :func:`summarize`; for mislabel detection
(a suspicion score per example against the known flips): :func:`roc_auc`,
:func:`average_precision`, :func:`found_vs_inspected`, :func:`found_at`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.stats import rankdata

from ..errors import ConfigError, DataError, ShapeError

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


# ------------------------------------------------------------------ mislabel detection
# Detection metrics for a suspicion ranking: ``is_flipped [n]`` (bool, the labels known
# to be wrong) and ``scores [n]`` (float, higher = more suspicious). Pure numpy.


def _detection_inputs(is_flipped, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(is_flipped)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ShapeError(f"labels have shape {y.shape} and scores {s.shape}; pass one flag and one score per example.")
    if not np.isfinite(s).all():
        raise DataError("the suspicion scores hold NaN or infinite values; compute them again.")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise DataError(
            "detection metrics need both flipped and clean examples; inject label noise at a rate above 0 and below 1."
        )
    return y, s


def roc_auc(is_flipped, scores) -> float:
    """ROC-AUC: P(score of a flipped example > score of a clean one), ties count ½.

    ``is_flipped [n]`` bool, ``scores [n]`` (higher = more suspicious). Mann–Whitney form:
    (Σ midranks of the flipped − n₊(n₊+1)/2) / (n₊ n₋).
    """
    y, s = _detection_inputs(is_flipped, scores)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    ranks = rankdata(s)  # midranks: a tie between a flipped and a clean example counts ½
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(is_flipped, scores) -> float:
    """Average precision Σ_k (R_k − R_{k−1}) P_k over the distinct score thresholds, from
    the most suspicious down (tied scores form one threshold); as scikit-learn defines it.

    ``is_flipped [n]`` bool, ``scores [n]``.
    """
    y, s = _detection_inputs(is_flipped, scores)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s) - 1]  # end of each tie group
    tp = np.cumsum(y_sorted)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def found_vs_inspected(is_flipped, scores) -> tuple[np.ndarray, np.ndarray]:
    """The fraction of flipped labels found against the fraction of the data inspected,
    inspecting examples from the most suspicious down (ties in index order).

    Returns ``(inspected [n + 1], found [n + 1])``, both from 0 to 1:
    ``found[k]`` = flipped examples among the top k / all flipped examples.
    """
    y, s = _detection_inputs(is_flipped, scores)
    order = np.argsort(-s, kind="stable")
    found = np.r_[0, np.cumsum(y[order])] / y.sum()
    inspected = np.arange(len(y) + 1) / len(y)
    return inspected, found


def found_at(is_flipped, scores, fraction: float) -> float:
    """Fraction of flipped labels among the top ``round(fraction · n)`` examples."""
    if not 0 <= fraction <= 1:
        raise ConfigError(f"the inspected fraction must be in [0, 1], got {fraction}.")
    inspected, found = found_vs_inspected(is_flipped, scores)
    return float(found[int(round(fraction * (len(found) - 1)))])
