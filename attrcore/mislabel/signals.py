"""Suspicion signals: one score per training example, higher = more likely mislabeled.

Interface: :func:`compute_signals` ``(run, signals, progress) -> {id: SignalResult}``;
:data:`SIGNALS` maps each id to its title and kind. Every signal ranks the run's own
training examples with their *given* (possibly wrong) labels.

Attribution signals (self-influence: the example as its own query):

- ``forward-only`` — −τ(i, i) with f = the example's own loss, read out in forward mode
  from the run's simulated responses (:func:`attrcore.engine.readout.self_scores`, a
  diagonal: one JVP per example with its own tangent). τ < 0 (up-weighting an example
  lowers its own loss); a wrong label has to be memorised against its neighbours, so
  its own response moves its own loss a lot.
- ``forward-only-margin`` — +τ(i, i) with f = the margin of the given label.
- ``forward-only-trajectory`` — self-influence summed over the checkpoints of the second
  half of training, each read with the response injected in its epoch
  (:mod:`attrcore.mislabel.trajectory`; forward-only, one JVP per point and checkpoint).
- ``trak-1`` / ``trak-10`` — the diagonal of TRAK's scores (the official ``traker``,
  margin output) with the training set as its own queries, 1 or 10 models (the run's
  model and models trained with the next seeds).
- ``if`` — the influence-function self-influence (1/n) ∇ℓ_iᵀ (H + δI)⁻¹ ∇ℓ_i with the
  explicit last-layer Hessian.

The trajectory signals are recorded while the run trains (``fit(..., on_epoch=recorder)``;
pass the recorder's ``signals()`` as ``recorded``); for a run trained without one the
recipe is replayed with it, its time counted as setup.

Controls practitioners use:

- ``loss`` — the training loss ℓ(z_i; θ̂) under the given label;
- ``trajectory-loss`` / ``aum`` — the training loss averaged over the same checkpoints,
  and the area under the margin (Pleiss et al. 2020), read out over the trajectory;
- ``confidence`` — 1 − p(given label | x_i) under the trained model;
- ``cleanlab`` — ``cleanlab.filter.find_label_issues`` (the field's standard tool) on
  out-of-fold probabilities from scikit-learn's ``cross_val_predict`` with the run's own
  recipe (same MLP and SGD settings) as the estimator: flagged examples rank first (by
  cleanlab's self-confidence order), then the rest by 1 − out-of-fold p(given label).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from ..config import TrainConfig
from ..engine.measures import measure as measure_fn
from ..engine.model import MLP, MLPConfig
from ..engine.readout import self_scores
from ..engine.train import Progress, train
from ..errors import CancelledError, ConfigError
from ..methods import TRAK, InfluenceExplicit
from .trajectory import TRAJECTORY_SIGNALS, TrajectoryRecorder, record

__all__ = [
    "SIGNALS",
    "DEFAULT_SIGNALS",
    "SignalResult",
    "Signal",
    "compute_signal",
    "compute_signals",
    "parse_signals",
    "RecipeClassifier",
]


@dataclass(frozen=True)
class Signal:
    id: str
    title: str
    kind: str  # "attribution" | "control"
    about: str


SIGNALS: dict[str, Signal] = {
    s.id: s
    for s in (
        Signal(
            "forward-only",
            "forward-only self-influence (loss)",
            "attribution",
            "the example as its own query, read out from the run's simulated responses (forward mode)",
        ),
        Signal(
            "forward-only-margin",
            "forward-only self-influence (margin)",
            "attribution",
            "as above with the margin of the given label as the measurement",
        ),
        Signal(
            "forward-only-trajectory",
            "forward-only self-influence over the trajectory (loss)",
            "attribution",
            "summed over the second half's epochs, each read with the response injected in that epoch",
        ),
        Signal("trak-1", "TRAK-1 self-influence", "attribution", "traker, 1 model, the example as its own query"),
        Signal("trak-10", "TRAK-10 self-influence", "attribution", "traker, 10 models"),
        Signal(
            "if",
            "influence-function self-influence",
            "attribution",
            "(1/n) ∇ℓᵀ(H + δI)⁻¹∇ℓ with the explicit last-layer Hessian",
        ),
        Signal("loss", "training loss (control)", "control", "the loss of the given label under the trained model"),
        Signal(
            "trajectory-loss",
            "training loss over the trajectory (control)",
            "control",
            "the loss of the given label averaged over the second half's epochs",
        ),
        Signal(
            "aum",
            "area under the margin, AUM (control)",
            "control",
            "−(given label's logit − the largest other logit), averaged over the second half's epochs",
        ),
        Signal(
            "confidence",
            "confidence in the given label (control)",
            "control",
            "1 − the model's probability of the given label",
        ),
        Signal(
            "cleanlab",
            "cleanlab find_label_issues (control)",
            "control",
            "cleanlab on 5-fold cross_val_predict probabilities of the same recipe",
        ),
    )
}
DEFAULT_SIGNALS = tuple(SIGNALS)


@dataclass
class SignalResult:
    """``scores [n]`` float64, higher = more suspicious; ``seconds``: time to rank every
    training example (``setup_seconds``: extra models trained for it, counted apart)."""

    id: str
    title: str
    scores: np.ndarray
    seconds: float
    setup_seconds: float = 0.0
    meta: dict = field(default_factory=dict)


def parse_signals(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"forward-only,loss"`` / a list / None (= every signal) → validated ids."""
    if value is None:
        return DEFAULT_SIGNALS
    items = value.replace(" ", ",").split(",") if isinstance(value, str) else list(value)
    out = []
    for s in (i.strip() for i in items):
        if not s:
            continue
        if s == "all":
            return DEFAULT_SIGNALS
        if s not in SIGNALS:
            raise ConfigError(f"unknown signal {s!r}; choose from {', '.join(SIGNALS)} (or 'all').")
        if s not in out:
            out.append(s)
    if not out:
        raise ConfigError(f"pick at least one signal from {', '.join(SIGNALS)}.")
    return tuple(out)


