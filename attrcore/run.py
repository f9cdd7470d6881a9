"""A trained, simulated run: what ``fit`` returns, the store saves and the app reopens.

Interface::

    run = fit(load_dataset("digits"), hidden=(128,), train=TrainConfig(...),
              simulation=SimulationConfig(horizon=16), sources="example", progress=cb)
    scores = run.score(X_query, y_query)            # [Q, m], forward evaluations only
    run.save(store, "digits-k16");  TrainedRun.load(store, "digits-k16")

What defines a run is one typed record, :class:`RunSpec` (the dataset spec, the model
shape, the training and simulation options and the sources); ``run.config`` is its JSON
form, which the run store records (store format unchanged). :meth:`RunSpec.from_dict`
also reads what older attrcore versions saved.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from .config import SimulationConfig, TrainConfig, fingerprint
from .data.datasets import Dataset, load_dataset, rebuild_dataset
from .data.sources import Sources, make_sources
from .engine.choose import choose_simulation
from .engine.compress import CompressedResponses, rank_for
from .engine.estimate import EstimateWarning, check_estimate, estimate_training
from .engine.model import MLP, MLPConfig
from .engine.readout import TopK
from .engine.readout import score as readout_score
from .engine.readout import score_to_npy as readout_score_to_npy
from .engine.readout import top_k as readout_top_k
from .engine.tangents import Tangents
from .engine.train import ProgressFn, train
from .errors import ConfigError, ShapeError


@dataclass(frozen=True)
class SourcesSpec:
    """What the score columns are: ``kind`` (example | class | group) and their number ``m``."""

    kind: str
    m: int


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a trained run; ``to_dict`` is what the store records."""

    data: dict  # the dataset spec: load_dataset(**data) rebuilds the data
    model: MLPConfig
    train: TrainConfig
    simulation: SimulationConfig
    sources: SourcesSpec

    def to_dict(self) -> dict:
        return {
            "data": dict(self.data),
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "simulation": self.simulation.to_dict(),
            "sources": {"kind": self.sources.kind, "m": self.sources.m},
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        """The spec of a stored config (any store format so far: format 1 wrote the same
        keys, the horizon as ``"full"`` / ``"16"``; options added since take their defaults)."""
        src = d.get("sources") or {}
        return cls(
            data=dict(d["data"]),
            model=MLPConfig.from_dict(d["model"]),
            train=TrainConfig.from_dict(d.get("train") or {}),
            simulation=SimulationConfig.from_dict(d.get("simulation") or {"scheme": "none"}),
            sources=SourcesSpec(str(src.get("kind", "example")), int(src.get("m", 0))),
        )

    def fingerprint(self) -> str:
        """The fingerprint the store records for a run of this spec."""
        return fingerprint(self.to_dict())


def _is_response(key: str) -> bool:
    """Whether a stored tensor is part of the responses (dense or compressed factors)."""
    return key.startswith(("responses.", "compressed."))


@dataclass
class TrainedRun:
    spec: RunSpec
    mlp: MLP
    theta: Tensor  # [p]
    # m tangents stored layer by layer, or the rank-r factors Δ ≈ C Qᵀ (engine/compress.py)
    responses: Tangents | CompressedResponses | None
    source_index: np.ndarray  # [n_train] source id of each training example
    source_names: tuple[str, ...]
    history: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    name: str | None = None
    recorded: dict | None = None  # the config exactly as the store holds it (loaded runs)
    simulation_reason: str | None = None  # why this simulation (the measured default), None: set explicitly

    # ---- views --------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """The config as recorded in the store (a loaded run, whatever version saved it),
        else the JSON form of :attr:`spec`."""
        return self.recorded if self.recorded is not None else self.spec.to_dict()

    @property
    def n_sources(self) -> int:
        return len(self.source_names)

    @property
    def simulation(self) -> SimulationConfig:
        return self.spec.simulation

    @property
    def train_config(self) -> TrainConfig:
        return self.spec.train

    @property
    def sources_kind(self) -> str:
        return self.spec.sources.kind

    @cached_property
    def dataset(self) -> Dataset:
        """The training data, rebuilt from the recorded spec (deterministic)."""
        return rebuild_dataset(self.spec.data)

    def bytes_per_source(self) -> float:
        if self.responses is None:
            return 0.0
        return self.responses.nbytes() / max(1, len(self.responses))

    @property
    def compressed(self) -> bool:
        return isinstance(self.responses, CompressedResponses)

    @property
    def compression(self) -> dict:
        """How the responses are represented: ``{"kind": "dense"}`` or the factors' info
        (rank, method, power iterations, why the rank was chosen)."""
        if isinstance(self.responses, CompressedResponses):
            return {"kind": "compressed", **self.responses.info, "rank": self.responses.rank}
        if self.responses is None:
            return {"kind": "none"}
        sim = self.config.get("simulation", {})
        if "rank" not in sim:
            return {"kind": "dense", "reason": "dense (saved before compressed responses existed)"}
        return {"kind": "dense", "reason": rank_for(sim, self.n_sources, self.mlp.n_params)[1]}

    def logits(self, X) -> Tensor:
        X = torch.as_tensor(np.asarray(X)).to(self.theta.dtype)
        self.mlp.check_input(X)
        return self.mlp.forward(self.theta, X)

    # ---- attribution --------------------------------------------------------------------
    def check_attributable(self) -> None:
        """ConfigError unless the run has simulated responses to attribute queries with."""
        if self.responses is None:
            raise ConfigError(
                "this run was trained without simulation (scheme 'none'); retrain it with "
                "`scheme` trajectory or stationary to attribute queries."
            )

    def _query_tensors(self, X, y):
        self.check_attributable()
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[None, :]
        X = torch.as_tensor(X).to(self.theta.dtype)
        yt = None if y is None else torch.as_tensor(np.asarray(y)).long().reshape(-1)
        return X, yt

    def score(
        self,
        X,
        y=None,
        measure: str = "margin",
        readout: str = "jvp",
        target_class: int | None = None,
        memory_budget_mb: float = 1024.0,
        max_result_mb: float | None = None,
        progress=None,
    ) -> np.ndarray:
        """Attribution scores ``[Q, m]`` (float32) with forward evaluations only.

        Queries are scored in chunks under ``memory_budget_mb``; a result that cannot be
        held (``max_result_mb``, default half the available memory) is refused up front:
        use :meth:`top_k` or :meth:`score_to_npy` for those.
        """
        X, yt = self._query_tensors(X, y)
        return readout_score(
            self.mlp,
            self.theta,
            self.responses,
            X,
            yt,
            measure=measure,
            readout=readout,
            target_class=target_class,
            memory_budget_mb=memory_budget_mb,
            max_result_mb=max_result_mb,
            progress=progress,
        ).numpy()

    def top_k(
        self,
        X,
        y=None,
        k: int = 10,
        measure: str = "margin",
        readout: str = "jvp",
        target_class: int | None = None,
        memory_budget_mb: float = 1024.0,
        progress=None,
    ) -> TopK:
        """The ``k`` largest and ``k`` smallest scores of every query with their source ids,
        streamed: the ``[Q, m]`` matrix is never held (see :func:`attrcore.engine.readout.top_k`)."""
        X, yt = self._query_tensors(X, y)
        return readout_top_k(
            self.mlp,
            self.theta,
            self.responses,
            X,
            yt,
            k=k,
            measure=measure,
            readout=readout,
            target_class=target_class,
            memory_budget_mb=memory_budget_mb,
            progress=progress,
        )

    def score_to_npy(
        self,
        path,
        X,
        y=None,
        measure: str = "margin",
        readout: str = "jvp",
        target_class: int | None = None,
        memory_budget_mb: float = 1024.0,
        progress=None,
    ):
        """Write the ``[Q, m]`` float32 scores to a memory-mapped ``.npy`` file, chunk by chunk."""
        X, yt = self._query_tensors(X, y)
        return readout_score_to_npy(
            path,
            self.mlp,
            self.theta,
            self.responses,
            X,
            yt,
            measure=measure,
            readout=readout,
            target_class=target_class,
            memory_budget_mb=memory_budget_mb,
            progress=progress,
        )

    # ---- persistence --------------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        out = {"theta": self.theta, "source_index": torch.as_tensor(self.source_index)}
        if isinstance(self.responses, CompressedResponses):
            out.update(self.responses.tensors())
        elif self.responses is not None:
            for i, (W, b) in enumerate(zip(self.responses.W, self.responses.b)):
                out[f"responses.W{i}"] = W
                out[f"responses.b{i}"] = b
        return out

    def save(self, store, name: str, overwrite: bool = False):
        info = store.save_run(
            name,
            config=self.config,
            tensors=self.tensors(),
            history=self.history,
            timings=self.timings,
            metrics=self.metrics,
            meta={
                "source_names": list(self.source_names),
                "n_sources": self.n_sources,
                "bytes_per_source": self.bytes_per_source(),
                "compression": self.compression,
                "simulation_reason": self.simulation_reason,
            },
            overwrite=overwrite,
        )
        self.name = name
        return info

    @property
    def memory_mapped(self) -> bool:
        """Whether the responses are read from the store's file (memory-mapped), not RAM."""
        return bool(getattr(self, "_mapped", False))

    @classmethod
    def load(cls, store, name: str, *, memory_budget_mb: float | None = None, mmap: bool | None = None) -> TrainedRun:
        """The run ``name`` from ``store``. ``mmap`` True memory-maps the responses from the
        stored file (pages are read as the readout streams source chunks through them and
        may be dropped again by the kernel), False reads them into RAM; None (default) maps
        them when they are larger than ``memory_budget_mb`` (never without a budget)."""
        if memory_budget_mb is not None and not memory_budget_mb > 0:
            raise ConfigError(f"memory budget must be > 0 MB, got {memory_budget_mb}.")
        want_map = mmap is True or (mmap is None and memory_budget_mb is not None)
        rec = store.load_run(name, mmap=want_map)
        t = dict(rec.tensors)
        mapped = False
        if want_map:  # every tensor was mapped: keep the responses mapped if asked or too large
            big = sum(v.numel() * v.element_size() for k, v in t.items() if _is_response(k))
            mapped = mmap is True or big > memory_budget_mb * 2**20
            t = {k: v if (mapped and _is_response(k)) else v.clone() for k, v in t.items()}
        run = cls._from_record(rec, name, t)
        run._mapped = mapped
        return run

    @classmethod
    def _from_record(cls, rec, name: str, t) -> TrainedRun:
        spec = RunSpec.from_dict(rec.config)
        mlp = MLP(spec.model)
        theta = t["theta"]
        if theta.shape != (mlp.n_params,):
            raise ShapeError(
                f"run '{name}' is damaged: its weights have {theta.numel()} values but its model "
                f"needs {mlp.n_params}; delete it and train it again."
            )
        responses = None
        if "responses.W0" in t:
            responses = Tangents(
                [t[f"responses.W{i}"] for i in range(mlp.n_layers)],
                [t[f"responses.b{i}"] for i in range(mlp.n_layers)],
            )
        elif CompressedResponses.stored_in(t):
            info = {k: v for k, v in dict(rec.meta.get("compression") or {}).items() if k != "kind"}
            responses = CompressedResponses.from_tensors(t, mlp.n_layers, info)
        return cls(
            spec=spec,
            recorded=rec.config,
            mlp=mlp,
            theta=theta,
            responses=responses,
            source_index=t["source_index"].numpy(),
            source_names=tuple(rec.meta.get("source_names", ())),
            history=list(rec.history),
            timings=dict(rec.timings),
            metrics=dict(rec.metrics),
            name=name,
            simulation_reason=rec.meta.get("simulation_reason"),
        )


def fit(
    data: Dataset | str,
    *,
    hidden: tuple[int, ...] = (128,),
    activation: str = "relu",
    train_config: TrainConfig | None = None,
    simulation: SimulationConfig | None = None,
    sources: str | Sources = "example",
    groups: np.ndarray | None = None,
    progress: ProgressFn | None = None,
    executor=None,
    simulation_reason: str | None = None,
    on_epoch=None,
) -> TrainedRun:
    """Train an MLP on ``data`` and simulate every source's response in the same run.

    ``executor`` (:class:`attrcore.executors.Executor`) shards the simulation over workers
    (same result); how it went is kept in ``run.metrics["sharding"]``.
    Without ``simulation`` the measured-best setting for this model and data size is used
    (:func:`~attrcore.engine.choose.choose_simulation`) and the run keeps the reason
    (:attr:`TrainedRun.simulation_reason`, saved with it).
    ``on_epoch`` is handed to :func:`~attrcore.engine.train.train` (a read-out after every
    epoch, e.g. :class:`attrcore.mislabel.trajectory.TrajectorySelfInfluence`).
    """
    dataset = load_dataset(data) if isinstance(data, str) else data
    train_config = train_config or TrainConfig()
    src = sources if isinstance(sources, Sources) else make_sources(dataset, sources, groups)
    if src.index.shape != (dataset.n_train,):
        raise ShapeError(f"the sources cover {src.index.shape[0]} examples but the training set has {dataset.n_train}.")
    mcfg = MLPConfig(dataset.n_features, dataset.n_classes, tuple(hidden), activation)
    if simulation is None:
        choice = choose_simulation(mcfg, train_config, dataset.n_train, src.m)
        simulation, simulation_reason = choice.config, choice.reason
    mlp = MLP(mcfg)
    # Before any work: refuse what cannot fit, warn about what is big.
    estimate = estimate_training(
        dataset.n_train, dataset.n_features, dataset.n_classes, tuple(hidden), train_config, simulation, src.m
    )
    for text in check_estimate(estimate, simulation):
        warnings.warn(text, EstimateWarning, stacklevel=2)
    t0 = time.perf_counter()
    out = train(
        mlp,
        dataset.X_train,
        dataset.y_train,
        train_config,
        simulation,
        source_index=src.index,
        n_sources=src.m,
        X_val=dataset.X_test,
        y_val=dataset.y_test,
        progress=progress,
        executor=executor,
        on_epoch=on_epoch,
    )
    responses = out.responses
    if isinstance(responses, Tensor):
        responses = Tangents.from_flat(mlp, responses)
    last = out.history[-1] if out.history else {}
    metrics = {k: last[k] for k in ("train_accuracy", "test_accuracy", "loss") if k in last}
    timings = dict(out.timings, wall_seconds=time.perf_counter() - t0, estimated_seconds=estimate.seconds)
    if "sharding" in out.extras:
        metrics["sharding"] = out.extras["sharding"]
    if "neumann_step_size" in out.extras:
        metrics["neumann_step_size"] = out.extras["neumann_step_size"]
    spec = RunSpec(dataset.spec, mcfg, train_config, simulation, SourcesSpec(src.kind, src.m))
    return TrainedRun(
        spec=spec,
        mlp=mlp,
        theta=out.theta,
        responses=responses,
        source_index=np.asarray(src.index),
        source_names=tuple(src.names),
        history=out.history,
        timings=timings,
        metrics=metrics,
        simulation_reason=simulation_reason,
    )
