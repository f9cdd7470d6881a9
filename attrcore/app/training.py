"""Train page view model: the data choice, the train request, progress text, the demo run."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import DataConfig, SimulationConfig, TrainConfig, fingerprint, options, parse_hidden  # noqa: F401  (parse_hidden: for the page)
from ..data import uploads
from ..data.datasets import BUILTIN_DATASETS, Dataset, load_dataset
from ..engine.train import Progress
from ..errors import AttrcoreError, ConfigError
from ..run import TrainedRun, fit
from ..store.runstore import RunStore

DEMO_RUN = "digits-demo"


# ----------------------------------------------------------------------------- options

# what the pages call the options that are not config fields
_EXTRA_LABELS = {
    "hidden": "hidden layer widths",
    "models": "number of models",
    "overwrite": "overwrite if it exists",
    "sources": "sources",
    "measure": "measurement",
    "target_class": "target class",
    "query_file": "a query file",
    "test_fraction": "test fraction",
    "eval_source": "evaluation file",
}
OPTION_LABELS: dict[str, str] = {  # training's `seed` is named after the data's split seed
    o.name: o.label for cls in (DataConfig, TrainConfig, SimulationConfig) for o in options(cls).values()
} | _EXTRA_LABELS


def error_text(err: AttrcoreError) -> str:
    """An error's message in the page's words: each option named by its widget label."""
    return err.render(OPTION_LABELS)


def widget_args(cls, name: str, **overrides) -> dict:
    """``label``, ``value`` (the default) and ``help`` of option ``name`` of config class
    ``cls`` for a Streamlit widget (``options=`` too when it has choices); ``overrides``
    replace any of them (e.g. a page's own starting value)."""
    o = options(cls)[name]
    out = {"label": o.label, "help": o.help}
    if o.choices:
        out["options"] = list(o.choices)
    else:
        out["value"] = o.default
    return out | overrides


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataChoice:
    """The dataset options of the Train page; ``load()`` is ``attrcore.load_dataset``."""

    source: str
    seed: int = 0
    test_fraction: float = 0.2
    label_noise: float = 0.0
    label_column: str | None = None
    group_column: str | None = None
    n_samples: int | None = None
    noise: float | None = None
    eval_source: str | None = None  # the user's own evaluation file: then no split
    standardize: bool | None = None  # None: on for uploaded files, the built-in's own choice

    def kwargs(self) -> dict:
        d = asdict(self)
        if self.eval_source is not None:
            d["test_fraction"] = 0.0  # every training row is trained on
        return d

    def load(self) -> Dataset:
        return load_dataset(**self.kwargs())


@dataclass(frozen=True)
class Upload:
    """A file the Train page received and kept: its path in the store and, for a CSV, its
    header (``columns``) with the likeliest label column (``label_index``)."""

    path: Path
    columns: tuple[str, ...] | None = None
    label_index: int = 0


def receive_upload(home: str | Path, filename: str, data: bytes) -> Upload:
    """Keep an uploaded CSV / NPZ (content-addressed, :func:`attrcore.data.uploads.save_upload`)
    and read what the page offers next (a CSV's columns). A file that cannot be used raises
    :class:`~attrcore.errors.DataError` and is not kept."""
    path = uploads.save_upload(home, filename, data)
    if path.suffix != ".csv":
        return Upload(path)
    try:
        columns = tuple(uploads.csv_columns(path))
    except AttrcoreError:
        uploads.discard_upload(home, path)
        raise
    return Upload(path, columns, uploads.guess_label_column(columns))


def load_choice(home: str | Path, choice: DataChoice, load: Callable[[DataChoice], Dataset] | None = None) -> Dataset:
    """Load the chosen data (``load``, default ``choice.load()``: the page passes its cached
    loader). When it fails, the uploads it named (data file, evaluation file) are deleted
    unless a run uses them, and the error is raised again."""
    try:
        return choice.load() if load is None else load(choice)
    except AttrcoreError:
        for path in (choice.source, choice.eval_source):
            if path is not None:  # a built-in name or a user's own path is no upload: left alone
                uploads.discard_upload(home, path)
        raise


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainRequest:
    """Everything the Train page asks for: data, model, optimiser, simulation, run name."""

    data: DataChoice
    name: str
    hidden: tuple[int, ...] = (128,)
    activation: str = "relu"
    train: TrainConfig = field(default_factory=TrainConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    sources: str = "example"
    overwrite: bool = False

    def fingerprint(self) -> str:
        return fingerprint(
            {
                "data": self.data.kwargs(),
                "hidden": list(self.hidden),
                "activation": self.activation,
                "train": self.train.to_dict(),
                "simulation": self.simulation.to_dict(),
                "sources": self.sources,
            }
        )

    def fit_and_save(self, store: RunStore, progress: Callable | None = None) -> TrainedRun:
        """Train, simulate, then save atomically; a cancelled or failed run saves nothing.

        Everything is checked before training starts (the name too), so a bad setting never
        throws a finished run away.
        """
        if not self.overwrite and store.exists(self.name):
            raise ConfigError(f"a run named {self.name!r} exists; pick another name or tick 'overwrite'.")
        store.check_can_save(self.name, self.overwrite)
        files = [f for f in (self.data.source, self.data.eval_source) if f is not None]

        def keep_files_alive(p):  # an upload being trained on is in use: the store keeps it
            now = time.monotonic()
            if now - last[0] > 30:
                last[0] = now
                for f in files:
                    store.touch_upload(f)
            return None if progress is None else progress(p)

        last = [time.monotonic()]
        for f in files:
            store.touch_upload(f)
        run = fit(
            self.data.load(),
            hidden=self.hidden,
            activation=self.activation,
            train_config=self.train,
            simulation=self.simulation,
            sources=self.sources,
            progress=keep_files_alive,
        )
        for f in files:
            store.touch_upload(f)
        run.save(store, self.name, overwrite=self.overwrite)
        return run


def default_run_name(data: DataChoice, simulation: SimulationConfig, sources: str) -> str:
    stem = data.source if data.source in BUILTIN_DATASETS else Path(data.source).stem
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem)[:40] or "data"
    tag = {"trajectory": "traj", "stationary": "stat", "none": "plain"}[simulation.scheme]
    k = "" if simulation.scheme == "none" else f"-k{simulation.horizon_label}"
    src = "" if sources == "example" else f"-{sources}"
    return f"{stem}-{tag}{k}{src}"


def demo_request() -> TrainRequest:
    """The digits preset (MLP 64-128-10, plain SGD), shortened so a class demo trains in
    well under a minute: 15 epochs instead of 30 and horizon K = 16 instead of the full run."""
    return TrainRequest(
        data=DataChoice("digits"),
        name=DEMO_RUN,
        hidden=(128,),
        activation="relu",
        train=TrainConfig(epochs=15, lr=0.1, batch_size=64, weight_decay=1e-4, seed=0),
        simulation=SimulationConfig(scheme="trajectory", horizon=16),
        sources="example",
    )


class ProgressAdapter:
    """Adapts attrcore's ``progress`` callback to a user interface.

    ``show(progress, history)`` draws the current state (``history`` = the per-epoch
    metrics so far); ``cancelled()`` is asked after every report and, when it returns
    True, the adapter returns False, which makes attrcore raise ``CancelledError`` before
    anything is saved.
    """

    def __init__(
        self, show: Callable[[Progress, list[dict]], None], cancelled: Callable[[], bool] = lambda: False
    ) -> None:
        self.show, self.cancelled = show, cancelled
        self.history: list[dict] = []

    def __call__(self, p: Progress) -> bool:
        if p.stage == "train" and p.metrics:
            self.history.append(dict(p.metrics))
        self.show(p, self.history)
        return not self.cancelled()


def stage_text(p: Progress) -> str:
    """One readable line for a progress report."""
    if p.stage == "train":
        m = p.metrics
        acc = m.get("test_accuracy", m.get("train_accuracy"))
        tail = f" · loss {m['loss']:.3f}" if "loss" in m else ""
        tail += f" · accuracy {acc:.1%}" if acc is not None else ""
        return f"epoch {p.done}/{p.total}{tail}"
    if p.stage == "stationary":
        return f"simulating responses: Neumann step {p.done}/{p.total}"
    return f"{p.stage}: {p.done}/{p.total}"
