"""Scaling benchmark (issue #10): forward-only at publisher scale against TRAK, one run, one machine.

    python benchmarks/scale_bench.py                       # the grid that fits (see --help)
    python benchmarks/scale_bench.py --sizes 4000 --params 80k --lds 20

Data: MNIST-1D generated offline with the package's generator (``mnist1d.data.make_dataset``,
seed 42, ``num_samples`` = n + 1000; the last 1000 signals are the test split, the first
``--queries`` of them the queries). Models: MLPs 40-256-256-10 (78,858 parameters, "80k"),
40-512-512-10 (288,778, "300k"), 40-1024-896-10 (969,354, "1m"); SGD with momentum 0.9,
lr 0.1, batch 100, weight decay 1e-4, ``--epochs`` epochs (default 5: the full 30 of
mnist1d-mlp do not fit this 2-core machine at every size).

Every cell (n, p, method) runs in its own process, so its peak memory is the process's
maximum resident set (``ru_maxrss``, which includes Python, torch and the data). Columns:
simulation (or, for TRAK, training + featurize/finalize) seconds, peak MB, stored bytes per
source, milliseconds per query (all queries in one call, after a warm-up call), and where
``--lds K`` is given at n = 4,000 the LDS over K random half subsets (fixed training seed).
Methods: forward-only compressed (full horizon, rank 64 / 256, ``--power-iterations``),
grouped (10 / 100 random groups, dense group tangents), dense per-example (only where m·p
fits the memory budget and the predicted time fits); TRAK through ``traker`` (1 and 10 models,
projection 512). Cells whose predicted time (from the measured smaller cells) exceeds what
is left of ``--budget-minutes`` are skipped and listed with the prediction, never
extrapolated into the table. Slopes are least-squares fits of log cost on log n (p fixed)
and log p (n fixed) where at least two sizes were measured.

Writes ``benchmarks/scale.json`` and ``benchmarks/scale.md`` (and the log-log figures'
data, drawn by :mod:`attrcore.plots.scale` on the app's Cost page).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARAMS = {"80k": (256, 256), "300k": (512, 512), "1m": (1024, 896)}
N_TEST = 1000
TRAIN = {"lr": 0.1, "batch_size": 100, "momentum": 0.9, "weight_decay": 1e-4, "seed": 0}
METHODS = ("grouped-10", "grouped-100", "compressed-r64", "compressed-r256", "dense", "trak-1", "trak-10", "dvemb")


# ---- data -------------------------------------------------------------------------------


def mnist1d_file(n: int, cache: Path) -> Path:
    """MNIST-1D with n + 1000 signals (offline generator), as an NPZ the package loads."""
    path = cache / f"mnist1d-n{n}.npz"
    if path.is_file():
        return path
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed, args.num_samples, args.train_split = 42, n + N_TEST, n / (n + N_TEST)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    X = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, X=X, y=y)
    return path


def dataset(n: int, cache: Path):
    """The package's :class:`Dataset` of n training and 1000 test signals (stratified split)."""
    from attrcore.data.datasets import load_dataset

    return load_dataset(str(mnist1d_file(n, cache)), test_fraction=N_TEST / (n + N_TEST))


# ---- one cell (in a child process) ------------------------------------------------------


