"""What the Streamlit pages need on top of the library, with no Streamlit in it.

The pages follow one shape: widgets → a config object from here → a cached call into
attrcore (or into a helper here) → figures from :mod:`attrcore.plots`. This module holds
the config objects, the cache keys, the progress adapter, upload handling and the small
computations the pages share:

- cache keys: :func:`store_version`, :func:`run_version` (change whenever the store or a
  run changes, so cached results never go stale and survive restarts);
- data and training: :class:`DataChoice`, :class:`TrainRequest`, :func:`parse_hidden`,
  :func:`save_upload`, :func:`csv_columns`, :class:`ProgressAdapter`, :func:`demo_request`;
- exploring: :func:`query_scores` (stored as an artifact), :func:`predict`,
  :func:`measurements`, :func:`top_k`, :func:`decision_grid`, :func:`rank_agreement`,
  :func:`agreement_matrix`, :func:`comparable_runs`, :func:`counterfactual`;
- cost: :func:`measure_readout_cost`, :func:`group_responses`, :func:`machine_description`,
  :func:`breakeven_queries`.

Score matrices are ``[n_queries, n_sources]``; positive = the source pushes the query's
measurement up (a proponent).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import SimulationConfig, TrainConfig, fingerprint
from .data import BUILTIN_DATASETS, Dataset, load_dataset
from .errors import ConfigError, DataError
from .run import TrainedRun, fit
from .store import RunStore
from .train import Progress

UPLOAD_SUFFIXES = (".csv", ".npz")
MAX_UPLOAD_MB = 200
SCORES_KIND = "app-scores"
COUNTERFACTUAL_KIND = "app-counterfactual"
COST_KIND = "app-cost"
BASELINE_KIND = "app-baseline"
DEMO_RUN = "digits-demo"


# ----------------------------------------------------------------------------- cache keys


def store_version(store: RunStore) -> str:
    """Changes whenever a run is saved, updated, renamed or deleted."""
    return fingerprint(sorted((i.name, i.updated_at or i.created_at) for i in store.list_runs()))


def run_version(store: RunStore, name: str) -> str:
    """The version of one run (its config fingerprint and last update); ``""`` if absent."""
    for info in store.list_runs(name_contains=name):
        if info.name == name:
            return f"{info.fingerprint}-{info.updated_at or info.created_at}"
    return ""


def attributable_runs(store: RunStore) -> list[str]:
    """Names of runs that carry simulated responses (scheme other than 'none'), newest first."""
    return [i.name for i in store.list_runs() if (i.config.get("simulation") or {}).get("scheme", "none") != "none"]


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataChoice:
    """The dataset options of the Train page; ``load()`` is ``attrcore.load_dataset``."""

    source: str
    seed: int = 0
    test_fraction: float = 0.2
    label_noise: float = 0.0
    label_column: str | None = None
    group_column: str | None = None
    n_samples: int | None = None
    noise: float | None = None

    def kwargs(self) -> dict:
        return asdict(self)

    def load(self) -> Dataset:
        return load_dataset(**self.kwargs())


def save_upload(home: str | os.PathLike, filename: str, data: bytes) -> Path:
    """Keep an uploaded CSV/NPZ under ``home/uploads/<sha>/<name>`` and return its path.

    Content-addressed, so uploading the same file again reuses it and a saved run can
    always rebuild its dataset. Nothing is parsed or unpickled here.
    """
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise DataError(
            f"{filename!r} is neither a .csv nor an .npz file; upload a CSV with a header row "
            "and a label column, or an NPZ saved with np.savez(path, X=X, y=y)."
        )
    if len(data) == 0:
        raise DataError(f"{filename!r} is empty; upload a file with data rows.")
    if len(data) > MAX_UPLOAD_MB * 2**20:
        raise DataError(f"{filename!r} is larger than {MAX_UPLOAD_MB} MB; upload a smaller sample.")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(filename).stem).strip("._") or "data"
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = Path(home) / "uploads" / digest
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem[:60]}{suffix}"
    if not path.exists():
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def csv_columns(path: str | os.PathLike) -> list[str]:
    """The header of a CSV file (for the label / group column pickers)."""
    import pandas as pd

    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(
            f"cannot read {Path(path).name} as CSV ({err}); save it as comma-separated text with a header row."
        ) from None


def guess_label_column(columns: Sequence[str]) -> int:
    """Index of the likeliest label column: one named label/target/class/y, else the last."""
    for want in ("label", "labels", "target", "class", "y"):
        for i, c in enumerate(columns):
            if c.strip().lower() == want:
                return i
    return max(0, len(columns) - 1)


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"128, 64"`` → ``(128, 64)``; empty or ``"none"`` → ``()`` (logistic regression)."""
    parts = [p for p in re.split(r"[\s,;x]+", str(text).strip()) if p]
    if not parts or [p.lower() for p in parts] == ["none"]:
        return ()
    out = []
    for p in parts:
        if not p.isdigit() or not 1 <= int(p) <= 4096:
            raise ConfigError(
                f"hidden layer widths are whole numbers from 1 to 4096 separated by commas, "
                f"e.g. '128' or '64, 32' ('none' for logistic regression); got {p!r}."
            )
        out.append(int(p))
    return tuple(out)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainRequest:
    """Everything the Train page asks for: data, model, optimiser, simulation, run name."""

    data: DataChoice
    name: str
    hidden: tuple[int, ...] = (128,)
    activation: str = "relu"
    train: TrainConfig = field(default_factory=TrainConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    sources: str = "example"
    overwrite: bool = False

    def fingerprint(self) -> str:
        return fingerprint(
            {
                "data": self.data.kwargs(),
                "hidden": list(self.hidden),
                "activation": self.activation,
                "train": self.train.to_dict(),
                "simulation": self.simulation.to_dict(),
                "sources": self.sources,
            }
        )

    def fit_and_save(self, store: RunStore, progress: Callable | None = None) -> TrainedRun:
        """Train, simulate, then save atomically; a cancelled or failed run saves nothing."""
        if not self.overwrite and store.exists(self.name):
            raise ConfigError(f"a run named {self.name!r} exists; pick another name or tick 'overwrite'.")
        run = fit(
            self.data.load(),
            hidden=self.hidden,
            activation=self.activation,
            train_config=self.train,
            simulation=self.simulation,
            sources=self.sources,
            progress=progress,
        )
        run.save(store, self.name, overwrite=self.overwrite)
        return run


def default_run_name(data: DataChoice, simulation: SimulationConfig, sources: str) -> str:
    stem = data.source if data.source in BUILTIN_DATASETS else Path(data.source).stem
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem)[:40] or "data"
    tag = {"trajectory": "traj", "stationary": "stat", "none": "plain"}[simulation.scheme]
    k = "" if simulation.scheme == "none" else f"-k{simulation.horizon_label}"
    src = "" if sources == "example" else f"-{sources}"
    return f"{stem}-{tag}{k}{src}"


