"""The local run store: trained runs and resumable artifacts on disk, indexed in SQLite.

Interface: :class:`~attrcore.store.runstore.RunStore` (runs: ``save_run`` / ``load_run`` /
``update_run`` / ``list_runs`` / ``runs_table`` / ``rename_run`` / ``delete_run`` / ``exists``;
artifacts: ``put_artifact`` / ``get_artifact`` / ``list_artifacts`` / ``delete_artifact``; ``gc``).

Implementations:

- ``runstore`` — the :class:`RunStore` class (versions, transactions, gc);
- ``index`` — the SQLite schema and rows (name → current version);
- ``files`` — atomic, fsynced safetensors / JSON files;
- ``records`` — what the store returns: :class:`RunInfo`, :class:`Run`, :class:`Artifact`,
  :class:`LazyTensors`.
"""

from .index import RUNS_TABLE_COLUMNS
from .records import Artifact, LazyTensors, Run, RunInfo
from .runstore import FORMAT_VERSION, RunStore, default_home, fingerprint

__all__ = [
    "Artifact",
    "FORMAT_VERSION",
    "LazyTensors",
    "RUNS_TABLE_COLUMNS",
    "Run",
    "RunInfo",
    "RunStore",
    "default_home",
    "fingerprint",
]
