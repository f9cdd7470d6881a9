"""The options of attrcore, defined once: validated dataclasses whose fields carry their
default, choices, help and front-end names, plus the run spec and presets.

Interface:

- :class:`TrainConfig`, :class:`SimulationConfig`: each field is declared with
  :func:`option` (default, ``help``, ``choices``, the CLI ``flag``, the app ``label``);
  :func:`options` lists them as :class:`Option` records. The CLI generates its flags from
  them (:func:`attrcore.cli.common.add_options`) and the Train page takes its widgets'
  defaults, choices and help from them, so adding a field with :func:`option` is all it
  takes to add a flag.
- :class:`Horizon`: the horizon K, steps or full, with one meaning per scheme.
- :class:`RunSpec`: the typed record of everything that defines a run (data, model,
  training, simulation, sources); its ``to_dict`` is the config the run store records.
- :func:`parse_hidden` (the one parser of hidden-layer widths) and :func:`fingerprint`
  (the one fingerprint of JSON-able settings).

Each config turns into a plain JSON dict (``to_dict``) and back (``from_dict``), which is
what the run store records and what fingerprints are computed from. Errors name options
by their Python names in backticks; each front end renders them in its own words.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields

from .errors import ConfigError

LR_SCHEDULES = ("constant", "step", "cosine")
SCHEMES = ("trajectory", "stationary", "none")
DTYPES = ("float32", "float64")
CURVATURES = ("hessian", "gauss-newton")
EKFAC_DECAYS = ("exp", "discrete")
BACKENDS = ("mlp", "func")
RESPONSE_DTYPES = ("float16", "float32", "float64")
COMPRESSIONS = ("svd", "query-aware")  # how dense responses are factorised (engine/query_compress.py)
MAX_WIDTH = 4096  # widest hidden layer accepted


def fingerprint(obj: object) -> str:
    """Short sha256 of the canonical JSON of ``obj`` (JSON-able settings only)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- options


