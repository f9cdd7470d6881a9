"""Readout time per query: dense and compressed responses against TRAK, timed round-robin.

    python benchmarks/compress_readout_timing.py --task digits-mlp --rank 256 --rounds 9

A readout's cost depends only on shapes (m sources, p parameters, rank r, the queries), not
on the responses' values, so this times the dense readout of an [m, p] stack and the
compressed readout of rank-r factors (random values of the run's shapes, at the run's
trained θ) against TRAK-1 and TRAK-10 (projection 512, the official ``traker``, on the
task's real ensemble) — every method once per round, in turn, so that the load of a shared
machine hits all alike; medians over the rounds. LDS figures come from
``compress_bench.py``. Writes ``benchmarks/compress-readout-<task>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from attrcore.engine.compress import CompressedResponses, orthonormal  # noqa: E402
from attrcore.engine.model import MLP  # noqa: E402
from attrcore.engine.readout import score as readout_score  # noqa: E402
from attrcore.engine.tangents import Tangents  # noqa: E402
from attrcore.engine.train import train  # noqa: E402
from attrcore.evaluation.bench import fitted_trak, round_robin, task_setup  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="digits-mlp", choices=["digits-mlp", "mnist1d-mlp"])
    ap.add_argument("--rank", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--queries", type=int, default=None, help="default: all (digits), 200 (mnist1d)")
    ap.add_argument("--trak-models", type=int, nargs="*", default=[1, 10])
    ap.add_argument("--trak-proj", type=int, default=512)
    ap.add_argument("--no-dense", action="store_true", help="skip the dense readout (large m·p)")
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds, mcfg, cfg = task_setup(args.task)
    mlp = MLP(mcfg)
    nq = args.queries or (ds.n_test if args.task == "digits-mlp" else 200)
    Xq, yq = ds.X_test[:nq], ds.y_test[:nq]
    Xq_t, yq_t = torch.as_tensor(Xq), torch.as_tensor(yq)
    m, p = ds.n_train, mlp.n_params
    runs = [train(mlp, ds.X_train, ds.y_train, replace(cfg, seed=cfg.seed + i)) for i in range(max(args.trak_models))]
    theta = runs[0].theta
    gen = torch.Generator().manual_seed(0)
    timers, sizes = {}, {}
    if not args.no_dense:
        dense = Tangents.from_flat(mlp, torch.randn(m, p, generator=gen))
        timers["dense"] = lambda: readout_score(mlp, theta, dense, Xq_t, yq_t)
        sizes["dense"] = dense.nbytes() / m
    Q = orthonormal(Tangents.from_flat(mlp, torch.randn(args.rank, p, generator=gen, dtype=torch.float64))).to(
        torch.float32
    )
    comp = CompressedResponses(Q, torch.randn(m, args.rank, generator=gen))
    name_c = f"compressed r={args.rank}"
    timers[name_c] = lambda: readout_score(mlp, theta, comp, Xq_t, yq_t)
    sizes[name_c] = comp.bytes_per_source()
    for M, a, _setup in fitted_trak(mlp, runs, cfg, ds.X_train, ds.y_train, args.trak_models, args.trak_proj):
        timers[f"TRAK-{M}"] = lambda a=a: a.score(Xq, yq)
        sizes[f"TRAK-{M}"] = a.state_bytes() / m
    rounds, cpu = round_robin(timers, args.rounds)
    per_query = {k: statistics.median(v) / nq for k, v in rounds.items()}
    cpu_per_query = {k: statistics.median(v) / nq for k, v in cpu.items()}
    ratios = {k: {f"vs {t}": per_query[k] / per_query[t] for t in per_query if t.startswith("TRAK")} for k in per_query}
    cpu_ratios = {
        k: {f"vs {t}": cpu_per_query[k] / cpu_per_query[t] for t in cpu_per_query if t.startswith("TRAK")}
        for k in cpu_per_query
    }
    doc = {
        "task": args.task,
        "rank": args.rank,
        "m": m,
        "p": p,
        "n_queries": nq,
        "rounds": args.rounds,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
        "seconds": rounds,
        "seconds_per_query": per_query,
        "ratios": ratios,
        "cpu_seconds": cpu,
        "cpu_seconds_per_query": cpu_per_query,
        "cpu_ratios": cpu_ratios,
        "bytes_per_source": sizes,
        "command": "python benchmarks/compress_readout_timing.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    name = f"compress-readout-{args.task}"
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    traks = [t for t in per_query if t.startswith("TRAK")]
    lines = [
        f"# Readout time per query: {args.task}, m = {m}, p = {p}, {nq} queries in one batch",
        "",
        f"{doc['created']} · {args.rounds} round-robin rounds (median) · load average "
        f"{', '.join(f'{x:.1f}' for x in doc['load_average'])}",
        "",
        "| readout | ms / query | "
        + " | ".join(f"× {t}" for t in traks)
        + " | CPU ms / query | "
        + " | ".join(f"CPU × {t}" for t in traks)
        + " | bytes / source |",
        "|---|---|" + "---|" * len(traks) + "---|" + "---|" * len(traks) + "---|",
    ]
    for k, v in per_query.items():
        lines.append(
            f"| {k} | {1000 * v:.4f} | "
            + " | ".join(f"{ratios[k][f'vs {t}']:.3f}" for t in traks)
            + f" | {1000 * cpu_per_query[k]:.4f} | "
            + " | ".join(f"{cpu_ratios[k][f'vs {t}']:.3f}" for t in traks)
            + f" | {sizes[k]:,.0f} |"
        )
    lines += [
        "",
        f"Command: `{doc['command']}`. Wall time: median over the rounds; CPU: the same rounds in this "
        "process's CPU time (one thread), which waiting for a core on a loaded machine does not inflate.",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return doc


if __name__ == "__main__":
    main()
