"""Review marks: what a person decided about a suspicious training example.

Interface: :class:`Mark` (``index``, ``action`` ∈ :data:`ACTIONS`, ``label`` for a
relabel); :func:`load_marks` / :func:`save_marks` / :func:`set_marks` /
:func:`clear_marks` keep a run's marks in the run store; :func:`marked_runs` lists every
run with marks; :func:`marks_from_csv` / :func:`marks_to_frame` read and write them as a
table (columns ``index, action, label``; labels are class names).

Marks are a store artifact (kind :data:`MARKS_KIND`, key ``{"run": name}``), written
atomically on every change, so they survive an app restart, are shared by the CLI and
the app, and nothing that retrains or fails can touch them (retraining only reads them).
They also record which data they were made on: marks for a run that was deleted, or
whose data changed since, are refused with a message instead of being applied to the
wrong examples.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from ..config import fingerprint
from ..errors import ConfigError, DataError, RunNotFoundError

__all__ = [
    "ACTIONS",
    "MARKS_KIND",
    "Mark",
    "clear_marks",
    "load_marks",
    "marked_runs",
    "marks_from_csv",
    "marks_from_frame",
    "marks_to_frame",
    "save_marks",
    "set_marks",
]

MARKS_KIND = "mislabel-marks"
ACTIONS = ("keep", "remove", "relabel")
_CODE = {a: i for i, a in enumerate(ACTIONS)}


@dataclass(frozen=True)
class Mark:
    """``index``: the training example (row of ``X_train``); ``label``: the new class id
    (``relabel`` only)."""

    index: int
    action: str
    label: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(f"unknown mark {self.action!r}; choose {', '.join(ACTIONS)}.")
        if (self.action == "relabel") != (self.label is not None):
            raise ConfigError("a 'relabel' mark needs the new label, and only a relabel has one.")


def _key(run_name: str) -> dict:
    return {"run": str(run_name)}


def _data_id(info_config: dict) -> str:
    return fingerprint(info_config.get("data", {}))


def _run_info(store, run_name: str):
    for info in store.list_runs(name_contains=run_name):
        if info.name == run_name:
            return info
    return None


def _check(marks: Iterable[Mark], n_train: int, n_classes: int) -> dict[int, Mark]:
    out: dict[int, Mark] = {}
    for m in marks:
        if not 0 <= m.index < n_train:
            raise DataError(
                f"mark for example {m.index} is outside the training set (0..{n_train - 1}); "
                "marks refer to rows of the run's training split."
            )
        if m.label is not None and not 0 <= m.label < n_classes:
            raise DataError(f"mark for example {m.index} relabels to class id {m.label}, which is not a class.")
        out[int(m.index)] = m
    return out


def load_marks(store, run_name: str) -> dict[int, Mark]:
    """The run's marks ``{index: Mark}`` (empty if none); refuses marks whose run is gone."""
    found = store.get_artifact(MARKS_KIND, _key(run_name))
    info = _run_info(store, run_name)
    if info is None:
        if found is not None and len(found.arrays["index"]):
            raise RunNotFoundError(
                f"run {run_name!r} was deleted, so its {len(found.arrays['index'])} mark(s) cannot be "
                f"applied; train a run named {run_name!r} on the same data again, or remove the marks "
                f"with clear_marks (CLI: python -m attrcore marks {run_name} --clear)."
            )
        raise RunNotFoundError(f"no run named {run_name!r}; list the runs with 'python -m attrcore runs'.")
    if found is None:
        return {}
    if found.meta.get("data") != _data_id(info.config):
        raise DataError(
            f"the marks of run {run_name!r} were made on other data (the run was retrained with "
            "another dataset or noise since); clear them and review again."
        )
    idx, act, lab = (found.arrays[k].astype(np.int64) for k in ("index", "action", "label"))
    return {
        int(i): Mark(int(i), ACTIONS[int(a)], None if ACTIONS[int(a)] != "relabel" else int(c))
        for i, a, c in zip(idx, act, lab)
    }


