"""Core benchmark on the reference task digits-mlp (issue #2).

    python benchmarks/core_bench.py [--repeats 3] [--quick]

Measures, on this machine and in one run:
- plain training time (no simulation) and simulated training time for the trajectory
  scheme at K = 16 and at the full horizon (medians over ``--repeats`` runs);
- the readout: 100 queries × 1437 sources, median over 20 calls, its achieved GFLOP/s
  next to this machine's float32 matrix-multiply rate measured in the same run;
- the memory of the stored responses (bytes per source, float32 and float16);
- the agreement of the scores at horizon K (and the stationary scheme) with the
  full-horizon scores: mean per-query Spearman and Pearson, and the cosine of Δ_j.

Writes ``benchmarks/core_bench.md`` and ``benchmarks/core_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attrcore.config import SimulationConfig, TrainConfig  # noqa: E402  (path set above)
from attrcore.data import load_dataset  # noqa: E402  (path set above)
from attrcore.engine import (  # noqa: E402  (path set above)
    MLP,
    MLPConfig,
    Tangents,  # noqa: E402  (path set above)
    score,  # noqa: E402  (path set above)
    train,  # noqa: E402  (path set above)
)

HERE = Path(__file__).resolve().parent
TARGETS = {"k16_seconds": 45.0, "full_seconds": 180.0, "readout_seconds_100q": 0.1}


def matmul_gflops(n: int = 2048, reps: int = 7) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def readout_flops(mlp: MLP, Q: int, m: int) -> float:
    """FLOPs of the forward-mode readout: per (query, source) every layer's dW·a product
    (d_out·d_in MACs) and, past the first layer, W·Ra (d_out·d_in MACs), plus the bias
    and activation-derivative elementwise work and the final contraction."""
    s = mlp.config.sizes
    macs = sum(s[i + 1] * s[i] for i in range(len(s) - 1))
    macs += sum(s[i + 1] * s[i] for i in range(1, len(s) - 1))
    elementwise = 3 * sum(s[1:])
    return Q * m * (2 * macs + elementwise)


def per_query_corr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    sp = [spearmanr(x, y).statistic for x, y in zip(a, b)]
    pe = [pearsonr(x, y).statistic for x, y in zip(a, b)]
    return float(np.nanmean(sp)), float(np.nanmean(pe))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of each simulated training")
    ap.add_argument("--quick", action="store_true", help="3 epochs, 1 repeat (smoke test; figures not comparable)")
    ap.add_argument("--out", default=str(HERE / "core_bench"), help="output path without suffix")
    args = ap.parse_args()
    epochs, repeats = (3, 1) if args.quick else (30, args.repeats)

    ds = load_dataset("digits", seed=0, test_fraction=0.2)
    assert (ds.n_train, ds.n_test) == (1437, 360), (ds.n_train, ds.n_test)
    mlp = MLP(MLPConfig(ds.n_features, ds.n_classes, (128,), "relu"))
    cfg = TrainConfig(epochs=epochs, lr=0.1, batch_size=64, momentum=0.0, weight_decay=1e-4, seed=0)
    Xq = torch.as_tensor(ds.X_test[:100])
    yq = torch.as_tensor(ds.y_test[:100])
    gemm = matmul_gflops()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 GEMM {gemm:.1f} GFLOP/s",
        flush=True,
    )

    def timed(sim: SimulationConfig | None, n: int):
        times, out = [], None
        for _ in range(n):
            t0 = time.perf_counter()
            out = train(mlp, ds.X_train, ds.y_train, cfg, sim, X_val=ds.X_test, y_val=ds.y_test)
            times.append(time.perf_counter() - t0)
        return statistics.median(times), times, out

    rows: dict[str, dict] = {}
    plain_med, plain_all, plain = timed(None, repeats)
    rows["plain training"] = {"seconds": plain_med, "runs": plain_all}
    print(f"plain training: {plain_med:.2f} s (test acc {plain.history[-1]['test_accuracy']:.4f})", flush=True)

    results: dict[str, dict] = {}
    for label, sim, n in [
        ("trajectory K=16", SimulationConfig(horizon=16), repeats),
        ("trajectory full", SimulationConfig(horizon=None), repeats),
    ]:
        med, runs, out = timed(sim, n)
        rows[label] = {"seconds": med, "runs": runs, "ratio_to_plain": med / plain_med}
        results[label] = {"responses": out.responses}
        assert torch.equal(out.theta, plain.theta), "simulation changed the training trajectory"
        print(
            f"{label}: {med:.1f} s (runs {', '.join(f'{r:.1f}' for r in runs)}), {med / plain_med:.1f}x plain training",
            flush=True,
        )

    # agreement with the full horizon as K varies (one run each; times are single runs)
    full = results["trajectory full"]["responses"]
    full_scores = score(mlp, plain.theta, full, Xq, yq).numpy()
    agreement = []
    # the short horizon keeps K·B tangents alive, so past K·B ≈ m it costs more than the full one
    variants = [
        ("trajectory", 0),
        ("trajectory", 4),
        ("trajectory", 8),
        ("trajectory", 16),
        ("trajectory", 32),
        ("stationary", 100),
    ]
    for scheme, K in variants:
        if scheme == "trajectory" and K == 16:
            resp, secs = results["trajectory K=16"]["responses"], rows["trajectory K=16"]["seconds"]
        else:
            stationary = scheme == "stationary"
            sim = SimulationConfig(
                scheme=scheme,
                horizon=K,
                curvature="gauss-newton" if stationary else "hessian",
                curvature_batch_size=256 if stationary else None,
            )
            t0 = time.perf_counter()
            resp = train(mlp, ds.X_train, ds.y_train, cfg, sim).responses
            secs = time.perf_counter() - t0
        s = score(mlp, plain.theta, resp, Xq, yq).numpy()
        sp, pe = per_query_corr(s, full_scores)
        cos = float(torch.nn.functional.cosine_similarity(resp.double(), full.double(), dim=1).mean())
        agreement.append(
            {
                "scheme": scheme,
                "K": K,
                "seconds": secs,
                "spearman_vs_full": sp,
                "pearson_vs_full": pe,
                "cosine_delta_vs_full": cos,
            }
        )
        print(
            f"{scheme} K={K}: {secs:.1f} s, Spearman vs full {sp:.3f}, Pearson {pe:.3f}, cos(Δ) {cos:.3f}", flush=True
        )

    # readout
    stack = Tangents.from_flat(mlp, full)
    times = []
    for _ in range(22):
        t0 = time.perf_counter()
        score(mlp, plain.theta, stack, Xq, yq)
        times.append(time.perf_counter() - t0)
    readout_s = statistics.median(times[2:])
    flops = readout_flops(mlp, 100, 1437)
    cd_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        score(mlp, plain.theta, stack, Xq, yq, readout="cd")
        cd_times.append(time.perf_counter() - t0)
    readout = {
        "queries": 100,
        "sources": 1437,
        "jvp_seconds": readout_s,
        "ms_per_query": 1000 * readout_s / 100,
        "gflops_achieved": flops / readout_s / 1e9,
        "gemm_gflops": gemm,
        "cd_seconds": statistics.median(cd_times),
    }
    print(
        f"readout (jvp): {readout_s * 1000:.1f} ms for 100 queries × 1437 sources "
        f"({readout['gflops_achieved']:.1f} GFLOP/s vs GEMM {gemm:.1f}); cd: {readout['cd_seconds']:.2f} s",
        flush=True,
    )
    memory = {
        "bytes_per_source_float32": mlp.n_params * 4,
        "bytes_per_source_float16": mlp.n_params * 2,
        "n_params": mlp.n_params,
        "total_MB_float32": 1437 * mlp.n_params * 4 / 1e6,
    }

    report = {
        "task": "digits-mlp",
        "epochs": epochs,
        "repeats": repeats,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "test_accuracy": plain.history[-1]["test_accuracy"],
        "timings": rows,
        "targets": TARGETS,
        "readout": readout,
        "memory": memory,
        "agreement": agreement,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(args.out + ".json").write_text(json.dumps(report, indent=2))
    Path(args.out + ".md").write_text(render(report))
    print(f"wrote {args.out}.md and .json")


def render(r: dict) -> str:
    t = r["timings"]
    lines = [
        f"# Core benchmark: digits-mlp ({r['date']})",
        "",
        f"Machine: {r['machine']['processor']}, {r['machine']['cores']} cores, torch {r['machine']['torch']} "
        f"({r['machine']['threads']} threads). Epochs: {r['epochs']}, repeats: {r['repeats']} (medians). "
        f"Test accuracy: {r['test_accuracy']:.4f}.",
        "",
        "| what | median seconds | runs | × plain training | target |",
        "|---|---|---|---|---|",
    ]
    target = {"trajectory K=16": "≤ 45 s", "trajectory full": "≤ 180 s"}
    for k, v in t.items():
        runs = ", ".join(f"{x:.1f}" for x in v["runs"])
        ratio = f"{v['ratio_to_plain']:.1f}" if "ratio_to_plain" in v else "1.0"
        lines.append(f"| {k} | {v['seconds']:.1f} | {runs} | {ratio} | {target.get(k, '')} |")
    ro = r["readout"]
    lines += [
        "",
        "## Readout (forward only)",
        "",
        f"- JVP readout, {ro['queries']} queries × {ro['sources']} sources: **{ro['jvp_seconds'] * 1000:.1f} ms** "
        f"({ro['ms_per_query']:.3f} ms per query; target ≤ 100 ms), {ro['gflops_achieved']:.1f} GFLOP/s achieved "
        f"vs {ro['gemm_gflops']:.1f} GFLOP/s float32 GEMM (2048²) in the same run.",
        f"- Central-difference readout, same sizes: {ro['cd_seconds']:.2f} s.",
        "",
        "## Memory of the stored responses",
        "",
        f"- {r['memory']['n_params']} parameters per source: {r['memory']['bytes_per_source_float32']} bytes "
        f"per source in float32 ({r['memory']['total_MB_float32']:.1f} MB for 1437 sources), "
        f"{r['memory']['bytes_per_source_float16']} in float16.",
        "",
        "## Agreement with the full-horizon response as K varies",
        "",
        "Mean per-query Spearman / Pearson between the scores of 100 test queries and the full-horizon scores; "
        "cosine of Δ_j averaged over sources. (Single timed run each.)",
        "",
        "| scheme | K | seconds | Spearman vs full | Pearson vs full | cos(Δ) |",
        "|---|---|---|---|---|---|",
    ]
    for a in r["agreement"]:
        lines.append(
            f"| {a['scheme']} | {a['K']} | {a['seconds']:.1f} | {a['spearman_vs_full']:.3f} | "
            f"{a['pearson_vs_full']:.3f} | {a['cosine_delta_vs_full']:.3f} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
