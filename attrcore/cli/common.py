"""Flags and helpers shared by the subcommands: data / model / train / score flags, the
store, the dataset, the configs and a tqdm progress bar.

Every flag is generated from an :func:`~attrcore.config.option` field (:func:`add_options`):
the library's configs (:class:`~attrcore.config.DataConfig`, ``TrainConfig``,
``SimulationConfig``) and the command line's own option sets below (:class:`ModelOptions`,
:class:`SaveOptions`, :class:`ScoreOptions`, :class:`MethodOptions`). Generating a flag
records it in the parser's ``option_flags`` (option name → flag), which renders library
error messages in the CLI's words (:func:`option_flags`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from tqdm import tqdm

from ..config import DataConfig, SimulationConfig, TrainConfig, option, options, parse_hidden
from ..data.datasets import load_dataset, load_queries
from ..data.sources import SOURCE_KINDS
from ..engine.choose import choose_simulation
from ..engine.measures import MEASURES
from ..engine.model import ACTIVATIONS, MLPConfig
from ..engine.readout import READOUTS
from ..methods.registry import ALIASES, IF_SOLVERS, METHODS
from ..run import fit
from ..store.runstore import RunStore

DEFAULT_DATA = DataConfig().source

# options that choose the simulation: when none is given the default is measured (engine/choose.py)
CHOICE_OPTIONS = (
    "scheme",
    "horizon",
    "curvature",
    "segment_steps",
    "ekfac_decay",
    "ekfac_rank",
    "ekfac_rank_iterations",
    "step_size",
    "curvature_batch_size",
)


# ----------------------------------------------------------------------------- generating flags


class _RecordGiven(argparse.Action):
    """Stores the value like the default action and also notes its option in
    ``args.given_options`` (so "given the default" differs from "not given")."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given_options = set(getattr(namespace, "given_options", set())) | {self.dest}


def add_options(
    group, cls, *, only: Collection[str] | None = None, skip: Collection[str] = (), record_given: Collection[str] = ()
) -> dict[str, str]:
    """One flag per :func:`~attrcore.config.option` field of config class ``cls`` (``only``
    these / not those in ``skip``): its flag, default, choices and help; the value lands in
    ``args.<dest>`` (the option's name unless it declares another). A field with a custom
    parser (``type``, e.g. the horizon) arrives as text and is parsed by
    :func:`config_from_args`, so its errors are readable one-liners, not usage errors. The
    options named in ``record_given`` also note in ``args.given_options`` that they were
    given. Returns option name → flag of the flags added."""
    added: dict[str, str] = {}
    for o in options(cls).values():
        if o.flag is None or o.name in skip or (only is not None and o.name not in only):
            continue
        added[o.name] = o.flag
        if o.type is bool:
            group.add_argument(o.flag, dest=o.dest, action="store_true", help=o.help)
            continue
        kw = {"dest": o.dest, "default": o.default, "help": o.help}
        kw["type"] = o.type if o.type in (int, float, str) else str
        if o.choices:
            kw["choices"] = list(o.choices)
        if o.metavar is not None:
            kw["metavar"] = o.metavar
        elif not o.choices:
            kw["metavar"] = o.flag.lstrip("-").upper().replace("-", "_")
        if o.nargs is not None:
            kw["nargs"] = o.nargs
        if o.required:
            kw["required"] = True
        if o.name in record_given:
            kw["action"] = _RecordGiven
        group.add_argument(o.flag, **kw)
    return added


def config_from_args(cls, args):
    """``cls`` built from the flags :func:`add_options` added (the others keep their defaults)."""
    kwargs = {}
    for o in options(cls).values():
        if o.flag is not None and hasattr(args, o.dest):
            value = getattr(args, o.dest)
            kwargs[o.name] = value if o.type in (int, float, str, bool) else o.type(value)
    return cls(**kwargs)


def record_flags(parser, flags: Mapping[str, str]) -> None:
    """Add ``flags`` (option name → flag) to ``parser.option_flags``. Where two options of
    one name have different flags (the data's ``seed`` is ``--split-seed``, training's is
    ``--seed``), the flag spelled after the name wins."""
    known = parser.__dict__.setdefault("option_flags", {})
    for name, flag in flags.items():
        if name not in known or flag == "--" + name.replace("_", "-"):
            known[name] = flag