def demo_request() -> TrainRequest:
    """The digits preset (MLP 64-128-10, plain SGD), shortened so a class demo trains in
    well under a minute: 15 epochs instead of 30 and horizon K = 16 instead of the full run."""
    return TrainRequest(
        data=DataChoice("digits"),
        name=DEMO_RUN,
        hidden=(128,),
        activation="relu",
        train=TrainConfig(epochs=15, lr=0.1, batch_size=64, weight_decay=1e-4, seed=0),
        simulation=SimulationConfig(scheme="trajectory", horizon=16),
        sources="example",
    )


class ProgressAdapter:
    """Adapts attrcore's ``progress`` callback to a user interface.

    ``show(progress, history)`` draws the current state (``history`` = the per-epoch
    metrics so far); ``cancelled()`` is asked after every report and, when it returns
    True, the adapter returns False, which makes attrcore raise ``CancelledError`` before
    anything is saved.
    """

    def __init__(
        self, show: Callable[[Progress, list[dict]], None], cancelled: Callable[[], bool] = lambda: False
    ) -> None:
        self.show, self.cancelled = show, cancelled
        self.history: list[dict] = []

    def __call__(self, p: Progress) -> bool:
        if p.stage == "train" and p.metrics:
            self.history.append(dict(p.metrics))
        self.show(p, self.history)
        return not self.cancelled()


