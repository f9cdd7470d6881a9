"""Query-aware compression of dense responses: LDS against rank for four factorisations, with
the readout timed against TRAK-1 / TRAK-10 in the same run.

    python benchmarks/query_compress_bench.py --task mnist1d-mlp
    python benchmarks/query_compress_bench.py --task mnist1d-mlp --horizon 4 --tag k4

The responses are the dense ones of the task's default simulation (``choose_simulation``:
on mnist1d-mlp the EK-FAC trajectory, full horizon; ``--horizon K`` an EK-FAC finite
horizon; ``--curvature hessian`` the exact one), cached in ``--responses`` so a rerun does
not simulate again. Variants at every rank r of the curve (Δ ≈ C Qᵀ, all read out the same
way: r JVPs per query, then [Q, r] @ [r, m]):

- ``query-aware``: M = G Δᵀ (the training points read out as queries), V_r its top right
  singular vectors, A = Δᵀ V_r = Q R, C = V_r Rᵀ (``engine/query_compress.py``): the best
  rank r for the training points' own measurement gradients;
- ``query-aware, C = ΔQ``: the same Q, C by projection;
- ``gradient subspace``: Q = the top-r right singular vectors of G, C = Δ Q;
- ``svd``: the randomized SVD of Δ (``compress_dense``, one power iteration).

``--points`` adds query-aware rows with M from a random subset of the training points;
``--measures`` adds rows whose M uses another measurement than the queries' margin.
LDS: both protocols, random-seed (a different training seed per subset) first; the ground
truth is read from the run store (``ATTRCORE_HOME``) or computed once. Time per query: all
queries in one batch; at the end every method's readout is timed in turn for
``--timing-rounds`` rounds (median), so the ratios to TRAK are same-run and load-robust.
Writes ``benchmarks/query-compress-<task>[-tag].{md,json}``.
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

from attrcore.config import SimulationConfig  # noqa: E402
from attrcore.engine.choose import choose_simulation  # noqa: E402
from attrcore.engine.compress import CompressedResponses, compress_dense, finish, like, stack_times  # noqa: E402
from attrcore.engine.model import MLP  # noqa: E402
from attrcore.engine.query_compress import (  # noqa: E402
    compress_from_scores,
    measurement_gradients,
    top_right_singular,
    training_score_matrix,
)
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


def dense_responses(task, ds, mlp, cfg, sim, path: Path | None):
    """(θ, Δ [m, p], simulate seconds, sim dict): from ``path`` when it holds this setting."""
    from safetensors.torch import load_file, save_file

    meta = {"task": task, "sim": sim.to_dict(), "seed": cfg.seed}
    if path is not None and path.exists() and path.with_suffix(".json").exists():
        saved = json.loads(path.with_suffix(".json").read_text())
        if saved.get("key") == meta:
            t = load_file(str(path))
            log(f"dense responses from {path}")
            return t["theta"], t["responses"], saved["simulate_seconds"]
    out = train(mlp, ds.X_train, ds.y_train, cfg, sim)
    sec = out.timings["simulate_seconds"]
    if path is not None:
        save_file({"theta": out.theta.contiguous(), "responses": out.responses.contiguous()}, str(path))
        path.with_suffix(".json").write_text(json.dumps({"key": meta, "simulate_seconds": sec}))
    return out.theta, out.responses, sec


def gradient_subspace(mlp, theta, X, y, rank: int, budget_mb: float = 512.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-``rank`` right singular vectors of G [n, p] (as rows [rank, p]) by the
    eigenvectors of G Gᵀ [n, n], G built in chunks; and G's singular values."""
    n, p = X.shape[0], mlp.n_params
    step = max(1, int(budget_mb * 2**20 // (4 * p)))
    G = torch.empty(n, p, dtype=torch.float32)
    for s in range(0, n, step):
        sl = slice(s, min(n, s + step))
        G[sl] = torch.cat(measurement_gradients(mlp, theta, X[sl], y[sl]), dim=1)
    K = (G @ G.T).double()
    lam, U = torch.linalg.eigh(K)
    lam, U = lam.flip(0)[:rank].clamp_min(1e-300), U.flip(1)[:, :rank]
    V = (U.T.float() @ G).double() / lam.sqrt().unsqueeze(1)  # [rank, p]
    V, _ = torch.linalg.qr(V.T)  # re-orthonormalise in float64
    return V.T.contiguous(), lam.sqrt()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="mnist1d-mlp", choices=["digits-mlp", "mnist1d-mlp"])
    ap.add_argument("--horizon", default=None, help="K or 'full' (default: the task's default simulation)")
    ap.add_argument("--curvature", default=None, help="override the default simulation's curvature")
    ap.add_argument("--ranks", type=int, nargs="*", default=[32, 64, 128, 256, 512])
    ap.add_argument("--variants", nargs="*", default=["query-aware", "query-aware-proj", "gradient", "svd"])
    ap.add_argument("--points", type=int, nargs="*", default=[1000], help="extra query-aware rows: M on n points")
    ap.add_argument("--points-ranks", type=int, nargs="*", default=[128, 256])
    ap.add_argument("--measures", nargs="*", default=[], help="extra query-aware rows: M with this measurement")
    ap.add_argument("--normalize", action="store_true", help="scale M's rows to unit norm (as the library default)")
    ap.add_argument("--timing-rounds", type=int, default=7)
    ap.add_argument("--dense-timing-rounds", type=int, default=3)
    ap.add_argument("--subsets", type=int, default=100)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--protocols", nargs="*", default=list(LDS_PROTOCOLS), choices=list(LDS_PROTOCOLS))
    ap.add_argument("--trak-models", type=int, nargs="*", default=[1, 10])
    ap.add_argument("--trak-proj", type=int, default=512)
    ap.add_argument("--responses", default=None, help="cache file (.safetensors) of the dense responses")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--report-only", default=None, help="rewrite the Markdown report of this JSON (no run)")
    args = ap.parse_args(argv)
    if args.report_only:
        doc = json.loads(Path(args.report_only).read_text())
        write(doc, Path(args.out))
        return doc
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    task = args.task
    ds, mcfg, cfg = task_setup(task)
    mlp = MLP(mcfg)
    m, p = ds.n_train, mlp.n_params
    sim = choose_simulation(mcfg, cfg, m).config
    if args.horizon is not None:
        sim = SimulationConfig.with_horizon(args.horizon, **{k: v for k, v in sim.to_dict().items() if k != "horizon"})
    if args.curvature is not None:
        sim = replace(sim, curvature=args.curvature)
    # the dense simulation underneath (the compression options do not change it, nor the cache key)
    budget = max(SimulationConfig.memory_budget_mb, 1.3 * m * p * 4 / 2**20)
    sim = replace(sim, rank=None, compression="svd", memory_budget_mb=budget)
    Xq, yq = ds.X_test[: args.queries], ds.y_test[: args.queries]
    Xq_t, yq_t = torch.as_tensor(Xq), torch.as_tensor(yq)
    X_tr, y_tr = torch.as_tensor(ds.X_train).float(), torch.as_tensor(ds.y_train).long()
    nq = len(yq)
    log(f"{task}: m = {m}, p = {p}, {nq} queries, simulation {sim.curvature} horizon {sim.horizon_label}")

    gts, gt_seconds = protocol_ground_truths(ds, mcfg, cfg, (Xq, yq), args.protocols, args.subsets, log=log)

    rows: list[dict] = []
    timers: dict[str, object] = {}

    dense_scores: list[torch.Tensor] = []  # the dense row's [Q, m], rows scaled to unit norm

    def add(row: dict, scores: torch.Tensor, timer=None) -> dict:
        row["lds"] = lds_by_protocol(gts, scores)
        if row["kind"] != "trak":
            # how much of the queries' own dense scores the factorisation keeps: 1 − ‖S_r − S‖² / ‖S‖²
            # with every query's row of S scaled to unit norm (query-aware: S_r = S V_r V_rᵀ exactly)
            s = scores.double()
            norms = s.norm(dim=1, keepdim=True).clamp_min(1e-300) if not dense_scores else dense_scores[1]
            if not dense_scores:
                dense_scores.extend([s / norms, norms])
            row["query_scores_kept"] = 1.0 - float(((s / norms - dense_scores[0]) ** 2).sum()) / s.shape[0]
        rows.append(row)
        if timer is not None:
            timers[row["method"]] = timer
        p0 = args.protocols[0]
        log(f"{row['method']:>44s}: LDS {p0} {row['lds'][p0]['mean']:.3f}  ({row.get('extra_seconds', 0):.1f} s)")
        return row

    # ---- dense -------------------------------------------------------------------------
    theta, D, sim_seconds = dense_responses(task, ds, mlp, cfg, sim, Path(args.responses) if args.responses else None)
    stack = Tangents.from_flat(mlp, D)
    del D
    sc = readout_score(mlp, theta, stack, Xq_t, yq_t)
    add(
        {
            "method": "dense",
            "kind": "dense",
            "rank": None,
            "simulate_seconds": sim_seconds,
            "bytes_per_source": stack.nbytes() / m,
        },
        sc,
        lambda: readout_score(mlp, theta, stack, Xq_t, yq_t),
    )

    def comp_row(name: str, kind: str, r: int, comp: CompressedResponses, extra: float, **kw) -> None:
        sc = readout_score(mlp, theta, comp, Xq_t, yq_t)
        timer = (lambda c=comp: readout_score(mlp, theta, c, Xq_t, yq_t)) if kw.pop("timed", True) else None
        add(
            {
                "method": name,
                "kind": kind,
                "rank": r,
                "extra_seconds": extra,
                "bytes_per_source": comp.bytes_per_source(),
                **kw,
            },
            sc,
            timer,
        )

    ranks = sorted(args.ranks)
    rmax = max(ranks + args.points_ranks)
    # ---- query-aware: M = G Δᵀ once, its singular vectors once, every rank from them ------
    if {"query-aware", "query-aware-proj"} & set(args.variants):
        t0 = time.perf_counter()
        M = training_score_matrix(stack, mlp, theta, X_tr, y_tr)
        if args.normalize:  # what compress_query_aware(normalize=True) does, the library default
            M = M / M.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        t_M = time.perf_counter() - t0
        t0 = time.perf_counter()
        V, s = top_right_singular(M, rmax, cfg.seed)
        t_svd = time.perf_counter() - t0
        log(f"M = G Δᵀ {tuple(M.shape)}: {t_M:.0f} s, top-{rmax} singular vectors {t_svd:.0f} s")
        for r in ranks:
            for coef, var in (("source", "query-aware"), ("projection", "query-aware-proj")):
                if var not in args.variants:
                    continue
                t0 = time.perf_counter()
                comp = compress_from_scores(stack, M, r, coefficients=coef, seed=cfg.seed, singular=(V, s))
                extra = time.perf_counter() - t0 + t_M + t_svd
                label = "query-aware" if coef == "source" else "query-aware, C = ΔQ"
                comp_row(
                    f"{label} r={r}", var, r, comp, extra, captured=comp.info["captured"], timed=(coef == "source")
                )
        for n_pts in args.points:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 11)
            idx = torch.randperm(m, generator=gen)[:n_pts].sort().values
            Ms = M[idx]
            Vs, ss = top_right_singular(Ms, max(args.points_ranks), cfg.seed)
            for r in args.points_ranks:
                t0 = time.perf_counter()
                comp = compress_from_scores(stack, Ms, r, seed=cfg.seed, singular=(Vs, ss))
                comp_row(
                    f"query-aware r={r}, M on {n_pts} points",
                    "query-aware-points",
                    r,
                    comp,
                    time.perf_counter() - t0,
                    n_points=n_pts,
                    timed=False,
                )
        del M
        for meas in args.measures:
            t0 = time.perf_counter()
            Mm = training_score_matrix(stack, mlp, theta, X_tr, y_tr, measure=meas)
            Vm, sm = top_right_singular(Mm, max(args.points_ranks), cfg.seed)
            t_mm = time.perf_counter() - t0
            for r in args.points_ranks:
                comp = compress_from_scores(stack, Mm, r, seed=cfg.seed, singular=(Vm, sm))
                comp_row(
                    f"query-aware r={r}, M by {meas}", "query-aware-measure", r, comp, t_mm, measure=meas, timed=False
                )
            del Mm

    # ---- the training points' gradient subspace ---------------------------------------------
    if "gradient" in args.variants:
        t0 = time.perf_counter()
        Vg, _ = gradient_subspace(mlp, theta, X_tr, y_tr, rmax)
        t_g = time.perf_counter() - t0
        for r in ranks:
            Qs = like(stack.rows(slice(0, 1)), Vg[:r])
            C = stack_times(stack, Qs)
            comp = finish(Qs, C, torch.float32, {"method": "gradient-subspace"})
            comp_row(f"gradient subspace r={r}", "gradient", r, comp, t_g, timed=False)
        del Vg

    # ---- plain randomized SVD of Δ -------------------------------------------------------------
    if "svd" in args.variants:
        for r in ranks:
            t0 = time.perf_counter()
            comp = compress_dense(stack, r, 1, cfg.seed, dtype=torch.float32)
            comp_row(f"svd r={r}", "svd", r, comp, time.perf_counter() - t0, timed=False)

    # ---- TRAK ---------------------------------------------------------------------------------
    n_models = max(args.trak_models, default=0)
    runs = [train(mlp, ds.X_train, ds.y_train, replace(cfg, seed=cfg.seed + i)) for i in range(n_models)]
    for M_, a, setup in fitted_trak(mlp, runs, cfg, ds.X_train, ds.y_train, args.trak_models, args.trak_proj):
        add(
            {
                "method": f"TRAK-{M_}, proj {args.trak_proj}",
                "kind": "trak",
                "models": M_,
                "setup_seconds": setup,
                "bytes_per_source": a.state_bytes() / m,
            },
            torch.as_tensor(a.score(Xq, yq)),
            lambda a=a: a.score(Xq, yq),
        )

    # ---- timing: every timed readout in turn (dense fewer rounds: it is slow) ------------------
    rounds, cpu = round_robin(timers, args.timing_rounds, {"dense": args.dense_timing_rounds})
    for r in rows:
        if rounds.get(r["method"]):
            r["readout_seconds"] = rounds[r["method"]]
            r["seconds_per_query"] = statistics.median(rounds[r["method"]]) / nq
            r["readout_cpu_seconds"] = cpu[r["method"]]
            r["cpu_seconds_per_query"] = statistics.median(cpu[r["method"]]) / nq
    trak = {r["models"]: r for r in rows if r["kind"] == "trak"}
    dense_row = rows[0]
    for r in rows:
        if "seconds_per_query" in r:
            for M_, t in trak.items():
                r[f"time_vs_trak{M_}"] = r["seconds_per_query"] / t["seconds_per_query"]
                r[f"cpu_vs_trak{M_}"] = r["cpu_seconds_per_query"] / t["cpu_seconds_per_query"]
        r["lds_minus_dense"] = {pr: r["lds"][pr]["mean"] - dense_row["lds"][pr]["mean"] for pr in gts}
    doc = {
        "task": task,
        "tag": args.tag,
        "simulation": sim.to_dict(),
        "horizon": sim.horizon_label,
        "normalize": bool(args.normalize),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "m": m,
        "p": p,
        "n_queries": nq,
        "ground_truth": ground_truth_info(gts, gt_seconds, args.subsets),
        "protocols": list(args.protocols),
        "rows": rows,
        "seconds": time.perf_counter() - t_start,
        "command": "python benchmarks/query_compress_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    write(doc, Path(args.out))
    log(f"done in {doc['seconds']:.0f} s")
    return doc


_f = fmt_lds


def write(doc: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = f"query-compress-{doc['task']}" + (f"-{doc['tag']}" if doc["tag"] else "")
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    protos = doc["protocols"]
    traks = sorted(r["models"] for r in doc["rows"] if r["kind"] == "trak")
    sim = doc["simulation"]
    lines = [
        f"# Query-aware compression: {doc['task']}, {sim['curvature']} trajectory, horizon {sim['horizon']}",
        "",
        f"{report_context(doc)} · "
        f"m = {doc['m']} sources, p = {doc['p']} parameters, {doc['n_queries']} queries · total {doc['seconds']:.0f} s"
        + (" · query-aware rows: M's rows normalised (the library default)" if doc.get("normalize") else ""),
        "",
        ground_truth_sentence(doc["ground_truth"]),
        "",
    ]
    # the curves: one column per variant, one row per rank
    kinds = [
        ("query-aware", "query-aware"),
        ("query-aware-proj", "query-aware, C = ΔQ"),
        ("gradient", "gradient subspace"),
        ("svd", "svd of Δ"),
    ]
    ranks = sorted({r["rank"] for r in doc["rows"] if r["kind"] in dict(kinds)})
    present = [(k, lab) for k, lab in kinds if any(r["kind"] == k for r in doc["rows"])]
    dense = doc["rows"][0]
    for pr in protos:
        lines += [
            f"LDS ({pr}) against rank; dense {_f(dense['lds'][pr])}, "
            + ", ".join(f"TRAK-{r['models']} {_f(r['lds'][pr])}" for r in doc["rows"] if r["kind"] == "trak"),
            "",
            "| rank | "
            + " | ".join(lab for _, lab in present)
            + " | query-aware: ‖M‖² kept | query-aware: queries' ‖S‖² kept |",
            "|---|" + "---|" * (len(present) + 2),
        ]
        for rk in ranks:
            cells = []
            for k, _ in present:
                row = next((r for r in doc["rows"] if r["kind"] == k and r["rank"] == rk), None)
                cells.append(_f(row["lds"][pr]) if row else "–")
            qa = next((r for r in doc["rows"] if r["kind"] == "query-aware" and r["rank"] == rk), None)
            cells.append(f"{qa['captured']:.3f}" if qa and "captured" in qa else "–")
            cells.append(f"{qa['query_scores_kept']:.3f}" if qa and "query_scores_kept" in qa else "–")
            lines.append(f"| {rk} | " + " | ".join(cells) + " |")
        lines.append("")
    head = [
        "method",
        *[f"LDS {p}" for p in protos],
        f"− dense ({protos[0]})",
        "ms / query",
        *[f"× TRAK-{M} time" for M in traks],
        *[f"× TRAK-{M} CPU" for M in traks],
        "bytes / source",
        "compress s",
    ]
    lines += ["Every row:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["rows"]:
        cells = [r["method"], *[_f(r["lds"].get(p)) for p in protos], f"{r['lds_minus_dense'][protos[0]]:+.3f}"]
        cells.append(f"{1000 * r['seconds_per_query']:.3f}" if "seconds_per_query" in r else "–")
        cells += [f"{r[f'time_vs_trak{M}']:.3f}" if f"time_vs_trak{M}" in r else "–" for M in traks]
        cells += [f"{r[f'cpu_vs_trak{M}']:.3f}" if f"cpu_vs_trak{M}" in r else "–" for M in traks]
        cells.append(f"{r.get('bytes_per_source', 0):,.0f}")
        cells.append(f"{r['extra_seconds']:.0f}" if "extra_seconds" in r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Command: `{doc['command']}`. LDS: mean ± s.e. over queries (Spearman per query). Time per query: "
        "all queries in one batch, every timed readout in turn over several rounds (median; the dense readout "
        "fewer rounds), so the ratios to TRAK are from the same run; 'CPU': the same rounds in this process's CPU "
        "time, which waiting for a core on a loaded machine does not inflate. Only the query-aware (source) rows and "
        "the dense row are timed: every rank-r factorisation reads out alike (r JVPs + r·m). 'compress s': "
        "the factorisation's own time (query-aware: including M = G Δᵀ and its singular vectors, shared by "
        "all ranks). '‖M‖² kept': the fraction of the training points' score matrix (rows normalised) that "
        "rank r keeps; 'queries' ‖S‖² kept': 1 − ‖S_r − S‖²/‖S‖² for the evaluated queries' own scores against "
        "the dense ones (each query's row scaled to unit norm).",
        "",
    ]
    (out / f"{name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
