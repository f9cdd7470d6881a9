"""The user's own split (train on every row, or a separate evaluation file) and the
standardisation of tabular features (training statistics, recorded, applied to queries)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from attrcore import RunStore, TrainedRun, fit
from attrcore.config import SimulationConfig, TrainConfig
from attrcore.data.datasets import load_dataset, load_queries, rebuild_dataset
from attrcore.errors import ConfigError, DataError, ShapeError


def table(n=60, d=3, seed=0, scale=(1.0, 100.0, 0.01)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.asarray(scale)[:d] + 5.0
    y = np.array(["ant", "cat", "dog"] * (n // 3))
    return X, y


def write_csv(path, X, y, columns=("f1", "f2", "f3"), label="animal"):
    df = pd.DataFrame(X, columns=list(columns))
    df[label] = y
    df.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- test_fraction = 0


@pytest.mark.parametrize("source", ["digits", "moons", "mnist1d", "npz"])
def test_test_fraction_zero_trains_on_every_row(source, tmp_path):
    if source == "npz":
        X, y = table()
        source = tmp_path / "mine.npz"
        np.savez(source, X=X, y=y)
    ds = load_dataset(source, test_fraction=0)
    n_rows = {"digits": 1797, "moons": 500, "mnist1d": 5000}.get(str(source), 60)
    assert ds.n_train == n_rows and ds.n_test == 0
    assert ds.X_test.shape == (0, ds.n_features) and ds.y_test.shape == (0,)
    np.testing.assert_array_equal(ds.train_rows, np.arange(n_rows))
    assert ds.spec["test_fraction"] == 0.0
    again = load_dataset(**json.loads(json.dumps(ds.spec)))
    np.testing.assert_array_equal(again.X_train, ds.X_train)


def test_a_run_on_every_row_trains_saves_and_scores_its_own_examples():
    ds = load_dataset("moons", n_samples=60, test_fraction=0)
    run = fit(ds, hidden=(8,), train_config=TrainConfig(epochs=2), simulation=SimulationConfig(horizon=0))
    assert run.n_sources == 60 and "test_accuracy" not in run.history[-1]
    run.save(RunStore(), "all-rows")
    loaded = TrainedRun.load(RunStore(), "all-rows")
    assert loaded.dataset.n_train == 60 and loaded.dataset.n_test == 0
    scores = loaded.score(ds.X_train[:5], ds.y_train[:5])
    assert scores.shape == (5, 60) and np.isfinite(scores).all()


def test_held_out_queries_of_data_without_a_test_split_are_refused_with_what_to_do():
    ds = load_dataset("moons", n_samples=60, test_fraction=0)
    for source in (None, "moons"):  # "the dataset's test split"
        with pytest.raises(ConfigError, match="no test split") as err:
            load_queries(source, ds)
        assert "`eval_source`" in str(err.value) and "`test_fraction`" in str(err.value)
    from attrcore.engine.model import MLPConfig
    from attrcore.evaluation.ground_truth import lds_ground_truth

    mlp = MLPConfig(ds.n_features, ds.n_classes, (4,))
    with pytest.raises(ConfigError, match="no test split"):
        lds_ground_truth(ds, mlp, TrainConfig(epochs=1), n_subsets=2)
    with pytest.raises(ConfigError, match="no queries"):
        lds_ground_truth(ds, mlp, TrainConfig(epochs=1), n_subsets=2, queries=(ds.X_train[:0], ds.y_train[:0]))


# --------------------------------------------------------------------------- an evaluation file


@pytest.mark.parametrize("kind", ["csv", "npz"])
def test_an_evaluation_file_is_the_test_split_and_every_training_row_is_trained(kind, tmp_path):
    X, y = table(n=60)
    Xe, ye = table(n=9, seed=1)
    if kind == "csv":
        train = write_csv(tmp_path / "train.csv", X, y)
        # the evaluation file may order its columns differently
        pd.DataFrame({"animal": ye, "f3": Xe[:, 2], "f1": Xe[:, 0], "f2": Xe[:, 1]}).to_csv(
            tmp_path / "eval.csv", index=False
        )
        ds = load_dataset(train, label_column="animal", eval_source=tmp_path / "eval.csv", standardize=False)
    else:
        np.savez(tmp_path / "train.npz", X=X, y=y)
        np.savez(tmp_path / "eval.npz", X=Xe, y=ye)
        ds = load_dataset(tmp_path / "train.npz", eval_source=tmp_path / "eval.npz", standardize=False)
    assert ds.n_train == 60 and ds.n_test == 9 and ds.spec["test_fraction"] == 0.0
    np.testing.assert_allclose(ds.X_train, X.astype(np.float32))
    np.testing.assert_allclose(ds.X_test, Xe.astype(np.float32))
    np.testing.assert_array_equal(np.array(ds.class_names)[ds.y_test], ye)
    assert ds.spec["eval_source"].endswith(f"eval.{kind}")
    again = rebuild_dataset(json.loads(json.dumps(ds.spec)))
    np.testing.assert_array_equal(again.X_test, ds.X_test)
    np.testing.assert_array_equal(again.y_test, ds.y_test)


def test_evaluation_file_problems_are_explained(tmp_path):
    X, y = table()
    train = write_csv(tmp_path / "train.csv", X, y)
    write_csv(tmp_path / "emu.csv", X[:3], ["emu", "cat", "dog"])
    with pytest.raises(DataError, match="emu"):
        load_dataset(train, label_column="animal", eval_source=tmp_path / "emu.csv")
    write_csv(tmp_path / "nolabel.csv", X[:3], ["ant"] * 3, label="kind")
    with pytest.raises(DataError, match="label column 'animal'"):
        load_dataset(train, label_column="animal", eval_source=tmp_path / "nolabel.csv")
    np.savez(tmp_path / "wide.npz", X=np.zeros((3, 5)), y=np.array(["ant"] * 3))
    with pytest.raises(ShapeError, match="5 features"):
        load_dataset(train, label_column="animal", eval_source=tmp_path / "wide.npz")
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset(train, label_column="animal", eval_source=tmp_path / "emu.csv", test_fraction=0.2)
    with pytest.raises(DataError, match="not found"):
        load_dataset(train, label_column="animal", eval_source=tmp_path / "missing.csv")
    # named columns are matched by name, never by position: a renamed column is refused
    write_csv(tmp_path / "renamed.csv", X[:3], y[:3], columns=("f1", "f2", "weight"))
    with pytest.raises(DataError, match="missing 'f3', unexpected 'weight'"):
        load_dataset(train, label_column="animal", eval_source=tmp_path / "renamed.csv")
    ds = load_dataset(train, label_column="animal")
    with pytest.raises(DataError, match="missing 'f3', unexpected 'weight'"):  # a query file: the same
        load_queries(tmp_path / "renamed.csv", ds)


# --------------------------------------------------------------------------- standardisation


def test_user_tables_are_standardised_with_training_statistics_by_default(tmp_path):
    X, y = table(n=90)
    ds = load_dataset(write_csv(tmp_path / "t.csv", X, y), label_column="animal", seed=0)
    assert ds.spec["standardize"] is True
    np.testing.assert_allclose(ds.X_train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.X_train.std(0), 1.0, atol=1e-4)
    X32 = X.astype(np.float32).astype(np.float64)  # files are read as float32
    train_raw = X32[ds.train_rows]
    np.testing.assert_allclose(ds.feature_mean, train_raw.mean(0))
    np.testing.assert_allclose(ds.feature_scale, train_raw.std(0))
    # the test split gets the training statistics, not its own
    np.testing.assert_allclose(
        ds.X_test, (X32[ds.test_rows] - train_raw.mean(0)) / train_raw.std(0), rtol=1e-5, atol=1e-5
    )
    # queries from a file get the same transform
    write_csv(tmp_path / "q.csv", X[:4], y[:4])
    Xq, _ = load_queries(tmp_path / "q.csv", ds)
    np.testing.assert_allclose(Xq, (X32[:4] - ds.feature_mean) / ds.feature_scale, rtol=1e-5, atol=1e-5)
    raw = load_dataset(tmp_path / "t.csv", label_column="animal", standardize=False)
    assert raw.feature_mean is None and raw.spec["standardize"] is False
    np.testing.assert_allclose(raw.X_train, X[raw.train_rows].astype(np.float32))


def test_builtins_keep_their_own_scaling_and_constant_features_survive(tmp_path):
    assert load_dataset("digits").feature_mean is None  # [0, 1] pixels, as the reference task
    assert load_dataset("breast_cancer").feature_mean is not None
    X, y = table()
    X[:, 1] = 3.0  # a constant column: scale 1, not a division by zero
    ds = load_dataset(write_csv(tmp_path / "c.csv", X, y), label_column="animal")
    assert np.isfinite(ds.X_train).all() and ds.feature_scale[1] == 1.0


def test_the_transform_is_recorded_with_the_run_and_old_runs_still_load(tmp_path):
    X, y = table(n=90)
    path = write_csv(tmp_path / "t.csv", X, y)
    ds = load_dataset(path, label_column="animal")
    run = fit(ds, hidden=(4,), train_config=TrainConfig(epochs=1), simulation=SimulationConfig(horizon=0))
    store = RunStore()
    run.save(store, "scaled")
    loaded = TrainedRun.load(store, "scaled")
    assert loaded.config["data"]["standardize"] is True
    np.testing.assert_allclose(loaded.dataset.feature_mean, ds.feature_mean)
    np.testing.assert_array_equal(loaded.dataset.X_train, ds.X_train)
    # a run saved before standardisation existed (no key in its spec) used the raw features
    old_spec = {k: v for k, v in ds.spec.items() if k not in ("standardize", "eval_source")}
    old = rebuild_dataset(old_spec)
    assert old.feature_mean is None
    np.testing.assert_allclose(old.X_train, X[old.train_rows].astype(np.float32))
    assert rebuild_dataset({"source": "breast_cancer"}).feature_mean is not None  # built-in's own


def test_standardisation_tames_the_first_epoch_of_unscaled_features(tmp_path):
    X, y = table(n=150, scale=(1.0, 300.0, 50.0))
    path = write_csv(tmp_path / "wild.csv", X, y)
    cfg = TrainConfig(epochs=3, lr=0.01)
    losses = {}
    for standardize in (True, False):
        ds = load_dataset(path, label_column="animal", standardize=standardize)
        run = fit(ds, hidden=(16,), train_config=cfg, simulation=SimulationConfig(scheme="none"))
        losses[standardize] = run.history[0]["loss"]
    assert losses[True] < 1.5 < losses[False]
