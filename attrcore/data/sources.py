"""Sources: the units that attribution credits, as a partition of the training set.

Interface: :func:`make_sources` ``(dataset, kind, groups) -> Sources``.

Kinds:

- ``"example"``: every training example is its own source (``m = n``).
- ``"class"``: one source per class of the (noisy) training labels (``m = n_classes``;
  source ``c`` is class ``c``, possibly empty if label noise emptied it).
- ``"group"``: one source per distinct group label, from a ``groups`` array or the
  dataset's group column; ids follow the sorted group values.

A source is a set of training examples; ``index[i]`` is the source of example ``i``, so
the sources partition ``0..n-1`` and ``one_hot()`` has exactly one 1 per column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, ShapeError
from .datasets import Dataset

SOURCE_KINDS: tuple[str, ...] = ("example", "class", "group")


@dataclass(frozen=True, eq=False, repr=False)
class Sources:
    """A partition of the ``n`` training examples into ``m`` named sources.

    ``index [n]`` int64 holds the source id ``0..m-1`` of each training example;
    ``names [m]`` the display name of each source.
    """

    kind: str
    index: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        index = np.asarray(self.index)
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise ShapeError(
                f"Sources.index must be a 1-D integer array [n], got {index.dtype} with shape {index.shape}."
            )
        if len(index) and (index.min() < 0 or index.max() >= len(self.names)):
            raise ShapeError(
                f"Sources.index holds ids outside 0..{len(self.names) - 1}; there are "
                f"{len(self.names)} names, one per source id."
            )
        object.__setattr__(self, "index", np.ascontiguousarray(index, dtype=np.int64))
        object.__setattr__(self, "names", tuple(str(s) for s in self.names))

    @property
    def m(self) -> int:
        """Number of sources."""
        return len(self.names)

    @property
    def n(self) -> int:
        """Number of training examples covered."""
        return len(self.index)

    def members(self, j: int) -> np.ndarray:
        """Sorted int64 indices of the training examples in source ``j``."""
        if not 0 <= j < self.m:
            raise ConfigError(f"source {j} does not exist; ids run from 0 to {self.m - 1}.")
        return np.flatnonzero(self.index == j).astype(np.int64)

    def one_hot(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Dense 0/1 membership matrix ``[m, n]``: ``(j, i)`` is 1 iff example ``i`` is in ``j``.

        Every column sums to 1 because the sources partition the training set.
        """
        out = torch.zeros(self.m, self.n, dtype=dtype)
        out[torch.from_numpy(self.index), torch.arange(self.n)] = 1
        return out

    def __repr__(self) -> str:
        return f"Sources(kind={self.kind!r}, m={self.m}, n={self.n})"


def make_sources(dataset: Dataset, kind: str = "example", groups: np.ndarray | None = None) -> Sources:
    """Partition ``dataset``'s training examples into sources of the given ``kind``.

    ``groups [n]`` (any hashable values) is used with ``kind="group"``; without it the
    dataset's ``train_groups`` are used.
    """
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"unknown source kind {kind!r}; choose one of {', '.join(SOURCE_KINDS)}.")
    if groups is not None and kind != "group":
        raise ConfigError(f"groups only apply to kind='group', not {kind!r}; pass kind='group' or drop the groups.")
    n = dataset.n_train
    if kind == "example":
        return Sources("example", np.arange(n, dtype=np.int64), tuple(f"#{i}" for i in range(n)))
    if kind == "class":
        return Sources("class", dataset.y_train.astype(np.int64), dataset.class_names)

    if groups is None:
        groups = dataset.train_groups
    if groups is None:
        raise ConfigError(
            f"dataset {dataset.name!r} has no groups; pass a groups array with one value per "
            "training example, or load a CSV with group_column= (or an NPZ with a 'groups' "
            "array)."
        )
    values = np.asarray(groups)
    if values.ndim != 1 or len(values) != n:
        raise ShapeError(
            f"groups has shape {values.shape} but the training set has {n} examples; pass "
            "one group value per training example (dataset.train_rows maps them to the "
            "original rows)."
        )
    index, names = _encode_groups(values)
    return Sources("group", index, names)


def _encode_groups(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Sorted unique values -> ids ``0..m-1``; mixed types that cannot be compared sort as text."""
    if values.dtype != object:
        uniq, index = np.unique(values, return_inverse=True)
        return index.reshape(-1).astype(np.int64), tuple(str(v) for v in uniq.tolist())
    items = values.tolist()
    try:
        uniq = sorted(set(items))
    except TypeError:  # e.g. ints mixed with strings
        items = [str(v) for v in items]
        uniq = sorted(set(items))
    ids = {v: i for i, v in enumerate(uniq)}
    index = np.fromiter((ids[v] for v in items), dtype=np.int64, count=len(items))
    return index, tuple(str(v) for v in uniq)
