"""Local run store: trained runs and resumable artifacts on disk, indexed in SQLite.

Interface: :class:`RunStore` with ``save_run`` / ``load_run`` / ``update_run`` /
``list_runs`` / ``runs_table`` / ``rename_run`` / ``delete_run`` / ``exists`` for runs,
``put_artifact`` / ``get_artifact`` / ``list_artifacts`` / ``delete_artifact`` for
artifacts (cached intermediate results keyed by a JSON dict), and ``gc``.

Layout under ``home`` (``$ATTRCORE_HOME``, else ``~/.attrcore``)::

    index.sqlite                                   name → current version (WAL mode)
    runs/<name>/<uuid>/tensors.safetensors         one immutable version of a run
    runs/<name>/<uuid>/run.json                    config, history, timings, metrics, meta
    artifacts/<kind>/<key fp>-<uuid>.safetensors   one immutable version of an artifact
    uploads/<sha256[:16]>/<name>.csv|.npz          an uploaded data file a run uses

Why versions: every write goes to a fresh directory (or file) that nothing points at, is
fsynced, and only then does ONE SQLite transaction point the index at it; the version it
replaced is removed after the commit. A crash or Ctrl-C at any moment therefore leaves the
old state or the new one, never a half-written run. Readers only follow the index, so
orphans left by a hard crash are invisible, and :meth:`RunStore.gc` removes them whenever
a store is opened (``python -m attrcore gc`` on demand): a writer holds a lock on the
folder it writes (``.writing``, released by the OS when the process dies), so a save in
progress is never mistaken for an orphan.

Uploaded files (``uploads/<sha256>/<name>``, :meth:`RunStore.put_upload`) are kept only
while a run uses them and are deduplicated by content.

Nothing is pickled: tensors are safetensors, everything else is JSON.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import random
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..config import fingerprint
from ..errors import ConfigError, RunNotFoundError

if TYPE_CHECKING:
    import pandas as pd
from .files import (
    RUN_FILE,
    TENSORS_FILE,
    _arrays_to_tensors,
    _fsync_dir,
    _json_dict,
    _json_history,
    _json_numbers,
    _json_value,
    _last_touched,
    _link_or_copy,
    _load_tensors,
    _make_dirs,
    _prepare_tensors,
    _read_json,
    _remove,
    _rmdir_if_empty,
    _save_tensors,
    _specs,
    _subdirs,
    _unlink,
    _write_json,
    _writer_state,
    _WriterLock,
)
from .index import (
    _RUN_COLUMNS,
    _SCHEMA,
    _SQLITE_TIMEOUT,
    INDEX_FILE,
    RUNS_TABLE_COLUMNS,
    _current_version,
    _dataset_matches,
    _dig,
    _info_from_row,
    _n_sources,
    _row_from_doc,
    _upsert_run,
)
from .records import Artifact, Run, RunInfo

FORMAT_VERSION = 1
LIST_RUNS_HINT = "python -m attrcore runs"
UPLOADS_DIR = "uploads"

_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
_VERSION_RE = re.compile(r"[0-9a-f]{32}")
_ARTIFACT_FILE_RE = re.compile(r"[0-9a-f]{16}-[0-9a-f]{32}\.safetensors")
_ATTEMPTS = 20  # optimistic retries when another writer changes a run under us
_GC_GRACE = 900.0  # seconds; an orphan without a writer lock this young may be a save starting
_STAGE_PREFIX = ".stage-"  # artifacts/<kind>/.stage-<uuid>/: an artifact being written
_UPLOAD_GRACE = 3600.0  # seconds an upload no run uses is kept (a Train page may be using it)
_UPLOAD_ACTIVE = 120.0  # an upload touched this recently is in use (a training touches it)


def default_home() -> Path:
    """``$ATTRCORE_HOME`` if set, else ``~/.attrcore``."""
    env = os.environ.get("ATTRCORE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".attrcore"


_INHERITED: list[sqlite3.Connection] = []  # connections a forked child must never touch
_ANY = object()  # _commit_run: any current version (or none) may be replaced


class _Conflict(Exception):
    """Another writer changed the run between our read and our commit; try again."""


# ----------------------------------------------------------------------------- the store


class RunStore:
    """Runs and artifacts under ``home`` (default :func:`default_home`).

    Safe to share between threads and between processes (the app and the CLI): each thread
    uses its own SQLite connection, and writers serialise on SQLite's write lock.
    """

    def __init__(self, home: str | os.PathLike | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        self._ready = False
        self._local = threading.local()  # one SQLite connection per thread
        self._writers: dict[str, _WriterLock] = {}  # version being written -> its lock
        self.cleaned_on_open: list[Path] = []  # what opening this store removed (see gc)

    def __repr__(self) -> str:
        return f"RunStore({str(self.home)!r})"

    # --- runs: write -------------------------------------------------------------------

    def save_run(
        self,
        name: str,
        *,
        config: dict,
        tensors: Mapping[str, torch.Tensor],
        history: Sequence[dict] = (),
        timings: Mapping[str, float] | None = None,
        metrics: Mapping[str, float] | None = None,
        meta: dict | None = None,
        overwrite: bool = False,
    ) -> RunInfo:
        """Save a run atomically; refuse an existing ``name`` unless ``overwrite``."""
        name = _check_name(name, "run name")
        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be a dict, got {type(config).__name__}.")
        config = _json_value(dict(config), "config")
        history = _json_history(history)
        timings = _json_numbers(timings, "timings")
        metrics = _json_numbers(metrics, "metrics")
        meta = _json_dict(meta, "meta")
        prepared = _prepare_tensors(tensors)
        if not overwrite and self.exists(name):  # fail before writing any bytes
            raise _exists_error(name)
        now = _now()
        doc = {
            "format": FORMAT_VERSION,
            "name": name,
            "created_at": now,
            "updated_at": now,
            "fingerprint": fingerprint(config),
            "config": config,
            "history": history,
            "timings": timings,
            "metrics": metrics,
            "meta": meta,
            "tensors": _specs(prepared),
        }
        version, nbytes = self._stage_run(doc, tensors=prepared)
        row = _row_from_doc(doc, version, nbytes)
        self._commit_run(row, expect=_ANY if overwrite else None)
        return _info_from_row(row)

    def update_run(
        self,
        name: str,
        *,
        metrics: Mapping[str, float] | None = None,
        meta: dict | None = None,
        tensors: Mapping[str, torch.Tensor] | None = None,
        timings: Mapping[str, float] | None = None,
    ) -> RunInfo:
        """Merge new metrics/meta/timings entries and tensors into a run, atomically.

        Entries with an existing key replace it; everything else is kept. Unchanged
        tensors are hard-linked (copied where links are unsupported), not rewritten.
        """
        metrics = _json_numbers(metrics, "metrics")
        timings = _json_numbers(timings, "timings")
        meta = _json_dict(meta, "meta")
        new_tensors = _prepare_tensors(tensors) if tensors is not None else {}

        def change(doc: dict, old_dir: Path) -> dict[str, torch.Tensor] | None:
            doc["metrics"].update(metrics)
            doc["timings"].update(timings)
            doc["meta"].update(meta)
            if not new_tensors:
                return None
            old = _load_tensors(old_dir / TENSORS_FILE, name, None, False, order=doc["tensors"])
            merged = {**old, **new_tensors}
            doc["tensors"] = _specs(merged)
            return merged

        return self._rewrite_run(name, name, change)

    def rename_run(self, old: str, new: str) -> RunInfo:
        """Give a run a new name; ConfigError if ``new`` is taken or not a valid name."""
        new = _check_name(new, "run name")
        if old == new:
            return _info_from_row(self._run_row(old))
        if self.exists(new):
            raise ConfigError(f"cannot rename {old!r}: a run named {new!r} exists; pick another name.")
        return self._rewrite_run(old, new, lambda doc, old_dir: None)

    def delete_run(self, name: str) -> None:
        """Remove a run from the index, then its files and the uploads only it used."""
        with self._transaction() as conn:
            row = conn.execute("SELECT version, config FROM runs WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._not_found(name, conn)
            conn.execute("DELETE FROM runs WHERE name = ?", (name,))
        self._remove_version(row[0])
        self._drop_unused_uploads(json.loads(row[1]))

    def check_can_save(self, name: str, overwrite: bool = False) -> str:
        """Everything :meth:`save_run` would refuse about ``name``, checked before any work.

        Call it before training: a bad or taken name must not throw a finished run away.
        Returns the name; ConfigError if it is not a valid name, or is taken and
        ``overwrite`` is False.
        """
        name = _check_name(name, "run name")
        if not overwrite and self.exists(name):
            raise _exists_error(name)
        return name

    # --- runs: read --------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        with self._connection() as conn:
            return conn.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone() is not None

    def load_run(
        self,
        name: str,
        *,
        keys: Sequence[str] | None = None,
        lazy: bool = False,
        mmap: Sequence[str] | bool = (),
    ) -> Run:
        """Load a run; ``keys`` loads only those tensors, ``lazy`` defers reading each one,
        ``mmap`` (tensor names, or True for all) memory-maps those from the file instead
        of reading them into RAM (:func:`~attrcore.store.files.map_tensors`).

        RunNotFoundError (with the closest names) for an unknown run; ShapeError for a
        tensor name the run does not have.
        """
        for _ in range(_ATTEMPTS):
            row = self._run_row(name)
            vdir = self._abs(row["version"])
            try:
                doc = _read_json(vdir / RUN_FILE)
                tensors = _load_tensors(vdir / TENSORS_FILE, name, keys, lazy, order=doc["tensors"], mmap=mmap)
            except FileNotFoundError:
                continue  # a concurrent overwrite replaced this version: read the index again
            return Run(
                name=name,
                config=doc["config"],
                tensors=tensors,
                history=doc["history"],
                timings=doc["timings"],
                metrics=doc["metrics"],
                meta=doc["meta"],
                created_at=doc["created_at"],
                fingerprint=doc["fingerprint"],
                path=vdir,
                updated_at=doc.get("updated_at", doc["created_at"]),
            )
        raise RunNotFoundError(
            f"run {name!r} is in the index but its files under {vdir} are missing; "
            f"delete it with `python -m attrcore delete {name}` and save it again."
        )

    def list_runs(
        self,
        *,
        dataset: str | None = None,
        scheme: str | None = None,
        name_contains: str | None = None,
    ) -> list[RunInfo]:
        """Runs, newest first. ``dataset`` matches ``config["data"]["source"]`` (or its
        file stem), ``scheme`` matches ``config["simulation"]["scheme"]``, ``name_contains``
        is a case-insensitive substring; a run missing the key does not match."""
        with self._connection() as conn:
            rows = conn.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs ORDER BY created_at DESC, name").fetchall()
        infos = [_info_from_row(dict(r)) for r in rows]
        if dataset is not None:
            infos = [i for i in infos if _dataset_matches(_dig(i.config, "data", "source"), dataset)]
        if scheme is not None:
            infos = [i for i in infos if _dig(i.config, "simulation", "scheme") == scheme]
        if name_contains is not None:
            needle = name_contains.lower()
            infos = [i for i in infos if needle in i.name.lower()]
        return infos

    def runs_table(self, **filters: str | None) -> pd.DataFrame:
        """One row per run for the app (columns :data:`RUNS_TABLE_COLUMNS`), newest first.

        Takes the filters of :meth:`list_runs`. ``n_sources`` comes from meta, metrics or
        config, else from the first dimension of a ``responses`` tensor.
        """
        import pandas as pd  # only the app needs tables; keeps `import attrcore.store` fast

        records = []
        for info in self.list_runs(**filters):
            horizon = _dig(info.config, "simulation", "horizon")
            records.append(
                {
                    "name": info.name,
                    "created": info.created_at,
                    "dataset": _dig(info.config, "data", "source"),
                    "scheme": _dig(info.config, "simulation", "scheme"),
                    "horizon": None if horizon is None else str(horizon),
                    "n_sources": _n_sources(info),
                    "test_accuracy": info.metrics.get("test_accuracy"),
                    "train_seconds": info.timings.get("train_seconds", info.timings.get("train")),
                    "MB": info.nbytes / 1e6,
                }
            )
        df = pd.DataFrame.from_records(records, columns=list(RUNS_TABLE_COLUMNS))
        return df.astype(
            {
                "name": object,
                "dataset": object,
                "scheme": object,
                "horizon": object,
                "n_sources": "Int64",
                "test_accuracy": float,
                "train_seconds": float,
                "MB": float,
            }
        ).assign(created=pd.to_datetime(df["created"], utc=True, format="ISO8601"))

    # --- artifacts ---------------------------------------------------------------------

    def put_artifact(
        self,
        kind: str,
        key: dict,
        arrays: Mapping[str, np.ndarray | torch.Tensor],
        meta: dict | None = None,
    ) -> str:
        """Store ``arrays`` under (``kind``, ``key``), replacing any previous ones atomically.

        Returns the key's fingerprint. One small file write and one transaction, so it is
        cheap enough to call once per finished unit of a resumable job.
        """
        kind = _check_name(kind, "artifact kind")
        key = _json_dict(key, "artifact key")
        meta = _json_dict(meta, "artifact meta")
        tensors = _prepare_tensors(_arrays_to_tensors(arrays))
        fp = fingerprint(key)
        name = f"{fp}-{uuid.uuid4().hex}.safetensors"
        version = f"artifacts/{kind}/{name}"
        path = self._abs(version)
        self._ensure_ready()
        # Written in a locked staging folder, moved into place inside the transaction: a
        # crash leaves only a staging folder (removed on the next open), never a stray file.
        stage = path.parent / f"{_STAGE_PREFIX}{uuid.uuid4().hex}"
        _make_dirs(stage)
        lock = None
        try:
            lock = _WriterLock(stage)
            _save_tensors(stage / name, tensors)
        except BaseException:
            if lock is not None:
                lock.release()
            _remove(stage)
            raise
        size = (stage / name).stat().st_size
        row = (
            kind,
            fp,
            json.dumps(key, sort_keys=True),
            version,
            json.dumps(meta),
            _now(),
            size,
        )
        old = None
        try:
            with self._transaction() as conn:
                os.replace(stage / name, path)
                _fsync_dir(path.parent)
                prev = conn.execute(
                    "SELECT version FROM artifacts WHERE kind = ? AND fingerprint = ?",
                    (kind, fp),
                ).fetchone()
                old = prev[0] if prev else None
                conn.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        except BaseException:
            self._discard_if_unreferenced(version, "artifacts")
            raise
        finally:
            lock.release()
            _remove(stage)
        if old is not None:
            self._remove_version(old)
        return fp

    def get_artifact(self, kind: str, key: dict) -> Artifact | None:
        """The artifact stored under (``kind``, ``key``), or None."""
        key = _json_dict(key, "artifact key")
        fp = fingerprint(key)
        for _ in range(_ATTEMPTS):
            with self._connection() as conn:
                row = conn.execute(
                    "SELECT key, version, meta, created_at FROM artifacts WHERE kind = ? AND fingerprint = ?",
                    (kind, fp),
                ).fetchone()
            if row is None or json.loads(row["key"]) != key:
                return None
            try:
                loaded = load_file(str(self._abs(row["version"])))
            except FileNotFoundError:
                continue  # replaced by a concurrent put: read the index again
            arrays = {k: (t.float() if t.dtype == torch.bfloat16 else t).numpy() for k, t in loaded.items()}
            return Artifact(
                kind=kind,
                key=key,
                arrays=arrays,
                meta=json.loads(row["meta"]),
                created_at=row["created_at"],
                fingerprint=fp,
            )
        return None

    def list_artifacts(self, kind: str) -> list[dict]:
        """Artifacts of ``kind``, oldest first, as dicts with ``key``, ``fingerprint``,
        ``meta``, ``created_at`` and ``nbytes`` (arrays are not read)."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT key, fingerprint, meta, created_at, nbytes FROM artifacts "
                "WHERE kind = ? ORDER BY created_at, fingerprint",
                (kind,),
            ).fetchall()
        return [
            {
                "key": json.loads(r["key"]),
                "fingerprint": r["fingerprint"],
                "meta": json.loads(r["meta"]),
                "created_at": r["created_at"],
                "nbytes": r["nbytes"],
            }
            for r in rows
        ]

    def delete_artifact(self, kind: str, key: dict) -> bool:
        """Remove an artifact; False if there was none."""
        fp = fingerprint(_json_dict(key, "artifact key"))
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT version FROM artifacts WHERE kind = ? AND fingerprint = ?",
                (kind, fp),
            ).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM artifacts WHERE kind = ? AND fingerprint = ?", (kind, fp))
        self._remove_version(row[0])
        return True

    # --- maintenance -------------------------------------------------------------------

    def gc(self, grace_seconds: float = _GC_GRACE, upload_grace_seconds: float = _UPLOAD_GRACE) -> list[Path]:
        """Remove what no index row points at: version folders and staging folders left by
        writers that died (a ``kill -9`` mid-save), replaced versions a crash kept, and
        uploads no run uses. Runs automatically whenever a store is opened.

        Safe with concurrent writers: a folder whose writer is alive holds its writer lock
        (``.writing``) and is never touched, whatever its age; a folder whose lock file is
        free was left by a dead writer and goes at once; one without a lock file (written
        by an older attrcore, or a save in its first microsecond) only when untouched for
        ``grace_seconds``. An upload no run uses goes once untouched for
        ``upload_grace_seconds`` (a Train page may be about to use it). The deletions
        happen under the index's write lock, so no commit can race them. Returns the
        removed paths.
        """
        self._ensure_ready()
        removed: list[Path] = []
        now = time.time()
        cutoff = now - grace_seconds

        def orphaned(entry: Path) -> bool:
            state = _writer_state(entry) if entry.is_dir() else "unknown"
            if state == "live":
                return False
            return state == "dead" or _last_touched(entry) <= cutoff

        with self._transaction() as conn:
            # Compare last path components (uuids are unique): on a case-insensitive file
            # system runs "A" and "a" share a folder whose spelling need not match the row.
            live = {
                r[0].rsplit("/", 1)[-1]
                for r in conn.execute("SELECT version FROM runs UNION SELECT version FROM artifacts")
            }
            for group in _subdirs(self.home / "runs"):
                for entry in list(group.iterdir()):
                    if (
                        _VERSION_RE.fullmatch(entry.name)
                        and entry.is_dir()
                        and entry.name not in live
                        and orphaned(entry)
                    ):
                        _remove(entry)
                        removed.append(entry)
                _rmdir_if_empty(group)
            for group in _subdirs(self.home / "artifacts"):  # folders stay: a put may be starting
                for entry in list(group.iterdir()):
                    stray = (
                        (_ARTIFACT_FILE_RE.fullmatch(entry.name) and entry.is_file() and entry.name not in live)
                        or (entry.name.startswith(_STAGE_PREFIX) and entry.is_dir())
                        or (entry.name.startswith(".tmp") and entry.is_file())  # older attrcore's temp files
                    )
                    if stray and orphaned(entry):
                        _remove(entry)
                        removed.append(entry)
            used = self._uploads_in_use(conn)
            for folder in _subdirs(self.home / UPLOADS_DIR):
                if folder.name in used or _last_touched(folder) > now - upload_grace_seconds:
                    continue
                _remove(folder)
                removed.append(folder)
        return removed

    # --- uploads -----------------------------------------------------------------------

    def put_upload(self, filename: str, data: bytes) -> Path:
        """Keep an uploaded file's bytes under ``uploads/<sha256>/<name>``; return its path.

        Deduplicated by content: the same bytes under any name reuse one file. Kept only
        while a run uses it (its data source or evaluation file): :meth:`gc` removes an
        upload no run uses after an hour, :meth:`delete_run` with the last run using it,
        and :meth:`discard_upload` at once (a rejected file). Nothing is parsed here.
        """
        self._ensure_ready()
        suffix = Path(filename).suffix.lower()
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(filename).stem).strip("._") or "data"
        folder = self.home / UPLOADS_DIR / hashlib.sha256(data).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        same = sorted(p for p in folder.iterdir() if p.suffix == suffix and p.is_file())
        if same:
            self.touch_upload(same[0])
            return same[0]
        path = folder / f"{stem[:60]}{suffix}"
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.part")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            _unlink(tmp)
        return path

    def touch_upload(self, path: str | os.PathLike) -> None:
        """Mark an upload as in use now (a training that reads it calls this now and then)."""
        path = Path(path)
        if self._upload_folder(path) is not None:
            with contextlib.suppress(OSError):
                os.utime(path)
                os.utime(path.parent)

    def discard_upload(self, path: str | os.PathLike) -> bool:
        """Delete an upload at once unless a run uses it (e.g. a file that was rejected)."""
        folder = self._upload_folder(Path(path))
        if folder is None:
            return False
        with self._connection() as conn:
            if folder.name in self._uploads_in_use(conn):
                return False
        _remove(folder)
        return True

    def _upload_folder(self, path: Path) -> Path | None:
        """``uploads/<digest>`` if ``path`` is a file in this store's uploads, else None."""
        try:
            rel = Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(self.home / UPLOADS_DIR)))
        except ValueError:
            return None
        return self.home / UPLOADS_DIR / rel.parts[0] if len(rel.parts) == 2 else None

    def _uploads_in_use(self, conn: sqlite3.Connection) -> set[str]:
        """Digest folders of the uploads some run's data spec points at."""
        used = set()
        for (config,) in conn.execute("SELECT config FROM runs"):
            data = json.loads(config).get("data") or {}
            for key in ("source", "eval_source"):
                value = data.get(key)
                if isinstance(value, str):
                    folder = self._upload_folder(Path(value))
                    if folder is not None:
                        used.add(folder.name)
        return used

    def _drop_unused_uploads(self, config: dict) -> None:
        """After a run was deleted: remove its uploads that no other run uses."""
        data = config.get("data") or {}
        paths = [data.get(k) for k in ("source", "eval_source")]
        folders = {self._upload_folder(Path(v)) for v in paths if isinstance(v, str)}
        folders.discard(None)
        if not folders:
            return
        with self._connection() as conn:
            used = self._uploads_in_use(conn)
        for folder in folders:
            if folder.name not in used and _last_touched(folder) < time.time() - _UPLOAD_ACTIVE:
                _remove(folder)

    # --- internals: runs ---------------------------------------------------------------

    def _stage_run(
        self,
        doc: dict,
        *,
        tensors: dict[str, torch.Tensor] | None = None,
        link_from: Path | None = None,
    ) -> tuple[str, int]:
        """Write a new, unreferenced version directory; return its relative path and size."""
        self._ensure_ready()
        version = f"runs/{doc['name']}/{uuid.uuid4().hex}"
        vdir = self._abs(version)
        _make_dirs(vdir)
        try:
            # held until the commit is done: gc never touches a folder whose writer is alive
            self._writers[version] = _WriterLock(vdir)
            if tensors is not None:
                _save_tensors(vdir / TENSORS_FILE, tensors)
            else:
                assert link_from is not None  # internal invariant, not user input
                _link_or_copy(link_from, vdir / TENSORS_FILE)
            _write_json(vdir / RUN_FILE, doc)
            _fsync_dir(vdir)
        except BaseException:
            self._release_writer(version)
            _remove(vdir)
            _rmdir_if_empty(vdir.parent)
            raise
        return version, (vdir / TENSORS_FILE).stat().st_size

    def _release_writer(self, version: str) -> None:
        lock = self._writers.pop(version, None)
        if lock is not None:
            lock.release()

    def _commit_run(self, row: dict, *, expect: object, drop: tuple[str, str] | None = None) -> None:
        """Point the index at a staged version in one transaction, then remove the old one.

        ``expect`` is what ``row["name"]`` must point at now: ``_ANY``, None (the name
        must be free, else the "exists" ConfigError) or a version (else :class:`_Conflict`).
        ``drop = (name, version)`` deletes that row in the same transaction (rename).
        """
        old: list[str] = []
        try:
            with self._transaction() as conn:
                found = _current_version(conn, row["name"])
                if expect is None and found is not None:
                    raise _exists_error(row["name"])
                if isinstance(expect, str) and found != expect:
                    raise _Conflict()
                if drop is not None:
                    if _current_version(conn, drop[0]) != drop[1]:
                        raise _Conflict()
                    old.append(drop[1])
                    conn.execute("DELETE FROM runs WHERE name = ?", (drop[0],))
                if not self._abs(row["version"], RUN_FILE).exists():
                    raise FileNotFoundError(
                        f"{self._abs(row['version'])} vanished before commit (a concurrent gc?); save again."
                    )
                _upsert_run(conn, row)
                old += [found] if found is not None else []
        except BaseException:
            self._discard_if_unreferenced(row["version"], "runs")
            raise
        finally:
            self._release_writer(row["version"])
        for version in old:
            self._remove_version(version)

    def _rewrite_run(self, name: str, new_name: str, change: Any) -> RunInfo:
        """Copy-on-write edit of run ``name`` into a new version named ``new_name``.

        ``change(doc, old_dir)`` edits the run.json dict in place and returns the full new
        tensor dict, or None to hard-link the old tensors file. Retries if another process
        changes the run between our read and our commit.
        """
        for _ in range(_ATTEMPTS):
            row = self._run_row(name)
            old_dir = self._abs(row["version"])
            try:
                doc = _read_json(old_dir / RUN_FILE)
                doc["name"], doc["updated_at"] = new_name, _now()
                tensors = change(doc, old_dir)
                version, nbytes = self._stage_run(
                    doc,
                    tensors=tensors,
                    link_from=old_dir / TENSORS_FILE if tensors is None else None,
                )
            except FileNotFoundError:
                continue  # the old version was just replaced: start again from the new one
            new_row = _row_from_doc(doc, version, nbytes)
            try:
                if name == new_name:
                    self._commit_run(new_row, expect=row["version"])
                else:
                    self._commit_run(new_row, expect=None, drop=(name, row["version"]))
            except _Conflict:
                time.sleep(random.uniform(0.0, 0.01))  # de-synchronise competing writers
                continue
            return _info_from_row(new_row)
        raise ConfigError(
            f"run {name!r} kept changing while it was being updated (another process is writing "
            "it); try again when that process is done."
        )

    def _run_row(self, name: str) -> dict:
        with self._connection() as conn:
            row = conn.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._not_found(name, conn)
        return dict(row)

    def _not_found(self, name: str, conn: sqlite3.Connection) -> RunNotFoundError:
        names = [r[0] for r in conn.execute("SELECT name FROM runs")]
        if not names:
            return RunNotFoundError(
                f"no run named {name!r}: the store at {self.home} has no runs yet; train and save one first."
            )
        close = difflib.get_close_matches(str(name), names, n=10, cutoff=0.0)
        return RunNotFoundError(
            f"no run named {name!r} in {self.home}. Closest: {', '.join(map(repr, close))}. "
            f"List all runs with `{LIST_RUNS_HINT}`."
        )

    # --- internals: files and SQLite ---------------------------------------------------

    def _abs(self, version: str, *parts: str) -> Path:
        return self.home.joinpath(*version.split("/"), *parts)

    def _remove_version(self, version: str) -> None:
        """Delete a version that no row points at any more (best effort: gc retries)."""
        path = self._abs(version)
        _remove(path)
        if version.startswith("runs/"):
            _rmdir_if_empty(path.parent)  # runs/<name>/, so deleted names leave no folder

    def _discard_if_unreferenced(self, version: str, table: str) -> None:
        """After a failed commit: delete the staged version unless the commit did land.

        A Ctrl-C can arrive just after COMMIT returned, so ask the index; when in doubt
        (the index cannot be read) keep the files and leave them to gc.
        """
        try:
            with self._connection() as conn:
                hit = conn.execute(f"SELECT 1 FROM {table} WHERE version = ?", (version,)).fetchone()
        except (sqlite3.Error, OSError):
            return
        if hit is None:
            self._remove_version(version)

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        for sub in ("runs", "artifacts"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        index = self.home / INDEX_FILE
        conn = sqlite3.connect(index, timeout=_SQLITE_TIMEOUT, isolation_level=None)
        try:
            # WAL lets the app read while the CLI writes; the mode is stored in the file.
            conn.execute("PRAGMA journal_mode=WAL")
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > FORMAT_VERSION:
                raise ConfigError(
                    f"the run store at {self.home} was written by a newer attrcore (format "
                    f"{found}); upgrade attrcore or point $ATTRCORE_HOME at another folder."
                )
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        except sqlite3.DatabaseError as err:
            raise ConfigError(
                f"the run index {index} cannot be read ({err}); move it aside and start a new "
                "store, or point $ATTRCORE_HOME at another folder."
            ) from None
        finally:
            conn.close()
        self._ready = True
        # Clean up after writers that died (kill -9, power cut); never fails an open.
        with contextlib.suppress(OSError, sqlite3.Error):
            self.cleaned_on_open = self.gc()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, opened once and reused.

        Reuse matters for speed: closing the last connection to a WAL database checkpoints
        it (about 1 ms), which would double the cost of a small ``put_artifact``.
        """
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid != os.getpid():
            # A connection must not cross fork(), not even to be closed: keep it, unused.
            _INHERITED.append(conn)
            conn = None
        if conn is None:
            self._ensure_ready()
            conn = sqlite3.connect(self.home / INDEX_FILE, timeout=_SQLITE_TIMEOUT, isolation_level=None)
            conn.row_factory = sqlite3.Row
            # FULL: the commit must be on disk before we delete the version it replaced.
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn, self._local.pid = conn, os.getpid()
        yield conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; any exception (Ctrl-C included) rolls it back."""
        with self._connection() as conn:
            if conn.in_transaction:  # left open by an interrupted call in this thread
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except BaseException:
                    self.close()  # closing a connection rolls its transaction back
                    raise
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's index connection (reopened on next use)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


# ----------------------------------------------------------------------------- helpers


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"invalid {what} {name!r}: use 1-100 characters from letters, digits, '-', '_' "
            "and '.', not starting with '.' (e.g. 'digits-mlp_v2')."
        )
    return name


def _exists_error(name: str) -> ConfigError:
    return ConfigError(f"run {name!r} exists; pick another name or pass overwrite=True (`overwrite`).")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
