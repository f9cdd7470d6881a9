"""Flags and helpers shared by the subcommands: data / model / train / score flags, the
store, the dataset, the configs and a tqdm progress bar.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..errors import ConfigError

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
    s.add_argument("--rank", default="auto",
                   help="compressed responses Δ ≈ C Qᵀ of rank R; 'dense' = none; 'auto' (default) = "
                        "rank 256 where it is ≥ 8× smaller than dense and m ≥ 1024, else dense")
    s.add_argument("--power-iterations", type=int, default=1,
                   help="compressed: power iterations of the range finder (default 1)")
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
    from ..store.runstore import RunStore

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
    from ..data.datasets import load_dataset

    return load_dataset(
        args.train, seed=args.split_seed, test_fraction=args.test_fraction, label_noise=args.label_noise,
        label_column=args.label_column, group_column=args.group_column,
        n_samples=args.n_samples, noise=args.noise,
    )


def _configs(args):
    from ..config import SimulationConfig, TrainConfig, parse_horizon

    train_cfg = TrainConfig(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, momentum=args.momentum,
        weight_decay=args.weight_decay, lr_schedule=args.lr_schedule, seed=args.seed, dtype=args.dtype,
    )
    sim = SimulationConfig(
        scheme=args.scheme, horizon=parse_horizon(args.horizon), curvature=args.curvature,
        damping=args.damping, step_size=args.step_size, curvature_batch_size=args.curvature_batch,
        memory_budget_mb=args.memory_budget, response_dtype=args.response_dtype,
        rank=args.rank, power_iterations=args.power_iterations,
    )
    return train_cfg, sim


def _queries(run, test):
    from ..data.datasets import load_queries

    return load_queries(test, run.dataset)


def _print_top(run, scores, k: int = 5) -> None:
    for q in range(min(3, scores.shape[0])):
        order = np.argsort(-scores[q])
        top = ", ".join(f"{run.source_names[j]} ({scores[q, j]:+.3g})" for j in order[:k])
        print(f"query {q}: top proponents {top}")
