"""Run commands: ``train``, ``score``, ``attribute``, ``runs``, ``show``, ``delete``, ``gc``."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import parse_hidden
from ..data.datasets import load_queries
from ..data.sources import Sources, make_sources
from ..engine.estimate import check_estimate, estimate_training
from ..engine.measures import check_labels
from ..engine.readout import _fmt_bytes, result_bytes
from ..errors import ConfigError
from ..executors import Executor
from ..methods.forward_only import ForwardOnly
from ..methods.pipeline import prepare
from ..run import TrainedRun
from .attribute import cli_attribute
from .common import _chosen_simulation, _configs, _dataset, _fit, _print_top, _progress_bar, _queries, _store


def _executor(args):
    """The executor ``--workers``/``--scheduler`` ask for (None: simulate in this process)."""
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if workers is None and scheduler is None:
        return None

    return Executor.resolve(scheduler=scheduler, workers=workers)


def cmd_train(args, keep: bool = False, before=None):
    """``train``; ``before(dataset)`` runs every further check (e.g. the queries of
    ``attribute``) after the data loads and before any training."""
    store = _store()
    if args.run is not None:  # every check save_run makes, before any work ("--run ''" too)
        if store.exists(args.run) and not args.overwrite:
            raise ConfigError(f"run '{args.run}' exists; pick another --run name or pass --overwrite.")
        store.check_can_save(args.run, args.overwrite)
    dataset = _dataset(args)
    train_cfg, sim = _configs(args, choose=True)
    reason = None
    if sim is None:  # no option chose the simulation: the measured default for this model and data
        sim, reason = _chosen_simulation(args, dataset, train_cfg, make_sources(dataset, args.sources).m)
    if before is not None:
        before(dataset)
    if getattr(args, "dry_run", False):
        return _dry_run(args, dataset, train_cfg, sim)
    executor = _executor(args)
    try:
        run = _fit(args, dataset, train_cfg, sim, executor=executor, simulation_reason=reason)
    finally:
        if executor is not None:
            executor.close()
    if "sharding" in run.metrics:
        sh = run.metrics["sharding"]
        retried = f", {sh['retried_shards']} retried after a worker died" if sh["retried_shards"] else ""
        print(
            f"simulated in {sh['tasks']} shard task(s) of {sh['shard_kind']} on {sh['engine']} "
            f"({sh['workers']} workers){retried}",
            file=sys.stderr,
        )
    t = run.timings
    acc = run.metrics.get("test_accuracy")
    acc = f"test accuracy {acc:.4f}" if dataset.n_test and acc is not None else "no test split"
    print(
        f"trained {dataset.name}: {acc}, "
        f"{t.get('total_seconds', t['train_seconds']):.1f} s in all ({t['simulate_seconds']:.1f} s simulating), "
        f"{run.n_sources} sources, {run.bytes_per_source() / 1024:.1f} KiB per source "
        f"({_responses_label(run)})",
        file=sys.stderr,
    )
    if reason is not None:
        print(f"simulation: {reason}", file=sys.stderr)
    if args.run is not None:
        run.save(store, args.run, overwrite=args.overwrite)
        print(f"saved run '{args.run}' in {store.home}", file=sys.stderr)
    return run


def _dry_run(args, dataset, train_cfg, sim):
    """``train --dry-run``: every check and the estimate, no training."""
    hidden = parse_hidden(args.hidden)
    m = make_sources(dataset, args.sources).m
    est = estimate_training(dataset.n_train, dataset.n_features, dataset.n_classes, hidden, train_cfg, sim, m)
    print(f"dry run: {est.summary()}")
    for note in est.notes:
        print(f"  {note}")
    for warning in check_estimate(est, sim):  # a refusal raises: one error line, exit 2
        print(f"warning: {warning}")
    saved = f" (the run would be saved as {args.run!r})" if args.run else ""
    print(f"the settings are valid; nothing was trained{saved}")
    return est


def _query_rows(text, n: int) -> slice:
    """``--queries A:B`` → a slice of the n queries (ConfigError if it is not one)."""
    try:
        a, b = (part.strip() for part in str(text).split(":"))
        start, stop = int(a) if a else 0, int(b) if b else n
    except ValueError:
        raise ConfigError(f"--queries takes A:B (0-based, B exclusive), e.g. 0:1000; got {text!r}.") from None
    if not 0 <= start < stop <= n:
        raise ConfigError(f"--queries {text} is outside the {n} queries; pick A:B with 0 <= A < B <= {n}.")
    return slice(start, stop)


def forward_only_scorer(run: TrainedRun, args) -> ForwardOnly:
    """The run as a fitted forward-only attributor (:func:`attrcore.methods.pipeline.prepare`
    reuses the run: nothing is trained), reading out as the flags say."""
    run.check_attributable()
    ds = run.dataset
    a, _ = prepare(
        "forward-only",
        run.mlp,
        ds.X_train,
        ds.y_train,
        run.train_config,
        sources=Sources(run.sources_kind, run.source_index, run.source_names),
        trained=[run],
        measure=args.measure,
        target_class=args.target_class,
        options={"readout": args.readout, "memory_budget_mb": getattr(args, "memory_budget_mb", 1024.0)},
    )
    return a


def cmd_score(args, run=None):
    budget = getattr(args, "memory_budget_mb", 1024.0)
    if run is None:  # responses larger than the budget are memory-mapped, streamed from disk
        run = TrainedRun.load(_store(), args.run, memory_budget_mb=budget)
    X, y = _queries(run, args.test)
    check_labels(args.measure, y is not None, args.target_class)
    rows = getattr(args, "query_rows", None)
    if rows is not None:
        sl = _query_rows(rows, len(X))
        X, y = X[sl], None if y is None else y[sl]
    Q, m = len(X), run.n_sources
    top_k = getattr(args, "top_k", None)
    out = Path(args.out) if args.out else None
    need = result_bytes(Q, m)
    scorer = forward_only_scorer(run, args)
    t0 = time.perf_counter()
    if top_k is not None:
        if out is not None and out.suffix != ".npz":
            raise ConfigError(f"with --top-k, --out must end in .npz (indices and scores), got {out.name!r}.")
        result = scorer.top_k(X, y, k=top_k)
        what = f"the top {result.top_indices.shape[1]} of {m} sources"
    elif out is not None:
        if out.suffix != ".npy":
            raise ConfigError(f"--out must end in .npy, got {out.name!r}.")
        free = shutil.disk_usage(out.parent if out.parent.exists() else Path.cwd()).free
        if need > free:
            raise ConfigError(
                f"the {Q} × {m} score matrix needs {_fmt_bytes(need)} on disk but only {_fmt_bytes(free)} are free "
                f"there; keep the best sources of each query with --top-k K (--out FILE.npz), or score a subset "
                "with --queries A:B."
            )
        bar, cb = _progress_bar(Q, "score")
        try:
            scorer.score_to_npy(out, X, y, progress=cb)
        finally:
            bar.close()
        result = np.load(out, mmap_mode="r")
        what = f"{m} sources, written chunk by chunk to {out} ({_fmt_bytes(need)})"
    else:  # print the first queries' top sources; never the whole matrix
        result = scorer.top_k(X[:3], None if y is None else y[:3], k=5)
        Q, what = min(Q, 3), f"the top 5 of {m} sources (pass --out FILE.npy for the matrix or --top-k K)"
    dt = time.perf_counter() - t0
    mapped = "; responses memory-mapped from the store (larger than --memory-budget)" if run.memory_mapped else ""
    print(
        f"scored {Q} queries × {what} in {dt:.3f} s ({1000 * dt / max(1, Q):.2f} ms per query){mapped}", file=sys.stderr
    )
    if top_k is not None and out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part.npz")
        np.savez(tmp, **result.arrays())
        tmp.replace(out)
        print(f"wrote {out} (top_indices, top_scores, bottom_indices, bottom_scores: [{Q}, {top_k}])", file=sys.stderr)
    elif out is None:
        _print_top(run, result)
    return result


def cmd_gc(args):
    """``gc``: remove what killed saves left behind and uploads no run uses."""
    store = _store()
    store.list_runs()  # opening the store already removes what dead writers left
    removed = store.cleaned_on_open + store.gc(grace_seconds=args.grace_seconds)
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} orphan(s) removed from {store.home}")


def cmd_attribute(args):
    method = getattr(args, "method", "forward-only")
    if method != "forward-only":
        return cli_attribute(args)

    def check_queries(dataset):  # a query problem is found before training, not after
        X, y = load_queries(args.test, dataset)
        check_labels(args.measure, y is not None, args.target_class)

    run = cmd_train(args, before=check_queries)
    return cmd_score(args, run=run)  # through pipeline.prepare, reusing the run (forward_only_scorer)


def cmd_runs(args):
    df = _store().runs_table()
    if df.empty:
        print("no runs yet; train one with 'python -m attrcore train --train digits --run NAME'")
        return

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(df.to_string(index=False))


def cmd_show(args):
    run = TrainedRun.load(_store(), args.name)
    sim = run.config.get("simulation", {})
    picked = {
        "picked": f"{sim.get('scheme')}, horizon {sim.get('horizon')}, curvature {sim.get('curvature')}",
        "why": run.simulation_reason or "set explicitly",
    }
    print(
        json.dumps(
            {
                "simulation": picked,
                "config": run.config,
                "metrics": run.metrics,
                "timings": run.timings,
                "n_sources": run.n_sources,
                "bytes_per_source": run.bytes_per_source(),
                "responses": run.compression,
            },
            indent=2,
        )
    )


def _responses_label(run) -> str:
    """'dense' or 'compressed, rank r', with the reason the rank was chosen."""
    info = run.compression
    if info["kind"] == "compressed":
        return f"compressed Δ ≈ C Qᵀ, {info.get('reason', 'rank ' + str(info['rank']))}"
    return info.get("reason", info["kind"])


def cmd_delete(args):
    _store().delete_run(args.name)
    print(f"deleted run '{args.name}'")
