"""The benchmark: every attribution method on one task, timed in one run on one machine.

Interface: :func:`run_bench` ``(task, ...) -> dict`` (also written as
``benchmarks/<task>.json`` and a Markdown table ``benchmarks/<task>.md``), and
:data:`TASKS`.

Tasks:

- ``digits-mlp`` (issue #2): scikit-learn digits / 16, stratified 80/20 split with seed 0
  (1437 train, 360 test), MLP 64-128-10 ReLU, plain SGD lr 0.1, batch 64, 30 epochs,
  weight decay 1e-4.
- ``mnist1d-mlp``: MNIST-1D generated offline with the package's default arguments (seed
  42, 5000 signals) and its own 4000/1000 split, MLP 40-256-256-10 ReLU, SGD with
  momentum 0.9, lr 0.1, batch 100, weight decay 1e-4, 30 epochs: about 71 % test
  accuracy (100 % train), in line with the MLP reference of the MNIST-1D paper (~68 %).
  Plain SGD at lr 0.1 needs 100 epochs to reach 62 %, a cosine schedule reaches 66 %.

Methods (each a row): forward-only (trajectory at several horizons K, stationary, single
model and small ensembles averaged over seeds), TRAK (official ``traker``) at M models ×
projection dimensions, influence functions (explicit last layer, CG whole network),
TracIn, gradient dot product, random. Ground truth (LDS subsets, seed-noise ceiling, LOO)
comes from :mod:`attrcore.evaluation.ground_truth` and is stored, so a rerun only recomputes scores.

Columns: LDS with a different training seed per subset (the standard protocol, listed
first) and with the attributed model's seed for every subset; LOO Pearson
and Spearman (weight-zero, averaged over seeds); setup seconds (method-specific work
beyond plain training: simulation, featurize/finalize, Hessian); training seconds;
milliseconds per query (one batch of all queries after a warm-up call, timed again in
``timing_rounds`` round-robin rounds once every row is built, every method once per round, the
median kept, so that a change of load hits all methods alike); the state kept between
queries; and ratios to TRAK measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ..config import PRESETS, SimulationConfig, TrainConfig
from ..data.datasets import load_dataset
from ..engine.choose import choose_simulation
from ..engine.compress import rank_for
from ..engine.model import MLP, MLPConfig
from ..engine.train import Progress, ProgressFn, train
from ..errors import CancelledError, ConfigError
from ..methods.pipeline import attribute, close
from ..methods.registry import make_method, resolve_method
from ..methods.tracin import tracin_checkpoint_epochs
from .ground_truth import lds_ground_truth, loo_ground_truth
from .metrics import summarize

__all__ = [
    "LDS_PROTOCOLS",
    "TASKS",
    "bench_log",
    "fitted_trak",
    "fmt_lds",
    "ground_truth_info",
    "ground_truth_sentence",
    "lds_by_protocol",
    "machine_info",
    "protocol_ground_truths",
    "report_context",
    "round_robin",
    "run_bench",
    "task_setup",
    "write_report",
]


def _digits() -> dict:
    p = PRESETS["digits-mlp"]
    return {
        "data": {k: p["data"][k] for k in ("seed", "test_fraction")} | {"source": p["data"]["source"]},
        "hidden": tuple(p["model"]["hidden"]),
        "train": TrainConfig(**p["train"]),
    }


TASKS: dict[str, Callable[[], dict]] = {
    "digits-mlp": _digits,
    "mnist1d-mlp": lambda: {
        "data": {"source": "mnist1d", "seed": 42, "test_fraction": 0.2},
        "hidden": (256, 256),
        "train": TrainConfig(epochs=30, lr=0.1, batch_size=100, momentum=0.9, weight_decay=1e-4),
    },
}

# Settings per task; `run_bench` arguments override them, `quick=True` replaces them by QUICK.
DEFAULTS = {
    "n_subsets": 100,
    "fraction": 0.5,
    "ceiling_seeds": 1,
    "lds_protocols": ("random-seed", "fixed-seed"),
    "horizons": (0, 4, 16, 64, None),
    "stationary_horizons": (100,),
    "ensemble": 3,
    "ensemble_horizons": (16, None),
    "trak_models": (1, 10),
    "trak_proj_dims": (512, 2048),
    "trak_ridges": (1.0,),
    "loo_k": 40,
    "loo_seeds": (0, 1, 2),
    "n_queries": None,
    "epochs": None,
    "cg": {"max_iter": 100},
    # the setting `attribute` picks without simulation flags (engine/choose.py) as its own row,
    # and further EK-FAC rows (SimulationConfig overrides on curvature="ekfac")
    "default_row": True,
    "ekfac_settings": (),
    # readout timing: round-robin rounds after every row is built (median); a method whose
    # one call over all queries takes longer than the cap keeps its single timing
    "timing_rounds": 5,
    "timing_cap_seconds": 60.0,
}
TASK_DEFAULTS = {
    "digits-mlp": {},
    # p = 78,858 and n = 4,000: a curvature product costs ~50 times digits-mlp's, so the
    # horizons stay short, 200 of the 1000 test signals are the queries, one LDS protocol,
    # and CG estimates H on 1000 training examples.
    # Issue #12: both LDS protocols, random-seed first; the exact short horizons beyond K = 0
    # are left out (K = 4 took 571 s for LDS 0.21, K = 16 3,098 s for 0.07, see the README),
    # and so is LOO: its effects on this task are seed noise (seed-to-seed agreement −0.01).
    "mnist1d-mlp": {
        "lds_protocols": ("random-seed", "fixed-seed"),
        "horizons": (0,),
        "stationary_horizons": (),
        "ensemble_horizons": (),
        "loo_k": 0,
        "n_queries": 200,
        "trak_proj_dims": (512,),
        "trak_ridges": (),
        "cg": {"max_iter": 50, "hessian_examples": 1000},
    },
}
# the smoke-test setting (`bench --quick`): every code path, a few seconds of work each
QUICK = {
    "n_subsets": 10,
    "ceiling_seeds": 1,
    "epochs": 3,
    "horizons": (0, 4),
    "stationary_horizons": (10,),
    "ensemble": 2,
    "ensemble_horizons": (4,),
    "trak_models": (1, 2),
    "trak_proj_dims": (64,),
    "trak_ridges": (1.0,),
    "loo_k": 5,
    "loo_seeds": (0, 1),
    "n_queries": 40,
    "lds_protocols": ("random-seed", "fixed-seed"),
    "cg": {"max_iter": 30},
    "default_row": True,
    "ekfac_settings": ({"horizon": 8},),
    "timing_rounds": 2,
}
TASK_QUICK = {"mnist1d-mlp": {"horizons": (0,), "stationary_horizons": (), "ensemble_horizons": (0,)}}


def task_setup(task: str, epochs: int | None = None):
    """``(dataset, mlp_cfg, train_cfg)`` of a named task (``epochs`` overrides)."""
    if task not in TASKS:
        raise ConfigError(f"unknown benchmark task {task!r}; choose one of {', '.join(TASKS)}.")
    spec = TASKS[task]()
    ds = load_dataset(spec["data"]["source"], seed=spec["data"]["seed"], test_fraction=spec["data"]["test_fraction"])
    cfg = spec["train"] if epochs is None else replace(spec["train"], epochs=int(epochs))
    return ds, MLPConfig(ds.n_features, ds.n_classes, spec["hidden"]), cfg


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_bench(
    task: str = "digits-mlp",
    *,
    out_dir: str | os.PathLike | None = "benchmarks",
    name: str | None = None,
    quick: bool = False,
    n_subsets: int | None = None,
    fraction: float | None = None,
    ceiling_seeds: int | None = None,
    lds_protocols: tuple[str, ...] | None = None,
    horizons: tuple[int | None, ...] | None = None,
    stationary_horizons: tuple[int, ...] | None = None,
    ensemble: int | None = None,
    ensemble_horizons: tuple[int | None, ...] | None = None,
    trak_models: tuple[int, ...] | None = None,
    trak_proj_dims: tuple[int, ...] | None = None,
    trak_ridges: tuple[float, ...] | None = None,
    loo_k: int | None = None,
    loo_seeds: tuple[int, ...] | None = None,
    n_queries: int | None = None,
    epochs: int | None = None,
    cg: dict | None = None,
    methods: tuple[str, ...] | None = None,
    store=None,
    scheduler=None,
    n_jobs: int = -1,
    progress: ProgressFn | None = None,
) -> dict:
    """Run every method on ``task`` and write ``<out_dir>/<name or task>.{json,md}``.

    Unset settings come from :data:`DEFAULTS` and :data:`TASK_DEFAULTS`; ``quick=True``
    uses :data:`QUICK` instead (a smoke test; it writes ``<task>-quick.*``). ``horizons``
    use ``None`` for the full horizon; ``cg`` holds options of the CG influence function.
    ``methods`` restricts the rows (names as in the ``method`` column: forward-only, trak,
    if-explicit, if-cg, tracin, grad-dot, random). Returns the JSON document.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown benchmark task {task!r}; choose one of {', '.join(TASKS)}.")
    given = {
        "n_subsets": n_subsets,
        "fraction": fraction,
        "ceiling_seeds": ceiling_seeds,
        "lds_protocols": lds_protocols,
        "horizons": horizons,
        "stationary_horizons": stationary_horizons,
        "ensemble": ensemble,
        "ensemble_horizons": ensemble_horizons,
        "trak_models": trak_models,
        "trak_proj_dims": trak_proj_dims,
        "trak_ridges": trak_ridges,
        "loo_k": loo_k,
        "loo_seeds": loo_seeds,
        "n_queries": n_queries,
        "epochs": epochs,
        "cg": cg,
    }
    quick_opts = {**QUICK, **TASK_QUICK.get(task, {})} if quick else {}
    opts = {**DEFAULTS, **TASK_DEFAULTS[task], **quick_opts, **{k: v for k, v in given.items() if v is not None}}
    if quick:
        name = name or f"{task}-quick"
    n_subsets, fraction, ceiling_seeds = opts["n_subsets"], opts["fraction"], opts["ceiling_seeds"]
    lds_protocols, horizons = tuple(opts["lds_protocols"]), tuple(opts["horizons"])
    stationary_horizons, ensemble = tuple(opts["stationary_horizons"]), opts["ensemble"]
    ensemble_horizons, trak_models = tuple(opts["ensemble_horizons"]), tuple(opts["trak_models"])
    trak_proj_dims, loo_k, loo_seeds = tuple(opts["trak_proj_dims"]), opts["loo_k"], tuple(opts["loo_seeds"])
    trak_ridges = tuple(opts["trak_ridges"])
    n_queries, epochs, cg_opts = opts["n_queries"], opts["epochs"], dict(opts["cg"])
    default_row, ekfac_settings = bool(opts["default_row"]), tuple(opts["ekfac_settings"])
    timing_rounds, timing_cap = int(opts["timing_rounds"]), float(opts["timing_cap_seconds"])
    for proto in lds_protocols:
        if proto not in ("fixed-seed", "random-seed"):
            raise ConfigError(f"unknown LDS protocol {proto!r}; use fixed-seed and/or random-seed.")
    wanted = {resolve_method(m) for m in methods} if methods else None

    def want(method: str) -> bool:
        return wanted is None or method in wanted

    def report(stage: str, done: int, total: int, **metrics) -> None:
        if progress is not None and progress(Progress(stage, done, total, metrics)) is False:
            raise CancelledError("the benchmark was cancelled; finished ground truth is stored.")

    t_start = time.perf_counter()
    ds, mcfg, cfg = task_setup(task, epochs)
    mlp = MLP(mcfg)
    X, y = ds.X_train, ds.y_train
    Q = ds.n_test if n_queries is None else min(int(n_queries), ds.n_test)
    Xq, yq = ds.X_test[:Q], ds.y_test[:Q]
    queries = (Xq, yq)
    Xq_t, yq_t = torch.as_tensor(Xq), torch.as_tensor(yq)

    # ---- ground truth (parallel, stored, resumable) ------------------------------------
    gt_common = {"queries": queries, "store": store, "scheduler": scheduler, "n_jobs": n_jobs, "progress": progress}
    gts, gt_seconds = protocol_ground_truths(
        ds,
        mcfg,
        cfg,
        queries,
        lds_protocols,
        n_subsets,
        n_jobs=n_jobs,
        fraction=fraction,
        ceiling_seeds=ceiling_seeds,
        store=store,
        scheduler=scheduler,
        progress=progress,
    )
    rng = np.random.default_rng(12345)
    loo_idx = np.sort(rng.choice(ds.n_train, size=min(loo_k, ds.n_train), replace=False))
    loo, loo_seconds = {}, {}
    if loo_k:
        for protocol in ("weight-zero", "reshuffled"):
            loo[protocol], loo_seconds[protocol] = _timed(
                lambda p=protocol: loo_ground_truth(ds, mcfg, cfg, loo_idx, seeds=loo_seeds, protocol=p, **gt_common)
            )

    rows: list[dict] = []
    timers: list[tuple[dict, object]] = []  # (row, open attributor) for the round-robin timing

    def evaluate_row(row: dict, scores: torch.Tensor, attributor=None) -> dict:
        if attributor is not None:
            timers.append((row, attributor))
        s = scores.double().numpy()
        for proto, gt in gts.items():
            row[f"lds_{proto}"] = summarize(gt.score(s))
        if "weight-zero" in loo:
            c = loo["weight-zero"].score(s)
            row["loo_pearson"], row["loo_spearman"] = summarize(c.pearson), summarize(c.spearman)
        rows.append(row)
        return row

    # ---- forward-only --------------------------------------------------------------------

    simulated: dict[tuple, object] = {}  # (simulation, seed) -> TrainOutput, shared by rows

    def simulated_model(sim: SimulationConfig, seed: int):
        key = (json.dumps(sim.to_dict(), sort_keys=True), seed)
        if key not in simulated:
            simulated[key] = train(mlp, X, y, replace(cfg, seed=seed), sim=sim)
        return simulated[key]

    def forward_only(sim: SimulationConfig, seeds: list[int], label: str = "") -> None:
        outs = [simulated_model(sim, s) for s in seeds]
        r = attribute(
            "forward-only", mlp, X, y, Xq, yq, cfg, models=len(seeds), simulation=sim, trained=outs, warmup=2, keep=True
        )
        # plain training: the whole call less the simulation (which runs inside the training
        # loop for the trajectory scheme, after it for stationary and for a factorisation)
        plain = sum(o.timings["total_seconds"] - o.timings["simulate_seconds"] for o in outs)
        rank = rank_for(sim, ds.n_train, mlp.n_params)[0]
        detail = "".join(
            [
                f", {sim.curvature}" if sim.curvature != "hessian" else "",
                f", segments of {sim.segment_steps} steps" if sim.segment_steps else "",
                f", rank {rank}" if rank else "",
                " query-aware" if rank and sim.compression == "query-aware" else "",
            ]
        )
        evaluate_row(
            {
                "method": "forward-only",
                "scheme": sim.scheme,
                "horizon": sim.horizon_label,
                "curvature": sim.curvature,
                "simulation": sim.to_dict(),
                "models": len(seeds),
                "setting": label
                + f"{sim.scheme} K={sim.horizon_label}{detail}"
                + (f", {len(seeds)} models" if len(seeds) > 1 else ""),
                "setup_seconds": r.timings["setup_seconds"],
                "train_seconds": plain,
                "seconds_per_query": r.seconds_per_query,
                "state_mb": r.state_bytes / 2**20,
            },
            r.scores,
            r.attributor,
        )

    settings: list[tuple[SimulationConfig, list[int]]] = []
    labels: dict[int, str] = {}
    default_reason = None
    if want("forward-only"):
        if default_row:  # what `attribute` picks without simulation flags
            choice = choose_simulation(mcfg, cfg, ds.n_train)
            default_reason = choice.reason
            labels[len(settings)] = "default: "
            settings.append((choice.config, [cfg.seed]))
        for over in ekfac_settings:
            settings.append(
                (
                    SimulationConfig(
                        **{
                            "scheme": "trajectory",
                            "curvature": "ekfac",
                            "rank": None,
                            "memory_budget_mb": 8192.0,
                            **over,
                        }
                    ),
                    [cfg.seed],
                )
            )
        for K in horizons:
            settings.append((SimulationConfig(scheme="trajectory", horizon=K, rank=None), [cfg.seed]))
        for K in stationary_horizons:
            settings.append((SimulationConfig(scheme="stationary", horizon=K, rank=None), [cfg.seed]))
        if ensemble > 1:
            for K in ensemble_horizons:
                settings.append(
                    (
                        SimulationConfig(scheme="trajectory", horizon=K, rank=None),
                        [cfg.seed + i for i in range(ensemble)],
                    )
                )
    n_base = len(trak_models) * len(trak_proj_dims) + len(trak_ridges) + 5
    total = len(settings) + n_base
    for i, (sim, seeds) in enumerate(settings):
        report("methods", i, total)
        forward_only(sim, seeds, labels.get(i, ""))

    # ---- baselines -------------------------------------------------------------------------
    n_trak = max(trak_models) if (trak_models and want("trak")) else 1
    ckpts = tracin_checkpoint_epochs(cfg.epochs, 10)
    runs, train_s = [], []
    for i in range(n_trak):
        r, sec = _timed(
            lambda i=i: train(mlp, X, y, replace(cfg, seed=cfg.seed + i), checkpoint_epochs=ckpts if i == 0 else ())
        )
        runs.append(r)
        train_s.append(sec)
    test_acc = float((mlp.forward(runs[0].theta, Xq_t.to(runs[0].theta.dtype)).argmax(1) == yq_t).float().mean())

    def baseline(method: str, setting: str, models: int, **opts) -> None:
        r = attribute(
            method, mlp, X, y, Xq, yq, cfg, models=models, options=opts, trained=runs[:models], warmup=2, keep=True
        )
        evaluate_row(
            {
                "method": method,
                "setting": setting,
                "models": models,
                "horizon": None,
                "setup_seconds": r.timings["setup_seconds"],
                "train_seconds": float(sum(train_s[:models])),
                "seconds_per_query": r.seconds_per_query,
                "state_mb": r.state_bytes / 2**20,
                "meta": {k: v for k, v in r.meta.items() if isinstance(v, (int, float, str)) or v is None},
            },
            r.scores,
            r.attributor,
        )

    done = len(settings)
    jobs = []
    if want("trak"):
        for M in trak_models:
            for k in trak_proj_dims:
                jobs.append(("trak", f"M={M}, proj {k}", M, {"proj_dim": k}))
        # sensitivity rows: the largest ensemble at the smallest projection with a ridge
        # relative to the kernel's mean eigenvalue (traker's default is no ridge)
        for r in trak_ridges:
            jobs.append(
                (
                    "trak",
                    f"M={max(trak_models)}, proj {min(trak_proj_dims)}, ridge {r:g}",
                    max(trak_models),
                    {"proj_dim": min(trak_proj_dims), "ridge": r},
                )
            )
    if want("if-explicit"):
        jobs.append(("if-explicit", "last layer, damping 0.01", 1, {"layers": "last"}))
    if want("if-cg"):
        sub = cg_opts.get("hessian_examples")
        jobs.append(("if-cg", "whole net, GN, damping 0.01" + (f", H on {sub} examples" if sub else ""), 1, cg_opts))
    if want("tracin"):
        jobs.append(("tracin", f"{len(ckpts)} checkpoints", 1, {}))
    if want("grad-dot"):
        jobs.append(("grad-dot", "final model", 1, {}))
    if want("random"):
        jobs.append(("random", "seed 0", 1, {}))
    for method, setting, models, method_opts in jobs:
        report("methods", done, total)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the automatic TRAK ridge is recorded in meta
            baseline(method, setting, models, **method_opts)
        done += 1

    # ---- readout timing, round-robin (every method once per round; medians) ---------------
    _time_round_robin(timers, Xq, yq, timing_rounds, timing_cap, report)

    # ---- ratios against TRAK in this run ---------------------------------------------------
    traks = {(r["models"], r["setting"]): r for r in rows if r["method"] == "trak"}
    ref = {}
    for M in (min(trak_models, default=0), max(trak_models, default=0)):
        cands = [r for (m, _), r in traks.items() if m == M and r["meta"].get("ridge") is None]
        if cands:  # the smallest projection of that ensemble size is the reference
            ref[M] = min(cands, key=lambda r: r["meta"].get("proj_dim", 0))
    for r in rows:
        for M, t in ref.items():
            r[f"time_vs_trak{M}"] = r["seconds_per_query"] / t["seconds_per_query"]
            main = lds_protocols[0]
            r[f"lds_vs_trak{M}"] = r[f"lds_{main}"]["mean"] / t[f"lds_{main}"]["mean"]

    doc = {
        "task": task,
        "name": name or task,
        "quick": quick,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "data": {
            "n_train": ds.n_train,
            "n_test": ds.n_test,
            "n_queries": Q,
            "n_features": ds.n_features,
            "n_classes": ds.n_classes,
            "spec": ds.spec,
        },
        "model": mcfg.to_dict(),
        "train": cfg.to_dict(),
        "test_accuracy": test_acc,
        "settings": dict(opts),
        "default_simulation_reason": default_reason,
        "ground_truth": {
            "n_subsets": n_subsets,
            "fraction": fraction,
            "ceiling_seeds": ceiling_seeds,
            **{
                proto: {
                    "seconds": gt_seconds[proto],
                    "retrained": gts[proto].n_trained,
                    "ceiling": summarize(gts[proto].ceiling()),
                    "oracle_ceiling": summarize(gts[proto].oracle_ceiling()),
                }
                for proto in gts
            },
            "loo": {
                p: {
                    "seconds": loo_seconds[p],
                    "retrained": g.n_trained,
                    "k": len(loo_idx),
                    "seeds": list(loo_seeds),
                    "seed_agreement": summarize(g.seed_agreement()),
                    "noise_ratio": summarize(g.noise_ratio()),
                }
                for p, g in loo.items()
            },
        },
        "rows": rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - t_start,
    }
    if out_dir is not None:
        write_report(doc, out_dir)
    return doc


