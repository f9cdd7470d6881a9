"""Self-influence over the training trajectory for mislabel detection (issue #11).

    python benchmarks/mislabel_trajectory_study.py [--quick] [--sets NAME ...]

Today's forward-only self-influence is read out once, at the final parameters θ_T, from
the final responses: −⟨∇ℓ_i(θ_T), Δ_i⟩. Mislabeled examples are learned late (their loss
stays high and their gradient large for most of training), so this study integrates the
same forward read-out over checkpoints θ_c (the parameters after epoch c):

    TSI_i = Σ_c −⟨∇f_i(θ_c), Δ_i(t_c)⟩          (f = loss; or +τ with f = margin)

with Δ_i(t_c) the response accumulated up to checkpoint c (``full``), or only the part
injected since the previous checkpoint (``recent``: Δ_i(t_c) − Δ_i(t_{c−1}); at K = 0
without momentum this is −η/B ∇ℓ_i(θ_s) at the step s where i was seen, so the term is a
forward-only stand-in for TracIn's η‖∇ℓ_i‖²). Each term is one JVP per point
(:func:`attrcore.engine.readout.self_scores`), read out by ``train``'s ``on_epoch`` hook.
Checkpoints: every epoch (``all``) or 5 evenly spaced epochs (``5cp``).

Controls read out at the same checkpoints (forward passes only): the training loss
averaged over checkpoints, and the area under the margin (AUM, Pleiss et al. 2020: the
given label's logit minus the largest other logit, averaged; negated so higher = more
suspicious). The final-model signals (today's default and the training loss) are the
reference rows.

Chosen on the selection set (7→1, 2→5, 9→3, noise seeds 0-2), reported on held-out
pairs and seeds, uniform digits, breast_cancer and mnist1d (10 % uniform), as
``mislabel_signal_study.py`` does. Writes ``mislabel_trajectory_study.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attrcore.config import SimulationConfig, TrainConfig  # noqa: E402  (path set above)
from attrcore.engine.measures import measure as measure_fn  # noqa: E402
from attrcore.engine.model import MLP, MLPConfig  # noqa: E402
from attrcore.engine.readout import self_scores  # noqa: E402
from attrcore.engine.tangents import Tangents  # noqa: E402
from attrcore.evaluation.metrics import roc_auc  # noqa: E402
from attrcore.mislabel import NoiseSpec, TrajectoryRecorder, second_half  # noqa: E402
from attrcore.run import fit  # noqa: E402

HERE = Path(__file__).resolve().parent
DIGITS = TrainConfig(epochs=30, lr=0.1, batch_size=64, weight_decay=1e-4, seed=0)
RECIPES = {
    "digits": ((128,), DIGITS),
    "breast_cancer": ((128,), DIGITS),
    "mnist1d": ((256, 256), TrainConfig(epochs=30, lr=0.1, batch_size=100, momentum=0.9, weight_decay=1e-4, seed=0)),
}
SETS = [  # (name, dataset, pairs or None = uniform, rate, noise seeds, role)
    ("selection: 7→1, 2→5, 9→3", "digits", "7:1,2:5,9:3", 0.4, (0, 1, 2), "selection"),
    ("held out: 3→8, 4→9, 1→7", "digits", "3:8,4:9,1:7", 0.4, (3, 4, 5), "held-out"),
    ("held out: 8→1, 5→6, 0→6", "digits", "8:1,5:6,0:6", 0.4, (6, 7), "held-out"),
    ("digits, 10 % uniform", "digits", None, 0.1, (0, 1, 2), "check"),
    ("breast_cancer, 10 % uniform", "breast_cancer", None, 0.1, (0, 1, 2), "check"),
    ("mnist1d, 10 % uniform", "mnist1d", None, 0.1, (0, 1, 2), "check"),
]
CHECKPOINTS = {  # which epochs' parameters are read out (1-based), by name
    "all": "every epoch",
    "5cp": "5 evenly spaced epochs",
    "half": "every epoch of the second half",
}
TERMS = {
    "si-loss-full": "trajectory SI, f = loss, response so far",
    "si-loss-recent": "trajectory SI, f = loss, response since the previous checkpoint",
    "si-margin-full": "trajectory SI, f = margin, response so far",
    "si-margin-recent": "trajectory SI, f = margin, response since the previous checkpoint",
    "loss": "control: training loss averaged over the checkpoints",
    "aum": "control: AUM (−mean of logit_y − largest other logit)",
}
FINAL = {
    "fo-loss": "final model: forward-only SI, f = loss (today's default)",
    "fo-margin": "final model: forward-only SI, f = margin",
    "final-loss": "final model: training loss (control)",
}
VARIANTS = dict(FINAL) | {f"{t}@{c}": f"{title} — {CHECKPOINTS[c]}" for t, title in TERMS.items() for c in CHECKPOINTS}


def checkpoint_epochs(kind: str, E: int) -> list[int]:
    """Epochs (1-based) of checkpoint set ``kind`` for an E-epoch run."""
    if kind == "all":
        return list(range(1, E + 1))
    if kind == "5cp":
        return sorted({int(round(E * (k + 1) / 5)) for k in range(5)})
    return list(range(E // 2 + 1, E + 1))


def window(kind: str, E: int) -> int:
    """The spacing of a checkpoint set: the "recent" response at checkpoint c is the part
    injected over the last ``window`` epochs, Δ(t_c) − Δ(t_{c−w}) (Δ(t_0) = 0)."""
    eps = checkpoint_epochs(kind, E)
    return eps[1] - eps[0] if len(eps) > 1 else eps[0]


class Recorder:
    """``on_epoch`` hook: for each checkpoint set, Σ_c of the self-influence terms and the
    mean of the controls over its epochs ``[n]``. τ is linear in Δ, so the "recent" term
    is τ_c(Δ(t_c)) − τ_c(Δ(t_{c−w})), with Δ snapshots kept at the epochs c − w. Next to it
    runs the library's :class:`TrajectoryRecorder` (second half, window 1), whose
    self-influence must equal this study's ``si-loss-recent@half``."""

    def __init__(self, mlp, X, y, E: int):
        self.mlp, self.X, self.y = mlp, X, y
        self.sets = {k: (checkpoint_epochs(k, E), window(k, E)) for k in CHECKPOINTS}
        self.snap_at = {c - w for eps, w in self.sets.values() for c in eps if c - w >= 1}
        self.snaps: dict[int, Tangents] = {}
        self.sums: dict[str, np.ndarray] = {}
        self.library = TrajectoryRecorder(mlp, X, y, second_half(E), window=1)
        self.seconds = 0.0

    def _tau(self, theta, D, measure):
        return self_scores(self.mlp, theta, D, self.X.to(theta.dtype), self.y, measure=measure).double().numpy()

    def _add(self, k, v):
        self.sums[k] = self.sums.get(k, 0.0) + np.asarray(v, dtype=np.float64)

    def __call__(self, epoch: int, theta, current) -> None:
        self.library(epoch, theta, current)
        t0 = time.perf_counter()
        D = current()
        users = [k for k, (eps, _w) in self.sets.items() if epoch in eps]
        if users:
            si = {"loss": -self._tau(theta, D, "loss"), "margin": self._tau(theta, D, "margin")}
            with torch.no_grad():
                z = self.mlp.forward(theta, self.X.to(theta.dtype)).double()
            loss = measure_fn(z, self.y, "loss").numpy()
            zy = z.gather(1, self.y[:, None]).squeeze(1)
            aum = -(zy - z.scatter(1, self.y[:, None], float("-inf")).max(1).values).numpy()
            base_si: dict[int, dict] = {}  # τ_c of the snapshot at c − w, per w
            for k in users:
                eps, w = self.sets[k]
                if epoch - w >= 1 and w not in base_si:
                    P = self.snaps[epoch - w]
                    base_si[w] = {"loss": -self._tau(theta, P, "loss"), "margin": self._tau(theta, P, "margin")}
                for m in ("loss", "margin"):
                    self._add(f"si-{m}-full@{k}", si[m])
                    self._add(f"si-{m}-recent@{k}", si[m] - (base_si[w][m] if w in base_si else 0.0))
                self._add(f"loss@{k}", loss / len(eps))
                self._add(f"aum@{k}", aum / len(eps))
        if epoch in self.snap_at:
            self.snaps[epoch] = D.clone()
        for e in [e for e in self.snaps if not any(e + w > epoch and e + w in eps for eps, w in self.sets.values())]:
            del self.snaps[e]  # no set reads it any more (at most two are kept)
        self.seconds += time.perf_counter() - t0


