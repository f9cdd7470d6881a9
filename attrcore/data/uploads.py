"""Uploaded data files: kept content-addressed in the store while a run uses them, CSV
columns peeked at."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..errors import DataError
from ..store import RunStore

UPLOAD_SUFFIXES = (".csv", ".npz")
MAX_UPLOAD_MB = 200


def save_upload(home: str | os.PathLike, filename: str, data: bytes) -> Path:
    """Keep an uploaded CSV/NPZ in the store at ``home`` and return its path.

    Content-addressed and deduplicated (:meth:`attrcore.store.RunStore.put_upload`), so a
    saved run can always rebuild its dataset; kept only while a run uses it (the store
    removes unused uploads, and a rejected one can go at once with ``discard_upload``).
    Nothing is parsed or unpickled here.
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
    return RunStore(home).put_upload(filename, data)


def discard_upload(home: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Delete an upload at once unless a run uses it (a file the page rejected)."""
    return RunStore(home).discard_upload(path)


def csv_columns(path: str | os.PathLike) -> list[str]:
    """The header of a CSV file (for the label / group column pickers)."""

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
