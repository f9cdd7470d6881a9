"""Simulation time of compressed against dense responses, measured alternately (issue #8).

    python benchmarks/compress_sim_timing.py --task digits-mlp --rank 256 --repeats 3

Trains the task with dense full-horizon responses and with the rank-r forward sketch +
adjoint (one power iteration), alternating dense / compressed ``--repeats`` times, so that
the load of a shared machine hits both alike; reports the wall-clock and CPU seconds of the
simulation (medians) and their ratio. Writes ``benchmarks/compress-sim-timing-<task>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from attrcore.config import SimulationConfig  # noqa: E402
from attrcore.engine.model import MLP  # noqa: E402
from attrcore.engine.train import train  # noqa: E402
from attrcore.evaluation.bench import task_setup  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="digits-mlp")
    ap.add_argument("--rank", type=int, default=256)
    ap.add_argument("--power-iterations", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="override the task's epochs")
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds, mcfg, cfg = task_setup(args.task, args.epochs)
    mlp = MLP(mcfg)
    sims = {
        "dense": SimulationConfig(rank=None),
        f"compressed r={args.rank}": SimulationConfig(rank=args.rank, power_iterations=args.power_iterations),
    }
    res: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": [], "total_wall": []} for k in sims}
    plain = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        train(mlp, ds.X_train, ds.y_train, replace(cfg))
        plain.append(time.perf_counter() - t0)
        for name, sim in sims.items():
            c0, w0 = time.process_time(), time.perf_counter()
            out = train(mlp, ds.X_train, ds.y_train, cfg, sim)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            res[name]["wall"].append(out.timings["simulate_seconds"])
            res[name]["total_wall"].append(wall)
            res[name]["cpu"].append(cpu)
            print(
                f"[{time.strftime('%H:%M:%S')}] {i}: {name}: simulation {out.timings['simulate_seconds']:.1f} s, "
                f"run {wall:.1f} s wall / {cpu:.1f} s CPU",
                flush=True,
            )
    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in res.items()}
    names = list(sims)
    ratio = {m: med[names[1]][m] / med[names[0]][m] for m in ("wall", "cpu", "total_wall")}
    doc = {
        "task": args.task,
        "rank": args.rank,
        "power_iterations": args.power_iterations,
        "repeats": args.repeats,
        "epochs": cfg.epochs,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
        "runs": res,
        "medians": med,
        "ratio_compressed_over_dense": ratio,
        "plain_training_seconds": plain,
        "command": "python benchmarks/compress_sim_timing.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    name = f"compress-sim-timing-{args.task}"
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [
        f"# Simulation time, compressed (rank {args.rank}, q = {args.power_iterations}) vs dense: {args.task}",
        "",
        f"{doc['created']} · {cfg.epochs} epochs · {args.repeats} alternating repeats · load average "
        f"{', '.join(f'{x:.1f}' for x in doc['load_average'])}",
        "",
        "| responses | simulation s (median) | whole run s wall | whole run s CPU | runs (simulation s) |",
        "|---|---|---|---|---|",
    ]
    for k in names:
        lines.append(
            f"| {k} | {med[k]['wall']:.1f} | {med[k]['total_wall']:.1f} | {med[k]['cpu']:.1f} | "
            + ", ".join(f"{x:.1f}" for x in res[k]["wall"])
            + " |"
        )
    lines += [
        "",
        f"Compressed / dense: simulation {ratio['wall']:.2f}×, whole run wall {ratio['total_wall']:.2f}×, "
        f"CPU {ratio['cpu']:.2f}×. Command: `{doc['command']}`.",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return doc


if __name__ == "__main__":
    main()