def option_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Library option name → the flag that sets it, for rendering error messages: the map
    :func:`record_flags` built while the flags were generated (``build_parser`` gathers its
    subcommands' maps into the main parser's), plus :data:`OPTION_FLAG_NAMES`."""
    return dict(getattr(parser, "option_flags", {})) | OPTION_FLAG_NAMES


# ----------------------------------------------------------------------------- option sets


@dataclass(frozen=True)
class ModelOptions:
    """The network's shape (``attrcore.engine.MLPConfig`` without the data's sizes)."""

    hidden: tuple = option(("128",), "hidden widths, e.g. 128 64; none = logistic regression", type=str, nargs="*")
    activation: str = option("relu", "activation of the hidden layers", choices=ACTIVATIONS)


@dataclass(frozen=True)
class SaveOptions:
    """What the score columns are, where the simulation runs, and the run's name."""

    sources: str = option(
        "example",
        "what the score columns are: one per training example (default), per class or per group",
        choices=SOURCE_KINDS,
    )
    workers: int | None = option(
        None, "simulate in shards on a Dask LocalCluster of N worker processes", type=int, metavar="N"
    )
    scheduler: str | None = option(None, "simulate in shards on this Dask cluster", type=str, metavar="tcp://HOST:PORT")
    run: str | None = option(None, "name to save the run under in the store", type=str)
    overwrite: bool = option(False, "replace an existing run of that name")
    dry_run: bool = option(False, "check every option and print the memory and time estimate; train nothing")


@dataclass(frozen=True)
class ScoreOptions:
    """Which queries are scored, how, and where the scores go."""

    run: str | None = option(None, "a saved run (see 'python -m attrcore runs')", type=str, required=True)
    test: str | None = option(
        None, "queries: the test split of the data (default; or the data's name) or an NPZ/CSV path", type=str
    )
    measure: str = option(
        "margin",
        "what is attributed: the margin of the true class (default), the loss, or a class's logit / probability",
        choices=MEASURES,
        label="measurement",
    )
    target_class: int | None = option(None, "class for --measure logit/prob (default: the true class)", type=int)
    readout: str = option("jvp", "forward-mode JVP (default) or central differences", choices=READOUTS)
    out: str | None = option(
        None,
        "write the [n_queries, n_sources] float32 matrix here (.npy, written chunk by "
        "chunk through a memory map), or with --top-k the top-k lists (.npz)",
        type=str,
    )
    top_k: int | None = option(
        None,
        "keep only the K most positive and K most negative sources of each query "
        "(indices + scores; never builds the whole matrix)",
        type=int,
        metavar="K",
    )
    query_rows: str | None = option(
        None,
        "score only the queries A..B-1 (0-based, B exclusive; e.g. 0:1000)",
        type=str,
        flag="--queries",
        metavar="A:B",
    )
    memory_budget_mb: float = option(
        1024.0,
        "working memory of the readout (default 1024 MB); responses larger than "
        "this are memory-mapped from the store and streamed from disk; a matrix larger "
        "than this is refused unless written to a .npy file or reduced with --top-k / "
        "--queries",
        flag="--memory-budget",
        metavar="MB",
    )


@dataclass(frozen=True)
class MethodOptions:
    """``attribute --method``: forward-only or a baseline, with the baselines' settings."""

    method: str = option(
        "forward-only",
        "forward-only (train + simulate, saved with --run) or a baseline; 'if' is "
        "the influence function with --if-solver",
        choices=(*METHODS, *ALIASES),
    )
    models: int = option(1, "TRAK: number of models", flag="--ensemble", dest="ensemble", label="number of models")
    proj_dim: int = option(512, "TRAK: projection dimension")
    if_solver: str = option(
        "explicit",
        "--method if: explicit Hessian of the last layer (default) or CG over the "
        "whole network; --damping sets the damping",
        choices=IF_SOLVERS,
    )
    lambda_reg: float | None = option(
        None, "TRAK: ridge on the kernel (default: 0 below n training examples, automatic above)", type=float
    )