def option(
    default,
    help: str,
    *,
    choices: Sequence | None = None,
    flag: str | None = None,
    label: str | None = None,
    type: Callable | None = None,
    cli: bool = True,
    dest: str | None = None,
    metavar: str | None = None,
    nargs: str | None = None,
    required: bool = False,
):
    """A dataclass field with its metadata: ``help`` (one line), ``choices``, the CLI
    ``flag`` (default ``--`` + the name with dashes; ``cli=False``: no flag), the app
    ``label`` (default: the name with spaces) and ``type`` (how the CLI parses a value;
    default: the type of ``default``). For the command line only: ``dest`` (the attribute
    the parsed value lands in; default the name), ``metavar``, ``nargs`` and ``required``."""
    meta = {
        "help": help,
        "choices": None if choices is None else tuple(choices),
        "flag": flag,
        "label": label,
        "type": type,
        "cli": cli,
        "dest": dest,
        "metavar": metavar,
        "nargs": nargs,
        "required": required,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Option:
    """One option as the front ends see it."""

    name: str
    default: object
    help: str
    choices: tuple | None
    flag: str | None  # None: not on the command line
    label: str
    type: Callable
    dest: str = ""  # where the CLI stores the value (default: the name)
    metavar: str | None = None
    nargs: str | None = None
    required: bool = False


def options(cls) -> dict[str, Option]:
    """The :func:`option` fields of a config class, in declaration order."""
    out = {}
    for f in fields(cls):
        m = f.metadata
        if "help" not in m:
            continue
        default = None if f.default is MISSING else f.default
        out[f.name] = Option(
            name=f.name,
            default=default,
            help=m["help"],
            choices=m["choices"],
            flag=(m["flag"] or "--" + f.name.replace("_", "-")) if m["cli"] else None,
            label=m["label"] or f.name.replace("_", " "),
            type=m["type"] or (type(default) if default is not None else str),
            dest=m.get("dest") or f.name,
            metavar=m.get("metavar"),
            nargs=m.get("nargs"),
            required=bool(m.get("required")),
        )
    return out


def _check_choice(name: str, value, choices: tuple, what: str | None = None) -> None:
    if value not in choices:
        raise ConfigError(
            f"unknown {what or name.replace('_', ' ')} {value!r} (`{name}`); choose {', '.join(map(str, choices))}."
        )


# ----------------------------------------------------------------------------- horizon


@dataclass(frozen=True)
class Horizon:
    """The horizon K: a number of steps, or the full run.

    One meaning per scheme (:meth:`meaning`):

    - ``trajectory``: each injection of a source's gradient is propagated through K later
      SGD steps, then frozen; ``full`` follows it to the end of training (the exact
      derivative of the final parameters);
    - ``stationary``: K Neumann steps at the final parameters; ``full`` is not allowed.

    Every conversion goes through this class: :meth:`parse` reads any written form (``"full"``,
    ``"16"``, 16, None = full), ``str`` writes the stored one (``"full"`` / ``"16"``, what run
    configs have always held), :meth:`plot_x` / :meth:`from_plot_x` place it on a log-K axis.
    :attr:`SimulationConfig.horizon` holds :attr:`steps` (``int | None``; it takes a
    :class:`Horizon` too), so the engine reads a plain number; the :class:`Horizon` of a
    config is :attr:`SimulationConfig.horizon_value`.
    """

    steps: int | None  # None = full

    PLOT_FULL = 4096.0  # where "full" sits on a log-K axis (beyond every K a benchmark uses)

    def __post_init__(self) -> None:
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0
        ):
            raise ConfigError(f"horizon must be a whole number ≥ 0 or 'full' (`horizon`), got {self.steps!r}.")

    @classmethod
    def parse(cls, value: Horizon | int | str | None) -> Horizon:
        """``'full'``/None → full; ``16``/``'16'`` → 16 steps; anything else → ConfigError."""
        if isinstance(value, Horizon):
            return value
        if value is None or (isinstance(value, str) and value.strip().lower() == "full"):
            return cls(None)
        if isinstance(value, bool):
            raise ConfigError(f"horizon must be a whole number ≥ 0 or 'full' (`horizon`), got {value!r}.")
        try:
            k = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"horizon must be a whole number ≥ 0 or 'full' (`horizon`), got {value!r}.") from None
        if k < 0 or (not isinstance(value, int) and str(k) != str(value).strip()):
            raise ConfigError(f"horizon must be a whole number ≥ 0 or 'full' (`horizon`), got {value!r}.")
        return cls(k)

    @property
    def full(self) -> bool:
        return self.steps is None

    def __str__(self) -> str:
        return "full" if self.steps is None else str(self.steps)

    def plot_x(self) -> float:
        """The x position of this horizon on a log-K axis (:attr:`PLOT_FULL` for full)."""
        return self.PLOT_FULL if self.steps is None else float(self.steps)

    @classmethod
    def from_plot_x(cls, x: float) -> Horizon:
        """The horizon at position ``x`` of a log-K axis (the inverse of :meth:`plot_x`)."""
        return cls(None) if x == cls.PLOT_FULL else cls(int(x))

    @staticmethod
    def meaning(scheme: str) -> str:
        return {
            "trajectory": "SGD steps each contribution is followed (full: to the end of training)",
            "stationary": "Neumann steps at the final parameters",
        }.get(scheme, "not used")


def parse_horizon(value: Horizon | int | str | None) -> int | None:
    """``'full'``/None → None; an integer (string) → int; anything else → ConfigError."""
    return Horizon.parse(value).steps


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
            f"rank must be a whole number ≥ 1, 'auto' or 'dense' (`rank`), got {value!r}; 256 keeps the quality "
            "of dense responses on the benchmark tasks."
        )
    return r


# ----------------------------------------------------------------------------- data

STANDARDIZE = ("auto", "on", "off")


