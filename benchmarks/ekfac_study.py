"""EK-FAC against the exact propagation at the same horizon (issue #12): LDS and agreement of Δ.

Two modes.

``run``: train the task's model once with one simulation (``key=value`` SimulationConfig
fields), score the queries with the forward-only readout, compute the LDS under both
protocols (random-seed first), save the responses (``--work``), and append the row to
``benchmarks/ekfac-study-<task>.jsonl``::

    python benchmarks/ekfac_study.py run --task digits-mlp --name exact-K16 horizon=16
    python benchmarks/ekfac_study.py run --task digits-mlp --name ekfac-r32-K16 horizon=16 curvature=ekfac ekfac_rank=32
    python benchmarks/ekfac_study.py run --task digits-mlp --name blockgn-K16 horizon=16 curvature=gauss-newton \\
        --block-diagonal     # diagnostic: the exact per-step GN with its cross-layer blocks dropped

``report``: the rows → ``benchmarks/ekfac-study-<task>.{md,json}``, with each row's
agreement with the reference row of the same horizon (``--reference-prefix``, default the
rows named ``exact-hess-…``): median over sources of cos(Δ_j, Δ_j^exact) and the relative
Frobenius error ‖Δ − Δ^exact‖_F / ‖Δ^exact‖_F, from the saved responses.

The ground truth is :func:`attrcore.evaluation.ground_truth.lds_ground_truth` (100 subsets
at α = 0.5, margin; stored and reused), or ``--ground-truth DIR`` holding
``gt_<task>_random.npz`` / ``gt_<task>_fixed.npz`` saved from it (``subsets``, ``outputs``,
``Xq``, ``yq``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from propagation_study import parse_setting  # the same key=value settings (this folder is on sys.path)

from attrcore.config import SimulationConfig
from attrcore.engine import MLP, train
from attrcore.engine.compress import CompressedResponses
from attrcore.engine.curvature import MLPCurvature
from attrcore.engine.readout import score
from attrcore.engine.tangents import Tangents
from attrcore.evaluation.bench import TASK_DEFAULTS, task_setup
from attrcore.evaluation.ground_truth import lds_ground_truth
from attrcore.evaluation.metrics import lds, summarize

HERE = Path(__file__).resolve().parent
PROTOCOLS = ("random-seed", "fixed-seed")


def block_diagonal_curvature() -> None:
    """Diagnostic: every curvature product keeps only the layer-diagonal blocks (no cross-layer terms)."""
    full = MLPCurvature.hvp

    def hvp(self, U: Tangents) -> Tangents:
        out = Tangents.zeros(self.mlp, len(U), U.dtype)
        for layer in range(self.mlp.n_layers):
            V = Tangents.zeros(self.mlp, len(U), U.dtype)
            V.W[layer].copy_(U.W[layer])
            V.b[layer].copy_(U.b[layer])
            H = full(self, V)
            out.W[layer].copy_(H.W[layer])
            out.b[layer].copy_(H.b[layer])
        return out

    del MLPCurvature.sgd_step_  # the fused step would bypass hvp
    MLPCurvature.hvp = hvp


def ground_truth(task: str, ds, mcfg, cfg, gt_dir: str | None) -> dict:
    """Protocol → (subsets [M, m], outputs [M, Q], Xq, yq)."""
    out = {}
    n_queries = TASK_DEFAULTS.get(task, {}).get("n_queries") or ds.n_test
    for p in PROTOCOLS:
        if gt_dir:
            path = Path(gt_dir) / f"gt_{task}_{'random' if p == 'random-seed' else 'fixed'}.npz"
            if not path.exists():
                continue
            z = np.load(path, allow_pickle=False)
            out[p] = (z["subsets"], z["outputs"], z["Xq"], z["yq"])
        else:
            Xq, yq = ds.X_test[:n_queries], ds.y_test[:n_queries]
            g = lds_ground_truth(ds, mcfg, cfg, vary_seed=(p == "random-seed"), queries=(Xq, yq))
            out[p] = (g.subsets, g.outputs, Xq, yq)
    return out


def run(args) -> None:
    torch.set_num_threads(1)
    if args.block_diagonal:
        block_diagonal_curvature()
    sim = SimulationConfig(**parse_setting(args.setting))
    ds, mcfg, cfg = task_setup(args.task)
    gts = ground_truth(args.task, ds, mcfg, cfg, args.ground_truth)
    _, _, Xq, yq = next(iter(gts.values()))
    mlp = MLP(mcfg)
    out = train(mlp, ds.X_train, ds.y_train, replace(cfg, seed=args.seed), sim=sim)
    resp = out.responses
    stack = resp if isinstance(resp, CompressedResponses) else Tangents.from_flat(mlp, resp)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.save_responses and not isinstance(resp, CompressedResponses):
        np.save(work / f"{args.task}_{args.name}.npy", resp.float().numpy())
    Xt, yt = torch.as_tensor(Xq), torch.as_tensor(yq)
    t0 = time.perf_counter()
    s = score(mlp, out.theta, stack, Xt, yt).double().numpy()
    row = {
        "task": args.task,
        "name": args.name,
        "simulation": sim.to_dict(),
        "block_diagonal": bool(args.block_diagonal),
        "seed": args.seed,
        **out.timings,
        "simulation_parts": out.extras.get("simulation_parts"),
        "ms_per_query": 1000 * (time.perf_counter() - t0) / len(Xq),
        **{f"lds_{p}": summarize(lds(s, sub, outp)) for p, (sub, outp, _, _) in gts.items()},
    }
    print(json.dumps(row, default=str))
    with (HERE / f"ekfac-study-{args.task}.jsonl").open("a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")


def agreement(a: np.ndarray, ref: np.ndarray) -> dict:
    a, ref = a.astype(np.float64), ref.astype(np.float64)
    cos = (a * ref).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(ref, axis=1), 1e-300)
    return {"cos_median": float(np.median(cos)), "rel_frobenius": float(np.linalg.norm(a - ref) / np.linalg.norm(ref))}


def report(args) -> None:
    rows = [json.loads(line) for line in (HERE / f"ekfac-study-{args.task}.jsonl").read_text().splitlines() if line]
    latest = {r["name"]: r for r in rows}  # a re-run replaces the earlier row of that name
    work = Path(args.work)
    refs = {r["simulation"]["horizon"]: r for r in latest.values() if r["name"].startswith(args.reference_prefix)}
    table = []
    for r in latest.values():
        h = r["simulation"]["horizon"]
        ref = refs.get(h)
        agree = None
        mine = work / f"{args.task}_{r['name']}.npy"
        theirs = None if ref is None else work / f"{args.task}_{ref['name']}.npy"
        if theirs is not None and mine.exists() and theirs.exists():
            agree = agreement(np.load(mine), np.load(theirs))
        table.append({**r, "reference": None if ref is None else ref["name"], "agreement": agree})
    order = {"0": 0, "4": 1, "16": 2, "full": 3}
    table.sort(key=lambda r: (order.get(r["simulation"]["horizon"], 4), r["name"]))
    lines = [
        f"# EK-FAC against the exact propagation, {args.task} (issue #12)",
        "",
        "LDS over 100 subsets at α = 0.5 (margin), random-seed protocol first; agreement of Δ with the "
        "exact Hessian propagation at the same horizon (median over sources of the cosine, relative "
        "Frobenius error of the whole matrix). Seconds are wall times on the shared, loaded 2-core machine "
        "(compare within a table only).",
        "",
        "| horizon | setting | LDS random-seed | LDS fixed-seed | Δ cosine | Δ rel. error | simulation s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        sim = r["simulation"]
        what = [sim["curvature"]]
        if sim["curvature"] == "ekfac":
            what.append(f"decay {sim.get('ekfac_decay', 'exp')}")
            if sim.get("ekfac_rank"):
                what.append(f"rank {sim['ekfac_rank']} ({sim.get('ekfac_rank_iterations', 8)} iterations)")
        if r.get("block_diagonal"):
            what.append("block-diagonal (diagnostic)")
        lr, lf = r.get("lds_random-seed"), r.get("lds_fixed-seed")
        ag = r["agreement"]
        lines.append(
            f"| {sim['horizon']} | {r['name']}: {', '.join(what)} | "
            f"{lr['mean']:.3f} ± {lr['sem']:.3f} | "
            + (f"{lf['mean']:.3f} ± {lf['sem']:.3f}" if lf else "–")
            + " | "
            + (f"{ag['cos_median']:.3f} | {ag['rel_frobenius']:.3f}" if ag else "– | –")
            + f" | {r['simulate_seconds']:.0f} |"
        )
    notes = sorted({r["note"] for r in table if r.get("note")})
    lines += ["", *(f"Rows marked in the JSON: {n}." for n in notes)] if notes else []
    (HERE / f"ekfac-study-{args.task}.md").write_text("\n".join(lines) + "\n")
    (HERE / f"ekfac-study-{args.task}.json").write_text(json.dumps(table, indent=1, default=str))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("--task", default="digits-mlp")
    r.add_argument("--name", required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--block-diagonal", action="store_true")
    r.add_argument("--ground-truth", default=None, help="folder with gt_<task>_{random,fixed}.npz")
    r.add_argument("--work", default="/tmp/ekfac-study", help="where the responses are saved")
    r.add_argument("--no-save-responses", dest="save_responses", action="store_false")
    r.add_argument("setting", nargs="*", help="SimulationConfig fields as key=value")
    p = sub.add_parser("report")
    p.add_argument("--task", default="digits-mlp")
    p.add_argument("--work", default="/tmp/ekfac-study")
    p.add_argument("--reference-prefix", default="exact-hess-")
    args = ap.parse_args()
    run(args) if args.mode == "run" else report(args)


if __name__ == "__main__":
    main()
