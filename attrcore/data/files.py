"""User data files (NPZ, CSV): located, read and validated, never unpickled.

Interface: the readers and checks :func:`attrcore.data.datasets.load_dataset` and
:func:`~attrcore.data.datasets.load_queries` use for a path source; every problem a user can cause
raises :class:`DataError`, :class:`ConfigError` or :class:`ShapeError` saying how to fix it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError

if TYPE_CHECKING:  # annotations only: datasets imports this module
    from .datasets import Dataset

_FILE_SUFFIXES = (".npz", ".csv")
_SHOW = 5  # how many offending rows / columns / values a message lists
# The note columns of a cleaned file written by `attrcore export` / relabel
# (attrcore.mislabel.fix): what changed, the label before the change, the row of the
# training split it came from. A CSV holding all three is such an export: they are notes,
# never features, so the exported file trains as it is (label column: `label`).
EXPORT_NOTE_COLUMNS = ("given_label", "change", "train_row")


def _note_columns(columns) -> tuple[str, ...]:
    """The export note columns when ``columns`` has all of them (else none)."""
    return EXPORT_NOTE_COLUMNS if set(EXPORT_NOTE_COLUMNS) <= set(columns) else ()


@dataclass(frozen=True)
class _Raw:
    """All rows of a source before splitting; ``y`` already encoded to ``0..C-1``."""

    name: str
    X: np.ndarray  # [N, d] float32
    y: np.ndarray  # [N] int64
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    kind: str
    image_shape: tuple[int, int] | None = None
    groups: np.ndarray | None = None  # [N] str
    ordered_split: bool = False  # test = the last rows, in the source's own order (mnist1d)
    standardise: bool = False


# --------------------------------------------------------------------------- files


def _refuse_file_options(where: str, label_column: str | None, group_column: str | None) -> None:
    if label_column is not None or group_column is not None:
        raise ConfigError(
            f"label_column and group_column only apply to CSV files, not to {where}; "
            "leave them unset (an NPZ file names its arrays X, y and groups)."
        )


def _read_npz(path: Path, required: tuple[str, ...], optional: tuple[str, ...]) -> dict:
    """Named arrays of an NPZ file, refusing anything that would need pickle."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"cannot read {path.name} as an NPZ archive ({err}); save the data with np.savez(path, X=X, y=y)."
        ) from err
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a bare .npy renamed to .npz
        raise DataError(
            f"{path.name} holds a single array, not an NPZ archive; save the data with np.savez(path, X=X, y=y)."
        )
    with archive:
        keys = list(archive.files)
        missing = [k for k in required if k not in keys]
        if missing:
            raise DataError(
                f"{path.name} has no array {' or '.join(repr(k) for k in missing)}; it holds "
                f"{keys}. Save features as X ([n, d] floats) and labels as y ([n] integers): "
                "np.savez(path, X=X, y=y)."
            )
        out = {}
        for key in (*required, *optional):
            if key not in keys:
                continue
            try:
                out[key] = archive[key]
            except ValueError as err:
                if "pickle" in str(err).lower():
                    raise DataError(
                        f"array {key!r} in {path.name} holds Python objects (dtype=object); "
                        "loading it would need pickle, which attrcore refuses because it can "
                        "run code. Save plain numeric or string arrays, e.g. "
                        f"np.savez(path, {key}=np.asarray(...).astype(float))."
                    ) from err
                raise DataError(f"cannot read array {key!r} of {path.name}: {err}.") from err
            except (OSError, EOFError, zipfile.BadZipFile) as err:
                raise DataError(
                    f"cannot read array {key!r} of {path.name} ({err}); the file may be "
                    "truncated. Save it again with np.savez."
                ) from err
    return out


