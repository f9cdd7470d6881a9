"""Datasets: built-in toy tasks and user files, split, checked and optionally label-noised.

Interface:

- :func:`load_dataset` ``(source, *, seed, test_fraction, label_noise, ...) -> Dataset``
- :func:`load_queries` ``(source, train) -> (X_query [q, d], y_query [q] | None)``
- :data:`BUILTIN_DATASETS` and :func:`describe_builtin` for the app.

Sources: the built-ins ``digits`` (8x8 images), ``mnist1d`` (40-step signals, generated
offline), ``breast_cancer`` (tabular, standardised on the training split) and ``moons``
(2-D points); or a path to an ``.npz`` file (arrays ``X``, ``y``, optional ``groups``) or a
``.csv`` file (a ``label_column``, an optional ``group_column``, every other column a
numeric feature; the note columns ``given_label``, ``change``, ``train_row`` of a cleaned
file written by ``attrcore export`` are recognised as notes, not features).

Everything is deterministic in ``seed``: the split uses ``random_state=seed`` and the label
noise a separate stream derived from it, so adding noise never moves the split. A
:class:`Dataset` carries a JSON-able ``spec`` with which ``load_dataset(**spec)`` rebuilds it.

User files are never unpickled (``np.load(..., allow_pickle=False)``); every problem a user
can cause raises :class:`DataError`, :class:`ConfigError` or :class:`ShapeError` with a
message that says how to fix it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import operator
import os
import random
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..errors import ConfigError, DataError, ShapeError
from .files import (
    _FILE_SUFFIXES,
    _check_features,
    _check_label_shape,
    _first,
    _label_strings,
    _queries_from_csv,
    _Raw,
    _raw_from_csv,
    _raw_from_npz,
    _read_csv,
    _read_npz,
    _refuse_file_options,
)

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "mnist1d", "breast_cancer", "moons")

_DESCRIPTIONS = {
    "digits": "Handwritten digits: 1,797 8x8 grey images, 10 classes (scikit-learn).",
    "mnist1d": "MNIST-1D: 5,000 one-dimensional signals of length 40, 10 classes, "
    "generated offline; fixed 4,000/1,000 split.",
    "breast_cancer": "Breast cancer Wisconsin: 569 patients, 30 measurements, malignant vs benign; standardised.",
    "moons": "Two interleaving half-moons: 2-D points, 2 classes (500 points, noise 0.2).",
}
_NOISE_STREAM = 1  # mixed into the seed: label noise draws never shift the split
_MNIST1D_CACHE_VERSION = 1


def describe_builtin(name: str) -> str:
    """One-line description of a built-in dataset, for the app."""
    if name not in _DESCRIPTIONS:
        raise ConfigError(_unknown_name_message(name))
    return _DESCRIPTIONS[name]


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test split ready for training and attribution.

    Shapes: ``X_train [n, d]`` float32, ``y_train [n]`` int64 (after label noise),
    ``X_test [n_test, d]``, ``y_test [n_test]`` (``n_test`` may be 0: ``test_fraction=0``
    without an evaluation file). Labels are ``0..n_classes-1``;
    ``class_names[c]`` is the original label value of class ``c`` as a string.
    ``flipped`` holds the sorted training indices whose label noise changed the label
    (``y_train[flipped] != y_train_clean[flipped]``). ``train_rows`` / ``test_rows`` map
    each example back to its row in the original data (``test_rows``: in the evaluation
    file when there is one). ``load_dataset(**spec)`` rebuilds the same dataset.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    kind: str  # "image" | "signal" | "tabular" | "points": how the app draws an example
    image_shape: tuple[int, int] | None
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    train_groups: np.ndarray | None  # [n] str
    test_groups: np.ndarray | None  # [n_test] str
    y_train_clean: np.ndarray
    flipped: np.ndarray
    train_rows: np.ndarray
    test_rows: np.ndarray
    spec: dict
    # Standardisation x -> (x - feature_mean) / feature_scale, from the training split
    # (None when the features are used as they are). load_queries applies the same.
    feature_mean: np.ndarray | None = None  # [d] float64
    feature_scale: np.ndarray | None = None  # [d] float64

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Raw features ``[q, d]`` → the model's inputs (this dataset's standardisation)."""
        X = np.asarray(X)
        if self.feature_mean is None:
            return np.ascontiguousarray(X, dtype=np.float32)
        return np.ascontiguousarray((X - self.feature_mean) / self.feature_scale, dtype=np.float32)

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.X_test.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    def fingerprint(self) -> str:
        """Short sha256 hex of the spec and every array: a cache key for this exact data."""
        h = hashlib.sha256()
        meta = {
            "spec": self.spec,
            "name": self.name,
            "kind": self.kind,
            "feature_names": self.feature_names,
            "class_names": self.class_names,
        }
        h.update(json.dumps(meta, sort_keys=True).encode())
        arrays = (
            self.X_train,
            self.y_train,
            self.X_test,
            self.y_test,
            self.y_train_clean,
            self.flipped,
            self.train_rows,
            self.test_rows,
        )
        for arr in arrays:
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        for groups in (self.train_groups, self.test_groups):
            h.update(b"\x00groups" if groups is not None else b"\x00none")
            if groups is not None:
                h.update("\x1f".join(groups.tolist()).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, kind={self.kind!r}, n_train={self.n_train}, "
            f"n_test={self.n_test}, n_features={self.n_features}, "
            f"n_classes={self.n_classes}, flipped={len(self.flipped)})"
        )