def _time_round_robin(timers, Xq, yq, rounds: int, cap_seconds: float, report=None) -> None:
    """Time every kept attributor's readout of all queries again, in ``rounds`` − 1 rounds
    of :func:`round_robin`, and set each row's ``seconds_per_query`` to the median of its
    calls (the first, timed when the row was built, included); close the attributors. A
    method whose first call took longer than ``cap_seconds`` keeps that single timing."""
    Q = len(Xq)
    try:
        for row, _ in timers:
            row["seconds_per_query_rounds"] = [row["seconds_per_query"]]
        timed = {str(k): (row, a) for k, (row, a) in enumerate(timers) if row["seconds_per_query"] * Q <= cap_seconds}
        if rounds > 1 and timed:
            if report is not None:
                report("timing", 0, rounds - 1)
            wall, _ = round_robin({k: (lambda a=a: a.score(Xq, yq)) for k, (_, a) in timed.items()}, rounds - 1)
            for k, (row, _) in timed.items():
                row["seconds_per_query_rounds"] += [w / Q for w in wall[k]]
        for row, _ in timers:
            row["seconds_per_query"] = float(np.median(row["seconds_per_query_rounds"]))
            row["timing_rounds"] = len(row["seconds_per_query_rounds"])
    finally:
        for _, a in timers:
            close(a)


