"""Flags and helpers shared by the subcommands: data / model / train / score flags, the
store, the dataset, the configs and a tqdm progress bar.
"""

from __future__ import annotations

import argparse
import sys

from ..config import SimulationConfig, TrainConfig, options, parse_hidden
from ..data.datasets import load_dataset, load_queries
from ..data.sources import SOURCE_KINDS
from ..engine.measures import MEASURES
from ..engine.model import ACTIVATIONS, MLPConfig
from ..engine.readout import READOUTS
from ..store.runstore import RunStore

DEFAULT_DATA = "digits"


def add_options(group, cls) -> None:
    """One flag per :func:`~attrcore.config.option` field of config class ``cls``: its flag,
    default, choices and help; the value lands in ``args.<option name>``. A field with a
    custom parser (``type``, e.g. the horizon) arrives as text and is parsed by
    :func:`config_from_args`, so its errors are readable one-liners, not usage errors."""
    for o in options(cls).values():
        if o.flag is None:
            continue
        if o.type is bool:
            group.add_argument(o.flag, dest=o.name, action="store_true", help=o.help)
            continue
        kw = {"dest": o.name, "default": o.default, "help": o.help}
        kw["type"] = o.type if o.type in (int, float, str) else str
        if o.choices:
            kw["choices"] = list(o.choices)
        else:
            kw["metavar"] = o.flag.lstrip("-").upper().replace("-", "_")
        group.add_argument(o.flag, **kw)


def config_from_args(cls, args):
    """``cls`` built from the flags :func:`add_options` added (the others keep their defaults)."""
    kwargs = {}
    for o in options(cls).values():
        if o.flag is not None and hasattr(args, o.name):
            value = getattr(args, o.name)
            kwargs[o.name] = value if o.type in (int, float, str, bool) else o.type(value)
    return cls(**kwargs)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", default=DEFAULT_DATA, metavar="TRAIN",
                   help="built-in dataset (digits, mnist1d, breast_cancer, moons) or an NPZ/CSV path")
    g.add_argument("--label-column", help="CSV: the column holding the labels")
    g.add_argument("--group-column", help="CSV: a column whose values define sources (--sources group)")
    g.add_argument("--test-fraction", type=float, default=None,
                   help="held-out fraction (default 0.2); 0 = train on every row (no test split)")
    g.add_argument("--eval", dest="eval_source", metavar="FILE",
                   help="your own evaluation set (NPZ/CSV with the training features and labels): every "
                        "training row is trained on and FILE is the test split")
    g.add_argument("--standardize", default="auto", choices=["auto", "on", "off"],
                   help="rescale features to mean 0, sd 1 with training statistics (auto: on for user "
                        "tables, the built-in's own choice otherwise)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split (default 0)")
    g.add_argument("--label-noise", type=float, default=0.0, help="fraction of training labels to flip")
    g.add_argument("--n-samples", type=int, help="moons: number of points")
    g.add_argument("--noise", type=float, help="moons: noise level")


def add_model_flags(p: argparse.ArgumentParser, title: str = "model and training") -> None:
    """The MLP shape and SGD flags (shared with ``evaluate``, whose retraining must match)."""
    g = p.add_argument_group(title)
    g.add_argument("--hidden", nargs="*", default=["128"],
                   help="hidden widths, e.g. 128 64; none = logistic regression")
    g.add_argument("--activation", default="relu", choices=list(ACTIVATIONS))
    add_options(g, TrainConfig)


def add_train_flags(p: argparse.ArgumentParser) -> None:
    add_model_flags(p)
    s = p.add_argument_group(
        "simulation", "without --scheme/--horizon/--curvature/--segment-steps the measured-best setting for the "
        "model and data size is chosen (attrcore.engine.choose; 'show' prints which and why)")
    add_options(s, SimulationConfig)
    # the flags that choose the simulation (and the budget, which the choice may raise) record
    # that they were given, so _configs can tell "default" from "not set"
    for action in s._group_actions:
        given = (*CHOICE_OPTIONS, "memory_budget_mb", "rank", "compression")
        if action.dest in given and type(action) is argparse._StoreAction:
            action.__class__ = _RecordGiven
    s.add_argument("--sources", default="example", choices=list(SOURCE_KINDS))
    d = p.add_argument_group("scale-out (the result is the same; see attrcore.engine.shard)")
    d.add_argument("--workers", type=int, metavar="N",
                   help="simulate in shards on a Dask LocalCluster of N worker processes")
    d.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="simulate in shards on this Dask cluster")
    p.add_argument("--run", help="name to save the run under in the store")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")


