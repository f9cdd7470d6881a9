"""Propagation study (issue #12): LDS of one forward-only setting against the stored ground truth.

Trains the task's model once with the given simulation, scores the task's queries with the
forward-only readout and prints the LDS under both protocols (random-seed first) with the
timings; appends the row to ``benchmarks/propagation-<task>.jsonl``. The ground truth comes
from :func:`attrcore.evaluation.ground_truth.lds_ground_truth` (stored and reused: the same
units as ``python -m attrcore bench --task <task>``).

    python benchmarks/propagation_study.py --task mnist1d-mlp curvature=ekfac
    python benchmarks/propagation_study.py --task mnist1d-mlp curvature=ekfac segment_steps=200
    python benchmarks/propagation_study.py --task mnist1d-mlp horizon=0 rank=dense
    python benchmarks/propagation_study.py --task digits-mlp horizon=16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrcore.config import SimulationConfig, parse_horizon
from attrcore.engine import MLP, train
from attrcore.engine.compress import CompressedResponses
from attrcore.engine.readout import score
from attrcore.engine.tangents import Tangents
from attrcore.evaluation.bench import TASK_DEFAULTS, task_setup
from attrcore.evaluation.ground_truth import lds_ground_truth
from attrcore.evaluation.metrics import summarize


def parse_setting(pairs: list[str]) -> dict:
    out: dict = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        if key == "horizon":
            out[key] = parse_horizon(value)
            continue
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="mnist1d-mlp")
    ap.add_argument("--seeds", default="0", help="training seeds, comma-separated (>1: an ensemble)")
    ap.add_argument("setting", nargs="*", help="SimulationConfig fields as key=value")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sim = SimulationConfig(**parse_setting(args.setting))
    ds, mcfg, cfg = task_setup(args.task)
    n_queries = TASK_DEFAULTS.get(args.task, {}).get("n_queries") or ds.n_test
    Xq, yq = ds.X_test[:n_queries], ds.y_test[:n_queries]
    gts = {
        p: lds_ground_truth(ds, mcfg, cfg, vary_seed=(p == "random-seed"), queries=(Xq, yq))
        for p in ("random-seed", "fixed-seed")
    }
    mlp = MLP(mcfg)
    scores, runs = [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        out = train(mlp, ds.X_train, ds.y_train, replace(cfg, seed=seed), sim=sim)
        resp = out.responses
        stack = resp if isinstance(resp, CompressedResponses) else Tangents.from_flat(mlp, resp)
        Xt, yt = torch.as_tensor(Xq), torch.as_tensor(yq)
        score(mlp, out.theta, stack, Xt[:2], yt[:2])  # warm-up
        t0 = time.perf_counter()
        scores.append(score(mlp, out.theta, stack, Xt, yt))
        runs.append(
            {
                "seed": seed,
                **out.timings,
                "ms_per_query": 1000 * (time.perf_counter() - t0) / len(Xq),
                "representation": type(stack).__name__,
                **out.extras,
            }
        )
    s = torch.stack(scores).mean(0).double().numpy()
    row = {
        "task": args.task,
        "simulation": sim.to_dict(),
        "runs": runs,
        **{f"lds_{p}": summarize(g.score(s)) for p, g in gts.items()},
    }
    print(json.dumps(row, default=str))
    path = Path(__file__).resolve().parent / f"propagation-{args.task}.jsonl"
    with path.open("a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")


if __name__ == "__main__":
    main()
