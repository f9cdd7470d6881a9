"""Files of the run store: safetensors and JSON written atomically (fsynced), read back,
linked, removed.

Nothing is pickled: tensors are safetensors, everything else is JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import ConfigError, ShapeError

if TYPE_CHECKING:
    pass
from .records import LazyTensors

TENSORS_FILE = "tensors.safetensors"
RUN_FILE = "run.json"
# What safetensors ≥ 0.4 can store; checked up front so the error names the tensor.
_DTYPES = frozenset(
    {
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    }
)


def _json_default(obj: object) -> Any:
    if isinstance(obj, (np.generic, np.ndarray, torch.Tensor)):
        return obj.tolist()  # numpy/torch scalars and small arrays become plain JSON
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"a {type(obj).__name__} is not JSON")


def _json_value(value: Any, what: str) -> Any:
    """``value`` as it will read back from JSON; ConfigError if it is not JSON-able."""
    try:
        return json.loads(json.dumps(value, sort_keys=True, default=_json_default))
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{what} must be plain JSON (dicts with string keys, lists, strings, numbers, booleans, None): {err}."
        ) from None


def _json_dict(value: Mapping | None, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a dict, got {type(value).__name__}.")
    return _json_value(dict(value), what)


def _json_numbers(value: Mapping | None, what: str) -> dict:
    """A str → number dict (numpy/torch scalars accepted, None allowed for 'not measured')."""
    out = _json_dict(value, what)
    for k, v in out.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ConfigError(f"{what}[{k!r}] must be a number, got {v!r}.")
    return out


def _json_history(history: Sequence[dict]) -> list[dict]:
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise ConfigError("history must be a list of dicts, one per epoch.")
    return [_json_dict(h, f"history[{i}]") for i, h in enumerate(history)]


def _prepare_tensors(tensors: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors that safetensors accepts (no two sharing storage)."""
    if not isinstance(tensors, Mapping):
        raise ConfigError(f"tensors must be a dict of name → torch.Tensor, got {type(tensors).__name__}.")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, t in tensors.items():
        if not isinstance(k, str) or not k or k == "__metadata__":
            raise ConfigError(f"tensor names must be non-empty strings other than '__metadata__', got {k!r}.")
        if not isinstance(t, torch.Tensor):
            raise ConfigError(
                f"tensor {k!r} is a {type(t).__name__}, not a torch.Tensor; convert it with torch.as_tensor."
            )
        if t.dtype not in _DTYPES:
            raise ConfigError(
                f"tensor {k!r} has dtype {t.dtype}, which the store cannot save; "
                "convert it to a float, int, uint8 or bool dtype."
            )
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:  # safetensors refuses tensors sharing memory
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def _arrays_to_tensors(arrays: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(arrays, Mapping):
        raise ConfigError(f"arrays must be a dict of name → array, got {type(arrays).__name__}.")
    out: dict[str, Any] = {}
    for k, a in arrays.items():
        if isinstance(a, (np.ndarray, np.generic)):
            a = np.asarray(a)
            if not a.dtype.isnative:
                a = a.astype(a.dtype.newbyteorder("="))
            if not (a.flags.c_contiguous and a.flags.writeable):
                a = a.copy(order="C")
            try:
                a = torch.from_numpy(a)
            except TypeError:
                raise ConfigError(
                    f"array {k!r} has dtype {a.dtype}, which the store cannot save; use a numeric or bool dtype."
                ) from None
        out[k] = a
    return out


def _specs(tensors: Mapping[str, torch.Tensor]) -> dict:
    return {k: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)} for k, t in tensors.items()}


# safetensors dtype names -> (numpy dtype read from the file, torch dtype it is viewed as)
_MAP_DTYPES = {
    "F64": (np.float64, torch.float64),
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (np.uint16, torch.bfloat16),  # numpy has no bfloat16: map the bits, view them
    "I64": (np.int64, torch.int64),
    "I32": (np.int32, torch.int32),
    "I16": (np.int16, torch.int16),
    "I8": (np.int8, torch.int8),
    "U8": (np.uint8, torch.uint8),
    "BOOL": (np.bool_, torch.bool),
}
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file: ``{name: {"dtype", "shape", "data_offsets"}}``
    (``__metadata__`` dropped). Plain JSON, nothing is unpickled."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size <= _MAX_HEADER:
            raise ShapeError(f"{path} is not a safetensors file (header size {size}); save the run again.")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return {"__data_start__": 8 + size, **header}


