"""Run commands: ``train``, ``score``, ``attribute``, ``runs``, ``show``, ``delete``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import parse_hidden
from ..engine.measures import check_labels
from ..errors import ConfigError
from ..run import TrainedRun, fit
from .attribute import cli_attribute
from .common import _chosen_simulation, _configs, _dataset, _print_top, _progress_bar, _queries, _store


def _executor(args):
    """The executor ``--workers``/``--scheduler`` ask for (None: simulate in this process)."""
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if workers is None and scheduler is None:
        return None
    from ..executors import Executor

    return Executor.resolve(scheduler=scheduler, workers=workers)


def cmd_train(args, keep: bool = False):
    store = _store()
    if args.run is not None:  # every check save_run makes, before any work ("--run ''" too)
        if store.exists(args.run) and not args.overwrite:
            raise ConfigError(f"run '{args.run}' exists; pick another --run name or pass --overwrite.")
        store.check_can_save(args.run, args.overwrite)
    dataset = _dataset(args)
    train_cfg, sim = _configs(args, choose=True)
    reason = None
    if sim is None:  # no option chose the simulation: the measured default for this model and data
        from ..data.sources import make_sources

        sim, reason = _chosen_simulation(args, dataset, train_cfg, make_sources(dataset, args.sources).m)
    bar, cb = _progress_bar(train_cfg.epochs, "train")
    executor = _executor(args)
    try:
        run = fit(dataset, hidden=parse_hidden(args.hidden), activation=args.activation,
                  train_config=train_cfg, simulation=sim, sources=args.sources, progress=cb,
                  executor=executor, simulation_reason=reason)
    finally:
        bar.close()
        if executor is not None:
            executor.close()
    if "sharding" in run.metrics:
        sh = run.metrics["sharding"]
        retried = f", {sh['retried_shards']} retried after a worker died" if sh["retried_shards"] else ""
        print(f"simulated in {sh['tasks']} shard task(s) of {sh['shard_kind']} on {sh['engine']} "
              f"({sh['workers']} workers){retried}", file=sys.stderr)
    t = run.timings
    print(f"trained {dataset.name}: test accuracy {run.metrics.get('test_accuracy', float('nan')):.4f}, "
          f"{t['train_seconds']:.1f} s ({t['simulate_seconds']:.1f} s simulating), "
          f"{run.n_sources} sources, {run.bytes_per_source() / 1024:.1f} KiB per source "
          f"({_responses_label(run)})", file=sys.stderr)
    if reason is not None:
        print(f"simulation: {reason}", file=sys.stderr)
    if args.run is not None:
        run.save(store, args.run, overwrite=args.overwrite)
        print(f"saved run '{args.run}' in {store.home}", file=sys.stderr)
    return run


def cmd_score(args, run=None):
    if run is None:
        run = TrainedRun.load(_store(), args.run)
    X, y = _queries(run, args.test)
    check_labels(args.measure, y is not None, args.target_class)
    t0 = time.perf_counter()
    scores = run.score(X, y, measure=args.measure, readout=args.readout, target_class=args.target_class)
    dt = time.perf_counter() - t0
    print(f"scored {scores.shape[0]} queries × {scores.shape[1]} sources in {dt:.3f} s "
          f"({1000 * dt / max(1, scores.shape[0]):.2f} ms per query)", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        if out.suffix != ".npy":
            raise ConfigError(f"--out must end in .npy, got {out.name!r}.")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        with open(tmp, "wb") as fh:
            np.save(fh, scores.astype(np.float32), allow_pickle=False)
        tmp.replace(out)
        print(f"wrote {out}", file=sys.stderr)
    else:
        _print_top(run, scores)
    return scores


def cmd_attribute(args):
    method = getattr(args, "method", "forward-only")
    if method != "forward-only":
        return cli_attribute(args)
    run = cmd_train(args)
    return cmd_score(args, run=run)


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
    picked = {"picked": f"{sim.get('scheme')}, horizon {sim.get('horizon')}, curvature {sim.get('curvature')}",
              "why": run.simulation_reason or "set explicitly"}
    print(json.dumps({"simulation": picked, "config": run.config, "metrics": run.metrics, "timings": run.timings,
                      "n_sources": run.n_sources, "bytes_per_source": run.bytes_per_source(),
                      "responses": run.compression}, indent=2))


def _responses_label(run) -> str:
    """'dense' or 'compressed, rank r', with the reason the rank was chosen."""
    info = run.compression
    if info["kind"] == "compressed":
        return f"compressed Δ ≈ C Qᵀ, {info.get('reason', 'rank ' + str(info['rank']))}"
    return info.get("reason", info["kind"])


def cmd_delete(args):
    _store().delete_run(args.name)
    print(f"deleted run '{args.name}'")