def load_dataset(
    source: str | os.PathLike,
    *,
    seed: int = 0,
    test_fraction: float | None = None,
    label_noise: float = 0.0,
    label_column: str | None = None,
    group_column: str | None = None,
    n_samples: int | None = None,
    noise: float | None = None,
    noise_pairs: str | Sequence | None = None,
    noise_seed: int | None = None,
    eval_source: str | os.PathLike | None = None,
    standardize: bool | None = None,
) -> Dataset:
    """Load, split and check a dataset; optionally flip a fraction of training labels.

    ``source`` is a name in :data:`BUILTIN_DATASETS` or a path to a ``.npz`` / ``.csv``
    file. ``n_samples`` and ``noise`` apply to ``moons`` only; ``label_column`` and
    ``group_column`` to CSV files only. ``label_noise`` is the fraction of training
    examples whose label is replaced by a different class, chosen uniformly; with
    ``noise_pairs`` (``"7:1,2:5"`` or ``[("7", "1"), ...]``, class names as in
    ``class_names``) it is class-conditional instead: ``label_noise`` of each source
    class's training examples get its partner's label. ``noise_seed`` (default: ``seed``)
    seeds the noise alone, so several noise draws share one split.

    The split: ``test_fraction`` (default 0.2) of the rows are held out, stratified;
    ``test_fraction=0`` trains on every row (no test split). ``eval_source`` (an NPZ or
    CSV with the training data's features and labels) is the user's own evaluation set:
    then every row of ``source`` is trained on and the evaluation file is the test split
    (``test_fraction`` must be left unset or 0).

    ``standardize``: rescale every feature to mean 0 and standard deviation 1 with the
    statistics of the training split (applied to the test split and to queries too).
    Default: on for user tables (files with more than two features), off for 2-D points,
    the built-in's own choice for built-ins (breast_cancer on, the others off).
    """
    seed = _check_seed(seed)
    if eval_source is not None:
        if test_fraction not in (None, 0, 0.0):
            raise ConfigError(
                f"`test_fraction` = {test_fraction} and an evaluation file (`eval_source`) were both given; "
                "with an evaluation file every training row is trained on: leave `test_fraction` unset or 0."
            )
        test_fraction = 0.0
    test_fraction = _check_fraction("test_fraction", 0.2 if test_fraction is None else test_fraction, low_open=False)
    label_noise = _check_fraction("label_noise", label_noise, low_open=False)
    if noise_seed is not None:
        noise_seed = _check_seed(noise_seed)
    if standardize is not None and not isinstance(standardize, (bool, np.bool_)):
        raise ConfigError(f"standardize must be True, False or None (the default), got {standardize!r}.")

    if isinstance(source, str) and source in BUILTIN_DATASETS:
        _refuse_file_options(source, label_column, group_column)
        if source != "moons" and (n_samples is not None or noise is not None):
            raise ConfigError(f"n_samples and noise only apply to 'moons', not to {source!r}; leave them unset.")
        if source == "moons":
            n_samples, noise = _check_moons_options(n_samples, noise)
            raw = _load_moons(seed, n_samples, noise)
        else:
            raw = _BUILTIN_LOADERS[source](seed)
        spec_source = source
    else:
        path = _resolve_file(source)
        if n_samples is not None or noise is not None:
            raise ConfigError(
                f"n_samples and noise only apply to the built-in 'moons'; leave them unset for the file {path.name}."
            )
        if path.suffix.lower() == ".npz":
            _refuse_file_options(path.name, label_column, group_column)
            raw = _raw_from_npz(path)
        else:
            raw = _raw_from_csv(path, label_column, group_column)
        spec_source = str(path)

    raw_default = raw.standardise
    if standardize is None:
        # user tables: on; 2-D points keep their coordinates (they are drawn as they are)
        standardize = raw_default if spec_source in BUILTIN_DATASETS else raw.kind == "tabular"
    raw = dataclasses.replace(raw, standardise=bool(standardize))
    evaluation = None
    eval_spec = None
    if eval_source is not None:
        eval_path = _resolve_file(eval_source)
        evaluation = _eval_rows(eval_path, raw, spec_source, label_column, group_column)
        eval_spec = str(eval_path)

    spec = {
        "source": spec_source,
        "seed": seed,
        "test_fraction": test_fraction,
        "label_noise": label_noise,
        "label_column": label_column,
        "group_column": group_column,
        "n_samples": n_samples,
        "noise": noise,
    }
    # recorded only where it matters, so the spec (and fingerprint) of a built-in used its
    # own way is unchanged; a user file always records whether it was standardised
    if eval_spec is not None:
        spec["eval_source"] = eval_spec
    if spec_source not in BUILTIN_DATASETS or bool(standardize) != raw_default:
        spec["standardize"] = bool(standardize)
    pairs = parse_noise_pairs(noise_pairs, raw.class_names) if noise_pairs is not None else None
    # only recorded when used, so the spec (and fingerprint) of noise-free data is unchanged
    if pairs is not None:
        spec["noise_pairs"] = [[raw.class_names[a], raw.class_names[b]] for a, b in pairs]
    if noise_seed is not None:
        spec["noise_seed"] = noise_seed
    return _assemble(
        raw,
        seed=seed,
        test_fraction=test_fraction,
        label_noise=label_noise,
        spec=spec,
        noise_pairs=pairs,
        noise_seed=seed if noise_seed is None else noise_seed,
        evaluation=evaluation,
    )


