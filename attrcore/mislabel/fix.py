"""Acting on the marks: apply them to the data, retrain with the same recipe, export.

Interface: :func:`apply_marks` ``(dataset, marks) -> CleanedData`` (removed rows dropped,
relabelled rows changed, a ``change`` column saying what happened to each row);
:func:`retrain_with_marks` ``(run, marks, progress) -> dict`` (test accuracy of the run's
model, of the same recipe on the cleaned data and, when the flips are known, on the clean
labels); :func:`fix_top` (the "fix the top k % by signal X" shortcut);
:func:`export_csv` / :func:`export_npz` / :func:`export_bytes`.

Retraining uses the run's recipe exactly (MLP shape, SGD settings, seed) without
simulation; a cancelled retrain raises :class:`~attrcore.errors.CancelledError` and
changes nothing (marks live in the store and are only read here).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.files import EXPORT_NOTE_COLUMNS
from ..engine.train import train
from ..errors import ConfigError, DataError
from .marks import Mark

__all__ = [
    "CleanedData",
    "apply_marks",
    "export_bytes",
    "export_csv",
    "export_npz",
    "fix_top",
    "retrain_with_marks",
    "test_accuracy",
]


@dataclass
class CleanedData:
    """The training split after the marks: ``X [n', d]``, ``y [n']`` (class ids), ``rows
    [n']`` (training index of each kept row), ``y_given [n']`` (label before the marks),
    ``change [n']`` ("" / "relabelled 7 → 1"), ``removed [k]`` (training indices dropped)."""

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    y_given: np.ndarray
    change: np.ndarray
    removed: np.ndarray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    label_column: str = "label"  # the source CSV's own label column, else "label"
    groups: np.ndarray | None = None  # [n'] str, the kept rows' groups when the data has them
    group_column: str = "group"

    @property
    def n_relabelled(self) -> int:
        return int((self.y != self.y_given).sum())

    @property
    def n_removed(self) -> int:
        return int(len(self.removed))


def apply_marks(dataset, marks: Mapping[int, Mark]) -> CleanedData:
    """Apply ``marks`` to ``dataset``'s training split (``keep`` changes nothing)."""
    n = dataset.n_train
    y = np.array(dataset.y_train, dtype=np.int64, copy=True)
    keep = np.ones(n, dtype=bool)
    names = tuple(str(c) for c in dataset.class_names)
    change = np.array([""] * n, dtype=object)
    for i, m in marks.items():
        if not 0 <= i < n:
            raise DataError(f"mark for example {i} is outside the training set (0..{n - 1}).")
        if m.action == "remove":
            keep[i] = False
        elif m.action == "relabel" and m.label != y[i]:
            change[i] = f"relabelled {names[y[i]]} -> {names[m.label]}"
            y[i] = m.label
    if not keep.any():
        raise DataError("the marks remove every training example; keep at least one of each class you train on.")
    rows = np.flatnonzero(keep)
    spec = getattr(dataset, "spec", None) or {}
    groups = getattr(dataset, "train_groups", None)
    return CleanedData(
        X=np.asarray(dataset.X_train)[rows],
        y=y[rows],
        rows=rows,
        y_given=np.asarray(dataset.y_train)[rows],
        change=change[rows].astype(str),
        removed=np.flatnonzero(~keep),
        class_names=names,
        feature_names=tuple(dataset.feature_names),
        label_column=spec.get("label_column") or "label",
        groups=None if groups is None else np.asarray(groups).astype(str)[rows],
        group_column=spec.get("group_column") or "group",
    )


def fix_top(scores, fraction: float, dataset, how: str = "oracle", predictions=None) -> dict[int, Mark]:
    """Marks for the top ``fraction`` of examples by ``scores [n]`` (higher = suspicious).

    ``how``: ``"oracle"`` relabels the inspected examples whose label was flipped back to
    their clean label and keeps the rest (the benchmark case: the flips are known, as a
    careful reviewer would find); ``"remove"`` removes all of them; ``"predicted"``
    relabels them to the model's prediction (``predictions [n]``).
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"the fraction to fix must be in (0, 1], got {fraction}; e.g. 0.15 for the top 15 %.")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (dataset.n_train,):
        raise DataError(f"{scores.shape[0]} scores for {dataset.n_train} training examples; rank the same run.")
    k = max(1, int(round(fraction * len(scores))))
    top = np.argsort(-scores, kind="stable")[:k]
    if how == "oracle":
        if len(dataset.flipped) == 0:
            raise ConfigError(
                "the oracle fix needs known flips (data with injected label noise); use how='remove' "
                "or 'predicted' for data whose errors are unknown."
            )
        clean = dataset.y_train_clean
        return {
            int(i): (Mark(int(i), "relabel", int(clean[i])) if clean[i] != dataset.y_train[i] else Mark(int(i), "keep"))
            for i in top
        }
    if how == "remove":
        return {int(i): Mark(int(i), "remove") for i in top}
    if how == "predicted":
        if predictions is None:
            raise ConfigError("how='predicted' needs the model's predictions.")
        pred = np.asarray(predictions)
        return {
            int(i): (Mark(int(i), "relabel", int(pred[i])) if pred[i] != dataset.y_train[i] else Mark(int(i), "keep"))
            for i in top
        }
    raise ConfigError(f"unknown fix {how!r}; choose oracle, remove or predicted.")


def test_accuracy(mlp, theta, dataset) -> float:
    """Accuracy of parameters ``theta`` on the dataset's test split."""
    X = torch.as_tensor(dataset.X_test).to(theta.dtype)
    with torch.no_grad():
        pred = mlp.forward(theta, X).argmax(1).numpy()
    return float((pred == dataset.y_test).mean())


def _retrain(run, X, y, progress):
    dtype = torch.float64 if run.train_config.dtype == "float64" else torch.float32
    out = train(run.mlp, torch.as_tensor(X).to(dtype), torch.as_tensor(y).long(), run.train_config, progress=progress)
    return out.theta


def retrain_with_marks(
    run, marks: Mapping[int, Mark], progress: Callable | None = None, with_clean: bool = True
) -> dict:
    """Retrain the run's recipe on the marked data and compare test accuracies.

    Returns ``{"before", "after", "clean" (None unless the flips are known), "recovered"
    (share of the clean-vs-noisy gap closed, None without a clean model or a gap),
    "n_relabelled", "n_removed", "n_train"}``. ``before`` is the run's own model.
    """
    ds = run.dataset
    cleaned = apply_marks(ds, marks)
    before = test_accuracy(run.mlp, run.theta, ds)
    after = test_accuracy(run.mlp, _retrain(run, cleaned.X, cleaned.y, progress), ds)
    clean = None
    if with_clean and len(ds.flipped):
        clean = test_accuracy(run.mlp, _retrain(run, ds.X_train, ds.y_train_clean, progress), ds)
    recovered = None
    if clean is not None and clean - before > 1e-12:
        recovered = (after - before) / (clean - before)
    fixed_flips = None
    if len(ds.flipped):
        fixed_flips = int(
            sum(
                1
                for i in ds.flipped
                if i in marks
                and (
                    marks[i].action == "remove"
                    or (marks[i].action == "relabel" and marks[i].label == ds.y_train_clean[i])
                )
            )
        )
    return {
        "before": before,
        "after": after,
        "clean": clean,
        "recovered": recovered,
        "n_relabelled": cleaned.n_relabelled,
        "n_removed": cleaned.n_removed,
        "n_train": len(cleaned.y),
        "n_flipped": int(len(ds.flipped)),
        "flips_fixed": fixed_flips,
    }


# ------------------------------------------------------------------------------ export


def _frame(c: CleanedData):
    df = pd.DataFrame(c.X, columns=list(c.feature_names))
    df[c.label_column] = [c.class_names[i] for i in c.y]
    if c.groups is not None:
        df[c.group_column] = c.groups
    notes = dict(zip(EXPORT_NOTE_COLUMNS, ([c.class_names[i] for i in c.y_given], c.change, c.rows)))
    for name, values in notes.items():
        df[name] = values
    return df


def export_bytes(c: CleanedData, fmt: str) -> bytes:
    """The cleaned data, ready to train on as a user file.

    CSV: the features, the label column (the source CSV's own name, else ``label``), the
    group column when the data has groups, then the notes ``given_label``, ``change``
    ("relabelled 7 -> 1" or empty) and ``train_row``, which the CSV loader recognises
    and never reads as features (train with ``label_column`` = that label column).
    NPZ: ``X``, ``y`` (class names), ``groups`` when present — what the NPZ loader reads —
    plus ``y_given``, ``change``, ``rows``, ``removed_rows``, ``class_names``.
    Removed rows are left out (listed in the NPZ)."""
    if fmt == "csv":
        return _frame(c).to_csv(index=False).encode()
    if fmt == "npz":
        buf = io.BytesIO()
        names = np.array(c.class_names)
        np.savez(
            buf,
            X=c.X.astype(np.float32),
            y=names[c.y],
            y_given=names[c.y_given],
            change=c.change.astype(str),
            rows=c.rows,
            removed_rows=c.removed,
            class_names=names,
            **({} if c.groups is None else {"groups": c.groups.astype(str)}),
        )
        return buf.getvalue()
    raise ConfigError(f"export format must be csv or npz, got {fmt!r}.")


def _write(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def export_csv(c: CleanedData, path: str | os.PathLike) -> Path:
    return _write(path, export_bytes(c, "csv"))


def export_npz(c: CleanedData, path: str | os.PathLike) -> Path:
    return _write(path, export_bytes(c, "npz"))


def export(c: CleanedData, path: str | os.PathLike) -> Path:
    """Write ``.csv`` or ``.npz`` by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".npz"):
        raise ConfigError(f"the output must end in .csv or .npz, got {Path(path).name!r}.")
    return _write(path, export_bytes(c, suffix[1:]))
