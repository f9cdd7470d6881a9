"""Command line: ``python -m attrcore {train,score,attribute,runs,show,delete,...}``.

Errors a user can cause print one readable line (``error: ...``) and exit with status 2;
no traceback. Long jobs show a terminal progress bar (tqdm) on stderr.

Contract (benchmarks and users script against it)::

    python -m attrcore train --train TRAIN --hidden 128 --epochs 30 --lr 0.1 --batch-size 64 \
        --momentum 0 --weight-decay 1e-4 --seed 0 --scheme trajectory --horizon full \
        --sources example --run NAME
    python -m attrcore score --run NAME --test QUERIES --measure margin --readout jvp --out SCORES.npy
    python -m attrcore attribute  (train + score, the flags of both)
"""

from __future__ import annotations

import argparse
import sys

from ..errors import AttrcoreError
from .common import (
    GcOptions,
    MethodOptions,
    SaveOptions,
    add_data_flags,
    add_options,
    add_score_flags,
    add_train_flags,
    option_flags,
    record_flags,
)
from .eval_commands import register as register_eval_commands
from .mislabel_commands import register as register_mislabel_commands
from .run_commands import cmd_attribute, cmd_delete, cmd_gc, cmd_runs, cmd_score, cmd_show, cmd_train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attrcore", description="Forward-only training data attribution.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train an MLP and simulate every source's response")
    add_data_flags(p)
    add_train_flags(p)
    record_flags(p, add_options(p, SaveOptions, only=("dry_run",)))
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("score", help="attribute queries with a saved run (forward evaluations only)")
    add_score_flags(p, with_run=True)
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("attribute", help="train + score in one command")
    add_data_flags(p)
    add_train_flags(p)
    add_score_flags(p, with_run=False)
    flags = add_options(p, MethodOptions, only=("method", "models", "proj_dim"))
    g = p.add_argument_group("baselines (--method other than forward-only)")
    record_flags(p, flags | add_options(g, MethodOptions, only=("if_solver", "lambda_reg")))
    p.set_defaults(func=cmd_attribute)
    p = sub.add_parser("runs", help="list saved runs")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("show", help="print a saved run's config and metrics")
    p.add_argument("name")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("delete", help="delete a saved run (and the uploads only it used)")
    p.add_argument("name")
    p.set_defaults(func=cmd_delete)
    p = sub.add_parser("gc", help="remove what killed saves left behind and uploads no run uses (also done on open)")
    record_flags(p, add_options(p, GcOptions))
    p.set_defaults(func=cmd_gc)
    register_eval_commands(sub)
    register_mislabel_commands(sub)
    for command in sub.choices.values():  # the option → flag map of every subcommand, for error messages
        record_flags(parser, option_flags(command))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except AttrcoreError as err:
        print(f"error: {err.render(option_flags(parser))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept.", file=sys.stderr)
        return 130
    return 0
