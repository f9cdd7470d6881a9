"""Explore page view model: predictions, measurements, stored query scores, top-k,
decision grids, rank agreement between runs, and the counterfactual retrain.

Score matrices are ``[n_queries, n_sources]``; positive = the source pushes the query's
measurement up (a proponent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from ..engine.measures import measure as measure_fn
from ..engine.train import train
from ..errors import DataError
from ..run import TrainedRun
from ..store.runstore import RunStore

SCORES_KIND = "app-scores"
COUNTERFACTUAL_KIND = "app-counterfactual"


# ----------------------------------------------------------------------------- exploring


def predict(run: TrainedRun, X: np.ndarray) -> np.ndarray:
    """Class probabilities ``[Q, C]``."""
    with torch.no_grad():
        return torch.softmax(run.logits(X).double(), dim=-1).numpy()


def measurements(
    run: TrainedRun, X: np.ndarray, y: np.ndarray | None, measure: str = "margin", theta: torch.Tensor | None = None
) -> np.ndarray:
    """The measurement f(z_q; θ) per query ``[Q]`` (θ defaults to the run's parameters)."""

    theta = run.theta if theta is None else theta
    Xt = torch.as_tensor(np.asarray(X)).to(theta.dtype)
    yt = None if y is None else torch.as_tensor(np.asarray(y)).long()
    with torch.no_grad():
        return measure_fn(run.mlp.forward(theta, Xt), yt, measure).double().numpy()


def query_pool(ds) -> tuple[np.ndarray, np.ndarray, str]:
    """The examples Explore offers as queries: ``(X [Q, d], y [Q], "test" | "train")``.

    The test split (or the user's evaluation file); a run trained on every row
    (``test_fraction=0``) has none, so its own training examples are the queries.
    """
    if ds.n_test > 0:
        return ds.X_test, ds.y_test, "test"
    return ds.X_train, ds.y_train, "train"


def page_of(items, page: int, per_page: int):
    """Items of 1-based page ``page`` (clamped to the pages there are)."""
    n_pages = max(1, -(-len(items) // per_page))
    page = min(max(1, int(page)), n_pages)
    return items[(page - 1) * per_page : page * per_page]


def comparison_queries(n_queries: int, n_sources: int, budget_mb: float = 64.0) -> int:
    """How many queries the all-queries comparisons use: all of them while their
    ``[q, m]`` score matrix stays under ``budget_mb``, else the first that fit."""
    return int(max(1, min(n_queries, budget_mb * 2**20 // (4 * max(1, n_sources)))))


def query_row(run: TrainedRun, X: np.ndarray, y: np.ndarray | None, measure: str = "margin") -> np.ndarray:
    """Scores ``[m]`` of one query ``X [d]`` (label ``y``): what Explore shows for the
    selected query, computed on its own (never the whole score matrix)."""
    yq = None if y is None else np.asarray([y]).reshape(1)
    return run.score(np.asarray(X).reshape(1, -1), yq, measure=measure)[0]


def query_scores(
    store: RunStore, run: TrainedRun, version: str, measure: str = "margin", n_queries: int | None = None
) -> np.ndarray:
    """Scores ``[q, m]`` of the first ``n_queries`` queries of :func:`query_pool` (all by
    default), stored as an artifact so an app restart does not recompute them. The
    readout streams; a matrix that cannot be held is refused with a readable message."""
    X, y, split = query_pool(run.dataset)
    n = len(X) if n_queries is None else max(1, min(int(n_queries), len(X)))
    key = {"run": run.name, "version": version, "measure": measure, "readout": "jvp", "queries": split}
    if n < len(X):
        key["first"] = n
    found = store.get_artifact(SCORES_KIND, key)
    if found is not None:
        return found.arrays["scores"]
    scores = run.score(X[:n], y[:n], measure=measure).astype(np.float32)
    store.put_artifact(SCORES_KIND, key, {"scores": scores})
    return scores


def top_k(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` largest (proponents) and ``k`` smallest (opponents) scores."""
    row = np.asarray(row)
    k = max(0, min(k, len(row) // 2 if len(row) > 1 else len(row)))
    order = np.argsort(row, kind="stable")
    return order[::-1][:k].copy(), order[:k].copy()


def decision_grid(
    run: TrainedRun, resolution: int = 100, pad: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities on a grid over the 2-D training data: ``xx [G]``, ``yy [G]``,
    ``probs [G, G, C]``."""
    X = run.dataset.X_train
    if X.shape[1] != 2:
        raise DataError("a decision boundary can only be drawn for data with two features.")
    lo, hi = X.min(0) - pad, X.max(0) + pad
    xx, yy = np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    gx, gy = np.meshgrid(xx, yy)
    probs = predict(run, np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32))
    return xx, yy, probs.reshape(resolution, resolution, -1)


def _row_ranks(S: np.ndarray) -> np.ndarray:
    return rankdata(S, axis=1)


def _row_pearson(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    A = A - A.mean(1, keepdims=True)
    B = B - B.mean(1, keepdims=True)
    den = np.sqrt((A * A).sum(1) * (B * B).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (A * B).sum(1) / np.where(den > 0, den, 1), np.nan)


def rank_agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> dict:
    """Agreement of two score vectors ``[m]`` (or matrices ``[Q, m]``, averaged over rows):
    Spearman correlation and the overlap of the top-k proponents / opponents (0..1)."""
    A, B = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if A.shape != B.shape:
        raise DataError(f"cannot compare scores of shapes {A.shape} and {B.shape}; they need the same sources.")
    spearman = _row_pearson(_row_ranks(A), _row_ranks(B))
    pos = neg = 0.0
    for ra, rb in zip(A, B):
        pa, na = top_k(ra, k)
        pb, nb = top_k(rb, k)
        kk = max(1, len(pa))
        pos += len(set(pa) & set(pb)) / kk
        neg += len(set(na) & set(nb)) / kk
    return {
        "spearman": float(np.nanmean(spearman)) if np.isfinite(spearman).any() else float("nan"),
        "top_k_proponents": pos / len(A),
        "top_k_opponents": neg / len(A),
        "k": k,
    }


def agreement_matrix(scores: dict[str, np.ndarray], k: int = 10) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean Spearman and mean top-k proponent overlap between every pair of methods.

    ``scores[name]`` are ``[Q, m]`` matrices over the same queries and sources.
    Returns ``(names, spearman [M, M], overlap [M, M])``.
    """
    names = list(scores)
    M = len(names)
    sp, ov = np.eye(M), np.eye(M)
    for i in range(M):
        for j in range(i + 1, M):
            r = rank_agreement(scores[names[i]], scores[names[j]], k)
            sp[i, j] = sp[j, i] = r["spearman"]
            ov[i, j] = ov[j, i] = r["top_k_proponents"]
    return names, sp, ov


def removal_weights(run: TrainedRun, sources: Sequence[int]) -> np.ndarray:
    """Per-example loss weights ``[n]``: 0 for every example of the given sources, else 1."""
    w = np.ones(len(run.source_index), dtype=np.float64)
    w[np.isin(run.source_index, np.asarray(list(sources), dtype=np.int64))] = 0.0
    return w


def retrain(run: TrainedRun, weights: np.ndarray, progress: Callable | None = None) -> torch.Tensor:
    """Retrain the run's model from the same seed and batch order with example ``weights``
    (no simulation); returns the final parameters ``[p]``."""

    ds = run.dataset
    out = train(run.mlp, ds.X_train, ds.y_train, run.train_config, sim=None, weights=weights, progress=progress)
    return out.theta


def counterfactual(
    store: RunStore,
    run: TrainedRun,
    version: str,
    query: int,
    remove: Sequence[int],
    scores_row: np.ndarray,
    measure: str = "margin",
    progress: Callable | None = None,
) -> dict:
    """Remove sources ``remove`` from training, retrain with the same seed, and compare.

    Predicted change of the query's measurement: −Σ_{j∈remove} τ(q, j) (removing a source
    lowers its weight by one unit). Actual: f(retrained) − f(original). Stored as an
    artifact, so asking again is instant.
    """
    remove = sorted(int(j) for j in remove)
    key = {"run": run.name, "version": version, "query": int(query), "remove": remove, "measure": measure}
    found = store.get_artifact(COUNTERFACTUAL_KIND, key)
    ds = run.dataset
    QX, Qy, _split = query_pool(ds)
    x, y = QX[query : query + 1], Qy[query : query + 1]
    before = float(measurements(run, x, y, measure)[0])
    predicted = -float(np.sum(np.asarray(scores_row, np.float64)[remove]))
    if found is not None:
        after = float(found.arrays["after"][0])
        seconds = float(found.meta.get("seconds", float("nan")))
    else:
        t0 = time.perf_counter()
        theta = retrain(run, removal_weights(run, remove), progress)
        seconds = time.perf_counter() - t0
        after = float(measurements(run, x, y, measure, theta=theta)[0])
        store.put_artifact(COUNTERFACTUAL_KIND, key, {"after": np.array([after])}, meta={"seconds": seconds})
    n_examples = int(np.isin(run.source_index, remove).sum())
    return {
        "before": before,
        "after": after,
        "actual": after - before,
        "predicted": predicted,
        "n_sources": len(remove),
        "n_examples": n_examples,
        "seconds": seconds,
    }