def add_score_flags(p: argparse.ArgumentParser, with_run: bool) -> None:
    g = p.add_argument_group("scoring")
    if with_run:
        g.add_argument("--run", required=True, help="a saved run (see 'python -m attrcore runs')")
    g.add_argument("--test", help="queries: the run's dataset name (its test split, default) or an NPZ/CSV path")
    g.add_argument("--measure", default="margin", choices=list(MEASURES))
    g.add_argument("--target-class", type=int, help="class for --measure logit/prob (default: the true class)")
    g.add_argument("--readout", default="jvp", choices=list(READOUTS))
    g.add_argument("--out", help="write the [n_queries, n_sources] float32 matrix here (.npy, written chunk by "
                                 "chunk through a memory map), or with --top-k the top-k lists (.npz)")
    g.add_argument("--top-k", dest="top_k", type=int, metavar="K",
                   help="keep only the K most positive and K most negative sources of each query "
                        "(indices + scores; never builds the whole matrix)")
    g.add_argument("--queries", dest="query_rows", metavar="A:B",
                   help="score only the queries A..B-1 (0-based, B exclusive; e.g. 0:1000)")
    if with_run:  # `attribute` has --memory-budget from the simulation flags
        g.add_argument("--memory-budget", dest="memory_budget_mb", type=float, default=1024.0, metavar="MB",
                       help="working memory of the readout (default 1024 MB); responses larger than this are "
                            "memory-mapped from the store and streamed from disk; a matrix larger than this is "
                            "refused unless written to a .npy file or reduced with --top-k / --queries")


# library options set by a flag of another name (the others: see option_flags)
OPTION_FLAG_NAMES = {"models": "--ensemble", "source": "--train", "seed_split": "--split-seed", "eval_source": "--eval",
                     "sources": "--sources", "overwrite": "--overwrite", "query_file": "--test"}


def option_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Library option name → the flag that sets it, for rendering error messages: the
    destination of every flag of every subcommand (generated flags store into the option's
    own name) plus :data:`OPTION_FLAG_NAMES`."""
    out: dict[str, str] = {}
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.option_strings:
                out.setdefault(action.dest, max(action.option_strings, key=len))
    return out | OPTION_FLAG_NAMES


def _store():
    return RunStore()


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm  # the terminal progress bar only

    bar = tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, disable=None)

    def cb(p) -> None:
        if bar.total != p.total:
            bar.reset(total=p.total)
            bar.set_description(p.stage)
        bar.n = p.done
        if p.metrics:
            shown = ("loss", "train_accuracy", "test_accuracy", "retried")
            bar.set_postfix({k: f"{v:.3f}" for k, v in p.metrics.items() if k in shown})
        bar.refresh()

    return bar, cb


def _dataset(args):
    standardize = {"auto": None, "on": True, "off": False}[getattr(args, "standardize", "auto")]
    return load_dataset(
        args.train, seed=args.split_seed, test_fraction=args.test_fraction, label_noise=args.label_noise,
        label_column=args.label_column, group_column=args.group_column,
        n_samples=args.n_samples, noise=args.noise,
        eval_source=getattr(args, "eval_source", None), standardize=standardize,
    )


# options that choose the simulation: when none is given the default is measured (engine/choose.py)
CHOICE_OPTIONS = ("scheme", "horizon", "curvature", "segment_steps", "step_size", "curvature_batch_size")


class _RecordGiven(argparse._StoreAction):
    """A store action that also notes its option in ``args.given_options``."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        namespace.given_options = set(getattr(namespace, "given_options", set())) | {self.dest}


def _configs(args, choose: bool = False):
    """``(TrainConfig, SimulationConfig)`` from the flags. With ``choose`` the simulation is
    None when no option that chooses it was given (the caller then uses
    :func:`_chosen_simulation`); otherwise unset options take the library defaults."""
    train = config_from_args(TrainConfig, args)
    if choose and not set(getattr(args, "given_options", set())) & set(CHOICE_OPTIONS):
        return train, None
    return train, config_from_args(SimulationConfig, args)


def _chosen_simulation(args, dataset, train_cfg, n_sources: int):
    """The measured default for this model and data (``choose_simulation``), with the flags
    that do not choose the scheme (memory budget, response dtype, rank) applied."""
    from dataclasses import replace

    from ..engine.choose import choose_simulation

    mcfg = MLPConfig(dataset.n_features, dataset.n_classes, parse_hidden(args.hidden), args.activation)
    given_budget = "memory_budget_mb" in getattr(args, "given_options", set())  # else the choice may raise it
    choice = choose_simulation(mcfg, train_cfg, dataset.n_train, n_sources,
                               memory_budget_mb=args.memory_budget_mb if given_budget else None)
    given = getattr(args, "given_options", set())
    cfg = replace(choice.config, response_dtype=args.response_dtype, power_iterations=args.power_iterations,
                  rank=args.rank if "rank" in given else choice.config.rank,
                  compression=args.compression if "compression" in given else choice.config.compression)
    return cfg, choice.reason


def _queries(run, test):
    return load_queries(test, run.dataset)


def _print_top(run, top, k: int = 5) -> None:
    """The top proponents of the first queries, from a :class:`~attrcore.engine.readout.TopK`."""
    for q in range(min(3, top.top_indices.shape[0])):
        pairs = zip(top.top_indices[q, :k].tolist(), top.top_scores[q, :k].tolist())
        print(f"query {q}: top proponents " + ", ".join(f"{run.source_names[j]} ({v:+.3g})" for j, v in pairs))