@dataclass(frozen=True)
class GcOptions:
    """``gc``: what counts as a leftover."""

    grace_seconds: float = option(
        900.0, "keep unlocked leftovers younger than this (default 900; a dead writer's go at once)"
    )


# ----------------------------------------------------------------------------- flags of the subcommands


def add_data_flags(p: argparse.ArgumentParser) -> None:
    record_flags(p, add_options(p.add_argument_group("data"), DataConfig))


def add_model_flags(p: argparse.ArgumentParser, title: str = "model and training") -> None:
    """The MLP shape and SGD flags (shared with ``evaluate``, whose retraining must match)."""
    g = p.add_argument_group(title)
    record_flags(p, add_options(g, ModelOptions) | add_options(g, TrainConfig))


def add_train_flags(p: argparse.ArgumentParser) -> None:
    add_model_flags(p)
    s = p.add_argument_group(
        "simulation",
        "without --scheme/--horizon/--curvature/--segment-steps the measured-best setting for the "
        "model and data size is chosen (attrcore.engine.choose; 'show' prints which and why)",
    )
    # the flags that choose the simulation (and the budget, which the choice may raise) record
    # that they were given, so _configs can tell "default" from "not set"
    flags = add_options(s, SimulationConfig, record_given=(*CHOICE_OPTIONS, "memory_budget_mb", "rank", "compression"))
    flags |= add_options(s, SaveOptions, only=("sources",))
    d = p.add_argument_group("scale-out (the result is the same; see attrcore.engine.shard)")
    flags |= add_options(d, SaveOptions, only=("workers", "scheduler"))
    flags |= add_options(p, SaveOptions, only=("run", "overwrite"))
    record_flags(p, flags)


def add_score_flags(p: argparse.ArgumentParser, with_run: bool) -> None:
    # without a run (`attribute`) the run is trained, and --memory-budget is the simulation's
    skip = () if with_run else ("run", "memory_budget_mb")
    record_flags(p, add_options(p.add_argument_group("scoring"), ScoreOptions, skip=skip))


# library names that are not an option of their own, and the flag that sets them
OPTION_FLAG_NAMES = {"query_file": "--test"}


def _store():
    return RunStore()


def _progress_bar(total: int, desc: str):
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


def _fit(args, dataset, train_cfg, sim, **kwargs):
    """Train ``dataset`` with the model flags of ``args`` under a progress bar
    (``kwargs`` go to :func:`attrcore.run.fit`: ``executor``, ``simulation_reason``)."""
    bar, cb = _progress_bar(train_cfg.epochs, "train")
    try:
        return fit(
            dataset,
            hidden=parse_hidden(args.hidden),
            activation=args.activation,
            train_config=train_cfg,
            simulation=sim,
            sources=args.sources,
            progress=cb,
            **kwargs,
        )
    finally:
        bar.close()


def _dataset(args):
    return load_dataset(**config_from_args(DataConfig, args).kwargs())


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
    mcfg = MLPConfig(dataset.n_features, dataset.n_classes, parse_hidden(args.hidden), args.activation)
    given_budget = "memory_budget_mb" in getattr(args, "given_options", set())  # else the choice may raise it
    choice = choose_simulation(
        mcfg, train_cfg, dataset.n_train, n_sources, memory_budget_mb=args.memory_budget_mb if given_budget else None
    )
    given = getattr(args, "given_options", set())
    cfg = replace(
        choice.config,
        response_dtype=args.response_dtype,
        power_iterations=args.power_iterations,
        rank=args.rank if "rank" in given else choice.config.rank,
        compression=args.compression if "compression" in given else choice.config.compression,
    )
    return cfg, choice.reason


def _queries(run, test):
    return load_queries(test, run.dataset)


def _print_top(run, top, k: int = 5) -> None:
    """The top proponents of the first queries, from a :class:`~attrcore.engine.readout.TopK`."""
    for q in range(min(3, top.top_indices.shape[0])):
        pairs = zip(top.top_indices[q, :k].tolist(), top.top_scores[q, :k].tolist())
        print(f"query {q}: top proponents " + ", ".join(f"{run.source_names[j]} ({v:+.3g})" for j, v in pairs))