def map_tensors(path: Path, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """``keys`` of a safetensors file as tensors *memory-mapped* from it (no copy in RAM).

    Each tensor is a copy-on-write view of its bytes in the file (``np.memmap`` mode "c"):
    pages are read from disk when a readout touches them and the kernel may drop them
    again, so a run larger than the memory budget can be read out source chunk by source
    chunk; an in-place write would stay private to this process and never reach the file.
    """
    header = safetensors_header(path)
    start = header.pop("__data_start__")
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        spec = header[k]
        np_dtype, torch_dtype = _MAP_DTYPES[spec["dtype"]]
        begin, end = spec["data_offsets"]
        shape = tuple(spec["shape"])
        if end == begin:  # an empty tensor has no bytes to map
            out[k] = torch.empty(shape, dtype=torch_dtype)
            continue
        arr = np.memmap(path, dtype=np_dtype, mode="c", offset=start + begin, shape=shape)
        t = torch.from_numpy(arr)
        out[k] = t.view(torch_dtype) if np_dtype is np.uint16 else t
    return out


def _wanted_keys(on_disk: set[str], order: Sequence[str], keys: Sequence[str] | None, run: str) -> list[str]:
    """The keys to load (all, saved order first), refusing any the file does not hold."""
    available = [k for k in order if k in on_disk] + sorted(on_disk.difference(order))
    wanted = available if keys is None else list(keys)
    missing = [k for k in wanted if k not in available]
    if missing:
        raise ShapeError(
            f"run {run!r} has no tensor {', '.join(map(repr, missing))}; "
            f"it has {', '.join(map(repr, available)) or 'none'}."
        )
    return wanted


def _load_tensors(
    path: Path,
    run: str,
    keys: Sequence[str] | None,
    lazy: bool,
    order: Sequence[str],
    mmap: Sequence[str] | bool = (),
) -> Mapping[str, torch.Tensor]:
    """Tensors in the order they were saved (safetensors itself sorts them); those named in
    ``mmap`` (or all with ``True``) memory-mapped from the file instead of read into RAM."""
    if not mmap and keys is None and not lazy:
        loaded = load_file(str(path))
        return {k: loaded[k] for k in order if k in loaded} | loaded
    with safe_open(str(path), framework="pt") as f:
        wanted = _wanted_keys(set(f.keys()), order, keys, run)
        if mmap:
            mapped = set(wanted) if mmap is True else set(mmap) & set(wanted)
            out = map_tensors(path, [k for k in wanted if k in mapped])
            out.update({k: f.get_tensor(k) for k in wanted if k not in mapped})
            return {k: out[k] for k in wanted}
        if lazy:
            return LazyTensors(path, wanted, run)
        return {k: f.get_tensor(k) for k in wanted}


# --- file system --------------------------------------------------------------------


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write a safetensors file and flush it to disk."""
    save_file(tensors, str(path))
    _fsync_file(path)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)  # Windows needs a writable handle to flush
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make new directory entries durable (POSIX; Windows cannot open directories)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` whose new entries survive a power cut (their parents are fsynced)."""
    created, p = [], path
    while not p.exists():
        created.append(p)
        p = p.parent
    for attempt in range(3):  # a delete or gc may remove an empty parent mid-way: retry
        try:
            path.mkdir(parents=True, exist_ok=True)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    for p in reversed(created):
        _fsync_dir(p.parent)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link an immutable file into a new version; copy where links fail."""
    try:
        os.link(src, dst)
    except FileNotFoundError:
        raise
    except OSError:
        shutil.copyfile(src, dst)
        _fsync_file(dst)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        _unlink(path)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _rmdir_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []


def _last_touched(path: Path) -> float:
    """Latest mtime of ``path`` and, for a directory, of its entries."""
    try:
        times = [path.stat().st_mtime]
        if path.is_dir():
            times += [p.stat().st_mtime for p in path.iterdir()]
        return max(times)
    except FileNotFoundError:
        return 0.0


# --- writer locks -------------------------------------------------------------------

LOCK_FILE = ".writing"  # inside a folder being written; flock-ed by its writer

try:  # POSIX advisory locks; released by the OS when the process dies (kill -9 too)
    import fcntl
except ImportError:  # Windows: no locks, orphans are only removed after a grace period
    fcntl = None


class _WriterLock:
    """An exclusive lock on ``<folder>/.writing``, held while that folder is written and
    committed. A folder whose lock file exists but is not locked was left by a writer that
    died; one with a held lock is a save in progress, whatever its age."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self.fd: int | None = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        """Remove the lock file (if its folder still exists) and drop the lock."""
        if self.fd is None:
            return
        _unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)  # closing drops the flock
        self.fd = None


def _writer_state(folder: Path) -> str:
    """``"live"`` (a writer holds the lock), ``"dead"`` (lock file, nobody holds it) or
    ``"unknown"`` (no lock file, or no locks on this system)."""
    if fcntl is None:
        return "unknown"
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR)
    except OSError:
        return "unknown"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return "live"
    finally:
        os.close(fd)  # also drops the lock we may have just taken
    return "dead"
