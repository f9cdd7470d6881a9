"""Readout of a run larger than the memory budget: responses memory-mapped from the store.

    python benchmarks/mmap_bench.py --n 4000 --budget-mb 256     # -> benchmarks/mmap.{md,json}

Trains mnist1d (the scaling benchmark's data, ``benchmarks/scale_bench.py``) with the MLP
40-256-256-10 (78,858 parameters), SGD momentum 0.9, lr 0.1, batch 100, ``--epochs`` epochs,
and the EK-FAC full-horizon simulation, dense per-example responses (n × p float32), saves
the run in a temporary store, then in two fresh processes scores the same ``--queries``
test signals: once with the responses read into RAM (``mmap=False``), once loaded with
``memory_budget_mb=--budget-mb`` (the responses are larger, so they are memory-mapped) and
read out under the same budget. Each process reports the median of ``--rounds`` timing
rounds, the first round after the file's pages were evicted (``posix_fadvise`` DONTNEED on
that one file: read from disk), its peak RSS (``VmHWM`` of the child's own address space:
mapped file pages count while touched; ``ru_maxrss`` would carry the parent's peak, 5 GB
from the simulation, across ``exec``) and its peak *anonymous* memory (``RssAnon`` sampled every 5 ms: what the process
holds of its own, which the budget bounds; file pages are the kernel's to drop), and
whether the two score matrices are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _status_kb(key: str) -> int:
    """A ``/proc/self/status`` field in kB (0 when absent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _anon_kb() -> int:
    return _status_kb("RssAnon")


class AnonPeak:
    """Peak ``RssAnon`` of this process, sampled by a thread every ``every`` seconds."""

    def __init__(self, every: float = 0.005):
        self.peak, self.every, self._stop = _anon_kb(), every, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _anon_kb())
            time.sleep(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _anon_kb())


def child(args) -> dict:
    import torch

    torch.set_num_threads(1)
    from scale_bench import dataset

    from attrcore import RunStore
    from attrcore.run import TrainedRun

    ds = dataset(args.n, Path(args.cache))
    Xq, yq = ds.X_test[: args.queries], ds.y_test[: args.queries]
    store = RunStore(args.store)
    base_anon = _anon_kb()
    with AnonPeak() as peak:
        if args.mode == "ram":
            run = TrainedRun.load(store, "big", mmap=False)
            budget = 1024.0
        else:
            run = TrainedRun.load(store, "big", memory_budget_mb=args.budget_mb)
            budget = args.budget_mb
        load_anon = _anon_kb()
        path = next(Path(args.store).glob("runs/big/*/tensors.safetensors"))
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # this file only: the first round reads the disk
        os.close(fd)
        times = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            scores = run.score(Xq, yq, memory_budget_mb=budget)
            times.append(time.perf_counter() - t)
    np.save(args.scores, scores)
    return {
        "mode": args.mode,
        "memory_mapped": run.memory_mapped,
        "responses_mb": run.responses.nbytes() / 2**20,
        "readout_budget_mb": budget,
        "first_round_seconds": times[0],
        "median_seconds": float(np.median(times[1:] if len(times) > 1 else times)),
        "ms_per_query_median": 1000 * float(np.median(times[1:] if len(times) > 1 else times)) / len(Xq),
        "round_seconds": times,
        # the peak RSS of this process's own address space (exec starts a new one); ru_maxrss is
        # not it: Linux keeps the largest RSS across exec, so it reported the parent's 5 GB
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
        "anon_after_imports_mb": base_anon / 1024,
        "anon_after_load_mb": load_anon / 1024,
        "peak_anon_mb": peak.peak / 1024,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--budget-mb", type=float, default=256.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks"))
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--scores", help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "attrcore-scale-bench"))
    args = ap.parse_args(argv)
    if args.mode:
        print(json.dumps(child(args)))
        return 0
    import torch

    torch.set_num_threads(1)
    from scale_bench import TRAIN, dataset

    from attrcore import RunStore, TrainConfig, fit
    from attrcore.config import SimulationConfig

    work = Path(tempfile.mkdtemp(prefix="attrcore-mmap-"))
    ds = dataset(args.n, Path(args.cache))
    t0 = time.perf_counter()
    run = fit(
        ds,
        hidden=(256, 256),
        train_config=TrainConfig(epochs=args.epochs, **TRAIN),
        simulation=SimulationConfig(curvature="ekfac", horizon=None, rank=None, memory_budget_mb=4096),
    )
    sim_s = time.perf_counter() - t0
    run.save(RunStore(work / "store"), "big")
    del run
    results = {}
    for mode in ("ram", "mapped"):
        cmd = [
            sys.executable,
            __file__,
            "--mode",
            mode,
            "--store",
            str(work / "store"),
            "--n",
            str(args.n),
            "--queries",
            str(args.queries),
            "--rounds",
            str(args.rounds),
            "--budget-mb",
            str(args.budget_mb),
            "--scores",
            str(work / f"{mode}.npy"),
            "--cache",
            args.cache,
        ]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(results[mode]), flush=True)
    a, b = np.load(work / "ram.npy"), np.load(work / "mapped.npy")
    doc = {
        "command": "python benchmarks/mmap_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n": args.n,
        "epochs": args.epochs,
        "queries": args.queries,
        "simulate_seconds": sim_s,
        "max_abs_difference": float(np.abs(a - b).max()),
        "equal": bool(np.array_equal(a, b)),
        "results": results,
    }
    out = Path(args.out)
    (out / "mmap.json").write_text(json.dumps(doc, indent=1))
    r, m = results["ram"], results["mapped"]
    lines = [
        "# Readout of responses larger than the memory budget (memory-mapped)",
        "",
        f"`{doc['command']}` — {doc['date']}; mnist1d n = {args.n}, p = 78,858, EK-FAC full horizon, "
        f"dense float32 responses of {r['responses_mb']:.0f} MB; {args.queries} queries, medians of the warm "
        f"rounds after the first (cold: the file's pages evicted first); scores equal: {doc['equal']} "
        f"(max |difference| {doc['max_abs_difference']:.2e}).",
        "",
        "| load | readout budget MB | responses mapped | anon MB after load | peak anon MB | peak RSS MB "
        "| first round s (cold) | median round s | ms / query |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, x in (("into RAM", r), (f"memory_budget_mb = {args.budget_mb:g}", m)):
        lines.append(
            f"| {name} | {x['readout_budget_mb']:g} | {x['memory_mapped']} | {x['anon_after_load_mb']:.0f} | "
            f"{x['peak_anon_mb']:.0f} | {x['peak_rss_mb']:.0f} | {x['first_round_seconds']:.2f} | "
            f"{x['median_seconds']:.2f} | {x['ms_per_query_median']:.1f} |"
        )
    lines += [
        "",
        "Peak RSS counts the mapped file pages the readout touched (the kernel can drop them); "
        "peak anon is the memory the process holds of its own.",
    ]
    (out / "mmap.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