def rebuild_dataset(spec: dict) -> Dataset:
    """``load_dataset(**spec)`` for a spec recorded by any version of attrcore.

    Specs written before standardisation was an option have no ``standardize`` key; their
    user files were used unscaled and the built-ins their own way, so that is what they get.
    """
    spec = dict(spec)
    if "standardize" not in spec:
        spec["standardize"] = None if spec.get("source") in BUILTIN_DATASETS else False
    return load_dataset(**spec)


def parse_noise_pairs(pairs: str | Sequence, class_names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Confusion pairs ``"7:1,2:5"`` (or ``[("7", "1"), ...]``) → class ids ``((a, b), ...)``:
    examples of class ``a`` get label ``b``. Names are matched against ``class_names``."""
    names = [str(c) for c in class_names]
    if isinstance(pairs, str):
        items = [p.strip() for p in pairs.replace(" ", ",").split(",") if p.strip()]
        parts = [tuple(p.split(":")) for p in items]
    else:
        parts = [tuple(str(x) for x in p) for p in pairs]
    if not parts:
        raise ConfigError("noise pairs are empty; write them as 'SOURCE:TARGET,...', e.g. '7:1,2:5'.")
    out: list[tuple[int, int]] = []
    for part in parts:
        if len(part) != 2 or not all(x.strip() for x in part):
            raise ConfigError(
                f"noise pair {':'.join(part)!r} is not 'SOURCE:TARGET'; write pairs like '7:1,2:5' "
                "(examples of class 7 get label 1)."
            )
        a, b = (x.strip() for x in part)
        for c in (a, b):
            if c not in names:
                raise ConfigError(
                    f"noise pair {a}:{b} names class {c!r}, which is not in the data; its classes are "
                    f"{_first(names, 12)}."
                )
        if a == b:
            raise ConfigError(f"noise pair {a}:{b} maps a class onto itself; pick two different classes.")
        ia, ib = names.index(a), names.index(b)
        if any(ia == x for x, _ in out):
            raise ConfigError(f"class {a!r} is the source of two noise pairs; give each source class one target.")
        out.append((ia, ib))
    return tuple(out)


def no_test_split_message(name: str) -> str:
    """What to do when held-out queries are needed but the data has no test split."""
    return (
        f"{name!r} has no test split (it was loaded with `test_fraction` 0: every row is trained on), so there "
        "are no held-out queries; pass queries from a file (`query_file`: an NPZ with X and y, or a CSV with the "
        "training columns), or train with your own evaluation file (`eval_source`) or a `test_fraction` above 0 "
        "(e.g. 0.2)."
    )


def load_queries(source: str | os.PathLike | None, train: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """Query examples to score against ``train``: ``(X [q, d] float32, y [q] int64 | None)``.

    ``None`` or the training set's own name gives its test split. A ``.npz`` path reads
    ``X`` and, when present, ``y``; a ``.csv`` path reads the training label column when
    the file has it. Labels are mapped through ``train.class_names``; features get the
    training data's standardisation (``train.transform``).
    """
    if source is None or (isinstance(source, str) and source == train.name):
        if train.n_test == 0:
            raise ConfigError(no_test_split_message(train.name))
        return train.X_test, train.y_test
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        raise ConfigError(
            f"queries {source!r} are a different built-in dataset than the training data "
            f"{train.name!r}; leave the queries empty to use {train.name!r}'s test split, "
            "or pass a .npz / .csv file with the same features."
        )
    path = _resolve_file(source)
    if path.suffix.lower() == ".npz":
        arrays = _read_npz(path, required=("X",), optional=("y",))
        X = _check_features(arrays["X"], path.name)
        y_raw = arrays.get("y")
    else:
        X, y_raw = _queries_from_csv(path, train)
    if X.shape[1] != train.n_features:
        raise ShapeError(
            f"{path.name} has {X.shape[1]} features per example but the training data "
            f"{train.name!r} has {train.n_features}; the queries need the same columns as "
            "the training data."
        )
    X = train.transform(X)  # the training data's standardisation, if any
    if y_raw is None:
        return X, None
    y_raw = _check_label_shape(y_raw, len(X), path.name)
    return X, _encode_query_labels(y_raw, train, path.name)


# --------------------------------------------------------------------------- assembling


def _assemble(
    raw: _Raw,
    *,
    seed: int,
    test_fraction: float,
    label_noise: float,
    spec: dict,
    noise_pairs: tuple[tuple[int, int], ...] | None = None,
    noise_seed: int | None = None,
    evaluation: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
) -> Dataset:
    n_classes = len(raw.class_names)
    if test_fraction == 0:
        train_rows, test_rows = np.arange(len(raw.y), dtype=np.int64), np.empty(0, dtype=np.int64)
    elif raw.ordered_split:
        train_rows, test_rows = _ordered_split(raw, test_fraction)
    else:
        train_rows, test_rows = _stratified_split(raw, seed, test_fraction)

    X_train, X_test = raw.X[train_rows], raw.X[test_rows]
    y_test = raw.y[test_rows]
    groups = raw.groups
    test_groups = None if groups is None else groups[test_rows]
    if evaluation is not None:  # the user's own evaluation file is the test split
        X_test, y_test, test_groups = evaluation
        test_rows = np.arange(len(y_test), dtype=np.int64)
    mean = scale = None
    if raw.standardise:
        # Statistics from the training split only, so nothing leaks from the test split.
        mean = X_train.astype(np.float64).mean(axis=0)
        scale = X_train.astype(np.float64).std(axis=0)
        scale[scale == 0] = 1.0
        X_train = (X_train - mean) / scale
        X_test = (X_test - mean) / scale

    y_clean = raw.y[train_rows]
    noise_seed = seed if noise_seed is None else noise_seed
    y_train, flipped = _flip_labels(y_clean, n_classes, label_noise, noise_seed, noise_pairs)
    return Dataset(
        name=raw.name,
        X_train=np.ascontiguousarray(X_train, dtype=np.float32),
        y_train=y_train,
        X_test=np.ascontiguousarray(X_test, dtype=np.float32).reshape(len(y_test), raw.X.shape[1]),
        y_test=np.ascontiguousarray(y_test, dtype=np.int64),
        n_classes=n_classes,
        kind=raw.kind,
        image_shape=raw.image_shape,
        feature_names=raw.feature_names,
        class_names=raw.class_names,
        train_groups=None if groups is None else groups[train_rows],
        test_groups=test_groups,
        y_train_clean=np.ascontiguousarray(y_clean, dtype=np.int64),
        flipped=flipped,
        train_rows=train_rows,
        test_rows=test_rows,
        spec=spec,
        feature_mean=mean,
        feature_scale=scale,
    )


def _eval_rows(
    path: Path, raw: _Raw, source: str, label_column: str | None, group_column: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The evaluation file's ``(X [q, d] raw, y [q] codes, groups [q] | None)``, checked
    against the training data: same features (CSV columns in any order), labels among the
    training classes. Standardisation happens later, with the training statistics."""
    like = SimpleNamespace(
        name=raw.name,
        class_names=raw.class_names,
        n_classes=len(raw.class_names),
        feature_names=raw.feature_names,
        spec={"source": source, "label_column": label_column, "group_column": group_column},
    )
    groups = None
    if path.suffix.lower() == ".npz":
        arrays = _read_npz(path, required=("X", "y"), optional=("groups",))
        X = _check_features(arrays["X"], path.name)
        y_raw = arrays["y"]
        if "groups" in arrays and raw.groups is not None:
            groups = np.asarray(arrays["groups"]).astype(str)
    else:
        df = _read_csv(path)
        if label_column is None or label_column not in df.columns:
            raise DataError(
                f"the evaluation file {path.name} has no label column {label_column!r}; it needs the "
                "training file's label column (and the same feature columns)."
            )
        X, y_raw = _queries_from_csv(path, like)
        if group_column is not None and group_column in df.columns:
            groups = df[group_column].to_numpy().astype(str)
    if X.shape[1] != raw.X.shape[1]:
        raise ShapeError(
            f"the evaluation file {path.name} has {X.shape[1]} features per example but the training "
            f"data {raw.name!r} has {raw.X.shape[1]}; it needs the same columns as the training data."
        )
    y_raw = _check_label_shape(y_raw, len(X), path.name)
    y = _encode_query_labels(y_raw, like, f"the evaluation file {path.name}")
    if groups is not None and len(groups) != len(y):
        groups = None
    return X, y, groups


def _stratified_split(raw: _Raw, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # heavy import, only when splitting

    n, n_classes = len(raw.y), len(raw.class_names)
    counts = np.bincount(raw.y, minlength=n_classes)
    smallest = int(np.argmin(counts))
    if counts[smallest] < 2:
        raise DataError(
            f"class {raw.class_names[smallest]!r} of {raw.name!r} has only "
            f"{counts[smallest]} example(s); a stratified train/test split needs at least 2 "
            "per class. Add examples of that class or remove its rows."
        )
    n_test = math.ceil(test_fraction * n)  # the rounding scikit-learn uses
    if n_test < n_classes or n - n_test < n_classes:
        raise ConfigError(
            f"test_fraction={test_fraction:g} puts {n_test} of {n} examples in the test "
            f"split, but a stratified split needs at least {n_classes} (one per class) on "
            f"each side; choose test_fraction between {n_classes / n:.3g} and "
            f"{1 - n_classes / n:.3g}, or add data."
        )
    try:
        train_rows, test_rows = train_test_split(
            np.arange(n, dtype=np.int64),
            stratify=raw.y,
            test_size=test_fraction,
            random_state=seed,
        )
    except ValueError as err:  # sklearn's own checks; ours above should catch them first
        raise DataError(
            f"cannot split {raw.name!r} into train and test: {err}. "
            "Try another test_fraction or add examples of the rare classes."
        ) from err
    return np.asarray(train_rows, dtype=np.int64), np.asarray(test_rows, dtype=np.int64)


def _ordered_split(raw: _Raw, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last ``round(test_fraction * n)`` rows are the test split (MNIST-1D's own rule)."""
    n, n_classes = len(raw.y), len(raw.class_names)
    n_test = round(test_fraction * n)
    if n_test < 1 or n - n_test < n_classes:
        raise ConfigError(
            f"test_fraction={test_fraction:g} leaves {n - n_test} training and {n_test} test "
            f"examples of {n}; choose test_fraction between {1 / n:.3g} and "
            f"{1 - n_classes / n:.3g}, e.g. 0.2."
        )
    rows = np.arange(n, dtype=np.int64)
    return rows[: n - n_test], rows[n - n_test :]


def _flip_labels(
    y: np.ndarray,
    n_classes: int,
    label_noise: float,
    seed: int,
    pairs: tuple[tuple[int, int], ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Give ``round(label_noise * n)`` examples a different class, uniform over the others;
    with ``pairs`` ``((a, b), ...)``: ``round(label_noise * n_a)`` examples of each class
    ``a`` (drawn without replacement) get label ``b``. Returns ``(labels, flipped rows)``."""
    if pairs:
        return _flip_pairs(y, label_noise, seed, pairs)
    n = len(y)
    k = round(label_noise * n)
    noisy = np.array(y, dtype=np.int64, copy=True)
    if k == 0:
        return noisy, np.empty(0, dtype=np.int64)
    rng = np.random.default_rng([seed, _NOISE_STREAM])
    flipped = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
    shift = rng.integers(1, n_classes, size=k)  # 1..C-1: never the original class
    noisy[flipped] = (noisy[flipped] + shift) % n_classes
    return noisy, flipped


def _flip_pairs(
    y: np.ndarray, label_noise: float, seed: int, pairs: tuple[tuple[int, int], ...]
) -> tuple[np.ndarray, np.ndarray]:
    noisy = np.array(y, dtype=np.int64, copy=True)
    rng = np.random.default_rng([seed, _NOISE_STREAM, 2])  # its own stream: uniform draws unchanged
    chosen = []
    for a, b in pairs:
        members = np.flatnonzero(y == a)
        k = round(label_noise * len(members))
        if k:
            pick = rng.choice(members, size=k, replace=False)
            noisy[pick] = b
            chosen.append(pick)
    flipped = np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.empty(0, dtype=np.int64)
    return noisy, flipped


# --------------------------------------------------------------------------- built-ins


def _load_digits(seed: int) -> _Raw:
    from sklearn.datasets import load_digits  # heavy import, only for this built-in

    bunch = load_digits()
    return _Raw(
        name="digits",
        X=(bunch.data / 16.0).astype(np.float32),
        y=bunch.target.astype(np.int64),
        class_names=tuple(str(int(c)) for c in bunch.target_names),
        feature_names=tuple(bunch.feature_names),
        kind="image",
        image_shape=(8, 8),
    )


def _load_breast_cancer(seed: int) -> _Raw:
    from sklearn.datasets import load_breast_cancer  # heavy import, only for this built-in

    bunch = load_breast_cancer()
    return _Raw(
        name="breast_cancer",
        X=bunch.data.astype(np.float32),
        y=bunch.target.astype(np.int64),
        class_names=tuple(str(c) for c in bunch.target_names),
        feature_names=tuple(str(f) for f in bunch.feature_names),
        kind="tabular",
        standardise=True,
    )


def _check_moons_options(n_samples: int | None, noise: float | None) -> tuple[int, float]:
    if n_samples is None:
        n_samples = 500
    try:
        n_samples = operator.index(n_samples)
    except TypeError:
        raise ConfigError(f"n_samples must be a whole number, got {n_samples!r}.") from None
    if n_samples < 10:
        raise ConfigError(f"n_samples must be at least 10 for 'moons', got {n_samples}.")
    noise = 0.2 if noise is None else noise
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.number)):
        raise ConfigError(f"noise must be a number, got {noise!r}.")
    noise = float(noise)
    if not (math.isfinite(noise) and noise >= 0):
        raise ConfigError(f"noise must be a finite number >= 0, got {noise}; try 0.2.")
    return n_samples, noise


def _load_moons(seed: int, n_samples: int, noise: float) -> _Raw:
    from sklearn.datasets import make_moons  # heavy import, only for this built-in

    X, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return _Raw(
        name="moons",
        X=X.astype(np.float32),
        y=y.astype(np.int64),
        class_names=("0", "1"),
        feature_names=("x0", "x1"),
        kind="points",
    )


def _load_mnist1d(seed: int) -> _Raw:
    X, y = _mnist1d_arrays(seed)
    return _Raw(
        name="mnist1d",
        X=X,
        y=y,
        class_names=tuple(str(c) for c in range(10)),
        feature_names=tuple(f"t{i}" for i in range(X.shape[1])),
        kind="signal",
        ordered_split=True,
    )


_BUILTIN_LOADERS = {
    "digits": _load_digits,
    "mnist1d": _load_mnist1d,
    "breast_cancer": _load_breast_cancer,
}


def _cache_dir() -> Path:
    home = os.environ.get("ATTRCORE_HOME") or "~/.attrcore"
    return Path(home).expanduser() / "cache"


def _mnist1d_arrays(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All MNIST-1D rows in the package's order: ``(X [5000, 40] float32, y [5000])``.

    The package's own split puts the first 80 % in train and the rest in test; with the
    default ``test_fraction=0.2`` :func:`_ordered_split` reproduces it (4000 / 1000).
    Generation takes a few seconds, so the arrays are cached as NPZ under
    ``$ATTRCORE_HOME/cache`` keyed by seed and package version.
    """
    try:
        version = metadata.version("mnist1d")
    except metadata.PackageNotFoundError:
        raise DataError(
            "the 'mnist1d' dataset needs the mnist1d package; install it with "
            "`pip install mnist1d` (generation is offline, nothing is downloaded)."
        ) from None
    path = _cache_dir() / f"mnist1d-seed{seed}-v{version}-c{_MNIST1D_CACHE_VERSION}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                X, y = cached["X"], cached["y"]
            if X.ndim == 2 and y.ndim == 1 and len(X) == len(y):
                return X.astype(np.float32), y.astype(np.int64)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass  # a broken cache file is regenerated below

    from mnist1d.data import get_dataset_args, make_dataset  # offline generator only

    args = get_dataset_args()
    args.seed = seed
    # make_dataset reseeds the global `random` and `np.random` streams; restore them so
    # loading data never changes the caller's randomness.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    X = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, X=X, y=y)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    except OSError:
        pass  # caching is an optimisation; an unwritable home only costs time
    return X, y


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool):
        raise ConfigError(f"seed must be a whole number, got {seed!r}.")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise ConfigError(f"seed must be a whole number, got {seed!r}.") from None
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be between 0 and 2**32 - 1, got {seed}.")
    return int(seed)


def _check_fraction(name: str, value: object, *, low_open: bool) -> float:
    interval = "(0, 1)" if low_open else "[0, 1)"  # test_fraction may be 0: train on every row
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ConfigError(f"{name} must be a number in {interval}, got {value!r}.")
    value = float(value)
    low_ok = value > 0 if low_open else value >= 0
    if not (math.isfinite(value) and low_ok and value < 1):
        hint = (
            "e.g. 0.2, or 0 to train on every row"
            if name == "test_fraction"
            else "0 for clean labels, e.g. 0.1 to flip 10 %"
        )
        raise ConfigError(f"{name} must be in {interval}, got {value}; {hint}.")
    return value


def _resolve_file(source: object) -> Path:
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(
            f"source must be a built-in dataset name or a file path, got {source!r}; "
            f"built-ins: {', '.join(BUILTIN_DATASETS)}."
        )
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix not in _FILE_SUFFIXES:
        if path.exists():
            raise DataError(
                f"{path.name} is neither an .npz nor a .csv file; save the data with "
                "np.savez(path, X=X, y=y) or as a CSV with a label column."
            )
        raise ConfigError(_unknown_name_message(str(source)))
    if not path.exists():
        raise DataError(f"file not found: {path}. Check the path and the working directory.")
    if not path.is_file():
        raise DataError(f"{path} is not a file; pass the path of a .npz or .csv file.")
    return path.resolve()


def _unknown_name_message(name: str) -> str:
    return (
        f"unknown dataset {name!r}; built-ins are {', '.join(BUILTIN_DATASETS)}, "
        "or pass the path of a .npz (arrays X, y) or .csv file."
    )


def _encode_query_labels(y: np.ndarray, train: Dataset, where: str) -> np.ndarray:
    text = _label_strings(y, where)
    lookup = {name: i for i, name in enumerate(train.class_names)}
    from_builtin = train.spec.get("source") in BUILTIN_DATASETS
    if from_builtin and y.dtype.kind in "iuf":
        # Built-in labels are already 0..C-1; their class_names may be words ("benign").
        lookup = {str(i): i for i in range(train.n_classes)}
    unknown = sorted(set(text.tolist()) - set(lookup))
    if unknown:
        raise DataError(
            f"{where} has label(s) {_first(unknown)} that the training data "
            f"{train.name!r} does not have; its classes are {_first(list(lookup), 20)}. "
            "Drop those rows or relabel them."
        )
    return np.array([lookup[t] for t in text.tolist()], dtype=np.int64)