@dataclass(frozen=True)
class DataConfig:
    """Which data, how it is split and noised: the options of
    :func:`attrcore.data.load_dataset`, which checks them (``load_dataset(**cfg.kwargs())``).

    ``standardize`` is written ``auto`` (on for user tables, the built-in's own choice
    otherwise), ``on`` or ``off``; ``kwargs`` turns it into load_dataset's None / True / False.
    """

    source: str = option(
        "digits",
        "built-in dataset (digits, mnist1d, breast_cancer, moons) or an NPZ/CSV path",
        flag="--train",
        dest="train",
        metavar="TRAIN",
        label="data set",
    )
    label_column: str | None = option(None, "CSV: the column holding the labels", type=str)
    group_column: str | None = option(None, "CSV: a column whose values define sources (sources: group)", type=str)
    test_fraction: float | None = option(
        None, "held-out fraction (default 0.2); 0 = train on every row (no test split)", type=float
    )
    eval_source: str | None = option(
        None,
        "your own evaluation set (NPZ/CSV with the training features and labels): every training row is "
        "trained on and FILE is the test split",
        type=str,
        flag="--eval",
        metavar="FILE",
        label="evaluation file",
    )
    standardize: str = option(
        "auto",
        "rescale features to mean 0, sd 1 with training statistics (auto: on for "
        "user tables, the built-in's own choice otherwise)",
        choices=STANDARDIZE,
        label="standardise the features",
    )
    seed: int = option(
        0, "seed of the train/test split (default 0)", flag="--split-seed", dest="split_seed", label="split seed"
    )
    label_noise: float = option(0.0, "fraction of training labels to flip")
    n_samples: int | None = option(None, "moons: number of points", type=int, label="points")
    noise: float | None = option(None, "moons: noise level", type=float)
    noise_pairs: str | None = option(
        None, "class-conditional label noise, e.g. '7:1,2:5' (examples of class 7 get label 1)", type=str, cli=False
    )
    noise_seed: int | None = option(
        None, "seed of the label noise alone (default: the split seed)", type=int, cli=False
    )

    def __post_init__(self) -> None:
        _check_choice("standardize", self.standardize, STANDARDIZE, "standardisation")

    def kwargs(self) -> dict:
        """The keyword arguments of :func:`attrcore.data.load_dataset`."""
        d = asdict(self)
        d["standardize"] = {"auto": None, "on": True, "off": False}[self.standardize]
        return d


# ----------------------------------------------------------------------------- model


def parse_hidden(value: str | int | Sequence[str | int] | None) -> tuple[int, ...]:
    """Hidden layer widths: ``"128, 64"``, ``"64 32"``, ``"64x32"``, ``["128", "64"]`` or
    ``(128, 64)`` → ``(128, 64)``; empty, ``"none"``, ``"0"`` or ``"-"`` → ``()`` (logistic
    regression). The one parser for the CLI, the app and Python."""
    if value is None:
        return ()
    text = " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    parts = [p for p in re.split(r"[\s,;x]+", text.strip()) if p]
    if not parts or (len(parts) == 1 and parts[0].lower() in ("none", "0", "-")):
        return ()
    out = []
    for p in parts:
        if not p.isdigit() or not 1 <= int(p) <= MAX_WIDTH:
            raise ConfigError(
                f"`hidden` takes layer widths, whole numbers from 1 to {MAX_WIDTH} separated by commas or "
                f"spaces, e.g. '128' or '64, 32' ('none' for logistic regression); got {p!r}."
            )
        out.append(int(p))
    return tuple(out)