def run_cell(cell: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from attrcore.config import SimulationConfig, TrainConfig
    from attrcore.engine.model import MLP, MLPConfig
    from attrcore.engine.readout import score as readout_score
    from attrcore.engine.tangents import Tangents
    from attrcore.engine.train import train

    n, method = cell["n"], cell["method"]
    ds = dataset(n, Path(cell["cache"]))
    X, y, Xt, yt = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    Xq, yq = torch.as_tensor(Xt[: cell["queries"]]), torch.as_tensor(yt[: cell["queries"]]).long()
    mlp = MLP(MLPConfig(40, 10, PARAMS[cell["params"]], "relu"))
    cfg = TrainConfig(epochs=cell["epochs"], **TRAIN)
    out: dict = {"p": mlp.n_params}
    t0 = time.perf_counter()
    if method.startswith("trak"):
        from attrcore.methods.trak import TRAK

        models = int(method.split("-")[1])
        thetas = [
            train(mlp, X, y, TrainConfig(epochs=cell["epochs"], **{**TRAIN, "seed": s})).theta for s in range(models)
        ]
        att = TRAK(mlp, thetas, proj_dim=512).fit(X, y)
        out["setup_seconds"] = time.perf_counter() - t0
        out["m"] = n
        att.score(Xq[:2], yq[:2])  # warm-up
        t1 = time.perf_counter()
        scores = att.score(Xq, yq)
        out["seconds_per_query"] = (time.perf_counter() - t1) / len(Xq)
        out["bytes_per_source"] = att.state_bytes() / n
        att.close()
    elif method == "dvemb":
        from attrcore.methods.dvemb import DVEmb

        base = train(mlp, X, y, cfg)
        att = DVEmb(mlp, base.theta, cfg, proj_dim=512).fit(X, y)
        out["setup_seconds"] = time.perf_counter() - t0
        out["m"] = n
        att.score(Xq[:2], yq[:2])
        t1 = time.perf_counter()
        scores = att.score(Xq, yq)
        out["seconds_per_query"] = (time.perf_counter() - t1) / len(Xq)
        out["bytes_per_source"] = att.state_bytes() / n
    else:
        groups, m = None, n
        if method.startswith("grouped"):
            m = int(method.split("-")[1])
            groups = np.random.default_rng(0).integers(0, m, size=n)
        rank = int(method.split("-r")[1]) if method.startswith("compressed") else None
        sim = SimulationConfig(rank=rank, power_iterations=cell["power_iterations"], memory_budget_mb=cell["budget_mb"])
        res = train(mlp, X, y, cfg, sim, source_index=groups, n_sources=m)
        out["setup_seconds"] = time.perf_counter() - t0
        out["simulate_seconds"] = res.timings["simulate_seconds"]
        out["m"] = m
        R = res.responses
        if isinstance(R, torch.Tensor):
            R = Tangents.from_flat(mlp, R)
        out["bytes_per_source"] = R.nbytes() / m

        def readout(Xb, yb):
            return readout_score(mlp, res.theta, R, Xb.to(res.theta.dtype), yb, measure="margin")

        readout(Xq[:2], yq[:2])
        t1 = time.perf_counter()
        scores = readout(Xq, yq)
        out["seconds_per_query"] = (time.perf_counter() - t1) / len(Xq)
        if groups is not None:
            out["groups"] = groups.tolist() if cell.get("lds") else None
    out["wall_seconds"] = time.perf_counter() - t0
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cell.get("lds"):
        scores = torch.as_tensor(scores).double().numpy()
        out["lds"] = lds_of(cell, ds, mlp, cfg, Xq.numpy(), yq.numpy(), scores, out.get("groups"))
    out.pop("groups", None)
    return out


def lds_of(cell, ds, mlp, cfg, Xq, yq, scores, groups) -> dict:
    """LDS (fixed training seed) over ``cell['lds']`` random half subsets of the sources."""
    from attrcore.evaluation.ground_truth import lds_ground_truth
    from attrcore.evaluation.metrics import lds
    from attrcore.store import RunStore

    sources = None if groups is None else np.asarray(groups)  # source ids as the scores' columns
    gt = lds_ground_truth(
        ds,
        mlp.config,
        cfg,
        n_subsets=cell["lds"],
        ceiling_seeds=0,
        queries=(Xq, yq),
        sources=sources,
        store=RunStore(Path(cell["cache"]) / "store"),
        n_jobs=1,
    )
    per_query = lds(scores, gt.subsets, gt.outputs)
    return {"lds": float(np.nanmean(per_query)), "subsets": cell["lds"]}


# ---- the grid (parent) ------------------------------------------------------------------


def tangent_steps(method: str, n: int, epochs: int, q: int) -> float:
    """Tangent-steps a simulation costs (tangents × steps), the unit of the time prediction."""
    T = epochs * math.ceil(n / TRAIN["batch_size"])
    if method.startswith("grouped"):
        return T * int(method.split("-")[1])
    if method.startswith("compressed"):
        return T * int(method.split("-r")[1]) * (2 + 2 * q)
    if method == "dense":
        return T * n
    return 0.0


def predict(done: list[dict], cell: dict, q: int) -> float | None:
    """Seconds the cell should take, scaled from the measured cells at the same p (None: no basis)."""
    same_p = [d for d in done if d["params"] == cell["params"] and "error" not in d]
    if cell["method"].startswith("trak"):
        peers = [d for d in same_p if d["method"] == cell["method"]]
        if not peers:
            return None
        d = max(peers, key=lambda d: d["n"])
        return d["wall_seconds"] * cell["n"] / d["n"]
    rates = [
        d["simulate_seconds"] / tangent_steps(d["method"], d["n"], d["epochs"], q)
        for d in same_p
        if d.get("simulate_seconds") and tangent_steps(d["method"], d["n"], d["epochs"], q)
    ]
    if not rates:
        return None
    return float(np.median(rates)) * tangent_steps(cell["method"], cell["n"], cell["epochs"], q)


def slopes(rows: list[dict], key: str) -> dict:
    """d log(cost) / d log(x) for x in n and p, per method, where ≥ 2 sizes were measured."""
    out: dict = {}
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method and r.get(key)]
        for x, fixed in (("n", "params"), ("p", "n")):
            for v in sorted({r[fixed] for r in mine}):
                pts = [(r[x], r[key]) for r in mine if r[fixed] == v]
                if len({a for a, _ in pts}) >= 2:
                    a, b = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
                    out[f"{method} vs {x} ({fixed}={v})"] = float(np.polyfit(a, b, 1)[0])
    return out


