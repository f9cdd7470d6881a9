"""Validated option dataclasses for training and simulation, with presets.

Each config turns into a plain JSON dict (``to_dict``) and back (``from_dict``), which is
what the run store records and what fingerprints are computed from.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields

from .errors import ConfigError

LR_SCHEDULES = ("constant", "step", "cosine")
SCHEMES = ("trajectory", "stationary", "none")
DTYPES = ("float32", "float64")


def fingerprint(obj: object) -> str:
    """Short sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainConfig:
    """SGD training. Batch order and initialisation come from ``seed``."""

    epochs: int = 30
    lr: float = 0.1
    batch_size: int = 64
    momentum: float = 0.0
    weight_decay: float = 1e-4
    lr_schedule: str = "constant"  # constant | step | cosine
    step_every: int = 10  # step schedule: epochs between decays
    step_gamma: float = 0.1  # step schedule: decay factor
    seed: int = 0
    dtype: str = "float32"
    drop_last: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, int) and 1 <= self.epochs <= 100_000):
            raise ConfigError(f"epochs must be a whole number from 1 to 100000, got {self.epochs}.")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 100):
            raise ConfigError(
                f"learning rate must be in (0, 100], got {self.lr}; typical values are 0.01 to 0.5."
            )
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"batch size must be a whole number ≥ 1, got {self.batch_size}.")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}; 0.9 is common.")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight decay must be ≥ 0, got {self.weight_decay}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"unknown learning-rate schedule {self.lr_schedule!r}; choose {', '.join(LR_SCHEDULES)}."
            )
        if self.step_every < 1 or not 0 < self.step_gamma <= 1:
            raise ConfigError("step schedule needs step_every ≥ 1 and step_gamma in (0, 1].")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class SimulationConfig:
    """How each source's parameter response Δ_j is simulated.

    - ``scheme="trajectory"``: differentiate the real SGD run; each injection of a
      source's gradient is propagated through ``horizon`` later steps (``None`` = full
      horizon = the exact derivative of the final parameters), then frozen.
    - ``scheme="stationary"``: ``horizon`` Neumann steps at the final parameters towards
      −(H + damping·I)⁻¹ ḡ_j (``None`` is not allowed here).
    - ``scheme="none"``: train only.
    """

    scheme: str = "trajectory"
    horizon: int | None = None  # None = full (trajectory only)
    curvature: str = "hessian"  # hessian | gauss-newton
    damping: float = 0.01  # stationary only: λ added to H (on top of weight decay)
    step_size: float | None = None  # stationary only: Neumann α; None = 1/λ_max (power iteration)
    curvature_batch_size: int | None = None  # stationary only: None = whole training set
    backend: str = "mlp"  # mlp (fast, per layer) | func (torch.func reference)
    memory_budget_mb: float = 2048.0  # cap on the simulation's working memory
    response_dtype: str | None = None  # None = training dtype; float16 halves storage
    # compressed responses Δ ≈ C Qᵀ (engine/compress.py): None = dense, an int r = rank r,
    # "auto" = compressed (rank 256) only where that is clearly cheaper (see resolve_rank)
    rank: int | str | None = "auto"
    power_iterations: int = 1  # compressed only: power iterations of the range finder

    def __post_init__(self) -> None:
        from .engine.curvature import CURVATURES

        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown scheme {self.scheme!r}; choose {', '.join(SCHEMES)}.")
        if self.horizon is not None and (not isinstance(self.horizon, int) or self.horizon < 0):
            raise ConfigError(
                f"horizon must be a whole number ≥ 0 or 'full', got {self.horizon!r}."
            )
        if self.scheme == "stationary" and (self.horizon is None or self.horizon < 1):
            raise ConfigError(
                "the stationary scheme needs a number of Neumann steps: pass --horizon K with K ≥ 1 (e.g. 100)."
            )
        if self.curvature not in CURVATURES:
            raise ConfigError(f"unknown curvature {self.curvature!r}; choose {', '.join(CURVATURES)}.")
        if not (math.isfinite(self.damping) and self.damping >= 0):
            raise ConfigError(f"damping must be ≥ 0, got {self.damping}.")
        if self.step_size is not None and not self.step_size > 0:
            raise ConfigError(f"step size must be > 0, got {self.step_size}.")
        if self.backend not in ("mlp", "func"):
            raise ConfigError(f"backend must be 'mlp' or 'func', got {self.backend!r}.")
        if not self.memory_budget_mb > 0:
            raise ConfigError(f"memory budget must be > 0 MB, got {self.memory_budget_mb}.")
        if self.response_dtype not in (None, "float16", "float32", "float64"):
            raise ConfigError("response dtype must be float16, float32 or float64.")
        object.__setattr__(self, "rank", parse_rank(self.rank))
        if not (isinstance(self.power_iterations, int) and 0 <= self.power_iterations <= 10):
            raise ConfigError(
                f"power iterations must be a whole number from 0 to 10, got {self.power_iterations!r}; 1 is usual."
            )

    @property
    def horizon_label(self) -> str:
        return "full" if self.horizon is None else str(self.horizon)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["horizon"] = self.horizon_label
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SimulationConfig:
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "horizon" in d:
            d["horizon"] = parse_horizon(d["horizon"])
        return cls(**d)


def parse_rank(value: int | str | None) -> int | str | None:
    """``None``/'dense'/'none' → None (dense); 'auto' → 'auto'; a whole number ≥ 1 → int."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("dense", "none")):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        r = int(value)
    except (TypeError, ValueError):
        r = None
    if r is None or r < 1 or isinstance(value, float) and value != r or isinstance(value, bool):
        raise ConfigError(
            f"rank must be a whole number ≥ 1, 'auto' or 'dense', got {value!r}; 256 keeps the quality of "
            "dense responses on the benchmark tasks."
        )
    return r


def parse_horizon(value: int | str | None) -> int | None:
    """``'full'``/None → None; an integer string → int; anything else → ConfigError."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "full"):
        return None
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"horizon must be a whole number ≥ 0 or 'full', got {value!r}.") from None
    if k < 0 or str(k) != str(value).strip() and not isinstance(value, int):
        raise ConfigError(f"horizon must be a whole number ≥ 0 or 'full', got {value!r}.")
    return k


PRESETS: dict[str, dict] = {
    # The project's reference task (issue #2): digits, MLP 64-128-10, plain SGD.
    "digits-mlp": {
        "data": {"source": "digits", "seed": 0, "test_fraction": 0.2},
        "model": {"hidden": [128], "activation": "relu"},
        "train": {"epochs": 30, "lr": 0.1, "batch_size": 64, "momentum": 0.0, "weight_decay": 1e-4, "seed": 0},
        "simulation": {"scheme": "trajectory", "horizon": "full"},
        "sources": "example",
    },
}