@dataclass(frozen=True)
class TrainConfig:
    """SGD training. Batch order and initialisation come from ``seed``."""

    epochs: int = option(30, "passes over the training set")
    lr: float = option(0.1, "learning rate", label="learning rate")
    batch_size: int = option(64, "examples per SGD step")
    momentum: float = option(0.0, "SGD momentum (0 = plain SGD)")
    weight_decay: float = option(1e-4, "L2 penalty on the weights")
    lr_schedule: str = option("constant", "learning-rate schedule", choices=LR_SCHEDULES, label="LR schedule")
    step_every: int = option(10, "step schedule: epochs between decays", cli=False)
    step_gamma: float = option(0.1, "step schedule: decay factor", cli=False)
    seed: int = option(
        0, "seed of initialisation and batch order", label="training seed (initialisation and batch order)"
    )
    dtype: str = option("float32", "floating-point precision of training", choices=DTYPES)
    drop_last: bool = option(False, "drop the last incomplete batch of each epoch", cli=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, int) and 1 <= self.epochs <= 100_000):
            raise ConfigError(f"epochs must be a whole number from 1 to 100000 (`epochs`), got {self.epochs}.")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 100):
            raise ConfigError(
                f"learning rate must be in (0, 100] (`lr`), got {self.lr}; typical values are 0.01 to 0.5."
            )
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"batch size must be a whole number ≥ 1 (`batch_size`), got {self.batch_size}.")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1) (`momentum`), got {self.momentum}; 0.9 is common.")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight decay must be ≥ 0 (`weight_decay`), got {self.weight_decay}.")
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES, "learning-rate schedule")
        if self.step_every < 1 or not 0 < self.step_gamma <= 1:
            raise ConfigError("step schedule needs step_every ≥ 1 and step_gamma in (0, 1].")
        _check_choice("dtype", self.dtype, DTYPES)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainConfig:
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

    ``horizon`` is a number of steps, None (full) or a :class:`Horizon`; the field holds the
    steps (``int | None``), which is what the engine reads, and :attr:`horizon_value` is
    the :class:`Horizon`. Written forms (``"full"``, ``"16"``) go through
    :meth:`Horizon.parse`: :meth:`with_horizon`, :meth:`from_dict` (the stored JSON keeps
    ``"full"`` / ``"16"``) and the CLI.
    """

    scheme: str = option("trajectory", "how responses are simulated (none = train only)", choices=SCHEMES)
    horizon: int | None = option(
        None, "K: an integer ≥ 0, or 'full' (trajectory)", type=Horizon.parse, label="horizon K"
    )
    curvature: str = option(
        "hessian",
        "curvature of the training loss used in the simulation (ekfac: "
        "trajectory only, continuous-time propagation in a per-segment EK-FAC eigenbasis)",
        choices=(*CURVATURES, "ekfac"),
    )
    damping: float = option(0.01, "stationary: λ added to the curvature")
    step_size: float | None = option(None, "stationary: Neumann step α (default 1/λ_max)", type=float)
    curvature_batch_size: int | None = option(
        None, "stationary: curvature mini-batch (default all data)", type=int, flag="--curvature-batch"
    )
    backend: str = option("mlp", "mlp (fast, per layer) or func (torch.func reference)", choices=BACKENDS, cli=False)
    memory_budget_mb: float = option(
        2048.0, "MB of working memory for simulation", flag="--memory-budget", label="memory budget (MB)"
    )
    response_dtype: str | None = option(
        None, "storage precision of responses (default: the training dtype)", choices=RESPONSE_DTYPES, type=str
    )
    # compressed responses Δ ≈ C Qᵀ (engine/compress.py): None = dense, an int r = rank r,
    # "auto" = compressed (rank 256) only where that is clearly cheaper (see resolve_rank)
    rank: int | str | None = option(
        "auto",
        "compressed responses Δ ≈ C Qᵀ of rank R; 'dense' = none; 'auto' (default) = rank 256 where it "
        "is ≥ 8× smaller than dense and m ≥ 1024 (full horizon or stationary), else dense",
        type=parse_rank,
        label="rank",
    )
    power_iterations: int = option(1, "compressed: power iterations of the range finder (default 1)")
    compression: str = option(
        "svd",
        "compressed: how Δ is factorised: svd (Δ's own top directions; the sketched full horizon) or "
        "query-aware (the dense responses, then the best rank R for the training points' own measurement "
        "gradients)",
        choices=COMPRESSIONS,
    )
    segment_steps: int | None = option(
        None, "ekfac: training steps per curvature segment (default: one epoch)", type=int
    )
    ekfac_decay: str = option(
        "exp",
        "ekfac: map of each eigen-mode over the steps after an injection: exp (continuous time, "
        "exp(−η_eff τ λ)) or discrete (Π (1 − η_eff λ) where η_eff λ < 2, exp where the discrete map is unstable)",
        choices=EKFAC_DECAYS,
    )
    ekfac_rank: int = option(
        0,
        "ekfac: the top R eigen-directions of each segment's whole-network Gauss–Newton matrix (across "
        "layers, by subspace iteration) propagated exactly, EK-FAC on the rest; 0 = EK-FAC only",
        type=int,
    )
    ekfac_rank_iterations: int = option(
        4, "ekfac: subspace iterations per segment for the top eigen-directions (3× in the first segment)"
    )

    def __post_init__(self) -> None:
        _check_choice("scheme", self.scheme, SCHEMES)
        # a number of steps, None (full) or a Horizon (written forms: from_dict / with_horizon)
        horizon = self.horizon if isinstance(self.horizon, Horizon) else Horizon(self.horizon)
        object.__setattr__(self, "horizon", horizon.steps)
        if self.scheme == "stationary" and (self.horizon is None or self.horizon < 1):
            raise ConfigError(
                "the stationary scheme needs a number of Neumann steps: set `horizon` to K ≥ 1 (e.g. 100)."
            )
        _check_choice("curvature", self.curvature, (*CURVATURES, "ekfac"))
        if self.curvature == "ekfac" and self.scheme != "trajectory":
            raise ConfigError(
                "the ekfac curvature is a trajectory propagation (continuous-time, per segment) (`curvature`); "
                "use the trajectory scheme, or curvature hessian / gauss-newton for the stationary scheme."
            )
        if self.segment_steps is not None and (
            isinstance(self.segment_steps, bool) or not isinstance(self.segment_steps, int) or self.segment_steps < 1
        ):
            raise ConfigError(
                f"segment steps must be a whole number ≥ 1 or None (one epoch) (`segment_steps`), got "
                f"{self.segment_steps!r}."
            )
        _check_choice("ekfac_decay", self.ekfac_decay, EKFAC_DECAYS, "EK-FAC decay")
        if isinstance(self.ekfac_rank, bool) or not isinstance(self.ekfac_rank, int) or self.ekfac_rank < 0:
            raise ConfigError(f"the EK-FAC rank must be a whole number ≥ 0 (`ekfac_rank`), got {self.ekfac_rank!r}.")
        if not (isinstance(self.ekfac_rank_iterations, int) and 1 <= self.ekfac_rank_iterations <= 100):
            raise ConfigError(
                "the EK-FAC rank iterations must be a whole number from 1 to 100 (`ekfac_rank_iterations`), "
                f"got {self.ekfac_rank_iterations!r}."
            )
        if not (math.isfinite(self.damping) and self.damping >= 0):
            raise ConfigError(f"damping must be ≥ 0 (`damping`), got {self.damping}.")
        if self.step_size is not None and not self.step_size > 0:
            raise ConfigError(f"step size must be > 0 (`step_size`), got {self.step_size}.")
        _check_choice("backend", self.backend, BACKENDS)
        if not self.memory_budget_mb > 0:
            raise ConfigError(f"memory budget must be > 0 MB (`memory_budget_mb`), got {self.memory_budget_mb}.")
        if self.response_dtype is not None:
            _check_choice("response_dtype", self.response_dtype, RESPONSE_DTYPES, "response dtype")
        object.__setattr__(self, "rank", parse_rank(self.rank))
        _check_choice("compression", self.compression, COMPRESSIONS)
        if not (isinstance(self.power_iterations, int) and 0 <= self.power_iterations <= 10):
            raise ConfigError(
                f"power iterations must be a whole number from 0 to 10 (`power_iterations`), got "
                f"{self.power_iterations!r}; 1 is usual."
            )

    @property
    def horizon_value(self) -> Horizon:
        return Horizon(self.horizon)

    @property
    def horizon_label(self) -> str:
        return str(self.horizon_value)

    @classmethod
    def with_horizon(cls, horizon: Horizon | int | str | None, **kwargs) -> SimulationConfig:
        """A config whose horizon is given in any written form (``"full"``, ``"16"``, 16)."""
        return cls(horizon=Horizon.parse(horizon), **kwargs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["horizon"] = str(self.horizon_value)  # the stored form: "full" / "16"
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> SimulationConfig:
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "horizon" in d:
            d["horizon"] = Horizon.parse(d["horizon"])  # stored as "full" / "16"
        return cls(**d)


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
