"""Issue #8 figures: compressed responses Δ ≈ C Qᵀ against dense responses and TRAK, one run.

    python benchmarks/compress_bench.py --task digits-mlp                 # full horizon
    python benchmarks/compress_bench.py --task mnist1d-mlp --horizon 4    # short horizon

digits-mlp (full horizon): the dense exact responses against the forward sketch + adjoint
(cost independent of m) at rank 256 with one power iteration, and the LDS-vs-rank curve
(a real rank-r run for every r). mnist1d-mlp (short horizon K): the dense K-step responses,
compressed afterwards by ``compress_dense`` at every rank of the curve. TRAK with 1 and 10
models (projection 512, the official ``traker``) is timed in the same run. LDS ground truth
(random-seed protocol first, then fixed-seed) is computed once and stored in the run store
(``ATTRCORE_HOME``), so a rerun reuses it. Writes ``benchmarks/compress-<task>.{md,json}``.
Readout times: all queries in one batch; at the end every method's readout is timed in turn
for ``--timing-rounds`` rounds (so load changes on a shared machine hit all alike), median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from attrcore.config import SimulationConfig, parse_horizon  # noqa: E402
from attrcore.engine.compress import CompressedResponses, compress_dense  # noqa: E402
from attrcore.engine.model import MLP  # noqa: E402
from attrcore.engine.readout import score as readout_score  # noqa: E402
from attrcore.engine.tangents import Tangents  # noqa: E402
from attrcore.engine.train import train  # noqa: E402
from attrcore.evaluation.bench import (  # noqa: E402
    LDS_PROTOCOLS,
    bench_log,
    fitted_trak,
    fmt_lds,
    ground_truth_info,
    ground_truth_sentence,
    lds_by_protocol,
    machine_info,
    protocol_ground_truths,
    report_context,
    round_robin,
    task_setup,
)

log = bench_log


def median_time(fn, repeats: int) -> tuple[object, float, list[float]]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), times


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="digits-mlp", choices=["digits-mlp", "mnist1d-mlp"])
    ap.add_argument("--horizon", default=None, help="K, or 'full' (default: full on digits, 4 on mnist1d)")
    ap.add_argument("--rank", type=int, default=256, help="the headline rank")
    ap.add_argument("--ranks", type=int, nargs="*", default=[32, 64, 128, 256, 512], help="the LDS-vs-r curve")
    ap.add_argument("--power-iterations", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="readout timing repeats (median)")
    ap.add_argument("--timing-rounds", type=int, default=7, help="round-robin readout timing rounds (median)")
    ap.add_argument("--subsets", type=int, default=100)
    ap.add_argument("--queries", type=int, default=None, help="default: all (digits), 200 (mnist1d)")
    ap.add_argument("--protocols", nargs="*", default=list(LDS_PROTOCOLS), choices=list(LDS_PROTOCOLS))
    ap.add_argument("--trak-models", type=int, nargs="*", default=[1, 10])
    ap.add_argument("--trak-proj", type=int, default=512)
    ap.add_argument("--n-jobs", type=int, default=1, help="ground-truth workers (default 1: shared machine)")
    ap.add_argument("--epochs", type=int, default=None, help="override the task's epochs (smoke runs)")
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    task = args.task
    horizon = args.horizon or ("full" if task == "digits-mlp" else "4")
    K = parse_horizon(horizon)
    t_start = time.perf_counter()
    ds, mcfg, cfg = task_setup(task, args.epochs)
    mlp = MLP(mcfg)
    X, y = ds.X_train, ds.y_train
    nq = args.queries or (ds.n_test if task == "digits-mlp" else 200)
    Xq, yq = ds.X_test[:nq], ds.y_test[:nq]
    Xq_t, yq_t = torch.as_tensor(Xq), torch.as_tensor(yq)
    m, p = ds.n_train, mlp.n_params
    log(f"{task}: m = {m}, p = {p}, {nq} queries, horizon {horizon}")

    gts, gt_seconds = protocol_ground_truths(
        ds, mcfg, cfg, (Xq, yq), args.protocols, args.subsets, n_jobs=args.n_jobs, log=log
    )

    def readout(theta, responses) -> tuple[torch.Tensor, float, list[float]]:
        return median_time(lambda: readout_score(mlp, theta, responses, Xq_t, yq_t), args.repeats)

    rows: list[dict] = []
    timers: dict[str, object] = {}  # row method -> a call scoring every query (timed round-robin at the end)

    def add_row(row: dict, scores: torch.Tensor) -> dict:
        row["lds"] = lds_by_protocol(gts, scores)
        rows.append(row)
        main_p = args.protocols[0]
        log(
            f"{row['method']:>34s}: LDS {main_p} {row['lds'][main_p]['mean']:.3f}, "
            f"{1000 * row['seconds_per_query']:.3f} ms/query, sim {row.get('simulate_seconds', 0):.1f} s, "
            f"{row.get('bytes_per_source', 0):.0f} B/source"
        )
        return row

    # ---- dense -------------------------------------------------------------------------
    out = train(mlp, X, y, cfg, SimulationConfig(horizon=K, rank=None))
    theta = out.theta
    dense = Tangents.from_flat(mlp, out.responses)
    sc, sec, times = readout(theta, dense)
    timers[f"dense, K={horizon}"] = lambda: readout_score(mlp, theta, dense, Xq_t, yq_t)
    dense_row = add_row(
        {
            "method": f"dense, K={horizon}",
            "kind": "dense",
            "rank": None,
            "simulate_seconds": out.timings["simulate_seconds"],
            "train_seconds": out.timings["train_seconds"],
            "seconds_per_query": sec / nq,
            "readout_seconds": times,
            "bytes_per_source": dense.nbytes() / m,
        },
        sc,
    )
    del out

    # ---- compressed ----------------------------------------------------------------------
    ranks = sorted(set(args.ranks) | {args.rank})
    for r in ranks:
        if K is None:  # the forward sketch + adjoint: a real rank-r simulation
            o = train(mlp, X, y, cfg, SimulationConfig(horizon=K, rank=r, power_iterations=args.power_iterations))
            assert torch.equal(o.theta, theta)
            comp, sim_s = o.responses, o.timings["simulate_seconds"]
            extra = 0.0
        else:  # the dense short-horizon responses, compressed afterwards
            t0 = time.perf_counter()
            comp = compress_dense(dense, r, args.power_iterations, cfg.seed, dtype=torch.float32)
            extra = time.perf_counter() - t0
            sim_s = dense_row["simulate_seconds"] + extra
        assert isinstance(comp, CompressedResponses)
        sc, sec, times = readout(theta, comp)
        timers[f"compressed r={r}, K={horizon}"] = lambda c=comp: readout_score(mlp, theta, c, Xq_t, yq_t)
        row = add_row(
            {
                "method": f"compressed r={r}, K={horizon}",
                "kind": "compressed",
                "rank": r,
                "power_iterations": args.power_iterations,
                "how": comp.info.get("method"),
                "simulate_seconds": sim_s,
                "compress_seconds": extra,
                "seconds_per_query": sec / nq,
                "readout_seconds": times,
                "bytes_per_source": comp.bytes_per_source(),
            },
            sc,
        )
        if K is None and r == max(ranks):  # the curve again by truncating the largest run
            for k in ranks[:-1]:
                t = comp.truncate(k)
                sc_t, sec_t, _ = readout(theta, t)
                add_row(
                    {
                        "method": f"truncated r={max(ranks)} → {k}",
                        "kind": "truncated",
                        "rank": k,
                        "seconds_per_query": sec_t / nq,
                        "bytes_per_source": t.bytes_per_source(),
                    },
                    sc_t,
                )
        row["info"] = {k: v for k, v in comp.info.items() if isinstance(v, (int, float, str))}

    # ---- TRAK ---------------------------------------------------------------------------
    n_models = max(args.trak_models)
    runs = [train(mlp, X, y, replace(cfg, seed=cfg.seed + i)) for i in range(n_models)]
    for M, a, setup in fitted_trak(mlp, runs, cfg, X, y, args.trak_models, args.trak_proj):
        sc, sec, times = median_time(lambda a=a: torch.as_tensor(a.score(Xq, yq)), args.repeats)
        add_row(
            {
                "method": f"TRAK-{M}, proj {args.trak_proj}",
                "kind": "trak",
                "models": M,
                "setup_seconds": setup,
                "seconds_per_query": sec / nq,
                "readout_seconds": times,
                "bytes_per_source": a.state_bytes() / m,
            },
            sc,
        )
        timers[f"TRAK-{M}, proj {args.trak_proj}"] = lambda a=a: a.score(Xq, yq)

    # ---- timing: every readout in turn, so load changes hit all of them alike --------------
    rounds, cpu = round_robin(timers, args.timing_rounds)
    for r in rows:
        if rounds.get(r["method"]):
            r["seconds_per_query_first"] = r["seconds_per_query"]
            r["readout_seconds"] = rounds[r["method"]]
            r["seconds_per_query"] = statistics.median(rounds[r["method"]]) / nq
            r["cpu_seconds_per_query"] = statistics.median(cpu[r["method"]]) / nq
    log(
        "round-robin timing: "
        + ", ".join(f"{k} {1000 * statistics.median(v) / nq:.4f} ms/q" for k, v in rounds.items())
    )

    # ---- ratios and report ------------------------------------------------------------------
    trak = {r["models"]: r for r in rows if r["kind"] == "trak"}
    for r in rows:
        for M, t in trak.items():
            r[f"time_vs_trak{M}"] = r["seconds_per_query"] / t["seconds_per_query"]
        r["time_vs_dense"] = r["seconds_per_query"] / dense_row["seconds_per_query"]
        r["lds_vs_dense"] = {pr: r["lds"][pr]["mean"] / dense_row["lds"][pr]["mean"] for pr in gts}
        if "simulate_seconds" in r:
            r["sim_vs_dense"] = r["simulate_seconds"] / dense_row["simulate_seconds"]
    doc = {
        "task": task,
        "horizon": horizon,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "m": m,
        "p": p,
        "n_queries": nq,
        "headline_rank": args.rank,
        "power_iterations": args.power_iterations,
        "ground_truth": ground_truth_info(gts, gt_seconds, args.subsets),
        "protocols": list(args.protocols),
        "rows": rows,
        "seconds": time.perf_counter() - t_start,
        "command": "python benchmarks/compress_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    write(doc, Path(args.out))
    log(f"done in {doc['seconds']:.0f} s")
    return doc


_f = fmt_lds


def write(doc: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = f"compress-{doc['task']}"
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    protos = doc["protocols"]
    traks = sorted({int(k[len("time_vs_trak") :]) for r in doc["rows"] for k in r if k.startswith("time_vs_trak")})
    head = (
        ["method"]
        + [f"LDS {p}" for p in protos]
        + [f"× dense ({protos[0]})", "simulation s", "× dense sim", "ms / query"]
    )
    head += [f"× TRAK-{M} time" for M in traks] + ["bytes / source"]
    lines = [
        f"# Compressed responses: {doc['task']}, horizon {doc['horizon']}",
        "",
        f"{report_context(doc)} · "
        f"m = {doc['m']} sources, p = {doc['p']} parameters, {doc['n_queries']} queries · "
        f"{doc['power_iterations']} power iteration(s) · total {doc['seconds']:.0f} s",
        "",
        ground_truth_sentence(doc["ground_truth"]),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in doc["rows"]:
        cells = [r["method"]] + [_f(r["lds"].get(p)) for p in protos]
        cells.append(f"{r['lds_vs_dense'][protos[0]]:.3f}")
        cells.append(f"{r['simulate_seconds']:.1f}" if "simulate_seconds" in r else "–")
        cells.append(f"{r['sim_vs_dense']:.2f}" if "sim_vs_dense" in r else "–")
        cells.append(f"{1000 * r['seconds_per_query']:.4f}")
        cells += [f"{r.get(f'time_vs_trak{M}', float('nan')):.3f}" for M in traks]
        cells.append(f"{r.get('bytes_per_source', 0):,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Command: `{doc['command']}`. LDS: mean ± s.e. over queries. Time per query: all queries "
        "in one batch, every method timed in turn over several rounds (median), so the ratios are robust to load "
        "changes. 'truncated' rows keep the leading "
        "directions of the largest-rank run (its columns are in SVD order).",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
