"""The pre-training estimate: memory from the simulators' own bookkeeping, time from a
counted number of curvature products, refusal before any work, warnings when big."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest

import attrcore.run as run_module
from attrcore import fit, load_dataset
from attrcore.config import SimulationConfig, TrainConfig
from attrcore.engine.estimate import EstimateWarning, check_estimate, estimate_training
from attrcore.errors import ConfigError

DIGITS = dict(n_train=1437, n_features=64, n_classes=10, hidden=(128,))
P_DIGITS = 65 * 128 + 129 * 10  # 9,610 parameters


def test_memory_follows_the_simulators_bookkeeping():
    train = TrainConfig(epochs=3, batch_size=64)
    full = estimate_training(**DIGITS, train=train, simulation=SimulationConfig(horizon=None))
    assert full.n_params == P_DIGITS and full.n_sources == 1437
    assert full.response_bytes == 1437 * P_DIGITS * 4  # 55 MB, the README's figure
    assert full.state_bytes == 0  # without momentum the carried tangents are Δ itself
    momentum = estimate_training(**DIGITS, train=TrainConfig(momentum=0.9), simulation=SimulationConfig())
    assert momentum.state_bytes == 1437 * P_DIGITS * 4
    short = estimate_training(**DIGITS, train=train, simulation=SimulationConfig(horizon=8))
    assert short.state_bytes == 8 * 64 * P_DIGITS * 4  # the ring of K·B tangents
    stationary = estimate_training(**DIGITS, train=train, simulation=SimulationConfig(scheme="stationary", horizon=5))
    assert stationary.state_bytes == full.response_bytes  # ḡ beside Δ
    plain = estimate_training(**DIGITS, train=train, simulation=SimulationConfig(scheme="none"))
    assert plain.response_bytes == plain.state_bytes == plain.n_sources == 0
    grouped = estimate_training(**DIGITS, train=train, simulation=SimulationConfig(), n_sources=10)
    assert grouped.response_bytes == 10 * P_DIGITS * 4
    f64 = estimate_training(**DIGITS, train=TrainConfig(dtype="float64"), simulation=SimulationConfig())
    assert f64.response_bytes == 2 * full.response_bytes
    assert full.peak_bytes > full.response_bytes * 3  # Δ exists ~3 times at the end of training


def test_time_grows_with_what_the_simulation_does():
    train = TrainConfig(epochs=3, batch_size=64)
    t = {
        k: estimate_training(**DIGITS, train=train, simulation=SimulationConfig(horizon=k)).seconds
        for k in (0, 4, 16, None)
    }
    assert t[0] < t[4] < t[16] < t[None]
    plain = estimate_training(**DIGITS, train=train, simulation=SimulationConfig(scheme="none")).seconds
    assert plain < t[0]
    longer = estimate_training(**DIGITS, train=TrainConfig(epochs=30), simulation=SimulationConfig()).seconds
    assert longer > 9 * t[None]
    e = estimate_training(**DIGITS, train=train, simulation=SimulationConfig())
    assert e.seconds_low < e.seconds < e.seconds_high
    assert "peak memory" in e.summary() and "time" in e.summary()


def test_a_run_over_the_budget_is_refused_with_the_fix():
    # the file: 650k rows, trained with K = 16 (peak 12.3 GB, no warning)
    big = estimate_training(650_000, 12, 2, (128,), TrainConfig(), SimulationConfig(horizon=16))
    assert big.peak_bytes > 10 * 2**30
    with pytest.raises(ConfigError) as info:
        check_estimate(big, SimulationConfig(horizon=16), available_bytes=64 * 2**30)
    msg = str(info.value)
    assert "memory budget of 2048 MB" in msg and "Nothing was trained" in msg
    assert "group the sources" in msg and "shorter horizon (`horizon`)" in msg and "fewer rows" in msg
    # within the budget but beyond the machine: refused too
    roomy = SimulationConfig(horizon=16, memory_budget_mb=100_000)
    with pytest.raises(ConfigError, match="available"):
        check_estimate(big, roomy, available_bytes=8 * 2**30)
    # fits, but uses most of the machine: a warning
    notes = check_estimate(big, roomy, available_bytes=20 * 2**30, warn_seconds=1e12)
    assert len(notes) == 1 and "memory" in notes[0]
    slow = check_estimate(big, roomy, available_bytes=1000 * 2**30, warn_seconds=1.0)
    assert len(slow) == 1 and "will take about" in slow[0]
    small = estimate_training(**DIGITS, train=TrainConfig(), simulation=SimulationConfig())
    assert check_estimate(small, SimulationConfig(), available_bytes=8 * 2**30) == []


def test_fit_refuses_before_any_training(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(run_module, "train", no_training)
    ds = load_dataset("digits")
    tight = SimulationConfig(horizon=4, memory_budget_mb=20)  # 55 MB of responses alone
    with pytest.raises(ConfigError, match="memory budget"):
        fit(ds, hidden=(128,), train_config=TrainConfig(epochs=1), simulation=tight)


def test_fit_warns_about_a_big_run_and_records_its_estimate(monkeypatch):
    monkeypatch.setattr(run_module, "check_estimate", lambda est, sim: ["this run will take about 3 h"])
    ds = load_dataset("moons", n_samples=40)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = fit(ds, hidden=(4,), train_config=TrainConfig(epochs=1), simulation=SimulationConfig(horizon=0))
    assert [str(w.message) for w in seen if w.category is EstimateWarning] == ["this run will take about 3 h"]
    assert run.timings["estimated_seconds"] > 0


def test_compressed_responses_are_counted_at_their_rank():
    from attrcore.engine.compress import full_horizon_memory

    train = TrainConfig(epochs=3, batch_size=64)
    compressed = estimate_training(**DIGITS, train=train, simulation=SimulationConfig(rank=32))
    assert compressed.response_bytes == 32 * (P_DIGITS + 1437) * 4
    assert compressed.state_bytes == full_horizon_memory(32, P_DIGITS, 1437, 69, 4, False)["min_bytes"]
    dense = estimate_training(**DIGITS, train=train, simulation=SimulationConfig(rank=None))
    assert compressed.response_bytes < dense.response_bytes and compressed.seconds < dense.seconds


def test_the_ekfac_default_is_estimated_as_ekfac_and_fits_its_budget():
    """mnist1d-mlp's measured default (engine/choose.py: EK-FAC, full horizon, dense) keeps one
    m × p block and rotates it once per segment; estimating it as the exact full horizon (a
    velocity tangent per source, m tangents through every product) refused it at the default
    budget and predicted hours."""
    from attrcore.engine.choose import choose_simulation
    from attrcore.engine.model import MLPConfig

    train = TrainConfig(epochs=30, lr=0.1, batch_size=100, momentum=0.9, weight_decay=1e-4)
    default = choose_simulation(MLPConfig(40, 10, (256, 256), "relu"), train, 4000, 4000).config
    assert default.curvature == "ekfac" and default.horizon is None
    # the default compresses these responses query-aware after the run; the estimate of the dense
    # EK-FAC simulation underneath is what this test is about, and the default must fit its budget
    assert default.compression == "query-aware" and default.rank is not None
    compressed = estimate_training(4000, 40, 10, (256, 256), train, default, 4000)
    assert compressed.state_bytes > 4000 * 78858 * 4 > compressed.response_bytes
    assert check_estimate(compressed, default, available_bytes=16 * 2**30) == []
    chosen = replace(default, rank=None)
    ekfac = estimate_training(4000, 40, 10, (256, 256), train, chosen, 4000)
    exact = estimate_training(4000, 40, 10, (256, 256), train, SimulationConfig(horizon=None, rank=None), 4000)
    assert ekfac.response_bytes == exact.response_bytes == 4000 * 78858 * 4
    assert ekfac.state_bytes < 0.05 * ekfac.response_bytes < exact.state_bytes
    assert ekfac.seconds < exact.seconds / 10
    assert check_estimate(ekfac, chosen, available_bytes=16 * 2**30) == []
    finite = estimate_training(
        4000, 40, 10, (256, 256), train, SimulationConfig(horizon=16, curvature="ekfac", rank=None), 4000
    )
    assert finite.state_bytes > ekfac.response_bytes  # the segment's injections are a second m × p block


def test_the_ekfac_rank_adds_its_subspace_iterations_and_injections():
    """``ekfac_rank`` r: the top-r GN directions cost O(r·p) per injection and r tangents through
    every recorded example per subspace iteration; more iterations or a higher rank cost more."""
    train = TrainConfig(epochs=30, lr=0.1, batch_size=64, weight_decay=1e-4)
    base = SimulationConfig(horizon=16, curvature="ekfac", rank=None)
    plain = estimate_training(1437, 64, 10, (128,), train, base, 1437)
    r32 = estimate_training(1437, 64, 10, (128,), train, replace(base, ekfac_rank=32), 1437)
    r64 = estimate_training(1437, 64, 10, (128,), train, replace(base, ekfac_rank=64), 1437)
    more = estimate_training(1437, 64, 10, (128,), train, replace(base, ekfac_rank=32, ekfac_rank_iterations=8), 1437)
    assert plain.seconds < r32.seconds < r64.seconds and r32.seconds < more.seconds
    assert r32.state_bytes > plain.state_bytes and r32.response_bytes == plain.response_bytes
    assert any("rank 32" in note for note in r32.notes)
