"""Command line for evaluation: ``evaluate`` and ``bench``, and ``attribute`` for baselines.

Interface: :func:`register` ``(subparsers)`` adds the subcommands to the main parser of
:mod:`attrcore.cli.main` (each sets ``func=handler(args)``; the main parser turns an
:class:`~attrcore.errors.AttrcoreError` into ``error: …`` and exit status 2) and adds the
baseline options to its ``attribute`` subcommand (run by
:func:`attrcore.cli.attribute.cli_attribute`).

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
from pathlib import Path

import numpy as np

from ..config import TrainConfig, parse_hidden
from ..data.datasets import load_queries
from ..data.sources import SOURCE_KINDS, make_sources
from ..engine.measures import MEASURES
from ..engine.model import MLPConfig
from ..errors import ConfigError, ShapeError
from ..evaluation.bench import TASKS, run_bench
from ..evaluation.ground_truth import lds_ground_truth, loo_ground_truth
from ..evaluation.metrics import summarize
from ..methods.registry import IF_SOLVERS, METHODS
from .common import _dataset, add_data_flags, add_model_flags, config_from_args

# ------------------------------------------------------------------------------ flags


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    """The model and training flags of ``train`` (same names and defaults)."""

    add_model_flags(p, "model and training (must match the run that produced the scores)")
    p.add_argument("--sources", default="example", choices=list(SOURCE_KINDS),
                   help="what the score columns are (default: one per training example)")


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("retraining engine")
    g.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run the retraining on this Dask scheduler (default: joblib on this machine)")
    g.add_argument("--jobs", type=int, default=-1, help="joblib workers (-1 = all cores, 1 = in process)")


def register(subparsers) -> None:
    """Add ``evaluate`` and ``bench`` to ``subparsers``, and baseline flags to ``attribute``."""

    p = subparsers.add_parser(
        "evaluate", help="LDS (and LOO) of a score matrix against retrained models",
        description="Retrain models on random subsets (stored and resumable), then print the LDS of "
                    "SCORES.npy ([n_queries, n_sources]) and, with --loo, its leave-one-out correlation.",
    )
    add_data_flags(p)
    p.add_argument("--test", help="queries: the dataset's test split (default) or an NPZ/CSV path")
    p.add_argument("--scores", required=True, metavar="SCORES.npy", help="float [n_queries, n_sources] matrix")
    p.add_argument("--measure", default="margin", choices=list(MEASURES))
    p.add_argument("--target-class", type=int, help="class for --measure logit/prob")
    _add_model_flags(p)
    g = p.add_argument_group("ground truth")
    g.add_argument("--subsets", type=int, default=100, help="number of random training subsets (default 100)")
    g.add_argument("--fraction", type=float, default=0.5, help="fraction of sources kept per subset (default 0.5)")
    g.add_argument("--subset-seed", type=int, default=0, help="seed of the subset draws")
    g.add_argument("--ceiling-seeds", type=int, default=1, help="extra seeds per subset for the seed-noise ceiling")
    g.add_argument("--random-seeds", action="store_true",
                   help="train subset k with seed --seed + k instead of --seed for all subsets")
    g.add_argument("--loo", action="store_true", help="also compute leave-one-out correlations")
    g.add_argument("--loo-k", type=int, default=40, help="LOO: number of random sources removed (default 40)")
    g.add_argument("--loo-seeds", type=int, nargs="+", default=[0, 1, 2], help="LOO: seeds averaged over")
    g.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    _add_engine_flags(p)
    p.set_defaults(func=cmd_evaluate)


    p = subparsers.add_parser(
        "bench", help="run every method on a benchmark task and write benchmarks/<task>.{md,json}")
    p.add_argument("--task", default="digits-mlp", choices=sorted(TASKS))
    p.add_argument("--quick", action="store_true", help="a small smoke setting (10 subsets, 3 epochs)")
    p.add_argument("--subsets", type=int, help="LDS subsets (default: the task's, 100; --quick: 10)")
    p.add_argument("--queries", type=int, help="use the first N test examples as queries (default: all)")
    p.add_argument("--epochs", type=int, help="override the task's number of epochs")
    p.add_argument("--methods", nargs="+", metavar="METHOD",
                   choices=list(METHODS),
                   help="only these methods")
    p.add_argument("--out", default="benchmarks", help="directory for the table and JSON (default benchmarks)")
    _add_engine_flags(p)
    p.set_defaults(func=cmd_bench)

    attribute = getattr(subparsers, "choices", {}).get("attribute")
    if attribute is not None:
        g = attribute.add_argument_group("baselines (--method other than forward-only)")
        g.add_argument("--if-solver", default="explicit", choices=list(IF_SOLVERS),
                       help="--method if: explicit Hessian of the last layer (default) or CG over the "
                            "whole network; --damping sets the damping")
        g.add_argument("--lambda-reg", type=float,
                       help="TRAK: ridge on the kernel (default: 0 below n training examples, automatic above)")


# ------------------------------------------------------------------------------ helpers


def _progress_bar():
    """A tqdm bar over retrained models, restarted at each stage (LDS, LOO, ...)."""
    from tqdm import tqdm  # the terminal progress bar only

    state: dict = {"bar": None, "stage": None}

    def cb(p) -> None:
        if state["stage"] != p.stage or state["bar"] is None:
            if state["bar"] is not None:
                state["bar"].close()
            retrain = p.stage != "methods"  # the benchmark's last stage scores methods
            state["bar"] = tqdm(total=p.total, desc=f"retraining ({p.stage})" if retrain else "methods",
                                unit="model" if retrain else "method", file=sys.stderr, disable=None)
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
        raise ShapeError(f"{path} holds a {scores.dtype} array of shape {scores.shape}; expected a float "
                         "[n_queries, n_sources] matrix.")
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
    common = {"queries": (X_q, y_q), "target_class": args.target_class, "sources": sources,
              "scheduler": args.scheduler, "n_jobs": args.jobs}
    cb, close = _progress_bar()
    try:
        gt = lds_ground_truth(ds, mcfg, cfg, n_subsets=args.subsets, fraction=args.fraction,
                              seed=args.subset_seed, measure=args.measure,
                              ceiling_seeds=args.ceiling_seeds, vary_seed=args.random_seeds,
                              progress=cb, **common)
        loo = None
        if args.loo:
            rng = np.random.default_rng(args.subset_seed)
            idx = np.sort(rng.choice(src.m, size=min(args.loo_k, src.m), replace=False))
            loo = loo_ground_truth(ds, mcfg, cfg, idx, seeds=args.loo_seeds, measure=args.measure,
                                   progress=cb, **common)
    finally:
        close()
    result = {
        "lds": summarize(gt.score(scores)), "ceiling": summarize(gt.ceiling()),
        "oracle_ceiling": summarize(gt.oracle_ceiling()), "n_subsets": gt.n_subsets,
        "fraction": args.fraction, "retrained": gt.n_trained, "seconds": gt.seconds,
    }
    protocol = "seed per subset" if args.random_seeds else f"seed {cfg.seed} for every subset"
    print(f"LDS {_fmt(result['lds'])} over {result['lds']['n']} queries "
          f"({gt.n_subsets} subsets at {args.fraction}, {protocol}; {gt.n_trained} models retrained "
          f"in {gt.seconds:.1f} s, the rest read from the store)")
    if args.ceiling_seeds:
        print(f"seed-noise ceiling {_fmt(result['ceiling'])} (run-to-run Spearman of retrained outputs; "
              f"noise-free bound {_fmt(result['oracle_ceiling'])})")
    if loo is not None:
        c = loo.score(scores)
        result["loo"] = {"pearson": summarize(c.pearson), "spearman": summarize(c.spearman),
                         "seed_agreement": summarize(loo.seed_agreement()), "k": len(loo.indices),
                         "seeds": list(args.loo_seeds)}
        print(f"LOO (weight-zero, {len(loo.indices)} sources, seeds {list(args.loo_seeds)}): "
              f"Pearson {_fmt(result['loo']['pearson'])}, Spearman {_fmt(result['loo']['spearman'])}; "
              f"seed-to-seed agreement of the effects {_fmt(result['loo']['seed_agreement'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def cmd_bench(args) -> int:
    cb, close = _progress_bar()
    try:
        doc = run_bench(args.task, out_dir=args.out, quick=args.quick, n_subsets=args.subsets,
                        n_queries=args.queries, epochs=args.epochs,
                        methods=tuple(args.methods) if args.methods else None,
                        scheduler=args.scheduler, n_jobs=args.jobs, progress=cb)
    finally:
        close()
    md = Path(args.out) / f"{doc['name']}.md"
    print(md.read_text())
    print(f"wrote {md} and {md.with_suffix('.json')}")
    return 0