def stage_text(p: Progress) -> str:
    """One readable line for a progress report."""
    if p.stage == "train":
        m = p.metrics
        acc = m.get("test_accuracy", m.get("train_accuracy"))
        tail = f" · loss {m['loss']:.3f}" if "loss" in m else ""
        tail += f" · accuracy {acc:.1%}" if acc is not None else ""
        return f"epoch {p.done}/{p.total}{tail}"
    if p.stage == "stationary":
        return f"simulating responses: Neumann step {p.done}/{p.total}"
    return f"{p.stage}: {p.done}/{p.total}"


# ----------------------------------------------------------------------------- exploring


def predict(run: TrainedRun, X: np.ndarray) -> np.ndarray:
    """Class probabilities ``[Q, C]``."""
    with torch.no_grad():
        return torch.softmax(run.logits(X).double(), dim=-1).numpy()


def measurements(
    run: TrainedRun, X: np.ndarray, y: np.ndarray | None, measure: str = "margin", theta: torch.Tensor | None = None
) -> np.ndarray:
    """The measurement f(z_q; θ) per query ``[Q]`` (θ defaults to the run's parameters)."""
    from .measures import measure as measure_fn

    theta = run.theta if theta is None else theta
    Xt = torch.as_tensor(np.asarray(X)).to(theta.dtype)
    yt = None if y is None else torch.as_tensor(np.asarray(y)).long()
    with torch.no_grad():
        return measure_fn(run.mlp.forward(theta, Xt), yt, measure).double().numpy()


def query_scores(store: RunStore, run: TrainedRun, version: str, measure: str = "margin") -> np.ndarray:
    """Scores ``[n_test, m]`` of every test example of the run, stored as an artifact so an
    app restart does not recompute them."""
    key = {"run": run.name, "version": version, "measure": measure, "readout": "jvp", "queries": "test"}
    found = store.get_artifact(SCORES_KIND, key)
    if found is not None:
        return found.arrays["scores"]
    ds = run.dataset
    scores = run.score(ds.X_test, ds.y_test, measure=measure).astype(np.float32)
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
    from scipy.stats import rankdata

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


def comparable_runs(store: RunStore, run: TrainedRun) -> list[str]:
    """Other saved runs with simulated responses on the same data and sources."""
    out = []
    for info in store.list_runs():
        cfg = info.config
        if (
            info.name != run.name
            and cfg.get("data") == run.config.get("data")
            and cfg.get("sources") == run.config.get("sources")
            and (cfg.get("simulation") or {}).get("scheme", "none") != "none"
        ):
            out.append(info.name)
    return out


def removal_weights(run: TrainedRun, sources: Sequence[int]) -> np.ndarray:
    """Per-example loss weights ``[n]``: 0 for every example of the given sources, else 1."""
    w = np.ones(len(run.source_index), dtype=np.float64)
    w[np.isin(run.source_index, np.asarray(list(sources), dtype=np.int64))] = 0.0
    return w


def retrain(run: TrainedRun, weights: np.ndarray, progress: Callable | None = None) -> torch.Tensor:
    """Retrain the run's model from the same seed and batch order with example ``weights``
    (no simulation); returns the final parameters ``[p]``."""
    from .train import train

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
    x, y = ds.X_test[query : query + 1], ds.y_test[query : query + 1]
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


# ----------------------------------------------------------------------------- baselines

BASELINES: dict[str, str] = {
    "trak": "TRAK (1 model)",
    "if-explicit": "Influence function (last layer)",
    "if-cg": "Influence function (CG, whole network)",
    "tracin": "TracIn",
    "grad-dot": "Gradient dot product",
    "random": "Random (control)",
}


def baselines_available() -> str | None:
    """None when :mod:`attrcore.baselines` can be used, else why not (a readable note)."""
    try:
        from . import baselines  # noqa: F401  (import check only)
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return f"the baseline methods are not available yet ({type(err).__name__}: {err})."
    return None


