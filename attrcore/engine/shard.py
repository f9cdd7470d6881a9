"""Sharded simulation: the tangents split across workers, each replaying the same training run.

Training is deterministic given the seed and the batch order (bit-identical on the CPU), so
every worker can replay the run the parent trained and carry only its share of the
tangents; the parent merges. The shards run on an :class:`attrcore.executors.Executor`
(in process, joblib, a Dask ``LocalCluster`` or an existing Dask cluster)::

    with Executor.resolve(workers=2) as ex:
        out = train(mlp, X, y, cfg, sim, executor=ex)      # responses == the in-process ones

What a shard is:

- **dense responses** (trajectory, full or short horizon, exact or EK-FAC; stationary): a
  subset of the sources (EK-FAC: every worker builds the same per-segment Kronecker bases
  from the whole batches and injects and rotates only its sources' coefficients). The
  worker trains with the other examples' source id set to −1 (never injected) and returns
  its sources' rows of Δ; the parent stacks the rows. Shards are sized so that each one's
  state fits the memory budget (which applies per worker process).
- **compressed full horizon** (Δ ≈ C Qᵀ, :mod:`attrcore.engine.compress`): a block of the r
  sketch columns. Forward sketch Y[:, k] = Δᵀ Ω[:, k] per block; the parent forms
  Q = orth(Y) from the gathered Y; then per power iteration the adjoint C[:, k] = Δ Q_k
  and the forward sketch Δᵀ C[:, k] per block; finally C = Δ Q per block, and the parent
  rotates (Q, C) into SVD order. Each block is r_k tangents replayed over the recorded run,
  so the work splits evenly and no worker ever holds m·p numbers.

Each phase is one :meth:`~attrcore.executors.Executor.map_unordered`; a worker keeps the
replayed run's recording between phases (:data:`_RECORDINGS`), a task rerun elsewhere after
a worker died rebuilds it. The executor's report (engine, workers, retried shards) is
returned with the responses, and every phase reports to ``progress``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time

import numpy as np
import torch
from torch import Tensor

from ..config import SimulationConfig, TrainConfig, fingerprint
from ..errors import CancelledError, ConfigError
from .compress import (
    CompressedResponses,
    Recording,
    adjoint_coefficients,
    finish,
    forward_sketch,
    full_horizon_memory,
    gaussian,
    like,
    orthonormal,
    rank_for,
    sketch_generator,
)
from .model import MLP, MLPConfig
from .tangents import Tangents
from .train import Progress, Replay, Simulator, _as_tensor, batch_orders, step_learning_rates, train

# the replayed run of the last compressed job, per worker process: {key: Recording}
_RECORDINGS: dict[str, Recording] = {}


def _one_thread():
    """Shards run with one torch thread (restored afterwards), like every unit of work here."""

    @contextlib.contextmanager
    def ctx():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)

    return ctx()


# ---- dense shards: a subset of the sources ------------------------------------------------


def _dense_task(item: dict, X, y, w, src) -> Tensor:
    """Rows of Δ for the sources ``item["sources"]`` (``[m_k, p]``, the training dtype)."""
    with _one_thread():
        mlp = MLP(MLPConfig.from_dict(item["model"]))
        cfg = TrainConfig.from_dict(item["train"])
        sim = SimulationConfig.from_dict(item["simulation"])
        sources = np.asarray(item["sources"])
        lookup = np.full(item["n_sources"], -1, dtype=np.int64)
        lookup[sources] = np.arange(len(sources))
        out = train(mlp, X, y, cfg, sim, source_index=lookup[np.asarray(src)], n_sources=len(sources), weights=w)
        return out.responses


def dense_shards(
    m: int, n_params: int, itemsize: int, momentum: bool, budget_bytes: float, workers: int
) -> list[np.ndarray]:
    """Source ids of each shard: at least one per worker, each shard's state within the budget."""
    state = m * n_params * itemsize * (2 if momentum else 1)
    n = max(workers, math.ceil(state / (0.8 * budget_bytes)))
    return [s for s in np.array_split(np.arange(m), min(m, n)) if len(s)]


# ---- compressed shards: blocks of the sketch columns --------------------------------------


