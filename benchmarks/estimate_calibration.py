"""Check the pre-training estimate (attrcore.engine.estimate) against measured runs.

    python benchmarks/estimate_calibration.py        # ~2 min on 2 cores

Trains a few short runs (digits 64-128-10 with the full horizon, K = 8, K = 0, the
stationary scheme and no simulation; digits 64-32-10 with momentum; mnist1d
40-256-256-10 K = 2 with momentum), and prints and writes to
benchmarks/estimate_calibration.md the estimated and measured wall time and peak memory.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)

from attrcore import SimulationConfig, TrainConfig, fit, load_dataset  # noqa: E402
from attrcore.engine.estimate import estimate_training  # noqa: E402

CASES = [
    ("digits", (128,), TrainConfig(epochs=3, batch_size=64), SimulationConfig(horizon=None)),
    ("digits", (128,), TrainConfig(epochs=3, batch_size=64), SimulationConfig(horizon=8)),
    ("digits", (128,), TrainConfig(epochs=3, batch_size=64), SimulationConfig(horizon=0)),
    ("digits", (32,), TrainConfig(epochs=3, batch_size=32, momentum=0.9), SimulationConfig(horizon=None)),
    ("digits", (128,), TrainConfig(epochs=3, batch_size=64), SimulationConfig(scheme="stationary", horizon=10)),
    ("digits", (128,), TrainConfig(epochs=3, batch_size=64), SimulationConfig(scheme="none")),
    ("mnist1d", (256, 256), TrainConfig(epochs=1, batch_size=100, momentum=0.9), SimulationConfig(horizon=2)),
]


def main() -> None:
    rows = []
    for source, hidden, train, sim in CASES:
        ds = load_dataset(source)
        est = estimate_training(ds.n_train, ds.n_features, ds.n_classes, hidden, train, sim)
        t0 = time.perf_counter()
        fit(ds, hidden=hidden, train_config=train, simulation=sim)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB; a running max
        row = {
            "data": source,
            "hidden": list(hidden),
            "epochs": train.epochs,
            "momentum": train.momentum,
            "scheme": sim.scheme,
            "horizon": sim.horizon_label,
            "estimated_s": round(est.seconds, 2),
            "measured_s": round(seconds, 2),
            "ratio": round(seconds / est.seconds, 2),
            "estimated_peak_MB": round(est.peak_bytes / 2**20),
            "process_peak_MB_so_far": round(peak / 2**20),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    ratios = sorted(r["ratio"] for r in rows)
    lines = [
        "# Pre-training estimate against measured runs",
        "",
        "`python benchmarks/estimate_calibration.py` (one torch thread). ratio = measured / estimated "
        f"time; median {ratios[len(ratios) // 2]}, range {ratios[0]}-{ratios[-1]}.",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
    ]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    (ROOT / "benchmarks" / "estimate_calibration.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