def _raw_from_npz(path: Path) -> _Raw:
    arrays = _read_npz(path, required=("X", "y"), optional=("groups",))
    X = _check_features(arrays["X"], path.name)
    y_raw = _check_label_shape(arrays["y"], len(X), path.name)
    y, class_names = _encode_labels(y_raw, path.name)
    groups = None
    if "groups" in arrays:
        g = arrays["groups"]
        if g.ndim != 1 or len(g) != len(X):
            raise DataError(
                f"groups in {path.name} has shape {g.shape} but X has {len(X)} rows; "
                "save one group label per row (a 1-D array of length n)."
            )
        groups = g.astype(str)
    d = X.shape[1]
    return _Raw(
        name=path.stem,
        X=X,
        y=y,
        class_names=class_names,
        feature_names=tuple(f"x{i}" for i in range(d)),
        kind="points" if d == 2 else "tabular",
        groups=groups,
    )


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(
            f"cannot read {path.name} as CSV ({err}); save it as comma-separated text with a header row."
        ) from err
    if len(df) == 0:
        raise DataError(f"{path.name} has a header but no data rows; add examples.")
    df.columns = [str(c) for c in df.columns]
    return df


def _raw_from_csv(path: Path, label_column: str | None, group_column: str | None) -> _Raw:
    df = _read_csv(path)
    columns = list(df.columns)
    if label_column is None or label_column not in columns:
        what = "needs a label_column" if label_column is None else f"has no column {label_column!r}"
        raise DataError(f"{path.name} {what}; choose the label column from: {_quote(columns)}.")
    if group_column is not None:
        if group_column not in columns:
            raise DataError(
                f"{path.name} has no group column {group_column!r}; choose one of "
                f"{_quote(columns)}, or leave group_column unset."
            )
        if group_column == label_column:
            raise ConfigError(
                f"{label_column!r} cannot be both the label and the group column; "
                "pick a different group_column or leave it unset."
            )
    if label_column in EXPORT_NOTE_COLUMNS and _note_columns(columns):
        raise ConfigError(
            f"{label_column!r} is a note column of an attrcore export in {path.name} (given_label, change, "
            "train_row say what the marks changed); use the export's label column (the one before "
            "given_label) as label_column."
        )
    features = [c for c in columns if c not in (label_column, group_column, *_note_columns(columns))]
    if not features:
        raise DataError(
            f"{path.name} has no feature columns besides the label"
            f"{' and group' if group_column else ''}; add numeric feature columns."
        )
    X = _csv_features(df, features, path.name)
    y, class_names = _encode_labels(_csv_labels(df, label_column, path.name), path.name)
    groups = None
    if group_column is not None:
        _refuse_missing(df[group_column], group_column, path.name)
        groups = df[group_column].to_numpy().astype(str)
    return _Raw(
        name=path.stem,
        X=X,
        y=y,
        class_names=class_names,
        feature_names=tuple(features),
        kind="points" if len(features) == 2 else "tabular",
        groups=groups,
    )


