"""Explore page view model: predictions, measurements, stored query scores, top-k,
decision grids, rank agreement between runs, and the counterfactual retrain; plus the
page's words and tables (:class:`QueryView`, :func:`filter_queries`, :func:`query_table`,
:func:`source_table`, :func:`agreement_table`, :func:`counterfactual_plan`, …), so
``pages/explore.py`` only lays out widgets.

Score matrices are ``[n_queries, n_sources]``; positive = the source pushes the query's
measurement up (a proponent).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from ..engine.measures import measure as measure_fn
from ..engine.train import train
from ..errors import DataError
from ..plots import OPPONENT
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
    key = counterfactual_key(run, version, query, remove, measure)
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


def counterfactual_key(run: TrainedRun, version: str, query: int, remove: Sequence[int], measure: str) -> dict:
    """The artifact key of a counterfactual retrain (:func:`counterfactual` stores under it)."""
    return {
        "run": run.name,
        "version": version,
        "query": int(query),
        "remove": sorted(int(j) for j in remove),
        "measure": measure,
    }


# ----------------------------------------------------------------------------- the page's words and tables

KIND_WORDS = {"image": "images", "signal": "signals", "tabular": "table rows", "points": "2-D points"}


def run_caption(run: TrainedRun) -> str:
    """The one-line description of the open run under the page title."""
    ds, sim = run.dataset, run.simulation
    return (
        f"Run **{run.name}** · {ds.name} ({KIND_WORDS.get(ds.kind, ds.kind)}) · {sim.scheme} "
        f"K={sim.horizon_label} · {run.n_sources} sources ({run.sources_kind}) · "
        f"test accuracy {run.metrics.get('test_accuracy', float('nan')):.1%}"
    )


@dataclass(frozen=True)
class QueryView:
    """The queries Explore offers and what the model says about them.

    ``X [Q, d]``, ``y [Q]`` from :func:`query_pool` (``split``: "test" or "train"),
    ``probs [Q, C]`` the model's class probabilities, ``pred [Q]`` its predictions.
    """

    X: np.ndarray
    y: np.ndarray
    split: str
    probs: np.ndarray
    class_names: tuple[str, ...]

    @classmethod
    def of(cls, run: TrainedRun, probs: np.ndarray) -> QueryView:
        X, y, split = query_pool(run.dataset)
        return cls(X, y, split, np.asarray(probs), tuple(run.dataset.class_names))

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def wrong(self) -> np.ndarray:
        """Indices of the misclassified queries."""
        return np.flatnonzero(self.pred != self.y)

    def filters(self) -> list[str]:
        return ["all", "misclassified"] + [f"class {c}" for c in self.class_names]

    def filter(self, flt: str | None) -> tuple[np.ndarray, bool]:
        """Query indices shown under filter ``flt`` (see :meth:`filters`) and whether the
        filter matched nothing (then every query is shown)."""
        if flt == "misclassified":
            found = self.wrong
        elif flt and flt.startswith("class "):
            found = np.flatnonzero(self.y == self.class_names.index(flt[len("class ") :]))
        else:
            found = np.arange(len(self.X))
        if len(found) == 0:
            return np.arange(len(self.X)), True
        return found, False

    def first_query(self) -> int:
        """Where Explore starts: the first mistake, else the first query."""
        return int(self.wrong[0]) if len(self.wrong) else 0

    def label(self, i: int) -> str:
        pred, names = self.pred, self.class_names
        mark = "" if pred[i] == self.y[i] else " (wrong)"
        return f"#{i} · true {names[self.y[i]]} · predicted {names[pred[i]]}{mark}"

    def gallery_titles(self, shown) -> list[str]:
        """``true→predicted`` for a mistake, the class otherwise."""
        pred, names = self.pred, self.class_names
        return [f"{names[self.y[i]]}→{names[pred[i]]}" if pred[i] != self.y[i] else names[self.y[i]] for i in shown]

    def gallery_borders(self, shown) -> list[str | None]:
        return [OPPONENT if self.pred[i] != self.y[i] else None for i in shown]

    def table(self, shown, feature_names: Sequence[str]) -> pd.DataFrame:
        """One row per shown query: id, true and predicted class, the features."""
        pred, names = self.pred, self.class_names
        table = pd.DataFrame(self.X[shown], columns=list(feature_names))
        table.insert(0, "predicted", [names[pred[i]] for i in shown])
        table.insert(0, "true", [names[self.y[i]] for i in shown])
        table.insert(0, "id", shown)
        return table

    def verdict(self, q: int) -> str:
        """True and predicted class of query ``q`` with the predicted probability."""
        pred, names = self.pred, self.class_names
        ok = pred[q] == self.y[q]
        return (
            f"True label **{names[self.y[q]]}**, predicted **{names[pred[q]]}** "
            f"with probability {self.probs[q, pred[q]]:.1%} {'(correct)' if ok else '(wrong)'}"
        )

    def feature_table(self, q: int, feature_names: Sequence[str]) -> pd.DataFrame:
        """Query ``q``'s features, one row each."""
        return pd.DataFrame({"feature": list(feature_names), "value": self.X[q]})

    def top_classes(self, q: int, n: int = 5) -> pd.DataFrame:
        top = np.argsort(-self.probs[q])[: min(n, len(self.class_names))]
        return pd.DataFrame({"class": [self.class_names[c] for c in top], "probability": self.probs[q, top]})


