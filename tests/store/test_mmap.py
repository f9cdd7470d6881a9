"""Memory-mapped responses: a run larger than the memory budget is read out from its file.

The oracle is the same run loaded into RAM: mapped loading must give the same tensors and
the same scores, under a readout budget small enough to stream sources in many chunks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from attrcore import RunStore, TrainConfig, fit, load_dataset
from attrcore.config import SimulationConfig
from attrcore.engine.compress import CompressedResponses
from attrcore.errors import ConfigError
from attrcore.run import TrainedRun
from attrcore.store.files import map_tensors


def test_mapped_tensors_equal_the_loaded_ones_and_never_write_the_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "f64": torch.randn(3, 4, generator=g, dtype=torch.float64),
        "f32": torch.randn(5, 2, 3, generator=g),
        "f16": torch.randn(7, generator=g).half(),
        "bf16": torch.randn(2, 9, generator=g).bfloat16(),
        "i64": torch.arange(6).reshape(2, 3),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    before = path.read_bytes()
    mapped = map_tensors(path, list(tensors))
    for k, t in tensors.items():
        assert mapped[k].dtype == t.dtype and mapped[k].shape == t.shape
        assert_close(mapped[k], t, rtol=0, atol=0)
    mapped["f32"].add_(1.0)  # copy-on-write: private to this process
    assert path.read_bytes() == before
    assert_close(load_file(str(path))["f32"], tensors["f32"], rtol=0, atol=0)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A dense float32, a dense float16 and a compressed run of 120 sources, saved."""
    store = RunStore(tmp_path_factory.mktemp("store"))
    ds = load_dataset("moons", n_samples=150)
    cfg = TrainConfig(epochs=2, batch_size=16)
    runs = {
        "dense": SimulationConfig(horizon=2),
        "half": SimulationConfig(horizon=2, response_dtype="float16"),
        "compressed": SimulationConfig(rank=8),
    }
    for name, sim in runs.items():
        fit(ds, hidden=(16, 8), train_config=cfg, simulation=sim).save(store, name)
    return store, ds


@pytest.mark.parametrize("name", ["dense", "half", "compressed"])
def test_a_run_over_the_budget_is_mapped_and_scores_as_in_memory(saved, name):
    store, ds = saved
    in_ram = TrainedRun.load(store, name)
    expected = in_ram.score(ds.X_test, ds.y_test)
    size = in_ram.responses.nbytes()
    assert not in_ram.memory_mapped
    # a budget below the responses' size maps them; the readout streams them in small chunks
    mapped = TrainedRun.load(store, name, memory_budget_mb=0.5 * size / 2**20)
    assert mapped.memory_mapped
    kind = CompressedResponses if name == "compressed" else type(in_ram.responses)
    assert isinstance(mapped.responses, kind)
    got = mapped.score(ds.X_test, ds.y_test, memory_budget_mb=0.05)
    assert_close(got, expected, rtol=1e-5, atol=1e-6 * float(np.abs(expected).max()))
    top = mapped.top_k(ds.X_test, ds.y_test, k=3, memory_budget_mb=0.05)
    assert np.array_equal(top.top_indices, in_ram.top_k(ds.X_test, ds.y_test, k=3).top_indices)
    # under a budget that holds them, they are read into RAM
    assert not TrainedRun.load(store, name, memory_budget_mb=4 * size / 2**20 + 1).memory_mapped
    assert TrainedRun.load(store, name, mmap=True).memory_mapped


def test_a_bad_budget_is_refused(saved):
    store, _ = saved
    with pytest.raises(ConfigError, match="memory budget"):
        TrainedRun.load(store, "dense", memory_budget_mb=0)
