"""attrcore.config: options defined once (metadata → CLI flags, app labels), Horizon, parsers."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from attrcore import ConfigError, SimulationConfig, TrainConfig
from attrcore import app as sup
from attrcore.cli.common import add_options, config_from_args, option_flags
from attrcore.cli.main import build_parser
from attrcore.config import Horizon, option, options, parse_hidden
from attrcore.run import RunSpec


def test_every_config_field_is_an_option_with_help():
    for cls in (TrainConfig, SimulationConfig):
        opts = options(cls)
        assert set(opts) == {f for f in cls.__dataclass_fields__}
        assert all(o.help for o in opts.values())
        assert all(o.default == getattr(cls(), o.name) for o in opts.values())


def test_cli_flags_are_generated_from_the_options():
    args = build_parser().parse_args(["train"])
    for cls in (TrainConfig, SimulationConfig):
        assert config_from_args(cls, args) == cls()  # the CLI defaults are the library's
    args = build_parser().parse_args(["train", "--memory-budget", "64", "--horizon", "7", "--curvature-batch", "32"])
    sim = config_from_args(SimulationConfig, args)
    assert (sim.memory_budget_mb, sim.horizon, sim.curvature_batch_size) == (64.0, 7, 32)


def test_a_new_option_field_is_a_new_flag():
    @dataclass(frozen=True)
    class Extra:
        power: int = option(3, "how strong")
        mode: str = option("a", "which mode", choices=("a", "b"))
        hidden_knob: float = option(0.5, "not on the command line", cli=False)

    p = argparse.ArgumentParser()
    add_options(p, Extra)
    assert config_from_args(Extra, p.parse_args(["--power", "5", "--mode", "b"])) == Extra(power=5, mode="b")
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "c"])  # choices come from the metadata
    with pytest.raises(SystemExit):
        p.parse_args(["--hidden-knob", "1"])


def test_errors_name_the_option_and_each_front_end_renders_it():
    with pytest.raises(ConfigError) as info:
        SimulationConfig(memory_budget_mb=0)
    err = info.value
    assert "`memory_budget_mb`" in str(err) and "--" not in str(err)
    assert "--memory-budget" in err.render(option_flags(build_parser()))
    assert "memory budget (MB)" in sup.error_text(err)


def test_horizon_has_one_written_form_and_one_meaning_per_scheme():
    assert Horizon.parse("full") == Horizon.parse(None) == Horizon(None)
    assert Horizon.parse("16") == Horizon.parse(16) == Horizon(16)
    assert str(Horizon(None)) == "full" and str(Horizon(3)) == "3"
    assert Horizon(None).plot_x() == Horizon.PLOT_FULL and Horizon(16).plot_x() == 16.0
    assert sup.horizon_x("full") == Horizon.PLOT_FULL and sup.horizon_tick(Horizon.PLOT_FULL) == "full"
    assert "SGD steps" in Horizon.meaning("trajectory") and "Neumann" in Horizon.meaning("stationary")
    for bad in ("-1", "2.5", "abc", -3, True):
        with pytest.raises(ConfigError, match="horizon"):
            Horizon.parse(bad)
    assert SimulationConfig.with_horizon("12").horizon == 12


def test_one_parser_of_hidden_sizes():
    assert parse_hidden("64, 32") == parse_hidden(["64", "32"]) == parse_hidden("64x32") == (64, 32)
    assert parse_hidden((128,)) == (128,)
    for empty in ("", "none", "0", "-", [], None):
        assert parse_hidden(empty) == ()
    for bad in ("128, lots", "0 64", "5000"):
        with pytest.raises(ConfigError, match="`hidden`"):
            parse_hidden(bad)


def test_run_spec_round_trips_the_stored_config():
    spec = RunSpec.from_dict(
        {
            "data": {"source": "moons", "seed": 0},
            "model": {"input_dim": 2, "n_classes": 2, "hidden": [4], "activation": "relu"},
            "train": {"epochs": 2},
            "simulation": {"scheme": "trajectory", "horizon": "3"},
            "sources": {"kind": "class", "m": 2},
        }
    )
    assert spec.simulation.horizon == 3 and spec.train.epochs == 2 and spec.sources.kind == "class"
    assert RunSpec.from_dict(spec.to_dict()) == spec
    assert spec.fingerprint() == RunSpec.from_dict(spec.to_dict()).fingerprint()


def test_data_options_are_declared_once_and_generate_the_data_flags():
    from attrcore.config import DataConfig

    opts = options(DataConfig)
    assert set(opts) == set(DataConfig.__dataclass_fields__) and all(o.help for o in opts.values())
    for command in (["train"], ["attribute"], ["evaluate", "--scores", "s.npy"]):
        args = build_parser().parse_args(command)
        assert config_from_args(DataConfig, args) == DataConfig()  # the CLI defaults are the options'
    args = build_parser().parse_args(
        [
            "train",
            "--train",
            "moons",
            "--split-seed",
            "3",
            "--seed",
            "5",
            "--standardize",
            "off",
            "--n-samples",
            "90",
            "--eval",
            "e.csv",
            "--test-fraction",
            "0",
        ]
    )
    data = config_from_args(DataConfig, args)
    picked = (data.source, data.seed, data.standardize, data.n_samples, data.eval_source)
    assert picked == ("moons", 3, "off", 90, "e.csv")
    assert config_from_args(TrainConfig, args).seed == 5  # the split seed and the training seed stay apart
    assert data.kwargs()["standardize"] is False and DataConfig().kwargs()["standardize"] is None
    with pytest.raises(ConfigError, match="`standardize`"):
        DataConfig(standardize="sometimes")


def test_evaluate_and_bench_flags_are_generated_from_their_options():
    from attrcore.cli.eval_commands import BenchOptions, EngineOptions, EvaluateOptions

    args = build_parser().parse_args(["evaluate", "--scores", "s.npy"])
    assert config_from_args(EvaluateOptions, args) == EvaluateOptions(scores="s.npy")
    assert config_from_args(EngineOptions, args) == EngineOptions()
    args = build_parser().parse_args(["evaluate", "--scores", "s.npy", "--loo", "--loo-seeds", "4", "5", "--jobs", "1"])
    assert (args.loo, args.loo_seeds, args.jobs) == (True, [4, 5], 1)
    assert config_from_args(BenchOptions, build_parser().parse_args(["bench"])) == BenchOptions()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--methods", "not-a-method"])  # choices from the metadata


def test_the_option_to_flag_map_is_built_while_the_flags_are_generated():
    from attrcore.data import load_dataset

    flags = option_flags(build_parser())
    expected = {
        "source": "--train",
        "seed": "--seed",
        "eval_source": "--eval",
        "test_fraction": "--test-fraction",
        "models": "--ensemble",
        "top_k": "--top-k",
        "memory_budget_mb": "--memory-budget",
        "curvature_batch_size": "--curvature-batch",
        "hidden": "--hidden",
        "sources": "--sources",
        "overwrite": "--overwrite",
        "target_class": "--target-class",
        "loo_seeds": "--loo-seeds",
    }
    assert {k: flags.get(k) for k in expected} == expected
    with pytest.raises(ConfigError) as info:
        load_dataset("digits", test_fraction=0.3, eval_source="elsewhere.csv")
    text = info.value.render(flags)
    assert "--test-fraction" in text and "--eval" in text and "`" not in text
    assert "test fraction" in sup.error_text(info.value) and "evaluation file" in sup.error_text(info.value)


def test_every_horizon_conversion_goes_through_horizon():
    from attrcore.engine.compress import rank_for

    for written, steps in (("full", None), (None, None), ("16", 16), (16, 16), (Horizon(3), 3), (" Full ", None)):
        sim = SimulationConfig.with_horizon(written)
        assert SimulationConfig(horizon=Horizon.parse(written)) == sim
        assert sim.horizon == steps and sim.horizon_value == Horizon(steps)
        assert sim.to_dict()["horizon"] == ("full" if steps is None else str(steps))  # the stored form
        assert SimulationConfig.from_dict(sim.to_dict()) == sim
    for bad in ("-1", 2.5, True, "abc", "16"):  # a config takes steps or a Horizon, not text
        with pytest.raises(ConfigError, match="horizon must be a whole number"):
            SimulationConfig(horizon=bad)
    for h in (Horizon(None), Horizon(0), Horizon(64)):
        assert Horizon.from_plot_x(h.plot_x()) == h and sup.horizon_tick(sup.horizon_x(str(h))) == str(h)
    # a stored dict and a config read their horizon the same way
    for horizon in ("full", "4", None, 4):
        sim = SimulationConfig.with_horizon(horizon, rank="auto")
        assert (
            rank_for(sim, 5000, 100_000)
            == rank_for(sim.to_dict(), 5000, 100_000)
            == rank_for({"scheme": "trajectory", "horizon": horizon, "rank": "auto"}, 5000, 100_000)
        )