def _train_data(run):
    ds = run.dataset
    dtype = torch.float64 if run.train_config.dtype == "float64" else torch.float32
    return ds, torch.as_tensor(ds.X_train).to(dtype), torch.as_tensor(ds.y_train).long()


def _require_examples(run, what: str) -> None:
    kind = run.config.get("sources", {}).get("kind", "example")
    if kind != "example":
        raise ConfigError(
            f"{what} ranks single training examples, but run {run.name or ''!r} has {kind!r} sources "
            "(one response per group); train the run with sources='example'."
        )


def compute_signal(
    run, signal: str, progress: Callable | None = None, recorder: TrajectoryRecorder | None = None
) -> SignalResult:
    """One signal over the run's training set (see the module docstring). ``recorder``:
    the :class:`~attrcore.mislabel.trajectory.TrajectoryRecorder` the run was trained with
    (``fit(..., on_epoch=recorder)``); without one a trajectory signal replays the recipe."""
    if signal not in SIGNALS:
        raise ConfigError(f"unknown signal {signal!r}; choose from {', '.join(SIGNALS)}.")
    ds, X, y = _train_data(run)
    spec = SIGNALS[signal]
    setup = 0.0
    meta: dict = {}
    t0 = time.perf_counter()
    if signal in ("forward-only", "forward-only-margin"):
        _require_examples(run, "forward-only self-influence")
        if run.responses is None:
            raise ConfigError(
                "forward-only self-influence needs simulated responses; train the run with "
                "scheme 'trajectory' or 'stationary' (not 'none')."
            )
        kind = "loss" if signal == "forward-only" else "margin"
        tau = self_scores(run.mlp, run.theta, run.responses, X.to(run.theta.dtype), y, measure=kind)
        scores = (-tau if kind == "loss" else tau).double().numpy()
    elif signal in TRAJECTORY_SIGNALS:
        if signal == "forward-only-trajectory":
            _require_examples(run, "forward-only self-influence")
        rec, replayed = recorder, 0.0
        if rec is None or signal not in rec.signals():
            rec, replayed = record(run, signal == "forward-only-trajectory", _stage(progress, "replay"))
        meta = {"checkpoints": list(rec.read), "window": rec.window, "replayed": replayed > 0}
        seconds = rec.seconds if signal == "forward-only-trajectory" else rec.control_seconds
        return SignalResult(signal, spec.title, rec.signals()[signal], seconds, replayed, meta)
    elif signal in ("loss", "confidence"):
        with torch.no_grad():
            logits = run.mlp.forward(run.theta, X.to(run.theta.dtype)).double()
        if signal == "loss":
            scores = measure_fn(logits, y, "loss").numpy()
        else:
            scores = 1.0 - torch.softmax(logits, -1).gather(1, y[:, None]).squeeze(1).numpy()
    elif signal in ("trak-1", "trak-10"):
        M = 1 if signal == "trak-1" else 10
        thetas, setup = _ensemble(run, X, y, M, progress)
        t0 = time.perf_counter()

        k = int(min(512, max(16, ds.n_train // 2 - 1)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            att = TRAK(run.mlp, thetas, proj_dim=k)
            att.fit(X, y)
            scores = _diagonal(att, X, y)
            att.close()
        meta = {"models": M, "proj_dim": k, **att.meta}
    elif signal == "if":
        att = InfluenceExplicit(run.mlp, run.theta, run.train_config.weight_decay, layers="last", measure="loss")
        att.fit(X, y)
        scores = -_diagonal(att, X, y)
        meta = dict(att.meta)
    else:
        scores, meta = _cleanlab_scores(run, progress)
    seconds = time.perf_counter() - t0
    scores = np.asarray(scores, dtype=np.float64)
    return SignalResult(signal, spec.title, scores, seconds, setup, meta)


def _diagonal(att, X, y, chunk: int = 1024) -> np.ndarray:
    """Diagonal of a baseline's ``[n, n]`` train-on-train scores, a chunk of queries at a
    time (a baseline scores a query against every source; only τ(i, i) is kept)."""
    n = X.shape[0]
    out = np.empty(n)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        S = att.score(X[s:e], y[s:e])  # [e - s, n]
        out[s:e] = S[torch.arange(e - s), torch.arange(s, e)].double().numpy()
    return out


def _ensemble(run, X, y, M: int, progress) -> tuple[list, float]:
    """The run's own parameters and M − 1 models trained with the next seeds."""
    cfg = run.train_config
    t0 = time.perf_counter()
    thetas = [run.theta]
    for i in range(1, M):
        out = train(
            run.mlp, X, y, replace(cfg, seed=cfg.seed + i), progress=_stage(progress, f"TRAK model {i + 1}/{M}")
        )
        thetas.append(out.theta)
    return thetas, time.perf_counter() - t0


def _stage(progress, name: str):
    if progress is None:
        return None

    def cb(p: Progress):
        return progress(Progress(name, p.done, p.total, p.metrics))

    return cb


class RecipeClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier that trains attrcore's MLP with a fixed recipe
    (``hidden``, ``activation``, ``train_config`` as a dict), so ``cross_val_predict``
    gives cleanlab out-of-fold probabilities from the same model family as the run."""

    def __init__(self, hidden=(128,), activation="relu", train_config=None, n_classes=2):
        self.hidden = hidden
        self.activation = activation
        self.train_config = train_config
        self.n_classes = n_classes

    def fit(self, X, y):
        cfg = TrainConfig.from_dict(self.train_config or {})
        self.mlp_ = MLP(MLPConfig(X.shape[1], int(self.n_classes), tuple(self.hidden), self.activation))
        dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        self.dtype_ = dtype
        self.theta_ = train(
            self.mlp_, torch.as_tensor(np.asarray(X)).to(dtype), torch.as_tensor(np.asarray(y)).long(), cfg
        ).theta
        self.classes_ = np.arange(int(self.n_classes))
        return self

    def predict_proba(self, X):
        with torch.no_grad():
            logits = self.mlp_.forward(self.theta_, torch.as_tensor(np.asarray(X)).to(self.dtype_))
        return torch.softmax(logits.double(), -1).numpy()

    def predict(self, X):
        return self.predict_proba(X).argmax(1)


def _cleanlab_scores(run, progress, folds: int = 5) -> tuple[np.ndarray, dict]:
    from cleanlab.filter import find_label_issues  # heavy import: only when the cleanlab signal is asked for

    ds = run.dataset
    y = ds.y_train
    est = RecipeClassifier(
        tuple(run.mlp.config.hidden), run.mlp.config.activation, run.train_config.to_dict(), ds.n_classes
    )
    counts = np.bincount(y, minlength=ds.n_classes)
    k = int(max(2, min(folds, counts[counts > 0].min())))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=run.train_config.seed)
    probs = cross_val_predict(est, ds.X_train, y, cv=cv, method="predict_proba")
    ranked = find_label_issues(labels=y, pred_probs=probs, return_indices_ranked_by="self_confidence")
    scores = 1.0 - probs[np.arange(len(y)), y]
    scores[ranked] += 1.0  # flagged issues first, in cleanlab's order (self-confidence)
    return scores, {"flagged": int(len(ranked)), "folds": k}


def compute_signals(
    run,
    signals: Sequence[str] | None = None,
    progress: Callable | None = None,
    recorder: TrajectoryRecorder | None = None,
) -> dict[str, SignalResult]:
    """Every requested signal (default: all) as ``{id: SignalResult}``, in order
    (``recorder``: see :func:`compute_signal`; without one, the trajectory signals share
    one replay of the recipe)."""
    ids = parse_signals(signals)
    wanted = [s for s in ids if s in TRAJECTORY_SIGNALS]
    if wanted and (recorder is None or any(s not in recorder.signals() for s in wanted)):
        with_si = "forward-only-trajectory" in wanted
        if with_si:
            _require_examples(run, "forward-only self-influence")
        recorder, replayed = record(run, with_si, _stage(progress, "replay"))
    else:
        replayed = 0.0
    out = {}
    for i, s in enumerate(ids):
        if progress is not None and progress(Progress("rank", i, len(ids), {"signal": s})) is False:
            raise CancelledError("ranking cancelled; nothing was stored.")
        out[s] = compute_signal(run, s, progress, recorder)
        if s in TRAJECTORY_SIGNALS and replayed:
            out[s].setup_seconds, out[s].meta["replayed"] = replayed, True
    if progress is not None:
        progress(Progress("rank", len(ids), len(ids), {}))
    return out
