"""Command line for evaluation: ``evaluate`` and ``bench``.

Interface: :func:`register` ``(subparsers)`` adds the subcommands to the main parser of
:mod:`attrcore.cli.main` (each sets ``func=handler(args)``; the main parser turns an
:class:`~attrcore.errors.AttrcoreError` into ``error: …`` and exit status 2). Their flags
are generated from the option sets :class:`EvaluateOptions`, :class:`BenchOptions` and
:class:`EngineOptions` (and the data / model / training ones of :mod:`attrcore.cli.common`).

::

    python -m attrcore evaluate --train digits --scores SCORES.npy --subsets 100 --fraction 0.5 \
        [training flags] [--loo] [--scheduler tcp://host:8786]
    python -m attrcore bench --task digits-mlp [--quick]
    python -m attrcore attribute --method trak --ensemble 10 --proj-dim 512 --out SCORES.npy
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import TrainConfig, option, parse_hidden
from ..data.datasets import load_queries
from ..data.sources import make_sources
from ..engine.model import MLPConfig
from ..errors import ConfigError, ShapeError
from ..evaluation.bench import TASKS, run_bench
from ..evaluation.ground_truth import lds_ground_truth, loo_ground_truth
from ..evaluation.metrics import summarize
from ..methods.registry import METHODS
from .common import (
    SaveOptions,
    ScoreOptions,
    _dataset,
    add_data_flags,
    add_model_flags,
    add_options,
    config_from_args,
    record_flags,
)

# ------------------------------------------------------------------------------ flags


@dataclass(frozen=True)
class EvaluateOptions:
    """``evaluate``: the score matrix and the ground truth it is judged against."""

    scores: str | None = option(
        None, "float [n_queries, n_sources] matrix", type=str, metavar="SCORES.npy", required=True
    )
    subsets: int = option(100, "number of random training subsets (default 100)")
    fraction: float = option(0.5, "fraction of sources kept per subset (default 0.5)")
    subset_seed: int = option(0, "seed of the subset draws")
    ceiling_seeds: int = option(1, "extra seeds per subset for the seed-noise ceiling")
    random_seeds: bool = option(False, "train subset k with seed --seed + k instead of --seed for all subsets")
    loo: bool = option(False, "also compute leave-one-out correlations")
    loo_k: int = option(40, "LOO: number of random sources removed (default 40)")
    loo_seeds: tuple = option((0, 1, 2), "LOO: seeds averaged over", type=int, nargs="+")
    json: str | None = option(None, "also write the results as JSON here", type=str, metavar="PATH")


@dataclass(frozen=True)
class BenchOptions:
    """``bench``: which task, how much of it, where the report goes."""

    task: str = option("digits-mlp", "the benchmark task", choices=sorted(TASKS))
    quick: bool = option(False, "a small smoke setting (10 subsets, 3 epochs)")
    subsets: int | None = option(None, "LDS subsets (default: the task's, 100; --quick: 10)", type=int)
    queries: int | None = option(None, "use the first N test examples as queries (default: all)", type=int)
    epochs: int | None = option(None, "override the task's number of epochs", type=int)
    methods: tuple | None = option(None, "only these methods", type=str, nargs="+", metavar="METHOD", choices=METHODS)
    out: str = option("benchmarks", "directory for the table and JSON (default benchmarks)")


@dataclass(frozen=True)
class EngineOptions:
    """Where the retraining runs."""

    scheduler: str | None = option(
        None,
        "run the retraining on this Dask scheduler (default: joblib on this machine)",
        type=str,
        metavar="tcp://HOST:PORT",
    )
    jobs: int = option(-1, "joblib workers (-1 = all cores, 1 = in process)")


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    """The model and training flags of ``train`` (same names and defaults)."""

    add_model_flags(p, "model and training (must match the run that produced the scores)")
    record_flags(p, add_options(p, SaveOptions, only=("sources",)))


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    record_flags(p, add_options(p.add_argument_group("retraining engine"), EngineOptions))


def register(subparsers) -> None:
    """Add ``evaluate`` and ``bench`` to ``subparsers``."""

    p = subparsers.add_parser(
        "evaluate",
        help="LDS (and LOO) of a score matrix against retrained models",
        description="Retrain models on random subsets (stored and resumable), then print the LDS of "
        "SCORES.npy ([n_queries, n_sources]) and, with --loo, its leave-one-out correlation.",
    )
    add_data_flags(p)
    flags = add_options(p, ScoreOptions, only=("test",))
    flags |= add_options(p, EvaluateOptions, only=("scores",))
    flags |= add_options(p, ScoreOptions, only=("measure", "target_class"))
    record_flags(p, flags)
    _add_model_flags(p)
    g = p.add_argument_group("ground truth")
    record_flags(p, add_options(g, EvaluateOptions, skip=("scores",)))
    _add_engine_flags(p)
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser(
        "bench", help="run every method on a benchmark task and write benchmarks/<task>.{md,json}"
    )
    record_flags(p, add_options(p, BenchOptions))
    _add_engine_flags(p)
    p.set_defaults(func=cmd_bench)


# ------------------------------------------------------------------------------ helpers


def _progress_bar():
    """A tqdm bar over retrained models, restarted at each stage (LDS, LOO, ...)."""
    state: dict = {"bar": None, "stage": None}

    def cb(p) -> None:
        if state["stage"] != p.stage or state["bar"] is None:
            if state["bar"] is not None:
                state["bar"].close()
            retrain = p.stage != "methods"  # the benchmark's last stage scores methods
            state["bar"] = tqdm(
                total=p.total,
                desc=f"retraining ({p.stage})" if retrain else "methods",
                unit="model" if retrain else "method",
                file=sys.stderr,
                disable=None,
            )
            state["stage"] = p.stage
        bar = state["bar"]
        bar.n = p.done
        cached = p.metrics.get("cached") if p.metrics else None
        if cached:
            bar.set_postfix(stored=cached)
        bar.refresh()

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return cb, close


def _train_config(args):
    return config_from_args(TrainConfig, args)


def _load_scores(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"score file {path!r} does not exist; write one with 'python -m attrcore score ... --out {path}'."
        )
    try:
        scores = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ConfigError(f"could not read {path!r} as a .npy array ({err}); save scores with numpy.save.") from None
    if scores.ndim != 2 or not np.issubdtype(scores.dtype, np.number):
        raise ShapeError(
            f"{path} holds a {scores.dtype} array of shape {scores.shape}; expected a float "
            "[n_queries, n_sources] matrix."
        )
    if not np.isfinite(scores).all():
        raise ShapeError(f"{path} holds NaN or infinite scores; recompute them.")
    return scores.astype(np.float64)


def _fmt(s: dict) -> str:
    return f"{s['mean']:.4f} ± {s['sem']:.4f}" if s["n"] > 1 else f"{s['mean']:.4f}"


# ----------------------------------------------------------------------------- commands


def cmd_evaluate(args) -> int:
    ds = _dataset(args)
    X_q, y_q = load_queries(args.test, ds)
    scores = _load_scores(args.scores)
    src = make_sources(ds, args.sources)
    if scores.shape != (len(X_q), src.m):
        raise ShapeError(
            f"{args.scores} has shape {scores.shape} but there are {len(X_q)} queries and {src.m} "
            f"sources ({args.sources}); score the same queries and training set (rows = queries, "
            "columns = sources in training-set order)."
        )
    mcfg = MLPConfig(ds.n_features, ds.n_classes, parse_hidden(args.hidden), args.activation)
    cfg = _train_config(args)
    sources = None if args.sources == "example" else src
    common = {
        "queries": (X_q, y_q),
        "target_class": args.target_class,
        "sources": sources,
        "scheduler": args.scheduler,
        "n_jobs": args.jobs,
    }
    cb, close = _progress_bar()
    try:
        gt = lds_ground_truth(
            ds,
            mcfg,
            cfg,
            n_subsets=args.subsets,
            fraction=args.fraction,
            seed=args.subset_seed,
            measure=args.measure,
            ceiling_seeds=args.ceiling_seeds,
            vary_seed=args.random_seeds,
            progress=cb,
            **common,
        )
        loo = None
        if args.loo:
            rng = np.random.default_rng(args.subset_seed)
            idx = np.sort(rng.choice(src.m, size=min(args.loo_k, src.m), replace=False))
            loo = loo_ground_truth(
                ds, mcfg, cfg, idx, seeds=args.loo_seeds, measure=args.measure, progress=cb, **common
            )
    finally:
        close()
    result = {
        "lds": summarize(gt.score(scores)),
        "ceiling": summarize(gt.ceiling()),
        "oracle_ceiling": summarize(gt.oracle_ceiling()),
        "n_subsets": gt.n_subsets,
        "fraction": args.fraction,
        "retrained": gt.n_trained,
        "seconds": gt.seconds,
    }
    protocol = "seed per subset" if args.random_seeds else f"seed {cfg.seed} for every subset"
    print(
        f"LDS {_fmt(result['lds'])} over {result['lds']['n']} queries "
        f"({gt.n_subsets} subsets at {args.fraction}, {protocol}; {gt.n_trained} models retrained "
        f"in {gt.seconds:.1f} s, the rest read from the store)"
    )
    if args.ceiling_seeds:
        print(
            f"seed-noise ceiling {_fmt(result['ceiling'])} (run-to-run Spearman of retrained outputs; "
            f"noise-free bound {_fmt(result['oracle_ceiling'])})"
        )
    if loo is not None:
        c = loo.score(scores)
        result["loo"] = {
            "pearson": summarize(c.pearson),
            "spearman": summarize(c.spearman),
            "seed_agreement": summarize(loo.seed_agreement()),
            "k": len(loo.indices),
            "seeds": list(args.loo_seeds),
        }
        print(
            f"LOO (weight-zero, {len(loo.indices)} sources, seeds {list(args.loo_seeds)}): "
            f"Pearson {_fmt(result['loo']['pearson'])}, Spearman {_fmt(result['loo']['spearman'])}; "
            f"seed-to-seed agreement of the effects {_fmt(result['loo']['seed_agreement'])}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def cmd_bench(args) -> int:
    cb, close = _progress_bar()
    try:
        doc = run_bench(
            args.task,
            out_dir=args.out,
            quick=args.quick,
            n_subsets=args.subsets,
            n_queries=args.queries,
            epochs=args.epochs,
            methods=tuple(args.methods) if args.methods else None,
            scheduler=args.scheduler,
            n_jobs=args.jobs,
            progress=cb,
        )
    finally:
        close()
    md = Path(args.out) / f"{doc['name']}.md"
    print(md.read_text())
    print(f"wrote {md} and {md.with_suffix('.json')}")
    return 0
