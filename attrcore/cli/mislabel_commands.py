"""Mislabel commands: ``mislabel`` (inject noise, rank, judge), ``marks``, ``relabel``, ``export``.

::

    python -m attrcore mislabel --train digits --noise 0.1 --seed 0 [training flags] \\
        [--noise-pairs 7:1,2:5] [--signals forward-only,loss,trak-10] [--report REPORT.json] \\
        [--out RANKING.csv] [--fix-top 0.15 --fix-signal forward-only] [--run NAME]
    python -m attrcore marks RUN [--import MARKS.csv] [--clear]
    python -m attrcore relabel --run RUN [--marks MARKS.csv] [--out CLEAN.csv|.npz]
    python -m attrcore export (--run RUN | --train TRAIN [data flags]) [--marks MARKS.csv] --out CLEAN.csv|.npz

A marks CSV has the columns ``index,action,label`` (action: keep, remove or relabel;
label: the new class name for a relabel); ``index`` is the row of the training split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import parse_hidden
from ..data.datasets import load_dataset
from ..engine.model import MLP, MLPConfig
from ..errors import ConfigError
from ..mislabel import compute_signals, detection_rows, finding, format_table, ranking_frame, report_dict
from ..mislabel.fix import apply_marks, export, fix_top, retrain_with_marks
from ..mislabel.marks import clear_marks, load_marks, marked_runs, marks_from_csv, marks_to_frame, set_marks
from ..mislabel.signals import SIGNALS, parse_signals
from ..mislabel.trajectory import TRAJECTORY_SIGNALS, check_recordable, recorder_for
from ..run import TrainedRun
from .common import _configs, _fit, _progress_bar, _store, add_train_flags

__all__ = ["cmd_export", "cmd_marks", "cmd_mislabel", "cmd_relabel", "register"]

# The recipe the mislabel benchmark uses: the digits-mlp preset with K = 0, the horizon
# that ranks flipped labels best there (benchmarks/mislabel_bench.md).
DEFAULT_HORIZON = "0"


def _add_noisy_data_flags(p: argparse.ArgumentParser, with_noise: bool = True) -> None:
    """The data flags of ``train``; ``--noise`` is the label-noise rate here (moons' own
    noise level is ``--moons-noise``)."""
    g = p.add_argument_group("data")
    g.add_argument(
        "--train",
        default="digits",
        metavar="TRAIN",
        help="built-in dataset (digits, mnist1d, breast_cancer, moons) or an NPZ/CSV path",
    )
    g.add_argument("--label-column", help="CSV: the column holding the labels")
    g.add_argument("--test-fraction", type=float, default=0.2, help="held-out fraction (default 0.2)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split (default 0)")
    g.add_argument("--n-samples", type=int, help="moons: number of points")
    g.add_argument("--moons-noise", type=float, help="moons: noise level of the points")
    if with_noise:
        n = p.add_argument_group("label noise")
        n.add_argument(
            "--noise",
            type=float,
            default=0.0,
            help="rate of injected label noise in [0, 1): a fraction of all labels (uniform), "
            "or of each source class with --noise-pairs",
        )
        n.add_argument(
            "--noise-pairs",
            metavar="A:B,...",
            help="class-conditional noise: examples of class A get label B, e.g. 7:1,2:5",
        )
        n.add_argument("--noise-seed", type=int, help="seed of the noise (default: --seed)")


def _noisy_dataset(args, with_noise: bool = True):
    kwargs = {}
    if with_noise:
        if not 0 <= args.noise < 1:
            raise ConfigError(
                f"--noise: label_noise must be in [0, 1), got {args.noise:g}; it is the fraction of labels "
                "flipped (of each source class with --noise-pairs), e.g. --noise 0.1."
            )
        kwargs = {"label_noise": args.noise, "noise_seed": args.seed if args.noise_seed is None else args.noise_seed}
        if args.noise_pairs:
            kwargs["noise_pairs"] = args.noise_pairs
    return load_dataset(
        args.train,
        seed=args.split_seed,
        test_fraction=args.test_fraction,
        label_column=args.label_column,
        n_samples=args.n_samples,
        noise=args.moons_noise,
        **kwargs,
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "mislabel",
        help="inject label noise, rank every training example by suspicion, report ROC-AUC per signal",
        description="Train a run on (optionally noised) data, rank every training example with each signal "
        f"({', '.join(SIGNALS)}) and, when the flips are known, print ROC-AUC and average precision.",
    )
    _add_noisy_data_flags(p)
    add_train_flags(p)
    p.set_defaults(horizon=DEFAULT_HORIZON)
    g = p.add_argument_group("ranking")
    g.add_argument("--signals", default="all", help=f"comma-separated: {', '.join(SIGNALS)} (default all)")
    g.add_argument("--report", metavar="REPORT.json", help="write the AUC / AP table and settings as JSON")
    g.add_argument("--out", metavar="RANKING.csv", help="write every example's scores and ranks")
    g.add_argument(
        "--fix-top",
        type=float,
        metavar="FRACTION",
        help="fix the top FRACTION by --fix-signal (flipped ones back to their clean label), "
        "retrain, print test accuracy before / after / clean",
    )
    g.add_argument("--fix-signal", default="forward-only", help="signal whose ranking --fix-top uses")
    p.set_defaults(func=cmd_mislabel)

    p = subparsers.add_parser("marks", help="list (import, clear) the review marks of a run")
    p.add_argument("name", help="run name")
    p.add_argument("--import", dest="import_csv", metavar="MARKS.csv", help="add / replace marks from a CSV")
    p.add_argument("--clear", action="store_true", help="remove every mark of the run (also of a deleted run)")
    p.set_defaults(func=cmd_marks)

    p = subparsers.add_parser("relabel", help="apply marks to a run's data, retrain with the same recipe, compare")
    p.add_argument("--run", required=True, help="a saved run")
    p.add_argument("--marks", metavar="MARKS.csv", help="marks to add to the run's stored marks first")
    p.add_argument("--out", metavar="CLEAN.csv|.npz", help="also write the cleaned training data")
    p.set_defaults(func=cmd_relabel)

    p = subparsers.add_parser("export", help="write the training data with marks applied (CSV or NPZ)")
    p.add_argument("--run", help="a saved run: its data and its stored marks")
    _add_noisy_data_flags(p)
    p.add_argument("--seed", type=int, default=0, help="--train: default seed of the noise")
    p.add_argument("--marks", metavar="MARKS.csv", help="marks to apply (with --run: added to the stored ones)")
    p.add_argument("--out", required=True, metavar="CLEAN.csv|.npz")
    p.set_defaults(func=cmd_export)


def _check_out(path: str | None, suffixes: tuple[str, ...], flag: str) -> None:
    if path and Path(path).suffix.lower() not in suffixes:
        raise ConfigError(f"{flag} must end in {' or '.join(suffixes)}, got {Path(path).name!r}.")


def _stage_bar():
    """A tqdm bar that restarts for every stage (signal, extra model) it is told about."""
    bar = tqdm(total=1, file=sys.stderr, disable=None, leave=False)
    stage = {"name": None}

    def cb(p):
        if stage["name"] != p.stage or bar.total != p.total:
            stage["name"] = p.stage
            bar.reset(total=p.total)
            bar.set_description(p.stage)
        bar.n = p.done
        bar.refresh()

    return bar, cb


def _trajectory_recorder(args, signals, data, train_cfg, sim):
    """The recorder of the requested trajectory signals (None if there is none), so they
    are read out while the run trains. With the default "all", forward-only self-influence
    over the trajectory is left out (with a note) where the run cannot record it."""
    wanted = [s for s in signals if s in TRAJECTORY_SIGNALS]
    if not wanted:
        return signals, None
    with_si = "forward-only-trajectory" in wanted
    if with_si:
        m = data.n_train if args.sources == "example" else 0
        p = MLP(MLPConfig(data.n_features, data.n_classes, parse_hidden(args.hidden), args.activation)).n_params
        try:
            check_recordable(sim, args.sources, m, p)
        except ConfigError as err:
            if args.signals not in (None, "all"):
                raise
            print(f"(leaving out forward-only-trajectory: {err})", file=sys.stderr)
            signals, with_si = tuple(s for s in signals if s != "forward-only-trajectory"), False
    rec = recorder_for(data, parse_hidden(args.hidden), args.activation, train_cfg, self_influence=with_si)
    return signals, rec


def cmd_mislabel(args):
    signals = parse_signals(args.signals)
    _check_out(args.report, (".json",), "--report")
    _check_out(args.out, (".csv",), "--out")
    if args.fix_top is not None and args.fix_signal not in signals:
        raise ConfigError(f"--fix-signal {args.fix_signal!r} is not among --signals; add it or pick another.")
    store = _store()
    if args.run and store.exists(args.run) and not args.overwrite:
        raise ConfigError(f"run '{args.run}' exists; pick another --run name or pass --overwrite.")
    data = _noisy_dataset(args)
    train_cfg, sim = _configs(args)
    signals, recorder = _trajectory_recorder(args, signals, data, train_cfg, sim)
    run = _fit(args, data, train_cfg, sim, on_epoch=recorder)
    if args.run:
        run.save(store, args.run, overwrite=args.overwrite)
    print(
        f"trained {data.name}: {data.n_train} training examples, {len(data.flipped)} labels flipped, "
        f"test accuracy {run.metrics.get('test_accuracy', float('nan')):.4f}, "
        f"simulation {run.timings.get('simulate_seconds', 0.0):.1f} s",
        file=sys.stderr,
    )
    bar, cb = _stage_bar()
    try:
        results = compute_signals(run, signals, progress=cb, recorder=recorder)
    finally:
        bar.close()
    flags = np.zeros(data.n_train, dtype=bool)
    flags[data.flipped] = True
    rows = detection_rows(results, flags)
    print(format_table(rows))
    note = finding(rows)
    if note:
        print(note)
    if not flags.any():
        print("(no label was flipped, so there is nothing to score the ranking against; pass --noise)")
    extra = {
        "train": train_cfg.to_dict(),
        "simulation": sim.to_dict(),
        "hidden": list(parse_hidden(args.hidden)),
        "test_accuracy": run.metrics.get("test_accuracy"),
        "simulate_seconds": run.timings.get("simulate_seconds"),
    }
    if args.fix_top is not None:
        marks = fix_top(results[args.fix_signal].scores, args.fix_top, data)
        bar, cb = _progress_bar(train_cfg.epochs, "retrain")
        try:
            fixed = retrain_with_marks(run, marks, progress=cb)
        finally:
            bar.close()
        extra["fix"] = {"signal": args.fix_signal, "fraction": args.fix_top, **fixed}
        rec = "" if fixed["recovered"] is None else f", {fixed['recovered']:.0%} of the gap to the clean-label model"
        clean = "" if fixed["clean"] is None else f", clean labels {fixed['clean']:.4f}"
        print(
            f"fixed the top {args.fix_top:.0%} by {args.fix_signal} ({fixed['flips_fixed']} flips): test accuracy "
            f"{fixed['before']:.4f} -> {fixed['after']:.4f}{clean}{rec}"
        )
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        ranking_frame(data, results).to_csv(out, index=False)
        print(f"wrote {out}", file=sys.stderr)
    if args.report:
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report_dict(data, results, rows, **extra), indent=2, default=float))
        print(f"wrote {path}", file=sys.stderr)
    return rows


def _print_marks(marks, class_names) -> None:
    if not marks:
        print("no marks")
        return
    print(marks_to_frame(marks, class_names).to_string(index=False))


def cmd_marks(args):
    store = _store()
    if args.clear:
        print(f"removed {clear_marks(store, args.name)} mark(s) of run '{args.name}'")
        return
    run = TrainedRun.load(store, args.name) if store.exists(args.name) else None
    if run is None:
        load_marks(store, args.name)  # the readable "deleted run" / "no such run" error
    ds = run.dataset
    if args.import_csv:
        set_marks(store, args.name, marks_from_csv(args.import_csv, ds.class_names, ds.n_train).values())
    marks = load_marks(store, args.name)
    others = [r for r in marked_runs(store) if r["run"] != args.name]
    print(f"run '{args.name}': {len(marks)} mark(s)")
    _print_marks(marks, ds.class_names)
    if others:
        print(
            "other runs with marks: "
            + ", ".join(f"{r['run']} ({r['marks']}{'' if r['exists'] else ', deleted'})" for r in others)
        )


def cmd_relabel(args):
    _check_out(args.out, (".csv", ".npz"), "--out")
    store = _store()
    if not store.exists(args.run):
        load_marks(store, args.run)  # readable error: deleted run with marks, or unknown
    run = TrainedRun.load(store, args.run)
    ds = run.dataset
    if args.marks:
        set_marks(store, args.run, marks_from_csv(args.marks, ds.class_names, ds.n_train).values())
    marks = load_marks(store, args.run)
    if not marks:
        raise ConfigError(
            f"run '{args.run}' has no marks; mark examples in the app, or pass --marks MARKS.csv "
            "(columns index,action,label)."
        )
    bar, cb = _progress_bar(run.train_config.epochs, "retrain")
    try:
        res = retrain_with_marks(run, marks, progress=cb)
    finally:
        bar.close()
    clean = "" if res["clean"] is None else f"; clean labels {res['clean']:.4f}"
    print(
        f"applied {len(marks)} mark(s): {res['n_relabelled']} relabelled, {res['n_removed']} removed; test accuracy "
        f"{res['before']:.4f} -> {res['after']:.4f}{clean}"
    )
    if args.out:
        print(f"wrote {export(apply_marks(ds, marks), args.out)}", file=sys.stderr)
    return res


def cmd_export(args):
    _check_out(args.out, (".csv", ".npz"), "--out")
    if args.run:
        store = _store()
        if not store.exists(args.run):
            load_marks(store, args.run)
        ds = TrainedRun.load(store, args.run).dataset
        if args.marks:
            set_marks(store, args.run, marks_from_csv(args.marks, ds.class_names, ds.n_train).values())
        marks = load_marks(store, args.run)
    else:
        ds = _noisy_dataset(args)
        if not args.marks:
            raise ConfigError("export needs --run RUN (its stored marks) or --marks MARKS.csv to apply.")
        marks = marks_from_csv(args.marks, ds.class_names, ds.n_train)
    cleaned = apply_marks(ds, marks)
    path = export(cleaned, args.out)
    print(f"wrote {path}: {len(cleaned.y)} examples ({cleaned.n_relabelled} relabelled, {cleaned.n_removed} removed)")
    return cleaned