def measurement_text(measure: str, f_q: float, row: np.ndarray) -> str:
    """The query's measurement and how its scores split by sign."""
    return (
        f"Measurement f = {measure} = **{f_q:+.3f}**. Sum of all scores: {row.sum():+.3f}; "
        f"{(row > 0).sum()} source(s) push f up, {(row < 0).sum()} push it down."
    )


def source_label(run: TrainedRun, j: int) -> str:
    """A source as the page names it: ``#j · class`` (``(flipped!)`` for a corrupted label)
    for one source per example, the source's name otherwise."""
    ds = run.dataset
    if run.sources_kind == "example":
        flip = " (flipped!)" if j in set(ds.flipped.tolist()) else ""
        return f"#{j} · {ds.class_names[ds.y_train[j]]}{flip}"
    return run.source_names[j]


def any_flipped(run: TrainedRun, idx) -> bool:
    flipped = set(run.dataset.flipped.tolist())
    return any(int(j) in flipped for j in idx)


def score_titles(run: TrainedRun, idx, row: np.ndarray) -> list[str]:
    """``class · score`` of each shown training example."""
    ds = run.dataset
    return [f"{ds.class_names[ds.y_train[j]]} · {row[j]:+.2g}" for j in idx]


def source_table(run: TrainedRun, idx, row: np.ndarray) -> pd.DataFrame:
    """The shown training examples: their label, score and features."""
    ds = run.dataset
    return pd.DataFrame(
        {
            "source": [source_label(run, j) for j in idx],
            "score": row[idx],
            **{f: ds.X_train[idx, c] for c, f in enumerate(ds.feature_names)},
        }
    )


def grouped_sources_table(run: TrainedRun, row: np.ndarray) -> pd.DataFrame:
    """Every source (a class or group) with its score and size, highest score first."""
    return pd.DataFrame(
        {
            "source": run.source_names,
            "score": row,
            "examples": np.bincount(run.source_index, minlength=run.n_sources),
        }
    ).sort_values("score", ascending=False)


def method_label(run: TrainedRun, this: bool = False) -> str:
    """How the comparison names a forward-only run (the open one, or another saved run)."""
    if this:
        return f"forward-only (this run, K={run.simulation.horizon_label})"
    return f"forward-only ({run.name}, {run.simulation.scheme} K={run.simulation.horizon_label})"


def short_method_labels(labels: Sequence[str]) -> list[str]:
    """The labels for the heatmap's axes: the open run's without its details."""
    return [n.split(" (")[0] if n.startswith("forward-only (this") else n for n in labels]


def agreement_table(
    this: str, rows_q: Mapping[str, np.ndarray], matrices: Mapping[str, np.ndarray], k: int
) -> pd.DataFrame:
    """Agreement of every method with ``this`` one: Spearman and top-k overlap on this query
    (``rows_q[name] [m]``) and over the compared queries (``matrices[name] [q, m]``)."""
    rows = []
    for name in list(matrices):
        if name == this:
            continue
        one = rank_agreement(rows_q[this], rows_q[name], k)
        everyone = rank_agreement(matrices[this], matrices[name], k)
        rows.append(
            {
                "method": name,
                "Spearman (this query)": one["spearman"],
                f"top-{k} overlap (this query)": one["top_k_proponents"],
                "Spearman (all queries)": everyone["spearman"],
                f"top-{k} overlap (all queries)": everyone["top_k_proponents"],
            }
        )
    return pd.DataFrame(rows)


def counterfactual_plan(row: np.ndarray, n_remove: int, which: str) -> tuple[np.ndarray, float]:
    """The ``n_remove`` top proponents (or opponents) of a query and the change of f their
    removal is predicted to cause, −Σ τ(q, j)."""
    chosen = top_k(row, n_remove)[0 if which == "proponents" else 1]
    return chosen, -float(row[chosen].sum())


def counterfactual_words(res: dict) -> tuple[str, str]:
    """What the page says under a counterfactual result: what was removed, and whether the
    prediction got the direction right."""
    caption = (
        f"Removed {res['n_sources']} source(s) = {res['n_examples']} training example(s); "
        f"retraining took {res['seconds']:.1f} s (stored: asking again is instant)."
    )
    same = np.sign(res["predicted"]) == np.sign(res["actual"])
    verdict = "The prediction got the **direction right**."
    if not same:
        verdict = "The prediction got the **direction wrong** for this query."
    return caption, verdict
