"""Suspicion signals read out over the training trajectory, not only at the final model.

Interface: :class:`TrajectoryRecorder`, an ``on_epoch`` hook for :func:`attrcore.run.fit`
(``fit(..., on_epoch=rec)``), accumulates at checkpoints θ_c — the parameters after each
epoch c of ``epochs`` (default :func:`second_half`) — and :meth:`~TrajectoryRecorder.signals`
returns ``{id: scores [n]}`` (higher = more suspicious):

- ``forward-only-trajectory`` — self-influence over the trajectory,
  Σ_c −⟨∇ℓ_i(θ_c), Δ_i(t_c) − Δ_i(t_{c−w})⟩: at every checkpoint, the example's own loss
  change under the part of its response injected over the last ``window`` = w epochs
  (Δ_i(t) = the response accumulated up to step t, the simulation's state; Δ(t_0) = 0).
  Each term is one JVP per point (:func:`attrcore.engine.readout.self_scores`), so the
  signal stays forward-only; at K = 0 without momentum the term is the forward-mode
  counterpart of TracIn's self-influence η/B ‖∇ℓ_i‖² (Pruthi et al. 2020), read at θ_c.
- ``trajectory-loss`` — the training loss averaged over the same checkpoints (control);
- ``aum`` — the area under the margin (Pleiss et al. 2020): −mean over the checkpoints of
  the given label's logit minus the largest other logit (control).

Mislabeled examples are learned late and the network's state swings from epoch to epoch
on look-alike classes, which is why averages over checkpoints can rank flips better than
one reading at θ_T (``benchmarks/mislabel_trajectory_study.md`` measures by how much, and
which of these signals it favours).

:func:`record` replays a run's recipe with the recorder (training is deterministic, so the
replay reaches the run's own parameters; it is checked) for a run trained without one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..engine.compress import rank_for
from ..engine.measures import measure as measure_fn
from ..engine.model import MLP, MLPConfig
from ..engine.readout import self_scores
from ..engine.tangents import Tangents
from ..engine.train import train
from ..errors import ConfigError, DivergenceError

__all__ = ["TRAJECTORY_SIGNALS", "TrajectoryRecorder", "check_recordable", "record", "recorder_for", "second_half"]

TRAJECTORY_SIGNALS = ("forward-only-trajectory", "trajectory-loss", "aum")


def second_half(epochs: int) -> tuple[int, ...]:
    """The default checkpoints: every epoch of the second half of an ``epochs``-epoch run."""
    return tuple(range(epochs // 2 + 1, epochs + 1))


def check_recordable(simulation, sources_kind: str, n_sources: int, n_params: int) -> None:
    """Refuse, before training, a run whose responses cannot be read out mid-run by
    ``forward-only-trajectory`` (the controls need no responses): grouped sources, the
    stationary scheme, compressed or EK-FAC responses."""
    if sources_kind != "example":
        raise ConfigError(
            f"forward-only self-influence over the trajectory ranks single training examples, but the run has "
            f"{sources_kind!r} sources; train with sources='example'."
        )
    if simulation is None or simulation.scheme != "trajectory":
        raise ConfigError(
            "forward-only self-influence over the trajectory reads the responses while they are simulated; "
            "use `scheme` trajectory (the stationary scheme has none until training ends)."
        )
    rank, _ = rank_for(simulation, n_sources, n_params)
    if simulation.curvature == "ekfac" or (rank is not None and simulation.compression != "query-aware"):
        raise ConfigError(
            "forward-only self-influence over the trajectory reads dense responses mid-run; set `rank` dense "
            "and a `curvature` other than ekfac."
        )


class TrajectoryRecorder:
    """``on_epoch(epoch, θ, current)`` hook accumulating the trajectory signals.

    ``mlp``, ``X [n, d]``, ``y [n]`` (the given labels): the training points, in the order
    of the run's sources (per-example sources: point i is source i). ``epochs``: the
    checkpoint epochs (1-based). ``window``: the response read at a checkpoint is the part
    injected over the last ``window`` epochs (None: the whole response so far).
    ``self_influence=False`` records the controls only (no responses needed).
    Memory: one copy of the responses is kept between a snapshot epoch and its checkpoint.
    """

    def __init__(
        self,
        mlp: MLP,
        X,
        y,
        epochs: Sequence[int],
        window: int | None = 1,
        self_influence: bool = True,
        memory_budget_mb: float = 1024.0,
    ) -> None:
        if not epochs:
            raise ConfigError("pick at least one checkpoint epoch for the trajectory signals.")
        if window is not None and window < 1:
            raise ConfigError(f"the response window is a number of epochs ≥ 1 (or None), got {window}.")
        self.mlp, self.X, self.y = mlp, torch.as_tensor(np.asarray(X)), torch.as_tensor(np.asarray(y)).long()
        self.epochs = tuple(sorted(set(int(e) for e in epochs)))
        self.window, self.self_influence, self.budget = window, self_influence, memory_budget_mb
        self._snap_at = {c - window for c in self.epochs if c - window >= 1} if window and self_influence else set()
        self._snaps: dict[int, Tangents] = {}
        n = self.X.shape[0]
        self.si, self.loss, self.aum = np.zeros(n), np.zeros(n), np.zeros(n)
        self.read: list[int] = []
        self.seconds = 0.0  # reading out the self-influence (JVPs, snapshots)
        self.control_seconds = 0.0  # the forward passes of the controls

    def _tau(self, theta: Tensor, D) -> np.ndarray:
        X = self.X.to(theta.dtype)
        return self_scores(self.mlp, theta, D, X, self.y, "loss", memory_budget_mb=self.budget).double().numpy()

    def __call__(self, epoch: int, theta: Tensor, current: Callable) -> None:
        if epoch not in self.epochs and epoch not in self._snap_at:
            return
        t0 = time.perf_counter()
        D = None
        if self.self_influence:
            D = current()
            if D is None:
                raise ConfigError(
                    "this simulation has no dense responses mid-run, so forward-only self-influence over the "
                    "trajectory cannot be read out; use `scheme` trajectory with `rank` dense."
                )
        if epoch in self.epochs:
            if D is not None:
                tau = self._tau(theta, D)
                base = None if self.window is None else self._snaps.pop(epoch - self.window, None)
                if base is not None:  # τ is linear in Δ: τ(Δ(t_c) − Δ(t_{c−w})) = τ(Δ(t_c)) − τ(Δ(t_{c−w}))
                    tau = tau - self._tau(theta, base)
                self.si -= tau
            t1 = time.perf_counter()
            with torch.no_grad():
                z = self.mlp.forward(theta, self.X.to(theta.dtype)).double()
            self.loss += measure_fn(z, self.y, "loss").numpy()
            zy = z.gather(1, self.y[:, None]).squeeze(1)
            other = z.scatter(1, self.y[:, None], float("-inf")).max(1).values
            self.aum -= (zy - other).numpy()
            self.read.append(epoch)
            self.control_seconds += time.perf_counter() - t1
            t0 += time.perf_counter() - t1
        if epoch in self._snap_at:
            self._snaps[epoch] = D.clone()
        self.seconds += time.perf_counter() - t0

    def signals(self) -> dict[str, np.ndarray]:
        """``{id: scores [n]}`` over the checkpoints read so far (all of them after training)."""
        if not self.read:
            raise ConfigError(
                f"no checkpoint was read (checkpoint epochs {list(self.epochs)}); the run trained for fewer epochs."
            )
        k = len(self.read)
        out = {"trajectory-loss": self.loss / k, "aum": self.aum / k}
        if self.self_influence:
            out["forward-only-trajectory"] = self.si.copy()
        return out


def recorder_for(
    dataset, hidden: Sequence[int], activation: str, train_config, self_influence: bool = True
) -> TrajectoryRecorder:
    """A recorder at the default checkpoints for ``fit(dataset, hidden=..., activation=...,
    train_config=..., on_epoch=recorder)`` (the model ``fit`` builds for that data)."""
    mlp = MLP(MLPConfig(dataset.n_features, dataset.n_classes, tuple(hidden), activation))
    dtype = torch.float64 if train_config.dtype == "float64" else torch.float32
    X = torch.as_tensor(dataset.X_train).to(dtype)
    return TrajectoryRecorder(mlp, X, dataset.y_train, second_half(train_config.epochs), self_influence=self_influence)


def record(run, self_influence: bool = True, progress: Callable | None = None) -> tuple[TrajectoryRecorder, float]:
    """Replay ``run``'s recipe with a recorder at the default checkpoints; returns the
    recorder and the replay's seconds. The controls replay plain training; the
    self-influence replays the run's own simulation (dense)."""
    ds, cfg = run.dataset, run.train_config
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    X, y = torch.as_tensor(ds.X_train).to(dtype), torch.as_tensor(ds.y_train).long()
    rec = TrajectoryRecorder(run.mlp, X, y, second_half(cfg.epochs), self_influence=self_influence)
    sim = None
    if self_influence:
        kind = run.config.get("sources", {}).get("kind", "example")
        check_recordable(run.spec.simulation, kind, run.n_sources, run.mlp.n_params)
        sim = run.spec.simulation
    t0 = time.perf_counter()
    out = train(
        run.mlp,
        X,
        y,
        cfg,
        sim,
        source_index=None if sim is None else run.source_index,
        n_sources=None if sim is None else run.n_sources,
        progress=progress,
        on_epoch=rec,
    )
    theta = out.theta.to(run.theta.dtype)
    # training is deterministic: only a different machine / thread count can move the last bits
    if not torch.allclose(theta, run.theta, rtol=1e-4, atol=1e-6):
        raise DivergenceError(
            "replaying the run's recipe did not reach its parameters (was it trained by another attrcore "
            "version or on other data?), so its trajectory cannot be recorded; train the run again."
        )
    return rec, time.perf_counter() - t0
