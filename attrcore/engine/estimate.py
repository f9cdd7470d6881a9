"""What a training run will cost before it starts: memory and time from the data size, the
model and the simulation settings.

Interface: :func:`estimate_training` ``(n_train, n_features, n_classes, hidden, train,
simulation, n_sources) -> Estimate`` (a pure function of its arguments) and
:func:`check_estimate` ``(estimate, simulation) -> warnings``, which refuses (ConfigError,
saying what to change) a run that cannot fit and returns the warnings for one that is big.

The memory model follows the simulators in :mod:`attrcore.engine.simulate`:

- the responses Δ, ``m × p`` values in the training dtype (``response_bytes``), or
  ``r · (p + m)`` when they are compressed to rank r (``SimulationConfig.rank``; the
  working memory then follows :func:`attrcore.engine.compress.full_horizon_memory`);
- the simulation state: the full horizon carries one tangent per source (twice with
  momentum), a horizon K a ring of ``K · min(B, m)`` tangents, the stationary scheme a
  second ``m × p`` block for ḡ, the EK-FAC scheme one ``m × p`` block of eigen-coordinates
  (its time: a rotation of every source's block into the new basis at each segment end);
- at the end of training Δ exists about three times at once (the simulator's blocks, the
  flat ``[m, p]`` copy ``train`` returns, the per-layer copy of the run) plus transients,
  so the peak of the process is ≈ base + data + state + 3.75 Δ (measured: mnist1d, K = 2,
  m = 4000, p = 78,858: Δ = 1.26 GB, peak RSS 5.0 GB; digits: 3.7-3.9 Δ over a 0.4 GB base).

The time model counts tangent-example products: every active tangent goes through one
curvature product per example of the batch and per layer, ``p`` multiply-adds each plus
the traffic of its activations (``d_in + d_out`` values per layer). The
full horizon has ≈ m active tangents at every step after the first epoch, a horizon K has
``K · min(B, m)``, the stationary scheme has ``m`` per Neumann step over the curvature
batch; the per-source gradients of a batch are one ``[S·o, B] @ [B, i]`` GEMM per layer for
its ``S = min(B, m)`` sources. The constants were measured on this project's 2-core machine
as CPU time of one torch thread (``python benchmarks/estimate_calibration.py`` re-measures
them against the model and writes ``benchmarks/estimate_calibration.md``: ten settings of
digits, moons and mnist1d, with and without momentum, every scheme, compressed and EK-FAC);
CPU time measured / estimated was 0.72-1.75 there (median 1.06) and 1.06-2.75 on three
settings measured afterwards (the worst a 2-64-64-2 network, batch 32: tiny layers, where
per-call overheads dominate). The wall time is the CPU time on an idle machine and several
times it on a loaded one (2-9× at load 6-15 on 2 cores); the range
``seconds_low``-``seconds_high`` is 0.5× to 3× the estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import SimulationConfig, TrainConfig
from ..errors import ConfigError
from .compress import StreamingSketch, full_horizon_memory, rank_for
from .readout import available_memory_bytes

# Seconds per (tangent · example · parameter · layer) of the fused curvature products, and
# per (tangent · example · layer input and output unit): the tangents' activations written
# and read, which dominate for narrow layers (12 inputs: 2.5× the multiply-adds' time).
SECONDS_PER_TANGENT_PRODUCT = 3.5e-11
SECONDS_PER_TANGENT_UNIT = 1.0e-9
STATIONARY_FACTOR = 2.5  # the Neumann step is an unfused product plus an update
MOMENTUM_FACTOR = 2.0  # the momentum tangents double the state and the update traffic
SECONDS_PER_EXAMPLE_PARAM = 1.0e-9  # plain training: forward + backward per example
SECONDS_PER_SOURCE_GRAD = 4.0e-11  # per-source gradients: per example · source of its batch · parameter
COMPRESSED_FACTOR = 2.0  # compressed full horizon: sketch, adjoint inner products and injections, unfused
SECONDS_PER_ROTATION_MAC = 2.5e-11  # EK-FAC segment rotations: batched GEMMs over the sources
SECONDS_PER_INJECTION = 1.0e-9  # EK-FAC: one example's gradient into the eigen-coordinates, per parameter
SECONDS_PER_RESPONSE_BYTE = 2.0e-9  # finalising, copying and flattening Δ
BASE_BYTES = 400 * 2**20  # python + torch + numpy/pandas/sklearn, measured 0.39 GB
RESPONSE_COPIES = 3.75  # Δ at the peak, counted in copies of Δ (measured 3.7-3.9)
LOW, HIGH = 0.5, 3.0  # the time range around the central estimate
WARN_SECONDS = 600.0  # warn above 10 minutes
WARN_MEMORY_FRACTION = 0.5  # warn above half the memory available


class EstimateWarning(UserWarning):
    """A run that will take long or use much of the machine's memory (it still runs)."""


