"""Mislabel-detection benchmark (issue #11): every signal on injected label noise.

    python benchmarks/mislabel_bench.py [--quick] [--skip mnist1d]

Cases (each: one simulated training run, every signal ranks all training examples, the
flips are known so ROC-AUC / average precision are exact):

- ``digits-mlp``, 10 % uniform flips, noise seeds 0, 1, 2;
- ``digits-mlp``, class-conditional noise: 40 % of classes 7, 2 and 9 relabelled as the
  look-alike 1, 5 and 3 (``--noise-pairs 7:1,2:5,9:3``), noise seeds 0, 1, 2 — the set the
  signal study (``benchmarks/mislabel_signal_study.py``) chose on;
- the same on held-out pairs and noise seeds: ``3:8,4:9,1:7``, noise seeds 3, 4, 5;
- ``mnist1d-mlp`` and ``breast_cancer``, 10 % uniform flips, noise seeds 0, 1, 2.

The recipe is the task's reference one (digits-mlp: 64-128-10 ReLU, SGD lr 0.1, batch 64,
30 epochs, weight decay 1e-4; mnist1d-mlp: 40-256-256-10, momentum 0.9, batch 100;
breast_cancer: 30-128-2 with the digits optimiser) with the trajectory response at
horizon K = 0 (the horizon that ranked flips best in a sweep, reported below; for
mnist1d also the only affordable one). After ranking, the top 15 % of each of the
forward-only, loss and cleanlab rankings are "fixed" (inspected examples that were
flipped get their clean label back, the rest are kept), the recipe is retrained, and the
test accuracy is compared with the noisy model and with the clean-label model.

The trajectory signals (``forward-only-trajectory``, ``trajectory-loss``, ``aum``:
attrcore/mislabel/trajectory.py) are recorded by an ``on_epoch`` hook while a case trains;
a case cached before they existed gets them from a second, identical training run (training
is deterministic: its forward-only ROC-AUC must equal the cached one), with the top 15 % of
``forward-only-trajectory`` (and of ``aum``, except on mnist1d) fixed the same way.

Writes ``benchmarks/mislabel_bench.md``, ``.json`` and the found-vs-inspected plot
(``mislabel_found.png`` via matplotlib when installed, and ``mislabel_found.html``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attrcore import plots  # noqa: E402  (path set above)
from attrcore.config import SimulationConfig, TrainConfig  # noqa: E402
from attrcore.mislabel import (  # noqa: E402
    NoiseSpec,
    compute_signals,
    curves,
    detection_rows,
    finding,
    fix_top,
    retrain_with_marks,
)
from attrcore.mislabel.trajectory import recorder_for  # noqa: E402
from attrcore.run import fit  # noqa: E402

HERE = Path(__file__).resolve().parent
PAIRS = "7:1,2:5,9:3"
HELD_OUT_PAIRS = "3:8,4:9,1:7"  # not looked at while choosing the default signal
SIGNALS = ("forward-only", "forward-only-margin", "trak-1", "trak-10", "if", "loss", "confidence", "cleanlab")
# read out over the training trajectory (attrcore/mislabel/trajectory.py), recorded while the
# run trains; a case cached before they existed gets them from a second, identical training
# run (training is deterministic; its forward-only row is checked against the cached one)
TRAJECTORY = ("forward-only-trajectory", "trajectory-loss", "aum")
RECIPES = {
    "digits": {"hidden": (128,), "train": TrainConfig(epochs=30, lr=0.1, batch_size=64, weight_decay=1e-4, seed=0)},
    "breast_cancer": {
        "hidden": (128,),
        "train": TrainConfig(epochs=30, lr=0.1, batch_size=64, weight_decay=1e-4, seed=0),
    },
    "mnist1d": {
        "hidden": (256, 256),
        "train": TrainConfig(epochs=30, lr=0.1, batch_size=100, momentum=0.9, weight_decay=1e-4, seed=0),
    },
}
FIX_FRACTION = 0.15
FIX_SIGNALS = ("forward-only", "loss", "cleanlab")
TRAJECTORY_FIX = ("forward-only-trajectory", "aum")


def run_case(
    source: str, noise: NoiseSpec, horizon: int | None, signals, quick: bool, cache: Path | None = None
) -> dict:
    """One case; with ``cache`` a finished case is kept as JSON and reused (resumable runs)."""
    tag = f"{source}-{noise.rate}-{noise.pairs}-{noise.seed}-K{horizon}-{'-'.join(signals)}-{quick}"
    path = None if cache is None else cache / (tag.replace(":", "").replace(",", "_") + ".json")
    if path is not None and path.exists():
        case = json.loads(path.read_text())
    else:
        case = _run_case(source, noise, horizon, signals, quick)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(case, default=float))
    if tuple(signals) == SIGNALS:
        extra = None if path is None else path.with_name(path.stem + "-trajectory.json")
        if extra is not None and extra.exists():
            more = json.loads(extra.read_text())
        else:
            more = _trajectory_case(source, noise, horizon, quick)
            if extra is not None:
                extra.write_text(json.dumps(more, default=float))
        case = _merge(case, more)
    return case


def _trajectory_case(source: str, noise: NoiseSpec, horizon: int | None, quick: bool) -> dict:
    """The trajectory signals of a case: the same training run again, recorded."""
    recipe = RECIPES[source]
    cfg = recipe["train"]
    if quick:
        from dataclasses import replace

        cfg = replace(cfg, epochs=5)
    data = noise.load(source)
    rec = recorder_for(data, recipe["hidden"], "relu", cfg)
    run = fit(
        data, hidden=recipe["hidden"], train_config=cfg, simulation=SimulationConfig(horizon=horizon), on_epoch=rec
    )
    results = compute_signals(run, ("forward-only",) + TRAJECTORY, recorder=rec)
    flags = np.zeros(data.n_train, dtype=bool)
    flags[data.flipped] = True
    rows = detection_rows(results, flags)
    fixes = {}
    for sid in TRAJECTORY_FIX if source != "mnist1d" else TRAJECTORY_FIX[:1]:
        fixes[sid] = retrain_with_marks(run, fix_top(results[sid].scores, FIX_FRACTION, data))
    print(
        f"{source} {noise} K={horizon} trajectory: " + ", ".join(f"{r['id']} {r['auc']:.3f}" for r in rows), flush=True
    )
    return {
        "rows": rows,
        "fix": fixes,
        "curves": {k: _thin(x, y) for k, (x, y) in curves(results, flags).items() if "trajectory" in k or "AUM" in k},
        "hook_seconds": rec.seconds,
    }


def _merge(case: dict, more: dict) -> dict:
    """The case with the trajectory rows, fixes and curves added (checked: same run)."""
    fo = next(r for r in case["rows"] if r["id"] == "forward-only")
    again = next(r for r in more["rows"] if r["id"] == "forward-only")
    if abs(fo["auc"] - again["auc"]) > 1e-6:
        raise RuntimeError(f"the recorded run differs from the cached one (forward-only {again['auc']} vs {fo['auc']})")
    case = dict(case)
    rows = [r for r in case["rows"] if r["id"] not in TRAJECTORY]
    at = next(i for i, r in enumerate(rows) if r["id"] == "forward-only-margin") + 1
    new = {r["id"]: r for r in more["rows"]}
    rows[at:at] = [new["forward-only-trajectory"]]
    ctrl = next(i for i, r in enumerate(rows) if r["id"] == "loss") + 1
    rows[ctrl:ctrl] = [new["trajectory-loss"], new["aum"]]
    case["rows"] = rows
    case["finding"] = finding(rows)
    case["fix"] = {**case["fix"], **more["fix"]}
    case["curves"] = {**case["curves"], **more["curves"]}
    case["trajectory_hook_seconds"] = more.get("hook_seconds")
    return case


def _run_case(source: str, noise: NoiseSpec, horizon: int | None, signals, quick: bool) -> dict:
    recipe = RECIPES[source]
    cfg = recipe["train"]
    if quick:
        from dataclasses import replace

        cfg = replace(cfg, epochs=5)
    data = noise.load(source)
    t0 = time.perf_counter()
    run = fit(data, hidden=recipe["hidden"], train_config=cfg, simulation=SimulationConfig(horizon=horizon))
    train_s = time.perf_counter() - t0
    results = compute_signals(run, signals)
    flags = np.zeros(data.n_train, dtype=bool)
    flags[data.flipped] = True
    rows = detection_rows(results, flags)
    fixes = {}
    # (the trajectory signals are added by run_case from a recorded run: _trajectory_case)
    # mnist1d: one fix (two trainings of its larger net) keeps the case affordable here
    for sid in FIX_SIGNALS if source != "mnist1d" else FIX_SIGNALS[:1]:
        if sid in results:
            fixes[sid] = retrain_with_marks(run, fix_top(results[sid].scores, FIX_FRACTION, data))
    case = {
        "dataset": source,
        "noise": {"rate": noise.rate, "pairs": noise.pairs, "seed": noise.seed},
        "horizon": "full" if horizon is None else horizon,
        "n_train": data.n_train,
        "n_flipped": int(len(data.flipped)),
        "train_seconds": train_s,
        "simulate_seconds": run.timings.get("simulate_seconds"),
        "test_accuracy": run.metrics.get("test_accuracy"),
        "rows": rows,
        "finding": finding(rows),
        "fix": fixes,
        "curves": {k: _thin(x, y) for k, (x, y) in curves(results, flags).items()},
    }
    fo = next(r for r in rows if r["id"] == "forward-only")
    print(
        f"{source} {noise} K={case['horizon']}: forward-only AUC {fo['auc']:.4f}; "
        + ", ".join(f"{r['id']} {r['auc']:.3f}" for r in rows),
        flush=True,
    )
    return case


def _thin(x, y, points: int = 300) -> tuple[list, list]:
    """A found-vs-inspected curve on ~``points`` points (enough to draw it, small JSON)."""
    keep = np.unique(np.r_[np.linspace(0, len(x) - 1, points).round().astype(int), len(x) - 1])
    return [round(float(v), 5) for v in x[keep]], [round(float(v), 5) for v in y[keep]]


def summarise(cases: list[dict]) -> dict:
    """Mean and per-seed ROC-AUC / AP per signal over the noise seeds of one setting."""
    out = {}
    ids = [r["id"] for r in cases[0]["rows"]]
    for sid in ids:
        rs = [next(r for r in c["rows"] if r["id"] == sid) for c in cases]
        out[sid] = {
            "signal": rs[0]["signal"],
            "kind": rs[0]["kind"],
            "auc": float(np.mean([r["auc"] for r in rs])),
            "auc_per_seed": [r["auc"] for r in rs],
            "ap": float(np.mean([r["ap"] for r in rs])),
            "found_at_15": float(np.mean([r["found_at_15"] for r in rs])),
            "seconds": float(np.median([r["seconds"] for r in rs])),
            "setup_seconds": float(np.median([r["setup_seconds"] for r in rs])),
        }
    return out


def fix_summary(cases: list[dict]) -> dict:
    out = {}
    for sid in cases[0]["fix"]:
        fx = [c["fix"][sid] for c in cases]
        out[sid] = {
            "before": float(np.mean([f["before"] for f in fx])),
            "after": float(np.mean([f["after"] for f in fx])),
            "clean": float(np.mean([f["clean"] for f in fx])),
            "recovered": float(np.mean([f["recovered"] for f in fx if f["recovered"] is not None]))
            if any(f["recovered"] is not None for f in fx)
            else None,
            "recovered_per_seed": [f["recovered"] for f in fx],
            "flips_fixed": float(np.mean([f["flips_fixed"] / max(1, f["n_flipped"]) for f in fx])),
        }
    return out


def markdown(doc: dict) -> str:
    lines = [
        "# Mislabel-detection benchmark",
        "",
        f"`python benchmarks/mislabel_bench.py{' --quick' if doc['quick'] else ''}` · {doc['machine']} · "
        f"{doc['seconds']:.0f} s in all. ROC-AUC (average precision) per signal, mean over the noise seeds; "
        "higher = the flipped labels rank higher. Controls are marked *(control)*. "
        f"Fix: the top {FIX_FRACTION:.0%} of a ranking inspected, flipped ones relabelled to the clean label, "
        "retrained with the same recipe; *recovered* = (after − noisy) / (clean − noisy) test accuracy.",
        "",
    ]
    for setting in doc["settings"]:
        s = setting["summary"]
        lines += [
            f"## {setting['title']}",
            "",
            f"{setting['n_train']} training examples, {setting['n_flipped']} flipped (mean), "
            f"horizon K = {setting['horizon']}, noise seeds {setting['seeds']}.",
            "",
            "| signal | ROC-AUC | AP | found in top 15 % | per seed ROC-AUC | s to rank all | + s of extra models |",
            "|---|---|---|---|---|---|---|",
        ]
        best = max(v["auc"] for v in s.values())
        for v in s.values():
            auc = f"**{v['auc']:.3f}**" if v["auc"] == best else f"{v['auc']:.3f}"
            lines.append(
                f"| {v['signal']} | {auc} | {v['ap']:.3f} | {v['found_at_15']:.2f} | "
                + ", ".join(f"{a:.3f}" for a in v["auc_per_seed"])
                + f" | {v['seconds']:.2f} | {v['setup_seconds']:.1f} |"
            )
        sim = setting["simulate_seconds"]
        fo, tk = s["forward-only"], s["trak-10"]
        ratio = (tk["seconds"] + tk["setup_seconds"]) / max(1e-9, fo["seconds"])
        lines += [
            "",
            f"Forward-only ranks every example in {fo['seconds']:.2f} s (its responses come from the training "
            f"run: {sim:.1f} s of simulation inside it); TRAK-10 in {tk['seconds']:.1f} s + "
            f"{tk['setup_seconds']:.1f} s for 9 extra models ({ratio:.0f}× the forward-only readout; medians).",
            "",
        ]
        if setting.get("finding"):
            k, n = len(setting["findings"]), len(setting["cases"])
            lines += [f"**Finding** (mean of the noise seeds; a control wins on {k} of {n}): {setting['finding']}", ""]
        lines += [
            "| fix the top 15 % by | test accuracy noisy → fixed (clean) | recovered | flips fixed |",
            "|---|---|---|---|",
        ]
        for sid, f in setting["fix"].items():
            rec = "–" if f["recovered"] is None else f"{f['recovered']:.0%}"
            per = ", ".join("–" if r is None else f"{r:.0%}" for r in f["recovered_per_seed"])
            lines.append(
                f"| {s[sid]['signal']} | {f['before']:.3f} → {f['after']:.3f} ({f['clean']:.3f}) | "
                f"{rec} ({per}) | {f['flips_fixed']:.0%} |"
            )
        lines.append("")
    if doc.get("horizon_sweep"):
        lines += [
            "## Horizon sweep (forward-only self-influence, noise seed 0)",
            "",
            "| setting | K | forward-only (loss) ROC-AUC | (margin) | training loss |",
            "|---|---|---|---|---|",
        ]
        for r in doc["horizon_sweep"]:
            lines.append(
                f"| {r['setting']} | {r['horizon']} | {r['auc']:.3f} | {r['auc_margin']:.3f} | {r['loss']:.3f} |"
            )
        lines.append("")
    lines += [
        "Found-vs-inspected curves: [mislabel_found.png](mislabel_found.png) "
        "(interactive: [mislabel_found.html](mislabel_found.html)).",
        "",
    ]
    return "\n".join(lines)


def save_plots(doc: dict) -> None:
    panels = [(s["title"], s["cases"][0]) for s in doc["settings"]]
    for title, case in panels:
        case["plot_title"] = title
    html_parts = []
    for title, case in panels:
        frac = case["n_flipped"] / case["n_train"]
        fig = plots.found_vs_inspected(
            {k: tuple(v) for k, v in case["curves"].items()},
            frac,
            title=f"{title} (noise seed {case['noise']['seed']})",
            max_inspected=0.5,
        )
        html_parts.append(fig.to_html(full_html=False, include_plotlyjs="cdn" if not html_parts else False))
    (HERE / "mislabel_found.html").write_text("<html><body>" + "\n".join(html_parts) + "</body></html>")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, case) in zip(axes[0], panels):
        frac = case["n_flipped"] / case["n_train"]
        ax.plot([0, frac, 1], [0, 1, 1], color="#bbb", lw=1, label="perfect")
        ax.plot([0, 1], [0, 1], ":", color="#7f7f7f", lw=1, label="random")
        for name, (x, y) in case["curves"].items():
            ax.plot(x, y, "--" if name.endswith("(control)") else "-", lw=1.6, label=name)
        ax.set_xlim(0, 0.5)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{title}\n(noise seed {case['noise']['seed']})", fontsize=9)
        ax.set_xlabel("fraction of training data inspected")
        ax.set_ylabel("fraction of flipped labels found")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE / "mislabel_found.png", dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="5 epochs, one noise seed: a smoke run")
    p.add_argument("--skip", nargs="*", default=[], help="datasets to leave out (mnist1d, breast_cancer)")
    p.add_argument(
        "--sweep",
        nargs="*",
        default=[],
        help="extra horizons for a sweep (digits); the horizon / measurement / normalisation study is "
        "benchmarks/mislabel_signal_study.py",
    )
    p.add_argument("--out", default=str(HERE / "mislabel_bench"), help="path stem of the .md / .json")
    p.add_argument(
        "--cache",
        default=os.path.join(
            os.environ.get("ATTRCORE_HOME", os.path.expanduser("~/.attrcore")), "cache", "mislabel_bench"
        ),
        help="folder where finished cases are kept, so an interrupted run resumes",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("ATTRCORE_TORCH_THREADS", "1")))
    t0 = time.perf_counter()
    seeds = [0] if args.quick else [0, 1, 2]
    plan = [
        ("digits-mlp, 10 % uniform flips", "digits", [NoiseSpec(0.1, seed=s) for s in seeds]),
        (
            "digits-mlp, class-conditional 40 % (7→1, 2→5, 9→3)",
            "digits",
            [NoiseSpec(0.4, PAIRS, seed=s) for s in seeds],
        ),
        (
            "digits-mlp, held-out class-conditional 40 % (3→8, 4→9, 1→7)",
            "digits",
            [NoiseSpec(0.4, HELD_OUT_PAIRS, seed=s) for s in ((3,) if args.quick else (3, 4, 5))],
        ),
        ("mnist1d-mlp, 10 % uniform flips", "mnist1d", [NoiseSpec(0.1, seed=s) for s in seeds]),
        ("breast_cancer, 10 % uniform flips", "breast_cancer", [NoiseSpec(0.1, seed=s) for s in seeds]),
    ]
    cache = Path(args.cache)
    settings, sweep = [], []

    def run_setting(title, source, noises) -> None:
        cases = [run_case(source, nz, 0, SIGNALS, args.quick, cache) for nz in noises]
        settings.append(
            {
                "title": title,
                "dataset": source,
                "horizon": 0,
                "seeds": [nz.seed for nz in noises],
                "n_train": cases[0]["n_train"],
                "n_flipped": float(np.mean([c["n_flipped"] for c in cases])),
                "simulate_seconds": float(np.median([c["simulate_seconds"] for c in cases])),
                "summary": summarise(cases),
                "fix": fix_summary(cases),
                "findings": [c["finding"] for c in cases if c["finding"]],
                "finding": finding(list(summarise(cases).values())),
                "cases": cases,
            }
        )

    for title, source, noises in plan:
        if source not in args.skip and source != "mnist1d":
            run_setting(title, source, noises)
    for K in [] if args.quick else args.sweep:  # before mnist1d: cheaper
        horizon = None if K == "full" else int(K)
        for title, noise in (
            ("uniform 10 %", NoiseSpec(0.1, seed=0)),
            ("class-conditional", NoiseSpec(0.4, PAIRS, seed=0)),
        ):
            c = run_case("digits", noise, horizon, ("forward-only", "forward-only-margin", "loss"), args.quick, cache)
            by = {r["id"]: r for r in c["rows"]}
            sweep.append(
                {
                    "setting": title,
                    "horizon": K,
                    "auc": by["forward-only"]["auc"],
                    "auc_margin": by["forward-only-margin"]["auc"],
                    "loss": by["loss"]["auc"],
                }
            )
    for title, source, noises in plan:
        if source == "mnist1d" and source not in args.skip:
            run_setting(title, source, noises)
    if sweep:
        for s in settings[:2]:  # K = 0 of the main table, noise seed 0
            rows = {r["id"]: r for r in s["cases"][0]["rows"]}
            sweep.append(
                {
                    "setting": "uniform 10 %" if "uniform" in s["title"] else "class-conditional",
                    "horizon": "0",
                    "auc": rows["forward-only"]["auc"],
                    "auc_margin": rows["forward-only-margin"]["auc"],
                    "loss": rows["loss"]["auc"],
                }
            )
        sweep.sort(key=lambda r: (r["setting"], r["horizon"] != "0", r["horizon"]))
    doc = {
        "quick": args.quick,
        "seconds": time.perf_counter() - t0,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "settings": settings,
        "horizon_sweep": sweep,
    }
    save_plots(doc)
    out = Path(args.out)
    out.with_suffix(".md").write_text(markdown(doc))
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
