"""How attributions are judged: pure metric functions and the ground truth they need.

Interface:

- metrics (pure, NumPy in, NumPy out; shapes in each docstring):
  :func:`pearson`, :func:`spearman` (column-wise), :func:`lds`, :func:`loo_correlation`,
  :func:`seed_ceiling`, :func:`summarize`;
- ground truth (retraining, stored, resumable, parallel):
  :func:`lds_ground_truth` → :class:`LDSGroundTruth`,
  :func:`loo_ground_truth` → :class:`LOOGroundTruth`.

Ground truth is a set of *units*: one retraining of the model on a chosen subset (LDS) or
with one source removed (LOO), with one seed, followed by the query measurement
``f(z_q)`` of every query. Each finished unit is stored in the run store as one artifact
keyed by everything that defines it (data and query fingerprints, model and training
config including the seed, measurement, sources, the subset or the removed source), so a
killed job resumes where it stopped, a larger ``n_subsets`` reuses the smaller run's
units, and the app, the CLI and the tests all read the same numbers.

Retraining runs in-process (``n_jobs=1``), through ``joblib`` (``n_jobs=-1``: all cores)
or on a Dask cluster (``scheduler="tcp://host:8786"`` or a ``distributed.Client``). Every
unit trains with one torch thread, whatever the path, so a unit's result depends only on
its definition: the same seeds give bit-identical ground truth on all three paths.
Workers of a remote cluster need ``attrcore`` importable (``pip install -e .`` there).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import TrainConfig
from ..data.datasets import Dataset, no_test_split_message
from ..engine.measures import MEASURES, check_labels
from ..engine.model import MLPConfig
from ..engine.train import ProgressFn
from ..errors import ConfigError, ShapeError
from ..store.runstore import RunStore
from .executors import _run_units, _Unit
from .metrics import Correlations, lds, loo_correlation, pearson, seed_ceiling

KEY_VERSION = 1  # bump when a unit's meaning changes, so stale artifacts are not reused
LDS_KIND = "lds-unit"
LOO_KIND = "loo-unit"
CEILING_SEED_OFFSET = 1000  # ceiling seed c of a unit with seed s is s + c * offset
LOO_PROTOCOLS = ("weight-zero", "reshuffled")


# ========================================================================= ground truth


@dataclass(frozen=True)
class LDSGroundTruth:
    """Retrained outputs on random subsets, for :func:`lds`.

    ``subsets [M, m]`` bool, ``outputs [M, Q]`` (training seed ``seeds[s]`` for subset s),
    ``ceiling_outputs [C, M, Q]``: the same subsets retrained with C other seeds
    (``seeds[s] + c·1000``, c = 1..C).

    **Seed-noise ceiling** (``ceiling()``): per query, the Spearman correlation across the
    M subsets between ``outputs`` and ``ceiling_outputs[c]``, averaged over c. It is the
    LDS that a retrained model itself reaches as a "predictor" of another run: if
    ``f = g(S) + noise`` with seed noise independent of the subset, no attribution can do
    much better than about ``sqrt`` of it (``oracle_ceiling()``, the correlation of the
    noise-free ``g(S)`` with one noisy run), and an LDS near ``ceiling()`` is as good as
    the retraining noise lets anyone measure.
    """

    subsets: np.ndarray
    outputs: np.ndarray
    ceiling_outputs: np.ndarray
    seeds: np.ndarray  # [M] training seed of each subset's main run
    key: dict  # what defines the ground truth (without the subset index)
    n_trained: int = 0  # units retrained by this call (0: everything came from the store)
    seconds: float = 0.0  # wall time of this call
    meta: dict = field(default_factory=dict)

    @property
    def n_subsets(self) -> int:
        return int(self.subsets.shape[0])

    def score(self, scores) -> np.ndarray:
        """Per-query LDS ``[Q]`` of a score matrix ``[Q, m]``."""
        return lds(scores, self.subsets, self.outputs)

    def ceiling(self) -> np.ndarray:
        """Per-query seed-noise ceiling ``[Q]`` (NaN if no ceiling seeds were run)."""
        if self.ceiling_outputs.shape[0] == 0:
            return np.full(self.outputs.shape[1], np.nan)
        return np.nanmean(np.stack([seed_ceiling(self.outputs, c) for c in self.ceiling_outputs]), axis=0)

    def oracle_ceiling(self) -> np.ndarray:
        """``sqrt(max(ceiling, 0))`` per query: the bound for a noise-free predictor."""
        return np.sqrt(np.clip(self.ceiling(), 0.0, None))


@dataclass(frozen=True)
class LOOGroundTruth:
    """Leave-one-out effects for chosen sources, averaged over seeds.

    ``indices [k]`` removed sources; ``full_outputs [S, Q]`` and ``removed_outputs
    [S, k, Q]`` for seeds ``seeds [S]``. ``protocol`` is ``"weight-zero"`` (the source's
    loss weight set to 0, same initialisation and batch order: the informative protocol)
    or ``"reshuffled"`` (its rows dropped, so every later mini-batch changes: mostly
    training noise on an MLP).
    """

    indices: np.ndarray
    seeds: np.ndarray
    protocol: str
    full_outputs: np.ndarray
    removed_outputs: np.ndarray
    key: dict
    n_trained: int = 0
    seconds: float = 0.0

    @property
    def per_seed_effects(self) -> np.ndarray:
        """``[S, Q, k]``: ``f(full) − f(without i)`` for every seed."""
        return (self.full_outputs[:, None, :] - self.removed_outputs).transpose(0, 2, 1)

    @property
    def effects(self) -> np.ndarray:
        """``[Q, k]``: the seed average of :attr:`per_seed_effects`."""
        return self.per_seed_effects.mean(0)

    def score(self, scores) -> Correlations:
        """Pearson and Spearman per query between ``scores[:, indices]`` and the effects."""
        return loo_correlation(scores, self.effects, self.indices)

    def seed_agreement(self) -> np.ndarray:
        """Per query ``[Q]``: Pearson across the k sources between two seeds' effects,
        averaged over seed pairs. Near 0 means single-seed LOO effects are noise, so no
        attribution can correlate with them; NaN with fewer than two seeds."""
        eff = self.per_seed_effects
        pairs = list(itertools.combinations(range(len(eff)), 2))
        if not pairs:
            return np.full(eff.shape[1], np.nan)
        return np.nanmean(np.stack([pearson(eff[a].T, eff[b].T) for a, b in pairs]), axis=0)

    def noise_ratio(self) -> np.ndarray:
        """Per query ``[Q]``: seed standard deviation of ``f(full)`` over the RMS effect."""
        if len(self.seeds) < 2:
            return np.full(self.full_outputs.shape[1], np.nan)
        rms = np.sqrt((self.effects**2).mean(1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.full_outputs.std(0, ddof=1) / rms


# ------------------------------------------------------------------------ subset draws


def draw_subset(k: int, m: int, fraction: float, seed: int) -> np.ndarray:
    """Subset ``k`` as a bool mask ``[m]`` with ``round(fraction·m)`` sources.

    Each subset has its own RNG stream ``(seed, k)``, so subset k is the same whatever
    ``n_subsets`` is: a run with more subsets reuses the stored ones.
    """
    size = round(fraction * m)
    rng = np.random.default_rng([int(seed), int(k)])
    mask = np.zeros(m, dtype=bool)
    mask[rng.choice(m, size=size, replace=False)] = True
    return mask


# ----------------------------------------------------------------------------- keys


def _array_fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"\x00none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _prepare(
    dataset: Dataset, mlp_cfg: MLPConfig, measure: str, target_class: int | None, queries, sources
) -> tuple[tuple, dict, np.ndarray, int]:
    """Data tuple for the workers, the shared part of every key, source index, m."""
    if measure not in MEASURES:
        raise ConfigError(f"unknown measurement {measure!r}; choose one of {', '.join(MEASURES)}.")
    if mlp_cfg.input_dim != dataset.n_features or mlp_cfg.n_classes != dataset.n_classes:
        raise ShapeError(
            f"the model is {mlp_cfg.input_dim} → {mlp_cfg.n_classes} but the data has "
            f"{dataset.n_features} features and {dataset.n_classes} classes; build the model "
            "from the dataset (input_dim=n_features, n_classes=n_classes)."
        )
    if queries is None:
        if dataset.n_test == 0:
            raise ConfigError(no_test_split_message(dataset.name))
        X_q, y_q = dataset.X_test, dataset.y_test
    else:
        X_q, y_q = queries
    X_q = np.ascontiguousarray(np.asarray(X_q, dtype=np.float32))
    y_q = None if y_q is None else np.ascontiguousarray(np.asarray(y_q, dtype=np.int64))
    if X_q.ndim != 2 or X_q.shape[1] != dataset.n_features:
        raise ShapeError(
            f"queries have shape {X_q.shape}; they need [n_queries, {dataset.n_features}] like the training data."
        )
    if len(X_q) == 0:
        raise ConfigError("there are no queries to measure (an empty query set); pass at least one query.")
    check_labels(measure, y_q is not None, target_class)
    if y_q is not None and y_q.shape != (len(X_q),):
        raise ShapeError(f"query labels have shape {y_q.shape}; pass one label per query ({len(X_q)}).")
    if sources is None:
        index = np.arange(dataset.n_train, dtype=np.int64)
        m = dataset.n_train
        src_fp = "example"
    else:
        index = np.asarray(getattr(sources, "index", sources), dtype=np.int64)
        if index.shape != (dataset.n_train,):
            raise ShapeError(
                f"the source index has shape {index.shape}; it needs one source id per training "
                f"example ({dataset.n_train})."
            )
        m = int(getattr(sources, "m", int(index.max()) + 1))
        src_fp = _array_fingerprint(index)
    data = (dataset.X_train, dataset.y_train, X_q, y_q)
    key = {
        "v": KEY_VERSION,
        "data": dataset.fingerprint(),
        "queries": _array_fingerprint(X_q, y_q),
        "model": mlp_cfg.to_dict(),
        "measure": measure,
        "target_class": target_class,
        "sources": src_fp,
    }
    return data, key, index, m


def _resolve_store(store):
    if store is None:
        return RunStore()
    return store


def _check_positive_int(name: str, value: int, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be a whole number ≥ {low}, got {value!r}.")
    return int(value)


# ------------------------------------------------------------------------------- LDS


def lds_ground_truth(
    dataset: Dataset,
    mlp_cfg: MLPConfig,
    train_cfg: TrainConfig,
    n_subsets: int = 100,
    fraction: float = 0.5,
    seed: int = 0,
    measure: str = "margin",
    *,
    queries: tuple[np.ndarray, np.ndarray | None] | None = None,
    target_class: int | None = None,
    sources=None,
    ceiling_seeds: int = 1,
    vary_seed: bool = False,
    store=None,
    scheduler=None,
    n_jobs: int = -1,
    progress: ProgressFn | None = None,
) -> LDSGroundTruth:
    """Retrain one model per random subset and record the query measurements.

    Subset ``k`` (``k < n_subsets``) is :func:`draw_subset` ``(k, m, fraction, seed)`` over
    the ``m`` sources (default: one per training example; pass ``sources`` — a
    :class:`~attrcore.data.sources.Sources` or an index ``[n]`` — to keep or drop whole
    sources). Its model trains on the kept examples only, with ``train_cfg`` and seed
    ``train_cfg.seed`` (or ``train_cfg.seed + k`` with ``vary_seed=True``), and measures
    ``f(z_q)`` on ``queries`` (default: the dataset's test split).
    ``ceiling_seeds`` more runs per subset give the seed-noise ceiling.

    Units are stored in ``store`` (default: ``RunStore()``) as they finish and reused;
    ``scheduler`` (address or ``distributed.Client``) runs them on a Dask cluster,
    otherwise ``n_jobs`` joblib workers (``-1``: all cores, ``1``: in this process).
    """
    n_subsets = _check_positive_int("n_subsets", n_subsets, 2)
    ceiling_seeds = _check_positive_int("ceiling_seeds", ceiling_seeds, 0)
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise ConfigError(f"the subset fraction must be strictly between 0 and 1, got {fraction!r}; 0.5 is usual.")
    t0 = time.perf_counter()
    store = _resolve_store(store)
    data, base, index, m = _prepare(dataset, mlp_cfg, measure, target_class, queries, sources)
    size = round(fraction * m)
    if size < 1 or size >= m:
        raise ConfigError(
            f"fraction {fraction} keeps {size} of {m} sources; choose a fraction that keeps at "
            "least one source and drops at least one."
        )
    base = {**base, "fraction": float(fraction), "subset_seed": int(seed)}
    seeds = np.array([train_cfg.seed + (k if vary_seed else 0) for k in range(n_subsets)])
    masks = np.stack([draw_subset(k, m, fraction, seed) for k in range(n_subsets)])
    units = []
    for k in range(n_subsets):
        rows = np.flatnonzero(masks[k][index])
        for c in range(ceiling_seeds + 1):
            unit_seed = int(seeds[k]) + c * CEILING_SEED_OFFSET
            tcfg = {**train_cfg.to_dict(), "seed": unit_seed}
            units.append(
                _Unit(
                    key={**base, "train": tcfg, "subset": k},
                    spec={
                        "model": mlp_cfg.to_dict(),
                        "train_cfg": tcfg,
                        "rows": rows,
                        "zero": None,
                        "measure": measure,
                        "target_class": target_class,
                    },
                    slot=(c, k),
                    extra={"subset": masks[k]},
                )
            )
    results, n_trained = _run_units(units, LDS_KIND, data, store, scheduler, n_jobs, progress, stage="lds")
    Q = len(data[2])
    outputs = np.stack([results[(0, k)] for k in range(n_subsets)]).reshape(n_subsets, Q)
    ceiling = (
        np.stack([np.stack([results[(c, k)] for k in range(n_subsets)]) for c in range(1, ceiling_seeds + 1)])
        if ceiling_seeds
        else np.zeros((0, n_subsets, Q))
    )
    key = {
        **base,
        "train": train_cfg.to_dict(),
        "n_subsets": n_subsets,
        "ceiling_seeds": ceiling_seeds,
        "vary_seed": vary_seed,
    }
    return LDSGroundTruth(
        subsets=masks,
        outputs=outputs,
        ceiling_outputs=ceiling,
        seeds=seeds,
        key=key,
        n_trained=n_trained,
        seconds=time.perf_counter() - t0,
        meta={"n_units": len(units)},
    )


# ------------------------------------------------------------------------------- LOO


def loo_ground_truth(
    dataset: Dataset,
    mlp_cfg: MLPConfig,
    train_cfg: TrainConfig,
    indices: Sequence[int],
    seeds: Sequence[int] = (0, 1, 2),
    measure: str = "margin",
    *,
    protocol: str = "weight-zero",
    queries: tuple[np.ndarray, np.ndarray | None] | None = None,
    target_class: int | None = None,
    sources=None,
    store=None,
    scheduler=None,
    n_jobs: int = -1,
    progress: ProgressFn | None = None,
) -> LOOGroundTruth:
    """Leave-one-out effects ``f(full) − f(without source i)`` for ``indices``, per seed.

    ``protocol="weight-zero"``: the source's examples keep their place in every
    mini-batch with loss weight 0; initialisation and batch order are those of the full
    run with the same seed, so the difference isolates the source (the informative
    protocol). ``protocol="reshuffled"``: the rows are dropped, so the seeded batch order
    of ``n − |S_i|`` examples differs from the full run's: what a naive LOO measures,
    dominated by training noise (see :meth:`LOOGroundTruth.seed_agreement`).
    Storage, resuming and parallel engines as in :func:`lds_ground_truth`.
    """
    if protocol not in LOO_PROTOCOLS:
        raise ConfigError(f"unknown LOO protocol {protocol!r}; choose {' or '.join(LOO_PROTOCOLS)}.")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"LOO needs one or more distinct seeds, got {seeds}.")
    t0 = time.perf_counter()
    store = _resolve_store(store)
    data, base, index, m = _prepare(dataset, mlp_cfg, measure, target_class, queries, sources)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= m or len(np.unique(idx)) != len(idx):
        raise ConfigError(
            f"LOO indices must be distinct source ids in 0..{m - 1}, got {len(idx)} values; "
            "pick them e.g. with numpy's rng.choice(m, k, replace=False)."
        )
    units = []
    for s in seeds:
        tcfg = {**train_cfg.to_dict(), "seed": s}
        common = {"model": mlp_cfg.to_dict(), "train_cfg": tcfg, "measure": measure, "target_class": target_class}
        units.append(
            _Unit(
                key={**base, "train": tcfg, "protocol": "full", "removed": -1},
                spec={**common, "rows": None, "zero": None},
                slot=(s, -1),
            )
        )
        for i in idx.tolist():
            members = np.flatnonzero(index == i)
            if protocol == "weight-zero":
                spec = {**common, "rows": None, "zero": members}
            else:
                spec = {**common, "rows": np.flatnonzero(index != i), "zero": None}
            units.append(_Unit(key={**base, "train": tcfg, "protocol": protocol, "removed": i}, spec=spec, slot=(s, i)))
    results, n_trained = _run_units(units, LOO_KIND, data, store, scheduler, n_jobs, progress, stage=f"loo-{protocol}")
    full = np.stack([results[(s, -1)] for s in seeds])
    removed = np.stack([np.stack([results[(s, i)] for i in idx.tolist()]) for s in seeds])
    key = {**base, "train": train_cfg.to_dict(), "protocol": protocol, "seeds": seeds, "indices": idx.tolist()}
    return LOOGroundTruth(
        indices=idx,
        seeds=np.asarray(seeds),
        protocol=protocol,
        full_outputs=full,
        removed_outputs=removed,
        key=key,
        n_trained=n_trained,
        seconds=time.perf_counter() - t0,
    )