@dataclass(frozen=True)
class Estimate:
    """Expected cost of one training run (bytes and seconds)."""

    n_train: int
    n_sources: int
    n_params: int
    steps: int
    response_bytes: int  # the stored responses Δ [m, p]
    state_bytes: int  # the simulation's working state besides Δ
    peak_bytes: int  # expected peak memory of the process
    seconds: float  # central estimate of the wall time
    seconds_low: float
    seconds_high: float
    notes: tuple[str, ...] = field(default_factory=tuple)  # how the numbers were counted

    @property
    def budget_bytes(self) -> int:
        """What counts against ``memory_budget_mb``: the responses and the simulation state."""
        return self.response_bytes + self.state_bytes

    def summary(self) -> str:
        """One line for a person: memory and time with its range."""
        sim = f"{_fmt_bytes(self.response_bytes)} of responses, " if self.response_bytes else ""
        return (
            f"{self.n_train} training examples, {self.n_sources} sources, {self.n_params} parameters, "
            f"{self.steps} steps: {sim}peak memory ≈ {_fmt_bytes(self.peak_bytes)}, time ≈ "
            f"{_fmt_seconds(self.seconds)} (likely {_fmt_seconds(self.seconds_low)} to "
            f"{_fmt_seconds(self.seconds_high)} on a machine like this one)"
        )