def save_marks(store, run_name: str, marks: Mapping[int, Mark] | Iterable[Mark]) -> dict[int, Mark]:
    """Replace the run's marks (atomically) and return them."""
    info = _run_info(store, run_name)
    if info is None:
        raise RunNotFoundError(f"no run named {run_name!r}; marks belong to a saved run.")
    items = list(marks.values()) if isinstance(marks, Mapping) else list(marks)
    per_example = (info.config.get("sources") or {}).get("kind", "example") == "example"
    n_train = int(info.meta.get("n_sources") or 0) if per_example else 0
    checked = _check(items, n_train or 2**62, _n_classes(info))
    order = sorted(checked)
    arrays = {
        "index": np.array(order, dtype=np.int64),
        "action": np.array([_CODE[checked[i].action] for i in order], dtype=np.int64),
        "label": np.array([-1 if checked[i].label is None else checked[i].label for i in order], dtype=np.int64),
    }
    meta = {"data": _data_id(info.config), "updated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    store.put_artifact(MARKS_KIND, _key(run_name), arrays, meta=meta)
    return checked


def _n_classes(info) -> int:
    return int((info.config.get("model") or {}).get("n_classes") or 2**62)


def set_marks(store, run_name: str, marks: Iterable[Mark]) -> dict[int, Mark]:
    """Add or replace marks (by index) and save: the one call behind every mark button."""
    current = load_marks(store, run_name)
    for m in marks:
        current[int(m.index)] = m
    return save_marks(store, run_name, current)


def clear_marks(store, run_name: str, indices: Iterable[int] | None = None) -> int:
    """Remove some (``indices``) or all marks of a run, also of a deleted run; returns
    how many were removed."""
    found = store.get_artifact(MARKS_KIND, _key(run_name))
    if found is None:
        return 0
    if indices is None:
        store.delete_artifact(MARKS_KIND, _key(run_name))
        return len(found.arrays["index"])
    current = load_marks(store, run_name)
    drop = [i for i in {int(i) for i in indices} if i in current]
    for i in drop:
        del current[i]
    save_marks(store, run_name, current)
    return len(drop)


def marked_runs(store) -> list[dict]:
    """Every run with stored marks: ``{"run", "marks", "exists", "updated_at"}``."""
    names = {i.name for i in store.list_runs()}
    out = []
    for a in store.list_artifacts(MARKS_KIND):
        out.append(
            {
                "run": a["key"]["run"],
                "exists": a["key"]["run"] in names,
                "updated_at": a["meta"].get("updated_at", ""),
            }
        )
    for row in out:
        found = store.get_artifact(MARKS_KIND, _key(row["run"]))
        row["marks"] = 0 if found is None else len(found.arrays["index"])
    return out


# ------------------------------------------------------------------------------ tables


def marks_to_frame(marks: Mapping[int, Mark], class_names):
    """A table ``index, action, label`` (label = class name, empty unless relabel)."""
    rows = [
        {"index": m.index, "action": m.action, "label": "" if m.label is None else class_names[m.label]}
        for _, m in sorted(marks.items())
    ]
    return pd.DataFrame(rows, columns=["index", "action", "label"])


def marks_from_frame(df, class_names, n_train: int, where: str = "the marks") -> dict[int, Mark]:
    """Marks from a table with columns ``index``, ``action`` and (for relabels) ``label``."""
    cols = {str(c).strip().lower(): c for c in df.columns}
    for need in ("index", "action"):
        if need not in cols:
            raise DataError(
                f"{where} have no {need!r} column; write a CSV with the columns index,action,label "
                "(action: keep, remove or relabel; label: the new class for relabel)."
            )
    names = [str(c) for c in class_names]
    out = []
    for r, row in enumerate(df.to_dict("records")):
        raw_i, action = row[cols["index"]], str(row[cols["action"]]).strip().lower()
        try:
            i = int(raw_i)
        except (TypeError, ValueError):
            raise DataError(f"row {r + 1} of {where}: index {raw_i!r} is not a whole number.") from None
        if action not in ACTIONS:
            raise DataError(f"row {r + 1} of {where}: action {action!r} is not one of {', '.join(ACTIONS)}.")
        label = None
        if action == "relabel":
            raw = row.get(cols["label"]) if "label" in cols else None
            text = "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else str(raw).strip()
            if text.endswith(".0") and text[:-2] in names:
                text = text[:-2]  # pandas reads an integer column with blanks as float
            if text not in names:
                raise DataError(
                    f"row {r + 1} of {where}: relabel to {text or '(empty)'!r}, which is not a class; "
                    f"the classes are {', '.join(names[:12])}."
                )
            label = names.index(text)
        out.append(Mark(i, action, label))
    return _check(out, n_train, len(names))


def marks_from_csv(path: str | os.PathLike, class_names, n_train: int) -> dict[int, Mark]:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"no marks file at {path}; check the path.") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"cannot read the marks file {path} as CSV ({err}).") from None
    return marks_from_frame(df, class_names, n_train, where=os.path.basename(str(path)))