def write(doc: dict, out_dir: Path) -> None:
    (out_dir / "scale.json").write_text(json.dumps(doc, indent=1))
    lines = [
        "# Scaling benchmark (issue #10)",
        "",
        f"`{doc['command']}` — {doc['date']}, {doc['machine']}; {doc['epochs']} epochs, "
        f"{doc['queries']} queries, power iterations {doc['power_iterations']}. "
        "Peak MB is the cell's process maximum RSS (Python + torch + data included).",
        "",
        "| n | p | method | sources | setup s | simulate s | peak MB | bytes/source | ms/query "
        "| ×TRAK-10 speed | LDS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    trak10 = {
        (r["n"], r["params"]): r["seconds_per_query"]
        for r in doc["rows"]
        if r["method"] == "trak-10" and "error" not in r
    }
    for r in doc["rows"]:
        if "error" in r:
            lines.append(f"| {r['n']} | {r['params']} | {r['method']} | — | failed: {r['error'][:80]} |||||||")
            continue
        t10 = trak10.get((r["n"], r["params"]))
        ratio = f"{t10 / r['seconds_per_query']:.1f}×" if t10 and r["method"] != "trak-10" else "—"
        lds = f"{r['lds']['lds']:.3f}" if r.get("lds") else "—"
        sim = f"{r['simulate_seconds']:.1f}" if r.get("simulate_seconds") is not None else "—"
        lines.append(
            f"| {r['n']} | {r['p']:,} | {r['method']} | {r['m']} | {r['setup_seconds']:.1f} | {sim} | "
            f"{r['peak_mb']:.0f} | {r['bytes_per_source']:,.0f} | {1000 * r['seconds_per_query']:.3f} "
            f"| {ratio} | {lds} |"
        )
    if doc["skipped"]:
        lines += ["", "## Not measured", ""]
        lines += [f"- n = {s['n']}, {s['params']}, {s['method']}: {s['reason']}" for s in doc["skipped"]]
    if doc["slopes"]:
        lines += ["", "## Fitted slopes (log-log)", ""]
        lines += [f"- {k}: {v:.2f}" for k, v in sorted(doc["slopes"].items())]
    (out_dir / "scale.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4000,20000,50000")
    ap.add_argument("--params", default="80k,300k,1m")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--power-iterations", type=int, default=0)
    ap.add_argument("--budget-mb", type=float, default=4096.0, help="simulation memory budget per cell")
    ap.add_argument("--budget-minutes", type=float, default=25.0, help="wall time for the whole grid")
    ap.add_argument("--lds", type=int, default=0, help="LDS subsets at n = 4000 (0: no LDS)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks"))
    ap.add_argument("--keep", action="store_true", help="add to the existing report (same cells are replaced)")
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return 0
    cache = Path(tempfile.gettempdir()) / "attrcore-scale-bench"
    t_start = time.perf_counter()
    deadline = t_start + 60 * args.budget_minutes
    rows, skipped, commands = [], [], []
    report = Path(args.out) / "scale.json"
    if args.keep and report.is_file():
        old = json.loads(report.read_text())
        rows, skipped = old.get("rows", []), old.get("skipped", [])
        commands = old.get("commands", [old.get("command")])

    def drop(cell: dict) -> None:  # a re-measured cell replaces the old row / skip note
        same = (cell["n"], cell["params"], cell["method"])
        rows[:] = [r for r in rows if (r["n"], r["params"], r["method"]) != same]
        skipped[:] = [r for r in skipped if (r["n"], r["params"], r["method"]) != same]

    this_command = "python benchmarks/scale_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def dump() -> None:
        doc = {
            "command": " ; ".join([*(c for c in commands if c), this_command]),
            "commands": [*(c for c in commands if c), this_command],
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), torch 1 thread",
            "epochs": args.epochs,
            "queries": args.queries,
            "power_iterations": args.power_iterations,
            "rows": rows,
            "skipped": skipped,
            "slopes": {
                **{f"sim {k}": v for k, v in slopes(rows, "simulate_seconds").items()},
                **{f"query {k}": v for k, v in slopes(rows, "seconds_per_query").items()},
            },
            "total_seconds_last_command": time.perf_counter() - t_start,
        }
        write(doc, Path(args.out))

    sizes = [int(s) for s in args.sizes.split(",")]
    for params in args.params.split(","):
        for n in sizes:
            for method in args.methods.split(","):
                cell = {
                    "n": n,
                    "params": params,
                    "method": method,
                    "epochs": args.epochs,
                    "queries": args.queries,
                    "power_iterations": args.power_iterations,
                    "budget_mb": args.budget_mb,
                    "cache": str(cache),
                    "lds": args.lds if n <= 4000 else 0,
                }
                drop(cell)
                p = sum(a * b + b for a, b in zip((40, *PARAMS[params]), (*PARAMS[params], 10)))
                if method == "dense" and n * p * 4 * 2 > args.budget_mb * 2**20:
                    skipped.append({**cell, "reason": f"dense m·p state {n * p * 8 / 2**30:.1f} GB > budget"})
                    continue
                guess = predict(rows, cell, args.power_iterations)
                left = deadline - time.perf_counter()
                if guess is not None and guess > left:
                    skipped.append({**cell, "reason": f"predicted {guess:.0f} s > {max(0, left):.0f} s left"})
                    print(f"skip n={n} {params} {method}: predicted {guess:.0f} s", flush=True)
                    continue
                if left <= 0:
                    skipped.append({**cell, "reason": "no time left in the budget"})
                    continue
                print(f"run  n={n} {params} {method} (predicted {guess and round(guess)} s)", flush=True)
                env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
                try:
                    proc = subprocess.run(
                        [sys.executable, __file__, "--cell", json.dumps(cell)],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=max(60, left + 60),
                    )
                    if proc.returncode:
                        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
                    res = json.loads(proc.stdout.strip().splitlines()[-1])
                    row = {k: v for k, v in cell.items() if k != "cache"} | res
                    print(f"     {json.dumps(res)}", flush=True)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as err:
                    row = {k: v for k, v in cell.items() if k != "cache"} | {"error": str(err)}
                    print(f"     failed: {err}", flush=True)
                rows.append(row)
                dump()
    dump()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
