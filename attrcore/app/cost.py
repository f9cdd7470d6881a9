"""Cost page view model: measured readout and simulation cost, the machine, break-even."""

from __future__ import annotations

import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import numpy as np
import torch

from ..engine.compress import CompressedResponses
from ..engine.tangents import Tangents
from ..errors import ConfigError, DataError
from ..methods import registry as bl
from ..run import TrainedRun
from ..store.runstore import RunStore
from .baselines import _baseline_options, baselines_available
from .compression import compressed_variant
from .evaluation import _run_sources
from .explore import query_pool

COST_KIND = "app-cost"


# ----------------------------------------------------------------------------- cost


def group_responses(run: TrainedRun, index: np.ndarray, names: Sequence[str]) -> TrainedRun:
    """A copy of a per-example run whose sources are groups: by linearity of the response
    in the source weights, a group's response is the sum of its members' responses."""

    if run.responses is None:
        raise ConfigError("this run has no simulated responses to group.")
    if len(index) != run.n_sources:
        raise DataError("grouping needs one group id per source of a per-example run.")
    idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
    m = len(names)

    def summed(t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((m, *t.shape[1:]), dtype=t.dtype)
        return out.index_add_(0, idx, t)

    if isinstance(run.responses, CompressedResponses):  # Δ ≈ C Qᵀ: sum the coefficient rows
        grouped = CompressedResponses(run.responses.Q, summed(run.responses.C), dict(run.responses.info))
    else:
        grouped = Tangents([summed(W) for W in run.responses.W], [summed(b) for b in run.responses.b])
    return TrainedRun(
        spec=run.spec,
        recorded=run.recorded,
        mlp=run.mlp,
        theta=run.theta,
        responses=grouped,
        source_index=np.asarray(index)[run.source_index],
        source_names=tuple(names),
        name=run.name,
    )


def measure_readout_cost(
    run: TrainedRun,
    X: np.ndarray,
    y: np.ndarray,
    query_counts: Sequence[int] = (1, 4, 16, 64, 256),
    repeats: int = 2,
    budget_seconds: float = 20.0,
) -> dict:
    """Wall time of the forward-only readout for growing numbers of queries (best of
    ``repeats``). Stops early when the budget is spent. Returns lists ``n_queries``,
    ``seconds`` (total) and ``per_query``."""
    n, secs = [], []
    start = time.perf_counter()
    for q in query_counts:
        reps = np.resize(np.arange(len(X)), q)
        Xq, yq = X[reps], y[reps]
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            run.score(Xq, yq)
            best = min(best, time.perf_counter() - t0)
        n.append(int(q))
        secs.append(best)
        if time.perf_counter() - start > budget_seconds:
            break
    return {"n_queries": n, "seconds": secs, "per_query": [s / q for s, q in zip(secs, n)]}


def measure_cost(
    run: TrainedRun,
    with_trak: bool = True,
    query_counts: Sequence[int] = (1, 4, 16, 64, 256),
    progress: Callable[[str, float], None] | None = None,
) -> dict:
    """Measure, on this machine, the readout of the run (per-source and grouped by class)
    and, when the baselines are available, TRAK with one model, on the run's queries (its
    test split, or its training rows when it has none).

    Returns flat lists/numbers: ``<method>_n``, ``<method>_seconds`` (total per batch),
    ``<method>_setup`` (seconds of work before the first query), ``<method>_bytes``
    (memory per source) and ``<method>_sources`` for methods ``forward``, ``grouped``,
    ``compressed`` (a dense run's responses compressed to rank 256, ``compressed_rank``) and
    ``trak``; ``forward_rank`` when the run itself is compressed.
    """

    ds = run.dataset
    X, y, _kind = query_pool(ds)  # the timing needs queries, not held-out ones
    say = progress or (lambda text, frac: None)
    out: dict = {}
    say("forward-only readout, one source per example", 0.0)
    r = measure_readout_cost(run, X, y, query_counts)
    out |= {
        "forward_n": r["n_queries"],
        "forward_seconds": r["seconds"],
        "forward_setup": float(run.timings.get("simulate_seconds", float("nan"))),
        "forward_bytes": run.bytes_per_source(),
        "forward_sources": run.n_sources,
    }
    say("forward-only readout, one source per class", 0.35)
    grouped = group_responses(run, _class_of_sources(run), ds.class_names)
    g = measure_readout_cost(grouped, X, y, query_counts)
    out |= {
        "grouped_n": g["n_queries"],
        "grouped_seconds": g["seconds"],
        "grouped_setup": out["forward_setup"],
        "grouped_bytes": grouped.bytes_per_source(),
        "grouped_sources": grouped.n_sources,
    }
    if run.compressed:
        out["forward_rank"] = run.responses.rank
    else:  # a dense run: its rank-256 compression too (compress_dense, Δ ≈ C Qᵀ)
        say("forward-only readout, compressed responses", 0.45)
        comp = compressed_variant(run)
        c = measure_readout_cost(comp, X, y, query_counts)
        out |= {
            "compressed_n": c["n_queries"],
            "compressed_seconds": c["seconds"],
            "compressed_setup": float(comp.timings.get("simulate_seconds", float("nan"))),
            "compressed_bytes": comp.bytes_per_source(),
            "compressed_sources": comp.n_sources,
            "compressed_rank": comp.responses.rank,
        }
    if with_trak and baselines_available() is None:
        say("TRAK (1 model): featurizing the training set", 0.6)
        own = SimpleNamespace(theta=run.theta, checkpoints={}, checkpoint_lrs={})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trak = bl.make_method(
                "trak", run.mlp, [own], run.train_config, **_baseline_options("trak", ds.n_train, 1, None)
            )
            trak.fit(ds.X_train, ds.y_train, sources=_run_sources(run))
            say("TRAK (1 model): scoring", 0.8)
            n, secs = [], []
            start = time.perf_counter()
            for q in query_counts:
                reps = np.resize(np.arange(len(X)), q)
                t0 = time.perf_counter()
                trak.score(X[reps], y[reps])
                secs.append(time.perf_counter() - t0)
                n.append(int(q))
                if time.perf_counter() - start > 30:
                    break
        out |= {
            "trak_n": n,
            "trak_seconds": secs,
            "trak_setup": trak.timings["setup_seconds"],
            "trak_bytes": trak.state_bytes() / max(1, run.n_sources),
            "trak_sources": run.n_sources,
            "trak_proj_dim": trak.proj_dim,
        }
        trak.close()
    say("done", 1.0)
    return out


def _class_of_sources(run: TrainedRun) -> np.ndarray:
    """The (training) class of each source of a per-example run ``[m]``."""
    ds = run.dataset
    if run.n_sources != ds.n_train:
        raise ConfigError("grouping by class needs a run with one source per example.")
    return ds.y_train.astype(np.int64)


def machine_description() -> dict:
    """What the cost numbers were measured on."""
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "node": platform.node(),
    }


