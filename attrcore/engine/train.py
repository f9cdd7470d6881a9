"""SGD training of the MLP, with each source's parameter response simulated in the same run.

``train`` is the one entry point: it trains with seeded mini-batches (bit-identical for the
same seed, data and config on the CPU), reports per-epoch progress, and, when a
:class:`~attrcore.config.SimulationConfig` asks for it, feeds every step to a trajectory
simulator or runs the stationary scheme at the end. The training trajectory never depends
on the simulation: it only reads the step's activations.

Simulation schemes plug in as a :class:`Simulator` (``step`` after every SGD step's
gradient, ``finish`` after the last step); :func:`make_simulator` picks one per scheme and
the base class is the no-op, so the loop itself has no scheme-specific branch. A new scheme
is a new :class:`Simulator` subclass and one line in :func:`make_simulator`.

The step (PyTorch SGD semantics, weight decay as an L2 term in the gradient)::

    g = (1/|B|) Σ_{i∈B} w_i ∇ℓ_i + λθ;   v ← μ v + g;   θ ← θ − η_t v
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..config import SimulationConfig, TrainConfig
from ..errors import CancelledError, ConfigError, DataError, DivergenceError, ShapeError
from .compress import (
    CompressedResponses,
    compress_dense,
    make_compressed_trajectory,
    rank_for,
    stationary_sketch,
)
from .curvature import make_curvature
from .ekfac import EKFACTrajectory
from .model import MLP
from .query_compress import compress_query_aware
from .simulate import make_trajectory, stationary_response


@dataclass
class Progress:
    """One progress report: ``stage`` is "train" or "stationary"."""

    stage: str
    done: int
    total: int
    metrics: dict = field(default_factory=dict)


ProgressFn = Callable[[Progress], "bool | None"]


@dataclass
class TrainOutput:
    theta: Tensor  # [p]
    responses: Tensor | None  # [m, p] or None
    history: list[dict]  # per epoch: epoch, loss, train_accuracy, (test_accuracy)
    timings: dict  # seconds: train (total wall), simulate (inside the run), ...
    checkpoints: dict[int, Tensor] = field(default_factory=dict)  # epoch -> theta
    checkpoint_lrs: dict[int, float] = field(default_factory=dict)
    extras: dict = field(default_factory=dict)


def step_learning_rates(cfg: TrainConfig, steps_per_epoch: int) -> Tensor:
    """η_t for every step of the run (float64 ``[epochs * steps_per_epoch]``)."""
    T = cfg.epochs * steps_per_epoch
    t = torch.arange(T, dtype=torch.float64)
    if cfg.lr_schedule == "constant":
        return torch.full((T,), cfg.lr, dtype=torch.float64)
    if cfg.lr_schedule == "step":
        epoch = torch.div(t, steps_per_epoch, rounding_mode="floor")
        return cfg.lr * cfg.step_gamma ** torch.div(epoch, cfg.step_every, rounding_mode="floor")
    return cfg.lr * 0.5 * (1.0 + torch.cos(math.pi * t / T))


def batch_orders(n: int, cfg: TrainConfig) -> list[list[Tensor]]:
    """The mini-batches of every epoch, from ``cfg.seed`` alone."""
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + 1)
    epochs = []
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        batches = list(torch.split(perm, cfg.batch_size))
        if cfg.drop_last and len(batches) > 1 and len(batches[-1]) < cfg.batch_size:
            batches.pop()
        epochs.append(batches)
    return epochs


@dataclass
class Replay:
    """The recorded run's steps, replayable: batches, learning rates and the exact SGD step.

    :meth:`advance` performs the same arithmetic as the training loop, so replaying from a
    recorded (θ_t, v_t) reproduces θ_{t+1} bit for bit.
    """

    mlp: MLP
    X: Tensor
    y: Tensor
    w: Tensor | None
    steps: list[Tensor]  # the example indices of every step
    lrs: Tensor
    cfg: TrainConfig
    curvature_kind: str
    backend: str

    @property
    def total_steps(self) -> int:
        return len(self.steps)

    @property
    def momentum(self) -> float:
        return self.cfg.momentum

    @property
    def dtype(self) -> torch.dtype:
        return self.X.dtype

    @property
    def itemsize(self) -> int:
        return self.X.element_size()

    def batch(self, t: int) -> Tensor:
        return self.steps[t]

    def curvature(self, t: int, theta: Tensor, backend: str | None = None):
        idx = self.steps[t]
        wb = None if self.w is None else self.w[idx]
        return make_curvature(
            backend or self.backend,
            self.mlp,
            theta,
            self.X[idx],
            self.y[idx],
            weights=wb,
            weight_decay=self.cfg.weight_decay,
            curvature=self.curvature_kind,
        )

    def advance(self, t: int, theta: Tensor, velocity: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """θ_{t+1}, v_{t+1} from θ_t, v_t (``velocity`` is updated in place, as in training)."""
        g = self.curvature(t, theta, backend="mlp").grad()
        lr = float(self.lrs[t])
        if velocity is not None:
            velocity.mul_(self.cfg.momentum).add_(g)
            return theta - lr * velocity, velocity
        return theta - lr * g, None


# Divergence guard (see :class:`DivergenceGuard`).
BLOWUP_BATCH = 1e4  # a batch loss this many times the starting loss: stop at once
BLOWUP_EPOCH = 1e3  # an epoch's mean loss this many times the starting loss: stop
STUCK_EPOCHS = 3  # epochs in a row at chance accuracy with a loss above the start: stop
STUCK_MARGIN = 0.02  # "at chance": training accuracy ≤ majority-class share + this
STUCK_LOSS = 1.05  # ... and the epoch's loss above this multiple of the starting loss
FELL_BACK = 0.1  # or, at the last epoch, at chance after having been this far above it
SPIKED = 2.0  # or, at the last epoch, at chance after an epoch loss this many times the start


class DivergenceGuard:
    """Stops a run whose loss blows up or that sits at chance, before anything is saved.

    NaN/inf is only the last stage of a diverging run: far more often the loss jumps by
    orders of magnitude and then oscillates while the accuracy sits at chance (lr = 100 on
    moons reached a loss of 1e31 and then hovered at 30 with 50 % accuracy). The reference
    is the loss at the initial parameters, ``max(first batch loss, ln C)`` (a fresh
    network's loss is ≈ ln C, and unscaled inputs can start it higher). A run is stopped
    when a batch loss exceeds :data:`BLOWUP_BATCH` × the reference, an epoch's mean loss
    exceeds :data:`BLOWUP_EPOCH` × the reference, or for :data:`STUCK_EPOCHS` epochs in a
    row (or at the last epoch) the training accuracy is at chance (majority-class share +
    :data:`STUCK_MARGIN`) while the loss is above where it started, or the last epoch is at
    chance after an earlier one was :data:`FELL_BACK` above it (the net died) or after an
    epoch's loss exceeded :data:`SPIKED` × the start. A run that learns slowly keeps its
    loss below the start and never spikes or falls back, so it is never stopped: a
    too-small learning rate is not "diverging".
    """

    def __init__(self, cfg: TrainConfig, y: Tensor, n_classes: int) -> None:
        self.cfg = cfg
        counts = torch.bincount(y, minlength=n_classes)
        self.chance = float(counts.max()) / max(1, len(y))
        self.floor = math.log(max(2, n_classes))
        self.ref: float | None = None
        self.stuck = 0
        self.best = 0.0  # best training accuracy of the epochs before
        self.peak = 0.0  # highest epoch loss so far

    def _fail(self, what: str) -> DivergenceError:
        mom = f" or the momentum (now {self.cfg.momentum})" if self.cfg.momentum else ""
        return DivergenceError(
            f"training diverged: {what}; lower the learning rate (now {self.cfg.lr}){mom}. Nothing was saved."
        )

    def batch(self, epoch: int, step: int, loss: float) -> None:
        if self.ref is None:
            self.ref = max(loss, self.floor)
        if loss > BLOWUP_BATCH * self.ref:
            raise self._fail(
                f"at epoch {epoch}, step {step} the loss rose to {loss:.3g} from {self.ref:.3g} at the start"
            )

    def epoch(self, epoch: int, loss: float, accuracy: float, last: bool) -> None:
        ref = self.ref if self.ref is not None else self.floor
        if loss > BLOWUP_EPOCH * ref:
            raise self._fail(f"the mean loss of epoch {epoch} is {loss:.3g}, up from {ref:.3g} at the start")
        at_chance = accuracy <= self.chance + STUCK_MARGIN
        rising = loss > STUCK_LOSS * ref
        self.stuck = self.stuck + 1 if at_chance and rising else 0
        fell_back = self.best >= self.chance + FELL_BACK
        self.best = max(self.best, accuracy)
        self.peak = max(self.peak, loss)
        spiked = self.peak > SPIKED * ref
        if self.stuck >= STUCK_EPOCHS or (last and at_chance and (rising or fell_back or spiked)):
            raise self._fail(
                f"after epoch {epoch} the training accuracy is {accuracy:.1%}, no better than always "
                f"predicting the commonest class ({self.chance:.1%}), "
                + (
                    f"and the loss ({loss:.3g}) is above its starting value ({ref:.3g})"
                    if rising
                    else f"after reaching {self.best:.1%} earlier"
                    if fell_back
                    else f"after its loss spiked to {self.peak:.3g} (from {ref:.3g})"
                )
            )


def _as_tensor(a, dtype, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, Tensor) else a)
    if t.is_floating_point() and not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise DataError(f"{name} holds {bad} NaN or infinite values; remove or impute them before training.")
    return t.to(dtype) if dtype is not None else t


# ----------------------------------------------------------------------------- simulators


class Simulator:
    """What the training loop asks of a simulation scheme; this base class is the no-op
    (scheme ``none`` or no :class:`SimulationConfig`), so the loop never asks *whether* it
    simulates.

    ``curvature`` is the curvature kind of the step's curvature object (which the loop
    builds for the gradient anyway and hands to :meth:`step`); ``seconds`` is the time
    spent simulating.
    """

    curvature = "hessian"
    response_dtype: str | None = None
    rank: int | None = None  # compressed responses Δ ≈ C Qᵀ of this rank (None: dense)
    rank_reason = "dense"
    power_iterations = 1
    seed = 0
    compression = "svd"  # or "query-aware": the dense responses, factorised for the training points' gradients
    points: tuple | None = None  # (mlp, X, y): the training points query-aware compression reads out

    def __init__(self) -> None:
        self.seconds = 0.0

    def step(
        self, t: int, curv, X_b: Tensor, y_b: Tensor, w_b: Tensor | None, idx: Tensor, velocity: Tensor | None
    ) -> None:
        """Called after SGD step ``t``'s gradient, before the update (``curv`` is at θ_t,
        ``velocity`` is v_t)."""

    def finish(self, theta: Tensor, progress: ProgressFn | None) -> tuple[object | None, dict]:
        """The responses (``Tangents``, compressed, or None) and extras, after the last step."""
        return None, {}

    def current(self):
        """The dense responses ``Tangents [m, p]`` of the parameters reached so far, read
        between steps (for :func:`train`'s ``on_epoch``), or None when the scheme has none
        mid-run (no simulation, stationary, compressed, EK-FAC)."""
        return None

    @property
    def query_aware(self) -> bool:
        """Whether a rank is set and the dense responses are to be factorised query-aware
        (then every scheme simulates them dense first)."""
        return self.rank is not None and self.compression == "query-aware"

    def output(self, responses, theta: Tensor | None = None):
        """The responses as :func:`train` returns them: dense ``[m, p]`` or compressed
        (compressing dense ones when a rank is set: randomized SVD, or query-aware with the
        final ``theta`` and the training points), checked finite, in ``response_dtype``."""
        if responses is None:
            return None
        if self.rank is not None and not isinstance(responses, CompressedResponses):
            t0 = time.perf_counter()
            if self.query_aware and theta is not None and self.points is not None:
                mlp, X, y = self.points
                responses = compress_query_aware(responses, mlp, theta, X, y, self.rank, seed=self.seed)
            else:
                responses = compress_dense(responses, self.rank, self.power_iterations, self.seed)
            self.seconds += time.perf_counter() - t0
        compressed = isinstance(responses, CompressedResponses)
        if not compressed:
            responses = responses.flat()
        if not (responses.isfinite() if compressed else torch.isfinite(responses).all()):
            raise DivergenceError(
                "the simulated responses are not finite; lower the learning rate or use a shorter horizon."
            )
        if self.response_dtype is not None:
            responses = responses.to(getattr(torch, self.response_dtype))
        if compressed:
            responses.info["reason"] = self.rank_reason
        return responses

    def _compression(
        self,
        sim: SimulationConfig,
        cfg: TrainConfig,
        m: int,
        mlp: MLP,
        X: Tensor | None = None,
        y: Tensor | None = None,
    ) -> None:
        self.response_dtype = sim.response_dtype
        self.rank, self.rank_reason = rank_for(sim, m, mlp.n_params)
        self.power_iterations, self.seed = sim.power_iterations, cfg.seed
        self.compression = sim.compression
        if self.query_aware:
            self.points = (mlp, X, y)


class TrajectorySimulation(Simulator):
    """``trajectory``: every step's injections propagated by the trajectory simulator (dense,
    or, with a rank, the compressed one of :mod:`attrcore.engine.compress`, which records the
    run to replay it)."""

    def __init__(
        self,
        sim: SimulationConfig,
        mlp: MLP,
        cfg: TrainConfig,
        X: Tensor,
        y: Tensor,
        w: Tensor | None,
        orders: list,
        src: Tensor,
        m: int,
        lrs: Tensor,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self._compression(sim, cfg, m, mlp, X, y)
        self.curvature, self.backend = sim.curvature, sim.backend
        self.mlp, self.cfg, self.src = mlp, cfg, src
        budget = sim.memory_budget_mb * 2**20
        if sim.curvature == "ekfac":
            # the step only needs activations and δ (no σ'' caches); the responses come out
            # dense and are compressed afterwards when a rank is set (Simulator.output)
            self.curvature = "gauss-newton"
            self.impl = EKFACTrajectory(
                mlp,
                m,
                lrs,
                cfg.momentum,
                dtype,
                budget,
                horizon=sim.horizon,
                segment_steps=sim.segment_steps or len(orders[0]),
                weight_decay=cfg.weight_decay,
                decay=sim.ekfac_decay,
                rank=sim.ekfac_rank,
                rank_iterations=sim.ekfac_rank_iterations,
                seed=cfg.seed,
            )
        elif self.rank is None or self.query_aware:  # query-aware: dense, factorised in `output`
            self.impl = make_trajectory(
                sim.horizon,
                len(lrs),
                mlp=mlp,
                n_sources=m,
                lrs=lrs,
                momentum=cfg.momentum,
                dtype=dtype,
                budget_bytes=budget,
                batch_size=cfg.batch_size,
            )
        else:
            replay = Replay(mlp, X, y, w, [idx for b in orders for idx in b], lrs, cfg, self.curvature, self.backend)
            self.impl = make_compressed_trajectory(
                replay, sim.horizon, src, m, self.rank, sim.power_iterations, cfg.seed, budget
            )

    def step(self, t, curv, X_b, y_b, w_b, idx, velocity) -> None:
        t0 = time.perf_counter()
        if hasattr(self.impl, "record"):  # the compressed full horizon replays the run later
            self.impl.record(t, curv.theta, velocity)
        if self.backend != "mlp":  # the reference backend gets its own curvature object
            curv = make_curvature(
                self.backend,
                self.mlp,
                curv.theta,
                X_b,
                y_b,
                weights=w_b,
                weight_decay=self.cfg.weight_decay,
                curvature=self.curvature,
            )
        self.impl.step(t, curv, self.src[idx])
        self.seconds += time.perf_counter() - t0

    def current(self):
        return self.impl.current() if hasattr(self.impl, "current") else None

    def finish(self, theta, progress):
        t0 = time.perf_counter()
        responses = self.impl.finalize()
        self.seconds += time.perf_counter() - t0
        parts = getattr(self.impl, "parts_seconds", None)  # EK-FAC: factors / rotations / injections
        return responses, ({"simulation_parts": dict(parts)} if parts else {})


class StationarySimulation(Simulator):
    """``stationary``: Neumann steps at the final parameters, after training."""

    def __init__(
        self, sim: SimulationConfig, mlp: MLP, cfg: TrainConfig, X: Tensor, y: Tensor, src: Tensor, m: int
    ) -> None:
        super().__init__()
        self._compression(sim, cfg, m, mlp, X, y)
        self.curvature = sim.curvature
        self.sim, self.mlp, self.cfg, self.X, self.y, self.src, self.m = sim, mlp, cfg, X, y, src, m

    def finish(self, theta, progress):
        t0 = time.perf_counter()

        def report(k: int, K: int) -> None:
            if progress is not None and progress(Progress("stationary", k, K)) is False:
                raise CancelledError("the simulation was cancelled; nothing was saved.")

        sim, n = self.sim, self.X.shape[0]
        full_curvature = sim.curvature_batch_size is None or sim.curvature_batch_size >= n
        sketch = self.rank is not None and not self.query_aware
        if sketch and full_curvature and 2 * (self.power_iterations + 1) * self.rank < self.m:
            # r Neumann tangents instead of m (the map is symmetric): compress.stationary_sketch
            responses, alpha = stationary_sketch(
                self.mlp,
                theta,
                self.X,
                self.y,
                self.src,
                self.m,
                sim,
                self.cfg.weight_decay,
                self.rank,
                self.power_iterations,
                seed=self.cfg.seed,
                progress=report,
            )
        else:
            responses, alpha = stationary_response(
                self.mlp,
                theta,
                self.X,
                self.y,
                self.src,
                self.m,
                self.sim,
                self.cfg.weight_decay,
                seed=self.cfg.seed,
                progress=report,
            )
        self.seconds = time.perf_counter() - t0
        return responses, {"neumann_step_size": alpha}


def _source_ids(source_index, n_sources: int | None, n: int) -> tuple[Tensor, int]:
    """``(source id per example [n], number of sources)``; default one source per example."""
    if source_index is None:
        return torch.arange(n), n
    src = torch.as_tensor(np.asarray(source_index)).long()
    if src.shape != (n,):
        raise ShapeError(
            f"source index has shape {tuple(src.shape)}; it needs one source id per training example ({n})."
        )
    m = int(n_sources if n_sources is not None else int(src.max()) + 1)
    if int(src.min()) < -1 or int(src.max()) >= m:
        raise ConfigError(f"source ids must be in 0..{m - 1} (−1: no source).")
    return src, m


def make_simulator(
    sim: SimulationConfig | None,
    mlp: MLP,
    cfg: TrainConfig,
    X: Tensor,
    y: Tensor,
    w: Tensor | None,
    orders: list,
    source_index,
    n_sources: int | None,
    lrs: Tensor,
    dtype: torch.dtype,
    executor=None,
) -> Simulator:
    """The simulator of ``sim``'s scheme (the no-op :class:`Simulator` for none / None);
    sharded over ``executor``'s workers after training when it is not in process and the
    scheme shards to the same result (see :meth:`ShardedSimulation.applies`)."""
    if sim is None or sim.scheme == "none":
        return Simulator()
    src, m = _source_ids(source_index, n_sources, X.shape[0])
    if executor is not None and executor.distributed:
        from .shard import ShardedSimulation  # shard builds on this module (train, Replay): a cycle at the top

        if ShardedSimulation.applies(sim, m, mlp.n_params, len(lrs), X.element_size()):
            return ShardedSimulation(executor, sim, mlp, cfg, X, y, w, src, m, len(lrs))
    if sim.scheme == "trajectory":
        return TrajectorySimulation(sim, mlp, cfg, X, y, w, orders, src, m, lrs, dtype)
    return StationarySimulation(sim, mlp, cfg, X, y, src, m)


# ----------------------------------------------------------------------------- training


def train(
    mlp: MLP,
    X,
    y,
    cfg: TrainConfig,
    sim: SimulationConfig | None = None,
    source_index=None,
    n_sources: int | None = None,
    weights=None,
    X_val=None,
    y_val=None,
    progress: ProgressFn | None = None,
    checkpoint_epochs: tuple[int, ...] = (),
    executor=None,
    on_epoch: Callable[[int, Tensor, Callable], None] | None = None,
) -> TrainOutput:
    """Train ``mlp`` on ``X [n, d]``, ``y [n]``; simulate responses when ``sim`` asks.

    ``source_index [n]`` maps each training example to its source (default: one source per
    example); ``weights [n]`` are per-example loss weights (default 1; used by the
    retraining of evaluations and by the finite-difference tests).
    ``progress`` gets a :class:`Progress` per epoch; returning ``False`` cancels the run
    (:class:`CancelledError`, nothing is kept). A source id of −1 marks an example that is
    no source's (never injected; the sharded simulation uses it).
    ``executor`` (:class:`attrcore.executors.Executor`, not in process) simulates in shards
    after training (:mod:`attrcore.engine.shard`); the result equals the in-process one and
    ``extras["sharding"]`` reports the shards and any retried after a worker died.
    ``on_epoch(epoch, θ, current)`` is called after every epoch (1-based) with the
    parameters reached and ``current()``, the responses accumulated so far
    (:meth:`Simulator.current`; read them before returning, they change with the next
    step); its time is not counted in the timings.
    """
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    X = _as_tensor(X, dtype, "the training inputs X")
    y = _as_tensor(y, None, "the training labels y").long()
    n = X.shape[0]
    mlp.check_input(X)
    if y.shape != (n,):
        raise ShapeError(
            f"labels have shape {tuple(y.shape)} but there are {n} training examples; pass one label per row."
        )
    if n == 0:
        raise DataError("the training set is empty; load data with at least two classes.")
    if int(y.min()) < 0 or int(y.max()) >= mlp.config.n_classes:
        raise DataError(
            f"labels must be in 0..{mlp.config.n_classes - 1} for a {mlp.config.n_classes}-class model, "
            f"got {int(y.min())}..{int(y.max())}; map labels to consecutive integers."
        )
    w = None if weights is None else _as_tensor(weights, dtype, "the example weights")
    if w is not None and w.shape != (n,):
        raise ShapeError(f"weights have shape {tuple(w.shape)}; pass one weight per training example ({n}).")
    gen = torch.Generator().manual_seed(cfg.seed)
    theta = mlp.init(gen, dtype)
    orders = batch_orders(n, cfg)
    steps_per_epoch = len(orders[0])
    lrs = step_learning_rates(cfg, steps_per_epoch)
    velocity = torch.zeros_like(theta) if cfg.momentum else None
    simulator = make_simulator(sim, mlp, cfg, X, y, w, orders, source_index, n_sources, lrs, dtype, executor)

    Xv = None if X_val is None else _as_tensor(X_val, dtype, "the test inputs")
    yv = None if y_val is None else torch.as_tensor(np.asarray(y_val)).long()

    guard = DivergenceGuard(cfg, y, mlp.config.n_classes)
    history: list[dict] = []
    checkpoints: dict[int, Tensor] = {}
    checkpoint_lrs: dict[int, float] = {}
    if 0 in checkpoint_epochs:
        checkpoints[0] = theta.clone()
        checkpoint_lrs[0] = float(lrs[0])
    t_start = time.perf_counter()
    t = 0
    for epoch, batches in enumerate(orders):
        loss_sum, correct = 0.0, 0
        for idx in batches:
            wb = None if w is None else w[idx]
            # the training step always uses the fast path, so the trajectory never depends
            # on which backend the simulation uses
            curv = make_curvature(
                "mlp",
                mlp,
                theta,
                X[idx],
                y[idx],
                weights=wb,
                weight_decay=cfg.weight_decay,
                curvature=simulator.curvature,
            )
            g = curv.grad()
            batch_loss = float(curv.loss())
            if not math.isfinite(batch_loss) or not torch.isfinite(g).all():
                raise DivergenceError(
                    f"training diverged at epoch {epoch + 1}, step {t + 1} (loss = {batch_loss}); "
                    f"lower the learning rate (now {cfg.lr}) or the momentum (now {cfg.momentum}). "
                    "Nothing was saved."
                )
            guard.batch(epoch + 1, t + 1, batch_loss)
            loss_sum += batch_loss * len(idx)
            correct += int((curv.probs.argmax(1) == y[idx]).sum())
            simulator.step(t, curv, X[idx], y[idx], wb, idx, velocity)
            lr = float(lrs[t])
            if velocity is not None:
                velocity.mul_(cfg.momentum).add_(g)
                theta = theta - lr * velocity
            else:
                theta = theta - lr * g
            t += 1
        record = {"epoch": epoch + 1, "loss": loss_sum / n, "train_accuracy": correct / n, "lr": float(lrs[t - 1])}
        if Xv is not None and yv is not None and len(yv):
            record["test_accuracy"] = float((mlp.forward(theta, Xv).argmax(1) == yv).float().mean())
        guard.epoch(epoch + 1, record["loss"], record["train_accuracy"], last=epoch + 1 == cfg.epochs)
        history.append(record)
        if epoch + 1 in checkpoint_epochs:
            checkpoints[epoch + 1] = theta.clone()
            checkpoint_lrs[epoch + 1] = float(lrs[t - 1])
        if on_epoch is not None:
            t_hook = time.perf_counter()
            on_epoch(epoch + 1, theta, simulator.current)
            t_start += time.perf_counter() - t_hook
        if progress is not None and progress(Progress("train", epoch + 1, cfg.epochs, record)) is False:
            raise CancelledError("training was cancelled; nothing was saved.")
    train_seconds = time.perf_counter() - t_start

    responses, extras = simulator.finish(theta, progress)
    responses = simulator.output(responses, theta)
    timings = {
        "train_seconds": train_seconds,
        "simulate_seconds": simulator.seconds,
        "total_seconds": time.perf_counter() - t_start,
    }
    return TrainOutput(theta, responses, history, timings, checkpoints, checkpoint_lrs, extras)