def variants(rec: Recorder, run, X, y) -> dict[str, np.ndarray]:
    Xd = X.to(run.theta.dtype)
    fo = {
        m: self_scores(run.mlp, run.theta, run.responses, Xd, y, measure=m).double().numpy() for m in ("loss", "margin")
    }
    with torch.no_grad():
        final_loss = measure_fn(run.mlp.forward(run.theta, Xd).double(), y, "loss").numpy()
    lib = rec.library.signals()["forward-only-trajectory"]
    ours = rec.sums["si-loss-recent@half"]
    assert np.allclose(lib, ours, rtol=1e-6, atol=1e-9 * np.abs(ours).max()), "library and study disagree"
    return {"fo-loss": -fo["loss"], "fo-margin": fo["margin"], "final-loss": final_loss, **rec.sums}


def one(source: str, pairs, rate: float, seed: int, quick: bool) -> tuple[dict, dict]:
    hidden, cfg = RECIPES[source]
    if quick:
        cfg = replace(cfg, epochs=10)
    data = NoiseSpec(rate, pairs, seed=seed).load(source)
    X = torch.as_tensor(data.X_train).float()
    y = torch.as_tensor(data.y_train).long()
    flags = np.zeros(data.n_train, dtype=bool)
    flags[data.flipped] = True
    rec = Recorder(MLP(MLPConfig(data.n_features, data.n_classes, hidden, "relu")), X, y, cfg.epochs)
    t0 = time.perf_counter()
    run = fit(data, hidden=hidden, train_config=cfg, simulation=SimulationConfig(horizon=0, rank=None), on_epoch=rec)
    wall = time.perf_counter() - t0
    v = variants(rec, run, X, y)
    info = {"hook_seconds": rec.seconds, "wall_seconds": wall, "simulate_seconds": run.timings.get("simulate_seconds")}
    return {k: roc_auc(flags, s) for k, s in v.items()}, info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 epochs, one noise seed per set")
    p.add_argument("--sets", nargs="*", default=None, help="dataset names to run (digits, breast_cancer, mnist1d)")
    p.add_argument("--out", default=str(HERE / "mislabel_trajectory_study"), help="path stem of the .md / .json")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("ATTRCORE_TORCH_THREADS", "1")))
    out = Path(args.out)
    doc = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    doc.setdefault("auc", {})
    doc.setdefault("info", {})
    t0 = time.perf_counter()
    for name, source, pairs, rate, seeds, _role in SETS:
        if args.sets and source not in args.sets:
            continue
        for sd in seeds[:1] if args.quick else seeds:
            auc, info = one(source, pairs, rate, sd, args.quick)
            for k, a in auc.items():
                doc["auc"].setdefault(k, {}).setdefault(name, {})[str(sd)] = a
            doc["info"].setdefault(name, {})[str(sd)] = info
            print(f"{name} seed {sd}: " + ", ".join(f"{k} {a:.3f}" for k, a in auc.items()), info, flush=True)
    doc.update(
        quick=args.quick,
        machine=f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        sets=[{"name": s[0], "dataset": s[1], "pairs": s[2], "rate": s[3], "seeds": list(s[4])} for s in SETS],
    )
    doc["seconds"] = doc.get("seconds", 0.0) + time.perf_counter() - t0
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


