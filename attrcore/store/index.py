"""The SQLite index of the run store: schema, rows, and the name → current version map.

One transaction per change points a name at a fully written version directory.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from .records import RunInfo

INDEX_FILE = "index.sqlite"
RUNS_TABLE_COLUMNS = (
    "name",
    "created",
    "dataset",
    "scheme",
    "horizon",
    "n_sources",
    "test_accuracy",
    "train_seconds",
    "MB",
)
_SQLITE_TIMEOUT = 30.0  # seconds a writer waits for another process's transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    version TEXT NOT NULL,      -- runs/<name>/<uuid>, relative to home
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    config TEXT NOT NULL,       -- JSON, like the next four
    metrics TEXT NOT NULL,
    timings TEXT NOT NULL,
    meta TEXT NOT NULL,
    tensors TEXT NOT NULL,      -- {name: {"dtype": "float32", "shape": [..]}}
    nbytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,      -- artifacts/<kind>/<fp>-<uuid>.safetensors
    meta TEXT NOT NULL,
    created_at TEXT NOT NULL,
    nbytes INTEGER NOT NULL,
    PRIMARY KEY (kind, fingerprint)
);
"""
_RUN_COLUMNS = (
    "name",
    "version",
    "created_at",
    "updated_at",
    "fingerprint",
    "config",
    "metrics",
    "timings",
    "meta",
    "tensors",
    "nbytes",
)


def _current_version(conn: sqlite3.Connection, name: str) -> str | None:
    found = conn.execute("SELECT version FROM runs WHERE name = ?", (name,)).fetchone()
    return found[0] if found else None


def _upsert_run(conn: sqlite3.Connection, row: dict) -> None:
    """Write one index row inside the caller's transaction (the only place that does)."""
    conn.execute(
        f"INSERT OR REPLACE INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})",
        tuple(row[c] for c in _RUN_COLUMNS),
    )


def _row_from_doc(doc: dict, version: str, nbytes: int) -> dict:
    return {
        "name": doc["name"],
        "version": version,
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
        "fingerprint": doc["fingerprint"],
        "config": json.dumps(doc["config"]),
        "metrics": json.dumps(doc["metrics"]),
        "timings": json.dumps(doc["timings"]),
        "meta": json.dumps(doc["meta"]),
        "tensors": json.dumps(doc["tensors"]),
        "nbytes": nbytes,
    }


def _info_from_row(row: Mapping) -> RunInfo:
    return RunInfo(
        name=row["name"],
        created_at=row["created_at"],
        fingerprint=row["fingerprint"],
        config=json.loads(row["config"]),
        metrics=json.loads(row["metrics"]),
        timings=json.loads(row["timings"]),
        nbytes=row["nbytes"],
        meta=json.loads(row["meta"]),
        tensor_specs=json.loads(row["tensors"]),
        updated_at=row["updated_at"],
    )


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _dataset_matches(source: Any, wanted: str) -> bool:
    if not isinstance(source, str):
        return False
    return source == wanted or Path(source).stem == wanted or Path(source).name == wanted


def _n_sources(info: RunInfo) -> int | None:
    for d in (info.meta, info.metrics, info.config):
        if isinstance(d.get("n_sources"), (int, float)) and not isinstance(d["n_sources"], bool):
            return int(d["n_sources"])
    shape = _dig(info.tensor_specs, "responses", "shape")
    return int(shape[0]) if shape else None