def _baseline_options(method: str, n_train: int, models: int, proj_dim: int | None) -> dict:
    if method == "trak":
        k = proj_dim or min(512, max(16, n_train // 2))
        return {"proj_dim": int(k)}
    if method == "if-explicit":
        return {"layers": "last"}
    return {}


def baseline_scores(
    store: RunStore,
    run: TrainedRun,
    version: str,
    method: str,
    measure: str = "margin",
    models: int = 1,
    proj_dim: int | None = None,
    progress: Callable | None = None,
) -> np.ndarray:
    """Scores ``[n_test, m]`` of a baseline method for the run's test queries, on the same
    sources; stored as an artifact. TRAK uses ``models`` independently trained models (the
    run's own model and ``models − 1`` more seeds); TracIn retrains once with checkpoints."""
    import warnings
    from types import SimpleNamespace

    from . import baselines as bl
    from .sources import Sources
    from .train import train

    if method not in bl.METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(bl.METHODS)}.")
    ds = run.dataset
    opts = _baseline_options(method, ds.n_train, models, proj_dim)
    key = {
        "run": run.name,
        "version": version,
        "method": method,
        "measure": measure,
        "models": int(models),
        "options": opts,
        "queries": "test",
    }
    found = store.get_artifact(BASELINE_KIND, key)
    if found is not None:
        return found.arrays["scores"]
    cfg = run.train_config
    t0 = time.perf_counter()
    own = SimpleNamespace(theta=run.theta, checkpoints={}, checkpoint_lrs={})
    if method == "tracin":
        outs = [
            train(
                run.mlp,
                ds.X_train,
                ds.y_train,
                cfg,
                checkpoint_epochs=bl.tracin_checkpoint_epochs(cfg.epochs),
                progress=progress,
            )
        ]
    elif method == "trak" and models > 1:
        from dataclasses import replace

        outs = [own] + [
            train(run.mlp, ds.X_train, ds.y_train, replace(cfg, seed=cfg.seed + i), progress=progress)
            for i in range(1, int(models))
        ]
    else:
        outs = [own]
    sources = None
    if run.config.get("sources", {}).get("kind", "example") != "example":
        sources = Sources(run.config["sources"]["kind"], run.source_index, run.source_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRAK's automatic ridge warning: recorded in meta
        attributor = bl.make_baseline(method, run.mlp, outs, cfg, measure=measure, **opts)
        attributor.fit(ds.X_train, ds.y_train, sources=sources)
        scores = attributor.score(ds.X_test, ds.y_test).numpy().astype(np.float32)
    if hasattr(attributor, "close"):
        attributor.close()
    meta = {"seconds": time.perf_counter() - t0, **attributor.timings, "state_bytes": int(attributor.state_bytes())}
    store.put_artifact(BASELINE_KIND, key, {"scores": scores}, meta=meta)
    return scores


def stored_baselines(store: RunStore, run_name: str, version: str) -> list[dict]:
    """Keys and meta of the baseline scores already stored for a run version."""
    return [
        a
        for a in store.list_artifacts(BASELINE_KIND)
        if a["key"].get("run") == run_name and a["key"].get("version") == version
    ]


# ----------------------------------------------------------------------------- evaluation

LDS_DONE_KIND = "app-lds"
LOO_DONE_KIND = "app-loo"


def evaluation_available() -> str | None:
    """None when :mod:`attrcore.evaluate` can be used, else why not."""
    try:
        from .evaluate import lds_ground_truth, loo_ground_truth  # noqa: F401  (import check only)
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return f"ground truth by retraining is not available yet ({type(err).__name__}: {err})."
    return None


@dataclass(frozen=True)
class LDSSettings:
    """How much retraining the LDS ground truth costs: ``n_subsets × (1 + ceiling_seeds)``
    trainings, each on ``fraction`` of the sources, measured on the first ``n_queries``
    test examples."""

    n_subsets: int = 20
    fraction: float = 0.5
    n_queries: int = 50
    ceiling_seeds: int = 1
    n_jobs: int = 1
    measure: str = "margin"

    def key(self, run_name: str, version: str) -> dict:
        d = asdict(self)
        d.pop("n_jobs")  # how it is computed does not change the result
        return {"run": run_name, "version": version, **d}


@dataclass(frozen=True)
class LOOSettings:
    """Leave-one-out: ``n_sources`` random sources removed one at a time (weight zero, same
    seed and batch order) for each of ``n_seeds`` seeds."""

    n_sources: int = 10
    n_seeds: int = 2
    n_queries: int = 50
    n_jobs: int = 1
    measure: str = "margin"

    def key(self, run_name: str, version: str) -> dict:
        d = asdict(self)
        d.pop("n_jobs")
        return {"run": run_name, "version": version, **d}


def _run_sources(run: TrainedRun):
    from .sources import Sources

    if run.config.get("sources", {}).get("kind", "example") == "example":
        return None
    return Sources(run.config["sources"]["kind"], run.source_index, run.source_names)


def _queries(run: TrainedRun, n: int) -> tuple[np.ndarray, np.ndarray]:
    ds = run.dataset
    n = max(1, min(int(n), ds.n_test))
    return ds.X_test[:n], ds.y_test[:n]


def lds_truth(store: RunStore, run: TrainedRun, version: str, settings: LDSSettings, progress: Callable | None = None):
    """LDS ground truth (:func:`attrcore.evaluate.lds_ground_truth`) for the run's model and
    training config; finished retrainings are stored and reused, so it resumes."""
    from .evaluate import lds_ground_truth

    gt = lds_ground_truth(
        run.dataset,
        run.mlp.config,
        run.train_config,
        n_subsets=settings.n_subsets,
        fraction=settings.fraction,
        seed=0,
        measure=settings.measure,
        queries=_queries(run, settings.n_queries),
        sources=_run_sources(run),
        ceiling_seeds=settings.ceiling_seeds,
        store=store,
        n_jobs=settings.n_jobs,
        progress=progress,
    )
    store.put_artifact(
        LDS_DONE_KIND, settings.key(run.name, version), {"done": np.ones(1)}, meta={"seconds": gt.seconds}
    )
    return gt


def loo_truth(store: RunStore, run: TrainedRun, version: str, settings: LOOSettings, progress: Callable | None = None):
    """Leave-one-out ground truth (weight-zero protocol) for ``settings.n_sources`` sources
    drawn with a fixed seed."""
    from .evaluate import loo_ground_truth

    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(run.n_sources, size=min(settings.n_sources, run.n_sources), replace=False))
    cfg = run.train_config
    gt = loo_ground_truth(
        run.dataset,
        run.mlp.config,
        cfg,
        idx,
        seeds=[cfg.seed + i for i in range(settings.n_seeds)],
        measure=settings.measure,
        protocol="weight-zero",
        queries=_queries(run, settings.n_queries),
        sources=_run_sources(run),
        store=store,
        n_jobs=settings.n_jobs,
        progress=progress,
    )
    store.put_artifact(
        LOO_DONE_KIND, settings.key(run.name, version), {"done": np.ones(1)}, meta={"seconds": gt.seconds}
    )
    return gt


def truth_known(store: RunStore, kind: str, settings, run_name: str, version: str) -> bool:
    """Whether this ground truth was computed before (so loading it retrains nothing)."""
    return store.get_artifact(kind, settings.key(run_name, version)) is not None


def same_training(run: TrainedRun, other: TrainedRun) -> bool:
    """Same data, sources, model and training config: one ground truth serves both."""
    keys = ("data", "sources", "model", "train")
    return all(run.config.get(k) == other.config.get(k) for k in keys)


def lds_summary(gt, scores: dict[str, np.ndarray]) -> list[dict]:
    """One row per method: mean LDS, its standard error and the per-query values."""
    from .evaluate import summarize

    Q = gt.outputs.shape[1]
    rows = []
    for name, S in scores.items():
        per_query = gt.score(np.asarray(S)[:Q])
        s = summarize(per_query)
        rows.append({"method": name, "LDS": s["mean"], "± s.e.": s["sem"], "queries": s["n"], "per_query": per_query})
    return rows


def subset_predictions(gt, row: np.ndarray) -> np.ndarray:
    """Predicted output change per subset ``[M]``: Σ of the query's scores over each subset."""
    return gt.subsets.astype(np.float64) @ np.asarray(row, np.float64)


def horizon_x(label) -> float:
    """A plotting position for a horizon label (``'full'`` goes to the right of any K)."""
    return 4096.0 if label in (None, "full") else float(label)


def bench_docs(folder: str | os.PathLike) -> list[dict]:
    """Benchmark reports (``<folder>/*.json`` written by :mod:`attrcore.bench`)."""
    import json

    out = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("rows"), list) and doc.get("task"):
            doc["_file"] = path.name
            out.append(doc)
    return out