def _fmt(s: dict | None) -> str:
    if not s or s.get("n", 0) == 0 or s["mean"] != s["mean"]:
        return "–"
    return f"{s['mean']:.3f} ± {s['sem']:.3f}" if s["sem"] == s["sem"] else f"{s['mean']:.3f}"


def write_report(doc: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` into ``out_dir``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out / f"{doc['name']}.json", out / f"{doc['name']}.md"
    jpath.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    gt = doc["ground_truth"]
    listed = [p for p in doc.get("settings", {}).get("lds_protocols", ()) if p in gt]
    protos = listed + [p for p in ("random-seed", "fixed-seed") if p in gt and p not in listed]
    refs = sorted({k[len("time_vs_trak") :] for r in doc["rows"] for k in r if k.startswith("time_vs_trak")}, key=int)
    widths = [doc["model"]["input_dim"], *doc["model"]["hidden"], doc["model"]["n_classes"]]
    lines = [
        f"# Benchmark: {doc['task']}" + (" (quick smoke setting)" if doc["quick"] else ""),
        "",
        f"{doc['created']} · {doc['machine']['cpus']} CPUs · torch {doc['machine']['torch']} · "
        f"{doc['data']['n_train']} train / {doc['data']['n_queries']} queries · model "
        f"{'-'.join(str(s) for s in widths)} · "
        f"{doc['train']['epochs']} epochs · test accuracy {doc['test_accuracy']:.3f} · total {doc['seconds']:.0f} s",
        "",
        "Ground truth: "
        + "; ".join(
            f"{p}: {gt['n_subsets']} subsets at {gt['fraction']} in {gt[p]['seconds']:.0f} s "
            f"({gt[p]['retrained']} retrained), seed-noise ceiling {_fmt(gt[p]['ceiling'])} "
            f"(noise-free bound {_fmt(gt[p]['oracle_ceiling'])})"
            for p in protos
        )
        + ".",
    ]
    if doc.get("default_simulation_reason"):
        lines.append(f"Default simulation (`attribute` without simulation flags): {doc['default_simulation_reason']}")
    for p, g in gt.get("loo", {}).items():
        lines.append(
            f"LOO {p}: {g['k']} sources × seeds {g['seeds']} in {g['seconds']:.0f} s; "
            f"seed-to-seed agreement of effects {_fmt(g['seed_agreement'])}, "
            f"seed noise / effect size {_fmt(g['noise_ratio'])}."
        )
    head = (
        ["method", "setting"]
        + [f"LDS {p}" for p in protos]
        + ["LOO Pearson", "LOO Spearman", "setup s", "train s", "ms / query", "state MB"]
    )
    head += [f"time × TRAK-{M}" for M in refs] + [f"LDS × TRAK-{M}" for M in refs]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["rows"]:
        cells = (
            [r["method"], r["setting"]]
            + [_fmt(r.get(f"lds_{p}")) for p in protos]
            + [
                _fmt(r.get("loo_pearson")),
                _fmt(r.get("loo_spearman")),
                f"{r['setup_seconds']:.2f}",
                f"{r['train_seconds']:.1f}",
                f"{1000 * r['seconds_per_query']:.3f}",
                f"{r['state_mb']:.1f}",
            ]
        )
        cells += [f"{r.get(f'time_vs_trak{M}', float('nan')):.3f}" for M in refs]
        cells += [f"{r.get(f'lds_vs_trak{M}', float('nan')):.2f}" for M in refs]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Peak memory of the benchmark process: {doc['peak_rss_mb']:.0f} MB. "
        "LDS: mean ± s.e. over queries (Spearman per query). Setup: simulation (forward-only), "
        "featurize + finalize (TRAK), Hessian (IF), gradients of the training set (TracIn, "
        "grad-dot). Time per query: all queries in one batch after a warm-up call; the median of "
        f"{max((r.get('timing_rounds', 1) for r in doc['rows']), default=1)} round-robin rounds "
        "(every method once per round; a method whose one call takes over a minute is timed once).",
        "",
    ]
    mpath.write_text("\n".join(lines))
    return jpath, mpath


# ----------------------------------------------------------------------------- pieces the benchmark scripts share

LDS_PROTOCOLS = ("random-seed", "fixed-seed")  # random-seed first: a different training seed per subset


def protocol_ground_truths(
    ds,
    mcfg: MLPConfig,
    cfg: TrainConfig,
    queries,
    protocols=LDS_PROTOCOLS,
    n_subsets: int = 100,
    n_jobs: int = 1,
    log: Callable[[str], None] | None = None,
    fraction: float = 0.5,
    **options,
) -> tuple[dict, dict]:
    """``({protocol: LDS ground truth}, {protocol: seconds})`` for ``queries (X, y)``: 100
    subsets at α = 0.5 by default, stored in the run store and reused by a rerun.
    ``options`` go to :func:`lds_ground_truth` (``ceiling_seeds``, ``store``, ``scheduler``,
    ``progress``)."""
    gts, seconds = {}, {}
    for proto in protocols:
        gts[proto], seconds[proto] = _timed(
            lambda p=proto: lds_ground_truth(
                ds,
                mcfg,
                cfg,
                n_subsets=n_subsets,
                fraction=fraction,
                queries=queries,
                vary_seed=(p == "random-seed"),
                n_jobs=n_jobs,
                **options,
            )
        )
        if log is not None:
            log(f"ground truth {proto}: {seconds[proto]:.0f} s ({gts[proto].n_trained} retrained)")
    return gts, seconds


def lds_by_protocol(gts: dict, scores: torch.Tensor) -> dict:
    """``{protocol: summary of the per-query LDS}`` of ``scores [Q, m]``."""
    s = scores.double().numpy()
    return {proto: summarize(gt.score(s)) for proto, gt in gts.items()}


def fitted_trak(mlp: MLP, runs: list, cfg: TrainConfig, X, y, models, proj_dim: int = 512):
    """Yield ``(M, attributor, setup seconds)``: the official ``traker`` on the first M of
    ``runs`` for each M in ``models``, fitted on ``(X, y)`` (its warnings silenced)."""
    for M in models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = make_method("trak", mlp, runs[:M], cfg, proj_dim=proj_dim)
            _, setup = _timed(lambda a=a: a.fit(X, y))
        yield M, a, setup


def round_robin(
    timers: dict[str, Callable[[], object]], rounds: int, max_rounds: dict[str, int] | None = None
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time every call once per round, in turn, so that the load of a shared machine hits all
    alike: ``({name: wall seconds per round}, {name: CPU seconds of this process per round})``
    after one warm-up call each. ``max_rounds`` caps a slow call's rounds."""
    for fn in timers.values():
        fn()
    wall: dict[str, list[float]] = {k: [] for k in timers}
    cpu: dict[str, list[float]] = {k: [] for k in timers}
    for i in range(rounds):
        for name, fn in timers.items():
            if max_rounds is not None and i >= max_rounds.get(name, rounds):
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def bench_log(*parts) -> None:
    """A benchmark script's progress line, with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, flush=True)


def machine_info() -> dict:
    """What a benchmark report records of the machine it ran on (with the load at the end)."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }


def ground_truth_info(gts: dict, seconds: dict, n_subsets: int) -> dict:
    """``{protocol: {seconds, subsets, ceiling}}`` of :func:`protocol_ground_truths`' result."""
    return {pr: {"seconds": seconds[pr], "subsets": n_subsets, "ceiling": summarize(gts[pr].ceiling())} for pr in gts}


def report_context(doc: dict) -> str:
    """``created · CPUs (load average …) · torch …`` for a report's second line."""
    mach = doc["machine"]
    load = ", ".join(f"{x:.1f}" for x in mach["load_average"])
    return f"{doc['created']} · {mach['cpus']} CPUs (load average {load}) · torch {mach['torch']}"


def ground_truth_sentence(info: dict) -> str:
    """One sentence naming each protocol's subsets, time and seed-noise ceiling."""
    parts = [
        f"{p}: {g['subsets']} subsets at 0.5 ({g['seconds']:.0f} s), seed-noise ceiling {_fmt(g['ceiling'])}"
        for p, g in info.items()
    ]
    return "Ground truth: " + "; ".join(parts) + "."


fmt_lds = _fmt  # "mean ± s.e." of a summary, "–" when there is none
