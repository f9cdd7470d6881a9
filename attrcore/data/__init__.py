"""Data: built-in datasets, user files, sources (what attribution is over) and uploads.

Interface: :func:`~attrcore.data.datasets.load_dataset` → :class:`~attrcore.data.datasets.Dataset`,
:func:`~attrcore.data.datasets.load_queries`, :func:`~attrcore.data.sources.make_sources` →
:class:`~attrcore.data.sources.Sources`.

Implementations:

- ``datasets`` — the :class:`Dataset` record, the built-ins (digits, mnist1d, breast_cancer,
  moons), splitting and label noise, ``load_dataset`` / ``load_queries``;
- ``files`` — reading and validating user NPZ / CSV files (never unpickled);
- ``sources`` — training examples grouped into sources (example, class, group);
- ``uploads`` — uploaded files saved content-addressed under the store (used by the app).
"""

from .datasets import BUILTIN_DATASETS, Dataset, describe_builtin, load_dataset, load_queries
from .sources import Sources, make_sources

__all__ = ["BUILTIN_DATASETS", "Dataset", "Sources", "describe_builtin", "load_dataset", "load_queries", "make_sources"]
