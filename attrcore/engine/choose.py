"""The simulation a run gets when the user sets no simulation option, chosen from measurements.

Interface: :func:`choose_simulation` ``(model, train, n_train, n_sources, memory_budget_mb)
-> SimulationChoice(config, reason)``, a pure function of the model, the training recipe and
the data size; ``fit``, ``train`` and ``attribute`` call it when no simulation option is
given, and the run records the reason (``show`` prints it).

What the measurements say (random-seed LDS, 100 subsets at α = 0.5, figures in
``benchmarks/mnist1d-mlp.md`` and the README's propagation section):

- mnist1d-mlp (p = 78,858, m = 4,000, SGD momentum 0.9, lr 0.1: effective step
  η/(1 − μ) = 1): the exact discrete propagation mostly carries the instability of the run
  (exact K = 16: LDS 0.07 for 3,098 s; K = 0: 0.19), while the continuous-time EK-FAC
  propagation over the full horizon reaches 0.39–0.40 (TRAK-10: 0.27), with one curvature
  segment per epoch or per five epochs alike;
- digits-mlp (p = 9,610, m = 1,437, plain SGD lr 0.1: effective step 0.1): the exact
  propagation is stable and the best per unit of time (K = 16: 0.530, full: 0.507), the
  EK-FAC full horizon slightly below (0.485).

So the rule: with a small effective step (≤ :data:`SMALL_STEP`) the discrete tangent map
is close to its continuous-time limit and the exact Hessian propagation is trustworthy: use
the exact trajectory at K = 16 when its cost (K·B tangents per step) fits
:data:`EXACT_BUDGET_FLOP`. Otherwise — a large effective step (momentum) or a model too
big for exact products — use the EK-FAC trajectory over the full horizon, one curvature
segment per epoch. Its working state is the dense response (m × p numbers): the default
memory budget is raised to fit it up to :data:`AUTO_BUDGET_MB` (a given budget is kept);
beyond that the simulator refuses with the fix (group the sources).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import SimulationConfig, TrainConfig
from .model import MLPConfig

AUTO_BUDGET_MB = 8192.0  # the largest dense state the default raises the budget for
SMALL_STEP = 0.25  # η / (1 − μ) at or below which the exact discrete propagation is used
EXACT_HORIZON = 16
# ~2 minutes of exact products on these 2-core machines (digits-mlp K = 16: 2.6e12, 27 s;
# mnist1d-mlp K = 16: 9e13, 3,098 s)
EXACT_BUDGET_FLOP = 1e13


@dataclass(frozen=True)
class SimulationChoice:
    """A simulation config and, in words, why it was chosen."""

    config: SimulationConfig
    reason: str


def exact_short_horizon_flop(model: MLPConfig, train: TrainConfig, n_train: int, horizon: int) -> float:
    """Rough multiply-adds ×2 of the exact short horizon: K·B tangents per step, each curvature
    product ~6 GEMM passes of B examples over p parameters."""
    B = min(train.batch_size, n_train)
    steps = train.epochs * -(-n_train // train.batch_size)
    return float(steps) * horizon * B * 6.0 * B * model.n_params


def choose_simulation(
    model: MLPConfig,
    train: TrainConfig,
    n_train: int,
    n_sources: int | None = None,
    memory_budget_mb: float | None = None,
) -> SimulationChoice:
    """The measured-best simulation for this model and data size (see the module docstring).

    ``memory_budget_mb=None`` lets the choice raise the default budget (2048 MB) to fit the
    dense responses, up to :data:`AUTO_BUDGET_MB`; a given budget is kept as it is.
    """
    m = n_train if n_sources is None else int(n_sources)
    p = model.n_params
    itemsize = 8 if train.dtype == "float64" else 4
    state_mb = m * p * itemsize / 2**20
    steps_per_epoch = -(-n_train // train.batch_size)
    eta_eff = train.lr / (1.0 - train.momentum)
    given = memory_budget_mb is not None
    budget = float(memory_budget_mb) if given else SimulationConfig.memory_budget_mb
    flop = exact_short_horizon_flop(model, train, n_train, EXACT_HORIZON)
    if eta_eff <= SMALL_STEP and flop <= EXACT_BUDGET_FLOP:
        cfg = SimulationConfig(scheme="trajectory", horizon=EXACT_HORIZON, curvature="hessian", memory_budget_mb=budget)
        reason = (
            f"exact trajectory, horizon {EXACT_HORIZON}: the effective step η/(1 − μ) = {eta_eff:.3g} is small "
            f"(≤ {SMALL_STEP}), so the exact propagation is stable, and K = {EXACT_HORIZON} costs ~{flop:.1e} "
            f"flop (≤ {EXACT_BUDGET_FLOP:.0e}). Measured best per unit of time on digits-mlp (random-seed LDS "
            "0.530 vs full horizon 0.507, EK-FAC 0.485)."
        )
        return SimulationChoice(cfg, reason)
    if not given and budget < 1.25 * state_mb <= AUTO_BUDGET_MB:
        budget = 1.25 * state_mb
    # dense: compressing these responses to rank 256 (randomized SVD) measured LDS 0.205 against
    # the dense 0.394 on mnist1d-mlp (the top singular directions of Δ are the undamped flat
    # ones, not those the queries see)
    cfg = SimulationConfig(scheme="trajectory", horizon=None, curvature="ekfac", memory_budget_mb=budget, rank=None)
    why = (
        f"the effective step η/(1 − μ) = {eta_eff:.3g} is large (> {SMALL_STEP}): the exact discrete map "
        "amplifies the top curvature directions"
        if eta_eff > SMALL_STEP
        else f"exact K = {EXACT_HORIZON} would cost ~{flop:.1e} flop (> {EXACT_BUDGET_FLOP:.0e})"
    )
    reason = (
        f"ekfac trajectory, full horizon, one curvature segment per epoch ({steps_per_epoch} steps): {why}; "
        f"the continuous-time EK-FAC map is contractive. {m} sources × {p} parameters = {state_mb:.0f} MB of "
        "dense responses (rank-256 compression measured LDS 0.21 instead of 0.39). Measured best per unit of time "
        "on mnist1d-mlp (random-seed LDS 0.39 vs TRAK-10 0.27)."
    )
    return SimulationChoice(cfg, reason)