def bench_curves(doc: dict, protocol: str = "fixed-seed") -> dict[str, dict[str, tuple[list, list]]]:
    """LDS curves from a benchmark report: ``{"horizon": {scheme: (K, LDS)}, "ensemble":
    {"forward-only K=..": (models, LDS)}, "trak_models": {"proj k": (M, LDS)},
    "trak_proj": {"M models": (k, LDS)}}``; empty dicts where the report has no such rows."""

    def lds_of(r):
        v = (r.get(f"lds_{protocol}") or {}).get("mean")
        return None if v is None or v != v else float(v)

    horizon: dict[str, list] = {}
    ensemble: dict[str, list] = {}
    trak_m: dict[str, list] = {}
    trak_k: dict[str, list] = {}
    for r in doc.get("rows", []):
        v = lds_of(r)
        if v is None:
            continue
        if r.get("method") == "forward-only":
            models = int(r.get("models", 1))
            if models == 1:
                horizon.setdefault(r.get("scheme", "trajectory"), []).append((horizon_x(r.get("horizon")), v))
            ensemble.setdefault(f"{r.get('scheme', 'trajectory')} K={r.get('horizon')}", []).append((models, v))
        elif r.get("method") == "trak":
            meta = r.get("meta") or {}
            M, k = int(r.get("models", meta.get("ensemble", 1))), meta.get("proj_dim")
            if k is not None:
                trak_m.setdefault(f"proj {k}", []).append((M, v))
                trak_k.setdefault(f"{M} model(s)", []).append((int(k), v))

    def series(d):
        return {name: tuple(map(list, zip(*sorted(pts)))) for name, pts in d.items() if pts}

    return {
        "horizon": series(horizon),
        "ensemble": {k: v for k, v in series(ensemble).items() if len(v[0]) > 1},
        "trak_models": series(trak_m),
        "trak_proj": series(trak_k),
    }