def _replayed(item: dict, X, y, w) -> Recording:
    """The training run's recording, replayed from the seed (cached per worker process)."""
    key = item["run_key"]
    if key in _RECORDINGS:
        return _RECORDINGS[key]
    mlp = MLP(MLPConfig.from_dict(item["model"]))
    cfg = TrainConfig.from_dict(item["train"])
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    Xt = _as_tensor(X, dtype, "the training inputs X")
    yt = torch.as_tensor(np.asarray(y)).long()
    wt = None if w is None else _as_tensor(w, dtype, "the example weights")
    orders = batch_orders(Xt.shape[0], cfg)
    lrs = step_learning_rates(cfg, len(orders[0]))
    replay = Replay(mlp, Xt, yt, wt, [idx for b in orders for idx in b], lrs, cfg, item["curvature"], item["backend"])
    rec = Recording(replay, item["recording_bytes"])
    theta = mlp.init(torch.Generator().manual_seed(cfg.seed), dtype)
    velocity = torch.zeros_like(theta) if cfg.momentum else None
    for t in range(replay.total_steps):  # the same arithmetic as the training loop
        rec.record(t, theta, velocity)
        theta, velocity = replay.advance(t, theta, velocity)
    _RECORDINGS.clear()
    _RECORDINGS[key] = rec
    return rec


def _sketch_task(item: dict, X, y, w, src):
    """One block of columns: ``"forward"`` → Δᵀ W_k (r_k tangents), ``"adjoint"`` → Δ Q_k ``[m, r_k]``."""
    with _one_thread():
        rec = _replayed(item, X, y, w)
        src_t = torch.as_tensor(np.asarray(src)).long()
        budget = item["budget_bytes"]
        if item["phase"] == "forward":
            return forward_sketch(rec, torch.as_tensor(item["weights"]), src_t, budget)
        Qk = like(Tangents.zeros(rec.replay.mlp, 1, torch.float64), torch.as_tensor(item["Q"]))
        return adjoint_coefficients(rec, Qk, src_t, item["n_sources"], budget)


