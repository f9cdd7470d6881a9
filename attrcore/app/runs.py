"""Runs as the pages see them: cache keys and which saved runs can be used together.

- cache keys: :func:`store_version`, :func:`run_version` (change whenever the store or a
  run changes, so cached results never go stale and survive restarts);
- :func:`attributable_runs` (runs with simulated responses), :func:`comparable_runs` (same
  data and sources), :func:`same_training` (one ground truth serves both).
"""

from __future__ import annotations

from ..config import fingerprint
from ..run import TrainedRun
from ..store.runstore import RunStore

# ----------------------------------------------------------------------------- cache keys


def store_version(store: RunStore) -> str:
    """Changes whenever a run is saved, updated, renamed or deleted."""
    return fingerprint(sorted((i.name, i.updated_at or i.created_at) for i in store.list_runs()))


def run_version(store: RunStore, name: str) -> str:
    """The version of one run (its config fingerprint and last update); ``""`` if absent."""
    for info in store.list_runs(name_contains=name):
        if info.name == name:
            return f"{info.fingerprint}-{info.updated_at or info.created_at}"
    return ""


def attributable_runs(store: RunStore) -> list[str]:
    """Names of runs that carry simulated responses (scheme other than 'none'), newest first."""
    return [i.name for i in store.list_runs() if (i.config.get("simulation") or {}).get("scheme", "none") != "none"]


def comparable_runs(store: RunStore, run: TrainedRun) -> list[str]:
    """Other saved runs with simulated responses on the same data and sources."""
    out = []
    for info in store.list_runs():
        cfg = info.config
        if (
            info.name != run.name
            and cfg.get("data") == run.config.get("data")
            and cfg.get("sources") == run.config.get("sources")
            and (cfg.get("simulation") or {}).get("scheme", "none") != "none"
        ):
            out.append(info.name)
    return out


def same_training(run: TrainedRun, other: TrainedRun) -> bool:
    """Same data, sources, model and training config: one ground truth serves both."""
    keys = ("data", "sources", "model", "train")
    return all(run.config.get(k) == other.config.get(k) for k in keys)


def open_run_notice(store: RunStore, current: str | None, choices: list[str]) -> str | None:
    """What to tell a user whose open run is no longer among ``choices`` (None: nothing).

    A page remembers the open run by name; when another tab or the CLI deletes it, the page
    must not silently show a different run.
    """
    if current is None or current in choices:
        return None
    if store.exists(current):
        return f"Run {current!r} has no simulated responses (scheme 'none'), so it cannot be explored here."
    instead = f"; showing {choices[0]!r} instead" if choices else ""
    return f"Run {current!r}, which you had open, was deleted (in another tab or with the CLI){instead}."
