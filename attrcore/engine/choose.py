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

The EK-FAC responses are dense (m × p); where rank :data:`QUERY_AWARE_RANK` is ≥ 8× smaller
they are compressed *query-aware* (:mod:`attrcore.engine.query_compress`: the best rank-r
factorisation for the training points' own measurement gradients), which keeps LDS above
TRAK-10 at under a tenth of its readout time on mnist1d-mlp (0.299 vs 0.266 at 0.06–0.09×; the
dense 0.394 reads out at 0.7–1.3× TRAK-10's time; a plain SVD of Δ at r = 256 only reached 0.205).

On digits-mlp the EK-FAC map at K = 16 loses most of the exact one (0.402 vs 0.530): the
block-diagonal Kronecker form drops the cross-layer curvature (the exact per-step GN without
its cross-layer blocks: 0.440) and its basis misses the top directions; propagating the top
:data:`EKFAC_RANK` = 32 eigen-directions of each segment's whole-network GN exactly
(``ekfac_rank``) gives 0.524, within 0.006 of exact, at about the exact scheme's time there
(benchmarks/ekfac-study-digits-mlp.md). At the full horizon the rank does not help (0.486 vs
EK-FAC 0.485; exact 0.507).

So the rule: with a small effective step (≤ :data:`SMALL_STEP`) the discrete tangent map
is close to its continuous-time limit and the exact Hessian propagation is trustworthy: use
the exact trajectory at K = 16 when its cost (K·B tangents per step) fits
:data:`EXACT_BUDGET_FLOP`, and the EK-FAC trajectory at K = 16 with rank :data:`EKFAC_RANK`
(its measured stand-in) when it does not. With a large effective step (momentum) use the
EK-FAC trajectory over the full horizon, one curvature segment per epoch. Its working state
is the dense response (m × p numbers; a finite horizon adds the injections): the default
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
# digits-mlp K = 16, random-seed LDS: EK-FAC rank 32 0.524 (rank 16: see the study), exact 0.530, EK-FAC 0.402
EKFAC_RANK = 32
# The EK-FAC responses are compressed query-aware to this rank when it is ≥ 8× smaller than dense.
# mnist1d-mlp (benchmarks/query-compress-mnist1d-mlp-full.md, random-seed LDS, readout vs TRAK-10 in
# the same run): dense 0.394 at 1.27× TRAK-10's time; query-aware r = 256: 0.260, 0.057×; r = 512:
# 0.317, 0.126× (plain SVD of Δ r = 512: 0.276); with rows normalised r = 384: 0.298, r = 448: 0.312.
# benchmarks/query-compress-mnist1d-mlp-default.md (rows normalised, another same-run timing): r = 384
# 0.299 at 0.064× TRAK-10, r = 512 0.324 at 0.081×. Timing ratios moved 1.5× between the two runs, so
# 384 is the rank that stays under a tenth of TRAK-10's in both (readout is linear in r).
QUERY_AWARE_RANK = 384
QUERY_AWARE_MEASURED = (
    "mnist1d-mlp: random-seed LDS 0.299 against 0.394 dense and 0.266 for TRAK-10, readout 0.06–0.09× TRAK-10's"
)


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
    # query-aware compression (engine/query_compress.py) where rank QUERY_AWARE_RANK is clearly
    # smaller than dense (the auto rule of resolve_rank: m·p ≥ 8·r·(p + m)); a plain SVD of these
    # responses keeps the flat, undamped directions the queries barely see
    r = QUERY_AWARE_RANK
    compress = m * p >= 8 * r * (p + m)
    # the dense responses, and when compressing also M = G Δᵀ [n, m] and the float64 factors
    need_mb = state_mb + ((n_train * m * 8 + 2 * r * p * 8 + r * (p + m) * itemsize) / 2**20 if compress else 0.0)
    small = eta_eff <= SMALL_STEP  # here only because exact K = 16 costs too much
    if small:  # a finite horizon keeps the injections beside the response (another m × p block)
        need_mb += state_mb
    if not given and budget < 1.25 * need_mb <= AUTO_BUDGET_MB:
        budget = 1.25 * need_mb
    cfg = SimulationConfig(
        scheme="trajectory",
        horizon=EXACT_HORIZON if small else None,
        curvature="ekfac",
        ekfac_rank=EKFAC_RANK if small else 0,
        memory_budget_mb=budget,
        rank=r if compress else None,
        compression="query-aware" if compress else "svd",
    )
    why = (
        f"the effective step η/(1 − μ) = {eta_eff:.3g} is large (> {SMALL_STEP}): the exact discrete map "
        "amplifies the top curvature directions"
        if not small
        else f"the effective step η/(1 − μ) = {eta_eff:.3g} is small (≤ {SMALL_STEP}) but exact K = "
        f"{EXACT_HORIZON} would cost ~{flop:.1e} flop (> {EXACT_BUDGET_FLOP:.0e})"
    )
    stored = (
        f"compressed query-aware to rank {r} ({m * p / (r * (p + m)):.1f}× smaller; {QUERY_AWARE_MEASURED}; "
        "`rank` dense keeps them all)"
        if compress
        else f"kept dense (rank {r} would not be ≥ 8× smaller)"
    )
    if small:
        reason = (
            f"ekfac trajectory, horizon {EXACT_HORIZON}, the top {EKFAC_RANK} whole-network Gauss–Newton "
            f"directions of each segment propagated exactly (ekfac_rank), one segment per epoch "
            f"({steps_per_epoch} steps): {why}. {m} sources × {p} parameters = {state_mb:.0f} MB of dense "
            f"responses, {stored}. Measured on digits-mlp at K = {EXACT_HORIZON}: random-seed LDS 0.524 against "
            "0.530 for the exact propagation (plain EK-FAC 0.402, full horizon 0.485)."
        )
        return SimulationChoice(cfg, reason)
    reason = (
        f"ekfac trajectory, full horizon, one curvature segment per epoch ({steps_per_epoch} steps): {why}; "
        f"the continuous-time EK-FAC map is contractive. {m} sources × {p} parameters = {state_mb:.0f} MB of "
        f"dense responses, {stored}. Measured best per unit of time on mnist1d-mlp (random-seed LDS 0.39 dense "
        "vs TRAK-10 0.27)."
    )
    return SimulationChoice(cfg, reason)
