"""Command line: ``python -m attrcore {train,score,attribute,runs,show,delete,...}``.

Errors a user can cause print one readable line (``error: ...``) and exit with status 2;
no traceback. Long jobs show a terminal progress bar (tqdm) on stderr.

Contract (benchmarks and users script against it)::

    python -m attrcore train --train TRAIN --hidden 128 --epochs 30 --lr 0.1 --batch-size 64 \\
        --momentum 0 --weight-decay 1e-4 --seed 0 --scheme trajectory --horizon full \\
        --sources example --run NAME
    python -m attrcore score --run NAME --test QUERIES --measure margin --readout jvp --out SCORES.npy
    python -m attrcore attribute  (train + score, the flags of both)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .errors import AttrcoreError, ConfigError

DEFAULT_DATA = "digits"


def _hidden(values: list[str]) -> tuple[int, ...]:
    out: list[int] = []
    for v in values:
        for part in str(v).replace(",", " ").split():
            if part.lower() in ("none", "0", "-"):
                continue
            try:
                out.append(int(part))
            except ValueError:
                raise ConfigError(
                    f"--hidden takes layer widths such as '--hidden 128 64' (or 'none' for logistic "
                    f"regression), got {part!r}."
                ) from None
    return tuple(out)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", default=DEFAULT_DATA, metavar="TRAIN",
                   help="built-in dataset (digits, mnist1d, breast_cancer, moons) or an NPZ/CSV path")
    g.add_argument("--label-column", help="CSV: the column holding the labels")
    g.add_argument("--group-column", help="CSV: a column whose values define sources (--sources group)")
    g.add_argument("--test-fraction", type=float, default=0.2, help="held-out fraction (default 0.2)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split (default 0)")
    g.add_argument("--label-noise", type=float, default=0.0, help="fraction of training labels to flip")
    g.add_argument("--n-samples", type=int, help="moons: number of points")
    g.add_argument("--noise", type=float, help="moons: noise level")


def add_model_flags(p: argparse.ArgumentParser, title: str = "model and training") -> None:
    """The MLP shape and SGD flags (shared with ``evaluate``, whose retraining must match)."""
    g = p.add_argument_group(title)
    g.add_argument("--hidden", nargs="*", default=["128"],
                   help="hidden widths, e.g. 128 64; none = logistic regression")
    g.add_argument("--activation", default="relu", choices=["relu", "tanh", "gelu"])
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--lr", type=float, default=0.1, help="learning rate")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--momentum", type=float, default=0.0)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--lr-schedule", default="constant", choices=["constant", "step", "cosine"])
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order")
    g.add_argument("--dtype", default="float32", choices=["float32", "float64"])


def add_train_flags(p: argparse.ArgumentParser) -> None:
    add_model_flags(p)
    s = p.add_argument_group("simulation")
    s.add_argument("--scheme", default="trajectory", choices=["trajectory", "stationary", "none"])
    s.add_argument("--horizon", default="full", help="K: an integer ≥ 0, or 'full' (trajectory)")
    s.add_argument("--curvature", default="hessian", choices=["hessian", "gauss-newton"])
    s.add_argument("--damping", type=float, default=0.01, help="stationary: λ added to the curvature")
    s.add_argument("--step-size", type=float, help="stationary: Neumann step α (default 1/λ_max)")
    s.add_argument("--curvature-batch", type=int, help="stationary: curvature mini-batch (default all data)")
    s.add_argument("--sources", default="example", choices=["example", "class", "group"])
    s.add_argument("--memory-budget", type=float, default=2048.0, help="MB of working memory for simulation")
    s.add_argument("--response-dtype", choices=["float16", "float32", "float64"], help="storage precision of responses")
    p.add_argument("--run", help="name to save the run under in the store")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")


def add_score_flags(p: argparse.ArgumentParser, with_run: bool) -> None:
    g = p.add_argument_group("scoring")
    if with_run:
        g.add_argument("--run", required=True, help="a saved run (see 'python -m attrcore runs')")
    g.add_argument("--test", help="queries: the run's dataset name (its test split, default) or an NPZ/CSV path")
    g.add_argument("--measure", default="margin", choices=["margin", "loss", "logit", "prob"])
    g.add_argument("--target-class", type=int, help="class for --measure logit/prob (default: the true class)")
    g.add_argument("--readout", default="jvp", choices=["jvp", "cd"])
    g.add_argument("--out", help="write the [n_queries, n_sources] float32 matrix here (.npy)")


def _store():
    from .store import RunStore

    return RunStore()


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, disable=None)

    def cb(p) -> None:
        if bar.total != p.total:
            bar.reset(total=p.total)
            bar.set_description(p.stage)
        bar.n = p.done
        if p.metrics:
            shown = ("loss", "train_accuracy", "test_accuracy")
            bar.set_postfix({k: f"{v:.3f}" for k, v in p.metrics.items() if k in shown})
        bar.refresh()

    return bar, cb


def _dataset(args):
    from .data import load_dataset

    return load_dataset(
        args.train, seed=args.split_seed, test_fraction=args.test_fraction, label_noise=args.label_noise,
        label_column=args.label_column, group_column=args.group_column,
        n_samples=args.n_samples, noise=args.noise,
    )


def _configs(args):
    from .config import SimulationConfig, TrainConfig, parse_horizon

    train_cfg = TrainConfig(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, momentum=args.momentum,
        weight_decay=args.weight_decay, lr_schedule=args.lr_schedule, seed=args.seed, dtype=args.dtype,
    )
    sim = SimulationConfig(
        scheme=args.scheme, horizon=parse_horizon(args.horizon), curvature=args.curvature,
        damping=args.damping, step_size=args.step_size, curvature_batch_size=args.curvature_batch,
        memory_budget_mb=args.memory_budget, response_dtype=args.response_dtype,
    )
    return train_cfg, sim


def cmd_train(args, keep: bool = False):
    from .run import fit

    store = _store()
    if args.run and store.exists(args.run) and not args.overwrite:
        raise ConfigError(f"run '{args.run}' exists; pick another --run name or pass --overwrite.")
    dataset = _dataset(args)
    train_cfg, sim = _configs(args)
    bar, cb = _progress_bar(train_cfg.epochs, "train")
    try:
        run = fit(dataset, hidden=_hidden(args.hidden), activation=args.activation,
                  train_config=train_cfg, simulation=sim, sources=args.sources, progress=cb)
    finally:
        bar.close()
    t = run.timings
    print(f"trained {dataset.name}: test accuracy {run.metrics.get('test_accuracy', float('nan')):.4f}, "
          f"{t['train_seconds']:.1f} s ({t['simulate_seconds']:.1f} s simulating), "
          f"{run.n_sources} sources, {run.bytes_per_source() / 1024:.1f} KiB per source", file=sys.stderr)
    if args.run:
        run.save(store, args.run, overwrite=args.overwrite)
        print(f"saved run '{args.run}' in {store.home}", file=sys.stderr)
    return run


def _queries(run, test):
    from .data import load_queries

    return load_queries(test, run.dataset)


def cmd_score(args, run=None):
    import time

    from .run import TrainedRun

    if run is None:
        run = TrainedRun.load(_store(), args.run)
    X, y = _queries(run, args.test)
    if y is None and args.measure in ("margin", "loss"):
        raise ConfigError(
            f"the queries have no labels, which --measure {args.measure} needs; add a label column/array "
            "or use --measure logit/prob with --target-class."
        )
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


def _print_top(run, scores, k: int = 5) -> None:
    for q in range(min(3, scores.shape[0])):
        order = np.argsort(-scores[q])
        top = ", ".join(f"{run.source_names[j]} ({scores[q, j]:+.3g})" for j in order[:k])
        print(f"query {q}: top proponents {top}")


def cmd_attribute(args):
    method = getattr(args, "method", "forward-only")
    if method != "forward-only":
        from . import baselines

        return baselines.cli_attribute(args)
    run = cmd_train(args)
    return cmd_score(args, run=run)


def cmd_runs(args):
    df = _store().runs_table()
    if df.empty:
        print("no runs yet; train one with 'python -m attrcore train --train digits --run NAME'")
        return
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(df.to_string(index=False))


def cmd_show(args):
    from .run import TrainedRun

    run = TrainedRun.load(_store(), args.name)
    print(json.dumps({"config": run.config, "metrics": run.metrics, "timings": run.timings,
                      "n_sources": run.n_sources, "bytes_per_source": run.bytes_per_source()}, indent=2))


def cmd_delete(args):
    _store().delete_run(args.name)
    print(f"deleted run '{args.name}'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attrcore", description="Forward-only training data attribution.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train an MLP and simulate every source's response")
    add_data_flags(p)
    add_train_flags(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("score", help="attribute queries with a saved run (forward evaluations only)")
    add_score_flags(p, with_run=True)
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("attribute", help="train + score in one command")
    add_data_flags(p)
    add_train_flags(p)
    add_score_flags(p, with_run=False)
    p.add_argument("--method", default="forward-only",
                   choices=["forward-only", "trak", "if", "tracin", "grad-dot", "random"])
    p.add_argument("--ensemble", type=int, default=1, help="TRAK: number of models")
    p.add_argument("--proj-dim", type=int, default=512, help="TRAK: projection dimension")
    p.set_defaults(func=cmd_attribute)
    p = sub.add_parser("runs", help="list saved runs")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("show", help="print a saved run's config and metrics")
    p.add_argument("name")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("delete", help="delete a saved run")
    p.add_argument("name")
    p.set_defaults(func=cmd_delete)
    try:
        from . import cli_eval
    except ImportError:
        cli_eval = None
    if cli_eval is not None and hasattr(cli_eval, "register"):
        cli_eval.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except AttrcoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept.", file=sys.stderr)
        return 130
    return 0