def _queries_from_csv(path: Path, train: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    df = _read_csv(path)
    label_column = train.spec.get("label_column")
    group_column = train.spec.get("group_column")
    has_label = label_column is not None and label_column in df.columns
    features = [c for c in df.columns if c not in (label_column, group_column, *_note_columns(df.columns))]
    if set(features) == set(train.feature_names):
        features = list(train.feature_names)  # same columns in another order: use train's
    elif str(train.spec.get("source", "")).lower().endswith(".csv"):  # named columns: never by position
        missing = [repr(str(c)) for c in train.feature_names if c not in features]
        extra = [repr(str(c)) for c in features if c not in train.feature_names]
        wanted = _first([repr(str(c)) for c in train.feature_names])
        raise DataError(
            f"{path.name} does not have the feature columns of the training file"
            + (f": missing {_first(missing)}" if missing else "")
            + (f"{',' if missing else ':'} unexpected {_first(extra)}" if extra else "")
            + f"; it needs the training data's columns in any order: {wanted}"
            + (f", plus the label column {label_column!r} where labels are needed." if label_column else ".")
        )
    X = _csv_features(df, features, path.name)
    if not has_label:
        return X, None
    return X, _csv_labels(df, label_column, path.name)


def _csv_features(df: pd.DataFrame, features: list[str], where: str) -> np.ndarray:
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise DataError(
            f"column(s) {_quote(bad)} of {where} are not numeric; drop them or encode them "
            "as numbers (e.g. one-hot with pandas.get_dummies) before loading."
        )
    return _check_features(df[features].to_numpy(dtype=np.float64), where, features)


def _csv_labels(df: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """Raw label values: numbers stay numbers, anything else (words, booleans) becomes text."""
    labels = df[column]
    _refuse_missing(labels, column, where)
    if pd.api.types.is_numeric_dtype(labels) and labels.dtype != bool:
        return labels.to_numpy()
    return labels.to_numpy().astype(str)


def _refuse_missing(column: pd.Series, name: str, where: str) -> None:
    missing = np.flatnonzero(column.isna().to_numpy())
    if len(missing):
        raise DataError(
            f"column {name!r} of {where} is empty in {len(missing)} row(s) (data rows "
            f"{_first(missing)}, counting from 0 after the header); fill or drop those rows."
        )


# --------------------------------------------------------------------------- checks


def _check_features(X: np.ndarray, where: str, names: list[str] | tuple[str, ...] | None = None) -> np.ndarray:
    """Validate a feature matrix and return it as C-contiguous float32 ``[n, d]``."""
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise DataError(
            f"X in {where} has dtype {X.dtype}, not numbers; convert it with "
            "X.astype(np.float32) or encode the non-numeric features."
        )
    if X.ndim != 2:
        raise DataError(
            f"X in {where} must be 2-D [n_examples, n_features] but has shape {X.shape}; "
            "flatten each example, e.g. X.reshape(len(X), -1)."
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"X in {where} is empty (shape {X.shape}); it needs rows and columns.")
    _check_finite(X, where, names, "NaN or infinite")
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    _check_finite(X32, where, names, "beyond the float32 range")
    return X32


def _check_finite(X: np.ndarray, where: str, names, what: str) -> None:
    if X.dtype.kind != "f":
        return
    bad = ~np.isfinite(X)
    count = int(bad.sum())
    if count == 0:
        return
    rows = np.flatnonzero(bad.any(axis=1))
    cols = np.flatnonzero(bad.any(axis=0))
    col_names = [repr(str(names[c])) for c in cols] if names is not None else cols
    raise DataError(
        f"X in {where} has {count} {what} value(s) in {len(rows)} row(s) (rows "
        f"{_first(rows)}) and {len(cols)} column(s) (columns {_first(col_names)}); drop or "
        "impute those rows before loading."
    )


def _check_label_shape(y: np.ndarray, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"y in {where} must be 1-D [n] but has shape {y.shape}; save y.ravel().")
    if len(y) != n:
        raise DataError(f"y in {where} has {len(y)} labels but X has {n} rows; save exactly one label per row of X.")
    return y


def _label_strings(y: np.ndarray, where: str) -> np.ndarray:
    """Labels as the strings that name them: ``3`` and ``3.0`` are both ``"3"``."""
    kind = y.dtype.kind
    if kind in "USOb":
        return y.astype(str)
    if kind in "iu":
        return y.astype(np.int64).astype(str)
    if kind == "f":
        finite = np.isfinite(y)
        if not finite.all():
            rows = np.flatnonzero(~finite)
            raise DataError(
                f"y in {where} has {len(rows)} NaN or infinite label(s) (rows {_first(rows)}); "
                "drop those rows or give them a class."
            )
        fractional = np.flatnonzero(y != np.round(y))
        if len(fractional):
            raise DataError(
                f"y in {where} is not integer-valued: {len(fractional)} label(s) have a "
                f"fractional part (rows {_first(fractional)}, e.g. {y[fractional[0]]}); "
                "labels must be class ids or names, not continuous targets."
            )
        return y.astype(np.int64).astype(str)
    raise DataError(f"y in {where} has dtype {y.dtype}; labels must be integers or strings.")


def _encode_labels(y: np.ndarray, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map sorted unique label values to ``0..C-1``; returns ``(codes [n], class_names)``."""
    text = _label_strings(y, where)
    if y.dtype.kind in "iuf":  # sort numbers as numbers: 2 before 10
        uniq, codes = np.unique(y.astype(np.int64), return_inverse=True)
        names = tuple(str(int(v)) for v in uniq)
    else:
        uniq, codes = np.unique(text, return_inverse=True)
        names = tuple(str(v) for v in uniq)
    if len(names) < 2:
        raise DataError(
            f"y in {where} has only one class ({names[0]!r}); a classifier needs at least "
            "two. Add examples of another class."
        )
    return codes.astype(np.int64).reshape(-1), names


def _first(items, limit: int = _SHOW) -> str:
    items = list(items)
    shown = ", ".join(str(v) for v in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _quote(names) -> str:
    return ", ".join(repr(str(n)) for n in names)