def breakeven_queries(setup_a: float, per_query_a: float, setup_b: float, per_query_b: float) -> float:
    """Number of queries q where ``setup_a + q·per_query_a = setup_b + q·per_query_b``.

    ``inf`` when a never catches up with b; 0 when a is cheaper from the start.
    """
    if setup_a <= setup_b and per_query_a <= per_query_b:
        return 0.0
    if per_query_a >= per_query_b:
        return float("inf")
    return (setup_a - setup_b) / (per_query_b - per_query_a)


def save_cost(store: RunStore, run_name: str, version: str, result: dict) -> None:
    """Store a cost measurement (lists of numbers + the machine description in meta)."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in result.items() if isinstance(v, (list, tuple, np.ndarray))}
    scalars = {k: v for k, v in result.items() if not isinstance(v, (list, tuple, np.ndarray))}
    store.put_artifact(
        COST_KIND,
        {"run": run_name, "version": version},
        arrays,
        meta={**scalars, "machine": machine_description(), "measured_at": time.time()},
    )


def load_cost(store: RunStore, run_name: str, version: str) -> dict | None:
    found = store.get_artifact(COST_KIND, {"run": run_name, "version": version})
    if found is None:
        return None
    return {**{k: v.tolist() for k, v in found.arrays.items()}, **found.meta}


def speed_ratio_text(ratio: float, other: str = "forward-only") -> str:
    """``ratio`` = this method's time per query / ``other``'s, as words that never round to
    "0×": ``"3.2× slower than forward-only"``, ``"2.5× faster than forward-only"``."""
    if not np.isfinite(ratio) or ratio <= 0:
        return f"not comparable with {other}"
    if abs(ratio - 1) < 0.05:
        return f"as fast as {other}"
    if ratio > 1:
        return f"{ratio:,.1f}× slower than {other}" if ratio < 10 else f"{ratio:,.0f}× slower than {other}"
    inv = 1 / ratio
    return f"{inv:,.1f}× faster than {other}" if inv < 10 else f"{inv:,.0f}× faster than {other}"