# ----------------------------------------------------------------------------- cost


def group_responses(run: TrainedRun, index: np.ndarray, names: Sequence[str]) -> TrainedRun:
    """A copy of a per-example run whose sources are groups: by linearity of the response
    in the source weights, a group's response is the sum of its members' responses."""
    from .tangents import Tangents

    if run.responses is None:
        raise ConfigError("this run has no simulated responses to group.")
    if len(index) != run.n_sources:
        raise DataError("grouping needs one group id per source of a per-example run.")
    idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
    m = len(names)

    def summed(t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((m, *t.shape[1:]), dtype=t.dtype)
        return out.index_add_(0, idx, t)

    grouped = Tangents([summed(W) for W in run.responses.W], [summed(b) for b in run.responses.b])
    return TrainedRun(
        config=run.config,
        mlp=run.mlp,
        theta=run.theta,
        responses=grouped,
        source_index=np.asarray(index)[run.source_index],
        source_names=tuple(names),
        name=run.name,
    )


def measure_readout_cost(
    run: TrainedRun,
    X: np.ndarray,
    y: np.ndarray,
    query_counts: Sequence[int] = (1, 4, 16, 64, 256),
    repeats: int = 2,
    budget_seconds: float = 20.0,
) -> dict:
    """Wall time of the forward-only readout for growing numbers of queries (best of
    ``repeats``). Stops early when the budget is spent. Returns lists ``n_queries``,
    ``seconds`` (total) and ``per_query``."""
    n, secs = [], []
    start = time.perf_counter()
    for q in query_counts:
        reps = np.resize(np.arange(len(X)), q)
        Xq, yq = X[reps], y[reps]
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            run.score(Xq, yq)
            best = min(best, time.perf_counter() - t0)
        n.append(int(q))
        secs.append(best)
        if time.perf_counter() - start > budget_seconds:
            break
    return {"n_queries": n, "seconds": secs, "per_query": [s / q for s, q in zip(secs, n)]}


def measure_cost(
    run: TrainedRun,
    with_trak: bool = True,
    query_counts: Sequence[int] = (1, 4, 16, 64, 256),
    progress: Callable[[str, float], None] | None = None,
) -> dict:
    """Measure, on this machine, the readout of the run (per-source and grouped by class)
    and, when the baselines are available, TRAK with one model, on the run's test queries.

    Returns flat lists/numbers: ``<method>_n``, ``<method>_seconds`` (total per batch),
    ``<method>_setup`` (seconds of work before the first query), ``<method>_bytes``
    (memory per source) and ``<method>_sources`` for methods ``forward``, ``grouped`` and
    ``trak``.
    """
    import warnings

    ds = run.dataset
    X, y = ds.X_test, ds.y_test
    say = progress or (lambda text, frac: None)
    out: dict = {}
    say("forward-only readout, one source per example", 0.0)
    r = measure_readout_cost(run, X, y, query_counts)
    out |= {
        "forward_n": r["n_queries"],
        "forward_seconds": r["seconds"],
        "forward_setup": float(run.timings.get("simulate_seconds", float("nan"))),
        "forward_bytes": run.bytes_per_source(),
        "forward_sources": run.n_sources,
    }
    say("forward-only readout, one source per class", 0.35)
    grouped = group_responses(run, _class_of_sources(run), ds.class_names)
    g = measure_readout_cost(grouped, X, y, query_counts)
    out |= {
        "grouped_n": g["n_queries"],
        "grouped_seconds": g["seconds"],
        "grouped_setup": out["forward_setup"],
        "grouped_bytes": grouped.bytes_per_source(),
        "grouped_sources": grouped.n_sources,
    }
    if with_trak and baselines_available() is None:
        from types import SimpleNamespace

        from . import baselines as bl

        say("TRAK (1 model): featurizing the training set", 0.6)
        own = SimpleNamespace(theta=run.theta, checkpoints={}, checkpoint_lrs={})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trak = bl.make_baseline(
                "trak", run.mlp, [own], run.train_config, **_baseline_options("trak", ds.n_train, 1, None)
            )
            trak.fit(ds.X_train, ds.y_train, sources=_run_sources(run))
            say("TRAK (1 model): scoring", 0.8)
            n, secs = [], []
            start = time.perf_counter()
            for q in query_counts:
                reps = np.resize(np.arange(len(X)), q)
                t0 = time.perf_counter()
                trak.score(X[reps], y[reps])
                secs.append(time.perf_counter() - t0)
                n.append(int(q))
                if time.perf_counter() - start > 30:
                    break
        out |= {
            "trak_n": n,
            "trak_seconds": secs,
            "trak_setup": trak.timings["setup_seconds"],
            "trak_bytes": trak.state_bytes() / max(1, run.n_sources),
            "trak_sources": run.n_sources,
            "trak_proj_dim": trak.proj_dim,
        }
        trak.close()
    say("done", 1.0)
    return out


def _class_of_sources(run: TrainedRun) -> np.ndarray:
    """The (training) class of each source of a per-example run ``[m]``."""
    ds = run.dataset
    if run.n_sources != ds.n_train:
        raise ConfigError("grouping by class needs a run with one source per example.")
    return ds.y_train.astype(np.int64)


def machine_description() -> dict:
    """What the cost numbers were measured on."""
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "node": platform.node(),
    }