def estimate_training(
    n_train: int,
    n_features: int,
    n_classes: int,
    hidden: tuple[int, ...],
    train: TrainConfig,
    simulation: SimulationConfig | None,
    n_sources: int | None = None,
) -> Estimate:
    """Memory and time of training an MLP ``n_features-hidden-n_classes`` on ``n_train``
    examples with ``train`` and simulating ``n_sources`` sources (default one per example)."""
    sizes = [int(n_features), *(int(h) for h in hidden), int(n_classes)]
    p = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    layers = len(sizes) - 1
    n = int(n_train)
    B = max(1, min(int(train.batch_size), n))
    per_epoch = n // B if train.drop_last and n >= B else math.ceil(n / B)
    steps = max(1, per_epoch) * int(train.epochs)
    item = 8 if train.dtype == "float64" else 4
    scheme = "none" if simulation is None else simulation.scheme
    m = (n if n_sources is None else int(n_sources)) if scheme != "none" else 0
    mu = MOMENTUM_FACTOR if train.momentum else 1.0
    notes = []

    data_bytes = 4 * n * sizes[0] * item
    rank = None
    if scheme != "none":
        rank, _why = rank_for(simulation, m, p)
    response_bytes = m * p * item if rank is None else rank * (p + m) * item
    # query-aware compression (engine/query_compress.py) and EK-FAC produce the dense responses
    # first and factorise them after training: count them dense, plus the factorisation
    dense_first = rank is not None and (simulation.compression == "query-aware" or simulation.curvature == "ekfac")
    query_aware = rank is not None and simulation.compression == "query-aware"
    if query_aware:
        rank = None  # the simulation itself is the dense one
    state_bytes = 0
    products = 0.0  # tangent · example products
    if scheme == "trajectory" and simulation.curvature == "ekfac":
        # engine/ekfac.py: the full horizon keeps Δ itself in the current segment's
        # eigen-coordinates (no velocity tangent: momentum is the effective step) beside the
        # segment's recorded activations and back-propagated signals; a finite horizon adds one
        # m × p block for the segment's injections. An injection costs O(p); at every segment end
        # each source's block is rotated into the new basis, R_G X R_Aᵀ per layer, o·i·(o + i)
        # multiply-adds (the dominant cost).
        segment = simulation.segment_steps or max(1, per_epoch)
        segments = math.ceil(steps / segment)
        records = min(segment, steps) * B * sum(a + 1 + b for a, b in zip(sizes[:-1], sizes[1:])) * item
        state_bytes = records + (0 if simulation.horizon is None else m * p * item)
        macs = sum((a + 1) * b * (a + 1 + b) for a, b in zip(sizes[:-1], sizes[1:]))
        sim_seconds = SECONDS_PER_ROTATION_MAC * segments * m * macs + SECONDS_PER_INJECTION * steps * B * p
        notes.append(f"EK-FAC: {segments} segment rotations of {m} sources, O(p) per injection")
        r = simulation.ekfac_rank
        if r:  # top-r whole-network GN: subspace iterations (2 GEMM passes per record), O(r·p) injections
            its = simulation.ekfac_rank_iterations * (segments + 2)  # 3× in the first segment
            rank_macs = r * p * (its * min(segment, steps) * B * 2 + steps * B * 2 + segments * m * 3)
            sim_seconds += 4 * SECONDS_PER_ROTATION_MAC * rank_macs  # small batched GEMMs: ~4× slower per MAC
            state_bytes += r * p * 8 * 3
            notes.append(f"EK-FAC rank {r}: the top {r} whole-network GN directions per segment, O(r·p) per injection")
    elif scheme == "trajectory":
        K = simulation.horizon
        if K is None or K >= steps:
            if rank is None:
                state_bytes = m * p * item * (1 if train.momentum else 0)  # U is Δ itself; V with momentum
                ramp = 1.0 - 0.5 / train.epochs if m >= B else 1.0  # per-example sources join in epoch 1
                products = float(m) * B * steps * ramp
                notes.append("full horizon: every source's tangent is carried through every step")
            else:
                mem = full_horizon_memory(rank, p, m, steps, item, bool(train.momentum))
                state_bytes = mem["min_bytes"]
                # r tangents forward, r adjoints back, twice more per power iteration
                products = float(rank) * B * steps * (2 + 2 * simulation.power_iterations) * COMPRESSED_FACTOR
                notes.append(f"full horizon, compressed to rank {rank}: {rank} tangents forward and back")
        elif K > 0:
            ring = K * min(B, m)
            state_bytes = ring * p * item * (2 if train.momentum else 1)
            if rank is not None:  # dense Δ beside the ring, compressed at the end (or a sketch)
                dense = m * p * item
                fits = dense + state_bytes <= simulation.memory_budget_mb * 2**20
                state_bytes += dense if fits else StreamingSketch.nbytes_for(p, m, rank, item)
            products = float(ring) * B * steps
            notes.append(f"horizon {K}: {ring} tangents alive at each step")
        else:
            notes.append("horizon 0: no curvature products")
        units = sum(a + b for a, b in zip(sizes[:-1], sizes[1:]))
        sim_seconds = products * mu * (SECONDS_PER_TANGENT_PRODUCT * p * layers + SECONDS_PER_TANGENT_UNIT * units)
    elif scheme == "stationary":
        n_curv = n if simulation.curvature_batch_size is None else min(n, simulation.curvature_batch_size)
        state_bytes = 2 * m * p * item - response_bytes  # Δ and ḡ are dense during the iteration
        products = float(simulation.horizon) * m * n_curv + 30.0 * n  # Neumann steps + power iteration
        sim_seconds = SECONDS_PER_TANGENT_PRODUCT * STATIONARY_FACTOR * products * p * layers
        notes.append(f"stationary: {simulation.horizon} Neumann steps of {m} tangents over {n_curv} examples")
    else:
        sim_seconds = 0.0
    if dense_first:
        r = int(simulation.rank) if isinstance(simulation.rank, int) else rank_for(simulation, m, p)[0] or 0
        # Δ and M = G Δᵀ [n, m] (float64) beside the factors; M costs n·m·p multiply-adds, the
        # factors 2·m·p·r more
        state_bytes += m * p * item + n * m * 8 + 2 * r * p * 8
        sim_seconds += SECONDS_PER_ROTATION_MAC * float(p) * m * (n + 2 * r) if query_aware else 0.0
        notes.append(
            f"dense responses factorised to rank {r} after training" + (" (query-aware)" if query_aware else "")
        )
    train_seconds = SECONDS_PER_EXAMPLE_PARAM * n * train.epochs * p
    if m:
        train_seconds += SECONDS_PER_SOURCE_GRAD * n * train.epochs * p * min(B, m)
    finish_seconds = SECONDS_PER_RESPONSE_BYTE * response_bytes * 3
    seconds = train_seconds + sim_seconds + finish_seconds
    peak = BASE_BYTES + data_bytes + state_bytes + int(RESPONSE_COPIES * response_bytes)
    return Estimate(
        n_train=n,
        n_sources=m,
        n_params=p,
        steps=steps,
        response_bytes=response_bytes,
        state_bytes=state_bytes,
        peak_bytes=peak,
        seconds=seconds,
        seconds_low=LOW * seconds,
        seconds_high=HIGH * seconds,
        notes=tuple(notes),
    )


