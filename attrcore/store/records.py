"""What the run store hands out: :class:`RunInfo` (an index row), :class:`Run` (a loaded
run), :class:`Artifact` (a loaded artifact) and :class:`LazyTensors` (tensors read on
first access).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import safe_open

from ..errors import RunNotFoundError

if TYPE_CHECKING:
    pass


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RunInfo:
    """One row of the index: everything about a run except its tensors and history."""

    name: str
    created_at: str  # ISO 8601, UTC
    fingerprint: str  # of the config
    config: dict
    metrics: dict
    timings: dict
    nbytes: int  # size of the tensors file
    meta: dict = field(default_factory=dict)
    tensor_specs: dict = field(default_factory=dict)  # {name: {"dtype": str, "shape": [int]}}
    updated_at: str = ""


@dataclass
class Run:
    """A loaded run. ``tensors`` is a dict, or a :class:`LazyTensors` with ``lazy=True``."""

    name: str
    config: dict
    tensors: Mapping[str, torch.Tensor] = field(repr=False)
    history: list[dict] = field(repr=False)
    timings: dict
    metrics: dict
    meta: dict
    created_at: str
    fingerprint: str
    path: Path  # the version directory that was read
    updated_at: str = ""


@dataclass
class Artifact:
    """A stored artifact: ``arrays`` as numpy (bfloat16 comes back as float32)."""

    kind: str
    key: dict
    arrays: dict[str, np.ndarray] = field(repr=False)
    meta: dict
    created_at: str
    fingerprint: str  # of the key


class LazyTensors(Mapping[str, torch.Tensor]):
    """The tensors of one run version, each read from disk on first access, then cached.

    Reads the version that was current when the run was loaded; if that run has since been
    overwritten or deleted, access raises :class:`RunNotFoundError`.
    """

    def __init__(self, path: Path, keys: Sequence[str], run_name: str) -> None:
        self._path, self._keys, self._run = path, tuple(keys), run_name
        self._cache: dict[str, torch.Tensor] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        if key not in self._cache:
            try:
                with safe_open(str(self._path), framework="pt") as f:
                    self._cache[key] = f.get_tensor(key)
            except FileNotFoundError:
                raise RunNotFoundError(
                    f"run {self._run!r} was overwritten or deleted after it was loaded lazily; load it again."
                ) from None
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"LazyTensors({list(self._keys)!r}, loaded={list(self._cache)!r})"