def markdown(doc: dict) -> str:
    names = [s["name"] for s in doc["sets"]]
    lines = [
        "# Self-influence over the training trajectory for mislabel detection",
        "",
        f"`python benchmarks/mislabel_trajectory_study.py{' --quick' if doc['quick'] else ''}` · {doc['machine']} · "
        f"{doc['seconds']:.0f} s. Recipes of `mislabel_bench.py` (digits / breast_cancer 64-128-C SGD lr 0.1, "
        "batch 64, 30 epochs; mnist1d 40-256-256-10, momentum 0.9, batch 100), trajectory responses at K = 0; "
        "checkpoints = the parameters after each epoch. ROC-AUC, mean over the noise seeds (per seed in the "
        "JSON). The first column is the selection set; the others are held out.",
        "",
        "| variant | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for k, title in VARIANTS.items():
        per = doc["auc"].get(k, {})
        cells = [f"{np.mean(list(per[n].values())):.3f}" if n in per else "–" for n in names]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", *reading(doc, names), ""]
    return "\n".join(lines)


def reading(doc: dict, names: list[str]) -> list[str]:
    """What the table says, computed from it: the attribution variant chosen on the
    selection set, whether it beats today's default on every other set, and where a
    control is above every attribution signal."""
    mean = {k: {n: float(np.mean(list(v[n].values()))) for n in v} for k, v in doc["auc"].items()}
    sel = names[0]
    attr = [k for k in VARIANTS if (k.startswith("si-") or k.startswith("fo-")) and sel in mean.get(k, {})]
    if not attr:
        return []
    best = max((k for k in attr if k.startswith("si-")), key=lambda k: mean[k][sel])
    out = [
        f"**Chosen on the selection set**: {VARIANTS[best]} ({mean[best][sel]:.3f} against today's default "
        f"{mean['fo-loss'][sel]:.3f}). On the other sets:",
        "",
    ]
    wins = []
    for n in names[1:]:
        if n not in mean[best]:
            continue
        d = mean[best][n] - mean["fo-loss"][n]
        wins.append(d > 0)
        a = max((k for k in mean if k.startswith(("si-", "fo-")) and n in mean[k]), key=lambda k: mean[k][n])
        c = max((k for k in mean if not k.startswith(("si-", "fo-")) and n in mean[k]), key=lambda k: mean[k][n])
        ctrl = (
            f"a control is above every attribution signal ({VARIANTS[c]}: {mean[c][n]:.3f})"
            if mean[c][n] > mean[a][n]
            else f"the best signal is an attribution one ({VARIANTS[a]}: {mean[a][n]:.3f}; "
            f"best control {mean[c][n]:.3f})"
        )
        out.append(f"- {n}: {mean[best][n]:.3f} vs default {mean['fo-loss'][n]:.3f} ({d:+.3f}); {ctrl}.")
    verdict = (
        "it beats the default on every held-out set, so it may become the default."
        if wins and all(wins)
        else "it does not beat the default on every held-out set, so the default is unchanged."
    )
    out += ["", f"**Verdict**: {verdict}"]
    return out


if __name__ == "__main__":
    sys.exit(main())
