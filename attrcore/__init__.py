"""attrcore: forward-only training data attribution for small MLPs.

Train an MLP while simulating every training source's parameter response, then
attribute any query to the training data with forward evaluations only.

    from attrcore import fit, load_dataset, TrainConfig, SimulationConfig
    run = fit(load_dataset("digits"), simulation=SimulationConfig(horizon=16))
    scores = run.score(run.dataset.X_test[:10], run.dataset.y_test[:10])   # [10, n_train]
"""

from .config import PRESETS, SimulationConfig, TrainConfig
from .data.datasets import BUILTIN_DATASETS, Dataset, load_dataset, load_queries
from .data.sources import Sources, make_sources
from .engine.model import MLP, MLPConfig
from .engine.readout import score
from .engine.train import Progress, train
from .errors import (
    AttrcoreError,
    CancelledError,
    ConfigError,
    DataError,
    DivergenceError,
    RunNotFoundError,
    ShapeError,
)
from .run import TrainedRun, fit
from .store.runstore import RunStore

__all__ = [
    "BUILTIN_DATASETS",
    "PRESETS",
    "MLP",
    "AttrcoreError",
    "CancelledError",
    "ConfigError",
    "DataError",
    "Dataset",
    "DivergenceError",
    "MLPConfig",
    "Progress",
    "RunNotFoundError",
    "RunStore",
    "ShapeError",
    "SimulationConfig",
    "Sources",
    "TrainConfig",
    "TrainedRun",
    "fit",
    "load_dataset",
    "load_queries",
    "make_sources",
    "score",
    "train",
]
