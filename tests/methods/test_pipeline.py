"""One method interface: forward-only is an Attributor, one registry, one end-to-end function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attrcore import ConfigError, SimulationConfig, TrainConfig, fit, load_dataset
from attrcore import methods as M
from attrcore.data import Sources
from attrcore.engine import MLP, MLPConfig, train


@pytest.fixture(scope="module")
def moons():
    ds = load_dataset("moons", n_samples=60, noise=0.2, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=8, seed=0)
    return ds, MLP(MLPConfig(ds.n_features, ds.n_classes, (6,))), cfg


def test_the_registry_is_the_one_list_of_names():
    assert list(M.METHODS)[0] == "forward-only" and set(M.BASELINES) == set(M.METHODS) - {"forward-only"}
    assert M.resolve_method("if") == "if-explicit" and M.resolve_method("if", "cg") == "if-cg"
    with pytest.raises(ConfigError, match="unknown baseline"):
        M.resolve_method("datamodels")


def test_forward_only_attributor_equals_the_trained_runs_readout(moons):
    ds, mlp, cfg = moons
    sim = SimulationConfig(horizon=3, rank=None)
    run = fit(ds, hidden=(6,), train_config=cfg, simulation=sim)
    out = train(mlp, ds.X_train, ds.y_train, cfg, sim)
    a = M.make_method("forward-only", mlp, [out], cfg).fit(ds.X_train, ds.y_train)
    torch.testing.assert_close(a.score(ds.X_test, ds.y_test), torch.from_numpy(run.score(ds.X_test, ds.y_test)))
    assert a.timings["setup_seconds"] >= out.timings["simulate_seconds"] > 0
    assert a.state_bytes() == run.responses.nbytes()


def test_attribute_runs_any_method_end_to_end_and_reuses_models(moons):
    ds, mlp, cfg = moons
    sim = SimulationConfig(horizon=2, rank=None)
    one = M.attribute("forward-only", mlp, ds.X_train, ds.y_train, ds.X_test, ds.y_test, cfg, simulation=sim)
    two = M.attribute(
        "forward-only",
        mlp,
        ds.X_train,
        ds.y_train,
        ds.X_test,
        ds.y_test,
        cfg,
        simulation=sim,
        models=2,
        trained=one.runs,
        warmup=2,
    )
    assert two.runs[0] is one.runs[0] and len(two.runs) == 2  # the first model reused, one more trained
    second = M.attribute(
        "forward-only",
        mlp,
        ds.X_train,
        ds.y_train,
        ds.X_test,
        ds.y_test,
        TrainConfig(epochs=2, batch_size=8, seed=1),
        simulation=sim,
    )
    torch.testing.assert_close(two.scores, (one.scores + second.scores) / 2)
    assert two.timings["n_queries"] == ds.n_test  # the warm-up is not counted
    tr = M.attribute("tracin", mlp, ds.X_train, ds.y_train, ds.X_test, ds.y_test, cfg, trained=one.runs)
    assert tr.runs[0] is not one.runs[0] and tr.runs[0].checkpoints  # TracIn needs checkpoints: retrained
    gd = M.attribute("grad-dot", mlp, ds.X_train, ds.y_train, ds.X_test, ds.y_test, cfg, trained=one.runs)
    assert gd.runs[0] is one.runs[0] and gd.scores.shape == (ds.n_test, ds.n_train)
    assert np.isfinite(gd.scores.numpy()).all()
    with pytest.raises(ConfigError, match="`models`"):
        M.attribute("trak", mlp, ds.X_train, ds.y_train, ds.X_test, ds.y_test, cfg, models=0)


def test_a_trained_run_is_a_forward_only_attributor_that_streams(moons, tmp_path):
    ds, _mlp, cfg = moons
    run = fit(ds, hidden=(6,), train_config=cfg, simulation=SimulationConfig(horizon=3, rank=None), sources="class")
    src = Sources(run.sources_kind, run.source_index, run.source_names)
    a, runs = M.pipeline.prepare(
        "forward-only",
        run.mlp,
        ds.X_train,
        ds.y_train,
        cfg,
        trained=[run],
        sources=src,
        measure="loss",
        options={"readout": "cd"},
    )
    assert runs == [run]  # reused: nothing was trained
    top = a.top_k(ds.X_test, ds.y_test, k=1)
    expected = run.top_k(ds.X_test, ds.y_test, k=1, measure="loss", readout="cd")
    np.testing.assert_array_equal(top.top_indices, expected.top_indices)
    torch.testing.assert_close(torch.as_tensor(top.top_scores), torch.as_tensor(expected.top_scores), rtol=0, atol=0)
    a.score_to_npy(tmp_path / "a.npy", ds.X_test, ds.y_test)
    run.score_to_npy(tmp_path / "run.npy", ds.X_test, ds.y_test, measure="loss", readout="cd")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "run.npy"))
    torch.testing.assert_close(a.score(ds.X_test, ds.y_test), torch.as_tensor(np.load(tmp_path / "a.npy")))
    two, _ = M.pipeline.prepare(
        "forward-only", run.mlp, ds.X_train, ds.y_train, cfg, trained=[run, run], models=2, sources=src
    )
    with pytest.raises(ConfigError, match="one model"):
        two.top_k(ds.X_test, ds.y_test)


def test_cli_attribute_runs_forward_only_through_the_pipeline(monkeypatch, tmp_path, capsys):
    from attrcore.cli import run_commands
    from attrcore.cli.main import main

    calls = []
    real = run_commands.prepare

    def recording(method, *args, **kwargs):
        calls.append((method, kwargs["trained"]))
        return real(method, *args, **kwargs)

    monkeypatch.setattr(run_commands, "prepare", recording)
    argv = [
        "attribute",
        "--train",
        "moons",
        "--n-samples",
        "80",
        "--epochs",
        "2",
        "--hidden",
        "8",
        "--horizon",
        "2",
        "--run",
        "via-pipeline",
        "--out",
        str(tmp_path / "s.npy"),
    ]
    assert main(argv) == 0
    [(method, trained)] = calls
    assert method == "forward-only" and len(trained) == 1 and trained[0].name == "via-pipeline"  # the saved run
    assert np.load(tmp_path / "s.npy").shape == (16, 64) and "saved run 'via-pipeline'" in capsys.readouterr().err