def column_blocks(r: int, workers: int) -> list[slice]:
    n = max(1, min(r, workers))
    bounds = np.linspace(0, r, n + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


# ---- the parent ---------------------------------------------------------------------------


def simulate_sharded(
    executor,
    mlp: MLP,
    X: Tensor,
    y: Tensor,
    w: Tensor | None,
    cfg: TrainConfig,
    sim: SimulationConfig,
    src: Tensor,
    m: int,
    rank: int | None,
    total_steps: int,
    progress=None,
) -> tuple[Tangents | CompressedResponses, dict]:
    """Every source's response, simulated in shards on ``executor``; ``(responses, report)``.

    Returns what the in-process :func:`~attrcore.engine.train.train` would (dense
    ``Tangents [m]`` or :class:`CompressedResponses`) and the executor's report as a dict
    (engine, workers, shards, retried shards per phase).
    """
    isz = X.element_size()
    budget = sim.memory_budget_mb * 2**20
    workers = executor.n_workers
    shared = (X.numpy(), y.numpy(), None if w is None else w.numpy(), src.numpy())
    base = {"model": mlp.config.to_dict(), "train": cfg.to_dict()}
    phases: list[dict] = []
    done_total = [0]

    def run(phase: str, items: list[dict], fn) -> list:
        results: list = [None] * len(items)
        offset = executor.report.tasks
        with contextlib.closing(executor.map_unordered(fn, items, shared)) as finished:
            for i, out in finished:
                results[i] = out
                done_total[0] += 1
                retried = {k - offset: v for k, v in executor.report.retried.items() if k >= offset}
                info = {"phase": phase, "shards": len(items), "retried": len(retried)}
                if progress is not None and progress(Progress("shards", done_total[0], total, info)) is False:
                    raise CancelledError("the simulation was cancelled; nothing was saved.")
        retried = {k - offset: v for k, v in executor.report.retried.items() if k >= offset}
        phases.append({"phase": phase, "shards": len(items), "retried": {str(k): v for k, v in retried.items()}})
        return results

    full = sim.horizon is None or sim.horizon >= total_steps
    if rank is not None and sim.scheme == "trajectory" and full and sim.curvature != "ekfac":
        r = rank
        blocks = column_blocks(r, workers)
        total = len(blocks) * (2 + 2 * sim.power_iterations)
        T = total_steps
        rb = max(b.stop - b.start for b in blocks)
        est = full_horizon_memory(rb, mlp.n_params, m, T, isz, bool(cfg.momentum))
        if est["min_bytes"] > budget:
            raise ConfigError(
                f"a shard of {rb} sketch columns needs at least {est['min_bytes'] / 2**20:.3g} MB, more than "
                f"the memory budget of {sim.memory_budget_mb:g} MB per worker; raise the memory budget, "
                "lower the rank or use more workers."
            )
        common = dict(
            base,
            curvature=sim.curvature,
            backend=sim.backend,
            n_sources=m,
            budget_bytes=budget,
            recording_bytes=budget - est["working_bytes"],
            run_key=_run_key(base, sim, budget, shared),
        )
        template = Tangents.zeros(mlp, 1, torch.float64)

        def forward(Wm: Tensor) -> Tangents:  # Δᵀ Wm for Wm [m, r], by blocks
            outs = run(
                "forward", [dict(common, phase="forward", weights=Wm[:, b].contiguous()) for b in blocks], _sketch_task
            )
            return like(template, torch.cat([o.flat().double() for o in outs]))

        def adjoint(Qs: Tangents) -> Tensor:  # Δ Q as [m, r] float64, by blocks
            Qf = Qs.flat().double()
            outs = run("adjoint", [dict(common, phase="adjoint", Q=Qf[b].contiguous()) for b in blocks], _sketch_task)
            return torch.cat(outs, dim=1)

        Omega = gaussian((m, r), sketch_generator(cfg.seed), torch.float64)
        Qs = orthonormal(forward(Omega))
        for _ in range(sim.power_iterations):
            Qs = orthonormal(forward(adjoint(Qs)))
        C = adjoint(Qs)
        dtype = X.dtype
        info = {
            "method": "forward-sketch+adjoint",
            "power_iterations": sim.power_iterations,
            "seed": cfg.seed,
            "recording": "replayed per worker",
            "shards": len(blocks),
        }
        responses = finish(Qs, C, dtype, info)
        kind = "sketch columns"
    else:
        if rank is not None and m * mlp.n_params * isz > budget:
            raise ConfigError(
                "sharded short-horizon, stationary or EK-FAC simulation with a rank gathers the dense responses "
                f"({m * mlp.n_params * isz / 2**20:.3g} MB) before compressing them, more than the memory "
                f"budget of {sim.memory_budget_mb:g} MB; use the full horizon, raise the memory budget, or "
                "run in process."
            )
        shards = dense_shards(m, mlp.n_params, isz, bool(cfg.momentum), budget, workers)
        total = len(shards)
        sd = dict(sim.to_dict(), rank=None, response_dtype=None)
        items = [dict(base, simulation=sd, sources=s.tolist(), n_sources=m) for s in shards]
        outs = run("dense", items, _dense_task)
        flat = torch.cat([torch.as_tensor(o) for o in outs])  # rows in source order (shards are contiguous)
        responses = Tangents.from_flat(mlp, flat)
        kind = "sources"
    report = dict(executor.report.to_dict(), shard_kind=kind, phases=phases)
    report["retried_shards"] = sum(len(p["retried"]) for p in phases)
    return responses, report


def _run_key(base: dict, sim: SimulationConfig, budget: float, arrays: tuple) -> str:
    """What identifies a replayed recording: the run's configs, the data and the budget."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
    return fingerprint([base, sim.curvature, sim.backend, budget, h.hexdigest()])


class ShardedSimulation(Simulator):
    """Any scheme, simulated in shards on ``executor`` after training (what ``train`` uses
    when its executor is not in process)."""

    def __init__(
        self,
        executor,
        sim: SimulationConfig,
        mlp: MLP,
        cfg: TrainConfig,
        X: Tensor,
        y: Tensor,
        w: Tensor | None,
        src: Tensor,
        m: int,
        total_steps: int,
    ) -> None:
        super().__init__()
        self._compression(sim, cfg, m, mlp, X, y)
        self.curvature = sim.curvature
        # query-aware: the shards simulate dense responses, factorised afterwards (Simulator.output)
        rank = None if self.query_aware else self.rank
        self.args = (executor, mlp, X, y, w, cfg, sim, src, m, rank, total_steps)

    @staticmethod
    def applies(sim: SimulationConfig, m: int, p: int, total_steps: int, itemsize: int) -> bool:
        """Whether sharding gives the in-process result: dense responses (any scheme, EK-FAC
        too), the exact compressed full horizon, or a compressed short horizon or EK-FAC run
        whose dense Δ fits the budget (compressed afterwards either way). The compressed
        stationary sketch and the one-pass sketch of a short horizon run in process."""
        rank, _ = rank_for(sim, m, p)
        if rank is None:
            return True
        if sim.compression == "query-aware":  # dense shards, gathered, then factorised
            return m * p * itemsize <= sim.memory_budget_mb * 2**20
        if sim.scheme != "trajectory":
            return False
        if sim.curvature == "ekfac":  # dense per shard, gathered, then compressed
            return m * p * itemsize <= sim.memory_budget_mb * 2**20
        full = sim.horizon is None or sim.horizon >= total_steps
        return full or m * p * itemsize <= sim.memory_budget_mb * 2**20

    def finish(self, theta, progress):
        t0 = time.perf_counter()
        responses, report = simulate_sharded(*self.args, progress=progress)
        self.seconds = time.perf_counter() - t0
        return responses, {"sharding": report}