def check_estimate(
    estimate: Estimate,
    simulation: SimulationConfig | None,
    available_bytes: int | None = None,
    warn_seconds: float = WARN_SECONDS,
) -> list[str]:
    """Refuse a run that cannot fit, before any work; return warnings for a big one.

    Refused (ConfigError naming what to change): the responses plus the simulation state
    exceed ``memory_budget_mb``, or the expected peak exceeds the memory available
    (``available_bytes``, default: what the machine has free now).
    """
    available = available_memory_bytes() if available_bytes is None else int(available_bytes)
    fixes = _fixes(estimate, simulation)
    if simulation is not None and simulation.scheme != "none":
        budget = simulation.memory_budget_mb * 2**20
        if estimate.budget_bytes > budget:
            raise ConfigError(
                f"this run needs {_fmt_bytes(estimate.budget_bytes)} for the simulation "
                f"({_fmt_bytes(estimate.response_bytes)} of responses for {estimate.n_sources} sources × "
                f"{estimate.n_params} parameters, {_fmt_bytes(estimate.state_bytes)} of working state), more "
                f"than the memory budget of {simulation.memory_budget_mb:g} MB; {fixes}, or raise the memory "
                "budget (`memory_budget_mb`). Nothing was trained."
            )
    if estimate.peak_bytes > available:
        raise ConfigError(
            f"this run would peak at about {_fmt_bytes(estimate.peak_bytes)} of memory but this machine has "
            f"{_fmt_bytes(available)} available; {fixes}. Nothing was trained."
        )
    warnings = []
    if estimate.peak_bytes > WARN_MEMORY_FRACTION * available:
        warnings.append(
            f"this run will use about {_fmt_bytes(estimate.peak_bytes)} of the {_fmt_bytes(available)} of memory "
            "available; other programs may slow down or fail."
        )
    if estimate.seconds > warn_seconds:
        warnings.append(
            f"this run will take about {_fmt_seconds(estimate.seconds)} (likely "
            f"{_fmt_seconds(estimate.seconds_low)} to {_fmt_seconds(estimate.seconds_high)}); {fixes} to make it "
            "faster."
        )
    return warnings


def _fixes(estimate: Estimate, simulation: SimulationConfig | None) -> str:
    options = []
    if estimate.n_sources > 100:
        options.append("group the sources (`sources` class, or a group column)")
    if simulation is not None and simulation.scheme == "trajectory" and simulation.horizon != 0:
        options.append("use a shorter horizon (`horizon`)")
    if simulation is not None and simulation.scheme == "stationary":
        options.append("use fewer Neumann steps (`horizon`) or a curvature batch (`curvature_batch_size`)")
    if simulation is not None and simulation.scheme != "none":
        options.append("compress the responses (`rank`, e.g. 256)")
    options.append("train on fewer rows or a smaller network")
    return ", ".join(options[:-1]) + (" or " if len(options) > 1 else "") + options[-1]


def _fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _fmt_seconds(s: float) -> str:
    if s < 1:
        return "under a second"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