def breakeven_queries(setup_a: float, per_query_a: float, setup_b: float, per_query_b: float) -> float:
    """Number of queries q where ``setup_a + q·per_query_a = setup_b + q·per_query_b``.

    ``inf`` when a never catches up with b; 0 when a is cheaper from the start.
    """
    if setup_a <= setup_b and per_query_a <= per_query_b:
        return 0.0
    if per_query_a >= per_query_b:
        return float("inf")
    return (setup_a - setup_b) / (per_query_b - per_query_a)


def save_cost(store: RunStore, run_name: str, version: str, result: dict) -> None:
    """Store a cost measurement (lists of numbers + the machine description in meta)."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in result.items() if isinstance(v, (list, tuple, np.ndarray))}
    scalars = {k: v for k, v in result.items() if not isinstance(v, (list, tuple, np.ndarray))}
    store.put_artifact(
        COST_KIND,
        {"run": run_name, "version": version},
        arrays,
        meta={**scalars, "machine": machine_description(), "measured_at": time.time()},
    )


def load_cost(store: RunStore, run_name: str, version: str) -> dict | None:
    found = store.get_artifact(COST_KIND, {"run": run_name, "version": version})
    if found is None:
        return None
    return {**{k: v.tolist() for k, v in found.arrays.items()}, **found.meta}
