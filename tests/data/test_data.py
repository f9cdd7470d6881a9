"""Tests for attrcore.data: built-ins, file round trips, label noise, validation errors."""

from __future__ import annotations

import json
import random
import zipfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from attrcore.data import BUILTIN_DATASETS, Dataset, describe_builtin, load_dataset, load_queries
from attrcore.errors import ConfigError, DataError, ShapeError

ARRAY_FIELDS = (
    "X_train",
    "y_train",
    "X_test",
    "y_test",
    "y_train_clean",
    "flipped",
    "train_rows",
    "test_rows",
)


def assert_same_dataset(a: Dataset, b: Dataset) -> None:
    for field in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.fingerprint() == b.fingerprint()


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def tabular(n=60, d=4, classes=(3, 7, 9), seed=0):
    """``X [n, d]`` float64 and ``y [n]`` cycling through ``classes``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.array([classes[i % len(classes)] for i in range(n)])
    return X, y


# --------------------------------------------------------------------------- built-ins


def test_digits_reference_split_and_range():
    ds = load_dataset("digits")
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_classes) == (1437, 360, 64, 10)
    assert ds.kind == "image" and ds.image_shape == (8, 8)
    assert ds.X_train.dtype == np.float32 and ds.X_train.flags.c_contiguous
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.X_train.min() == 0.0 and ds.X_train.max() == 1.0
    assert ds.X_test.min() >= 0.0 and ds.X_test.max() <= 1.0
    assert ds.class_names == tuple(str(c) for c in range(10))
    assert len(ds.flipped) == 0
    np.testing.assert_array_equal(ds.y_train, ds.y_train_clean)
    rows = np.sort(np.concatenate([ds.train_rows, ds.test_rows]))
    np.testing.assert_array_equal(rows, np.arange(1797))


def test_digits_matches_plain_sklearn_split():
    # The reference task "digits-mlp" is defined by exactly this call.
    bunch = load_digits()
    X_tr, X_te, y_tr, y_te = train_test_split(
        bunch.data / 16.0, bunch.target, stratify=bunch.target, test_size=0.2, random_state=0
    )
    ds = load_dataset("digits")
    np.testing.assert_array_equal(ds.X_train, X_tr.astype(np.float32))
    np.testing.assert_array_equal(ds.X_test, X_te.astype(np.float32))
    np.testing.assert_array_equal(ds.y_train, y_tr)
    np.testing.assert_array_equal(ds.y_test, y_te)


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "moons"])
def test_same_call_gives_identical_data(name):
    a = load_dataset(name, seed=3, label_noise=0.1)
    b = load_dataset(name, seed=3, label_noise=0.1)
    assert_same_dataset(a, b)
    c = load_dataset(name, seed=4, label_noise=0.1)
    assert not np.array_equal(a.train_rows, c.train_rows)
    assert a.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "moons"])
def test_spec_rebuilds_the_dataset(name):
    ds = load_dataset(name, seed=2, label_noise=0.05)
    spec = json.loads(json.dumps(ds.spec))  # JSON-able
    assert_same_dataset(ds, load_dataset(**spec))


def test_split_is_stratified():
    ds = load_dataset("digits", seed=5, test_fraction=0.3)
    total = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=10)
    expected_test = total * 0.3
    assert np.all(np.abs(np.bincount(ds.y_test, minlength=10) - expected_test) <= 1)


def test_breast_cancer_standardised_on_train_only():
    ds = load_dataset("breast_cancer")
    assert ds.kind == "tabular" and ds.n_features == 30
    assert ds.class_names == ("malignant", "benign")
    assert ds.feature_names[0] == "mean radius"
    np.testing.assert_allclose(ds.X_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.X_train.std(axis=0), 1.0, atol=1e-4)
    assert np.abs(ds.X_test.mean(axis=0)).max() > 1e-3  # test statistics were not used


def test_moons_options():
    ds = load_dataset("moons", n_samples=120, noise=0.0, seed=1)
    assert ds.kind == "points" and ds.n_features == 2
    assert ds.n_train + ds.n_test == 120
    assert ds.spec["n_samples"] == 120 and ds.spec["noise"] == 0.0
    default = load_dataset("moons")
    assert default.n_train + default.n_test == 500
    assert default.spec["n_samples"] == 500 and default.spec["noise"] == 0.2


def test_mnist1d_offline_with_package_split(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTRCORE_HOME", str(tmp_path))
    random.seed(7)
    np.random.seed(7)
    expected_py, expected_np = random.random(), np.random.random()
    random.seed(7)
    np.random.seed(7)

    ds = load_dataset("mnist1d")
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_classes) == (4000, 1000, 40, 10)
    assert ds.kind == "signal" and ds.X_train.dtype == np.float32
    np.testing.assert_array_equal(ds.train_rows, np.arange(4000))
    np.testing.assert_array_equal(ds.test_rows, np.arange(4000, 5000))
    # Generating must not reseed the caller's global random streams.
    assert (random.random(), np.random.random()) == (expected_py, expected_np)

    assert list((tmp_path / "cache").glob("mnist1d-seed0-*.npz"))
    assert_same_dataset(ds, load_dataset("mnist1d"))  # served from the cache


def test_describe_builtin():
    for name in BUILTIN_DATASETS:
        text = describe_builtin(name)
        assert isinstance(text, str) and "\n" not in text and text
    with pytest.raises(ConfigError, match="digits"):
        describe_builtin("cifar")


# --------------------------------------------------------------------------- label noise


def test_label_noise_records_exactly_the_flipped_indices():
    clean = load_dataset("digits")
    noisy = load_dataset("digits", label_noise=0.1)
    assert len(noisy.flipped) == round(0.1 * 1437)
    assert noisy.flipped.dtype == np.int64
    assert np.all(np.diff(noisy.flipped) > 0)  # sorted and unique
    np.testing.assert_array_equal(noisy.train_rows, clean.train_rows)  # split unaffected
    np.testing.assert_array_equal(noisy.y_train_clean, clean.y_train)
    np.testing.assert_array_equal(noisy.y_test, clean.y_test)
    changed = np.flatnonzero(noisy.y_train != noisy.y_train_clean)
    np.testing.assert_array_equal(changed, noisy.flipped)
    assert noisy.y_train.min() >= 0 and noisy.y_train.max() < 10


@settings(max_examples=25, deadline=None)
@given(
    label_noise=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**32 - 1),
    n_classes=st.integers(2, 5),
)
def test_label_noise_invariants(tmp_path_factory, label_noise, seed, n_classes):
    X, y = tabular(n=50, d=3, classes=tuple(range(n_classes)), seed=1)
    path = write_npz(tmp_path_factory.mktemp("noise") / "d.npz", X=X, y=y)
    ds = load_dataset(path, seed=seed, label_noise=label_noise)
    assert len(ds.flipped) == round(label_noise * ds.n_train)
    flipped = np.zeros(ds.n_train, dtype=bool)
    flipped[ds.flipped] = True
    assert np.all(ds.y_train[flipped] != ds.y_train_clean[flipped])
    np.testing.assert_array_equal(ds.y_train[~flipped], ds.y_train_clean[~flipped])
    np.testing.assert_array_equal(ds.y_train_clean, y[ds.train_rows])


# --------------------------------------------------------------------------- files


def test_npz_round_trip_with_groups(tmp_path):
    X, y = tabular(n=60, d=4, classes=(3, 7, 9))
    groups = np.array([f"site{i % 4}" for i in range(60)])
    path = write_npz(tmp_path / "clinic.npz", X=X, y=y, groups=groups)
    ds = load_dataset(path, seed=1, standardize=False)  # raw values (scaling: test_split_and_scaling.py)
    assert ds.name == "clinic" and ds.kind == "tabular"
    assert ds.class_names == ("3", "7", "9")
    assert ds.feature_names == ("x0", "x1", "x2", "x3")
    np.testing.assert_array_equal(ds.X_train, X[ds.train_rows].astype(np.float32))
    np.testing.assert_array_equal(np.array(ds.class_names)[ds.y_train], y[ds.train_rows].astype(str))
    np.testing.assert_array_equal(ds.train_groups, groups[ds.train_rows])
    np.testing.assert_array_equal(ds.test_groups, groups[ds.test_rows])
    assert_same_dataset(ds, load_dataset(**json.loads(json.dumps(ds.spec))))


def test_npz_with_two_features_is_points_and_float_labels_are_accepted(tmp_path):
    X, y = tabular(n=40, d=2, classes=(0, 1))
    ds = load_dataset(write_npz(tmp_path / "p.npz", X=X, y=y.astype(float)), seed=0)
    assert ds.kind == "points" and ds.class_names == ("0", "1")
    assert ds.train_groups is None and ds.test_groups is None


def test_csv_round_trip_string_labels_and_group_column(tmp_path):
    X, _ = tabular(n=60, d=3)
    labels = np.array(["cat", "dog", "ant"] * 20)
    df = pd.DataFrame(X, columns=["f1", "f2", "f3"])
    df.insert(1, "animal", labels)
    df["ward"] = [f"w{i % 5}" for i in range(60)]
    path = tmp_path / "pets.csv"
    df.to_csv(path, index=False)

    ds = load_dataset(path, label_column="animal", group_column="ward", seed=2, standardize=False)
    assert ds.name == "pets" and ds.kind == "tabular"
    assert ds.feature_names == ("f1", "f2", "f3")
    assert ds.class_names == ("ant", "cat", "dog")
    np.testing.assert_array_equal(np.array(ds.class_names)[ds.y_train], labels[ds.train_rows])
    np.testing.assert_allclose(ds.X_train, X[ds.train_rows].astype(np.float32))
    assert set(ds.train_groups) <= {f"w{i}" for i in range(5)}
    np.testing.assert_array_equal(ds.train_groups, df["ward"].to_numpy()[ds.train_rows])
    assert_same_dataset(ds, load_dataset(**json.loads(json.dumps(ds.spec))))


def test_csv_integer_labels_sort_numerically(tmp_path):
    X, y = tabular(n=40, d=3, classes=(10, 2))
    df = pd.DataFrame(X, columns=["a", "b", "c"]).assign(label=y)
    df.to_csv(tmp_path / "n.csv", index=False)
    ds = load_dataset(tmp_path / "n.csv", label_column="label")
    assert ds.class_names == ("2", "10")


# --------------------------------------------------------------------------- queries


@pytest.fixture
def csv_train(tmp_path):
    X, _ = tabular(n=60, d=3)
    df = pd.DataFrame(X, columns=["f1", "f2", "f3"])
    df["animal"] = ["cat", "dog", "ant"] * 20
    df.to_csv(tmp_path / "train.csv", index=False)
    return load_dataset(tmp_path / "train.csv", label_column="animal", standardize=False)


def test_queries_default_to_the_test_split():
    ds = load_dataset("moons", n_samples=60)
    for source in (None, "moons"):
        X, y = load_queries(source, ds)
        np.testing.assert_array_equal(X, ds.X_test)
        np.testing.assert_array_equal(y, ds.y_test)
    with pytest.raises(ConfigError, match="test split"):
        load_queries("digits", ds)


def test_queries_from_csv_map_labels_and_reorder_columns(tmp_path, csv_train):
    q = pd.DataFrame({"f3": [0.5, 1.0], "animal": ["dog", "ant"], "f1": [1, 2], "f2": [3, 4]})
    q.to_csv(tmp_path / "q.csv", index=False)
    X, y = load_queries(tmp_path / "q.csv", csv_train)
    np.testing.assert_array_equal(X, np.array([[1, 3, 0.5], [2, 4, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(y, [2, 0])  # classes ("ant", "cat", "dog")

    q.drop(columns="animal").to_csv(tmp_path / "unlabelled.csv", index=False)
    X, y = load_queries(tmp_path / "unlabelled.csv", csv_train)
    assert X.shape == (2, 3) and y is None


def test_queries_unknown_label_and_feature_mismatch(tmp_path, csv_train):
    bad = pd.DataFrame({"f1": [1.0], "f2": [2.0], "f3": [3.0], "animal": ["emu"]})
    bad.to_csv(tmp_path / "emu.csv", index=False)
    with pytest.raises(DataError, match="emu"):
        load_queries(tmp_path / "emu.csv", csv_train)
    write_npz(tmp_path / "wide.npz", X=np.zeros((2, 5)))
    with pytest.raises(ShapeError, match=r"5 features.*has 3"):
        load_queries(tmp_path / "wide.npz", csv_train)


def test_queries_from_npz_with_and_without_labels(tmp_path):
    ds = load_dataset("digits")
    X = np.random.default_rng(0).random((4, 64))
    Xq, yq = load_queries(write_npz(tmp_path / "q.npz", X=X, y=[0, 9, 3, 3]), ds)
    assert Xq.dtype == np.float32 and Xq.shape == (4, 64)
    np.testing.assert_array_equal(yq, [0, 9, 3, 3])
    _, yq = load_queries(write_npz(tmp_path / "x.npz", X=X), ds)
    assert yq is None
    with pytest.raises(DataError, match="12"):
        load_queries(write_npz(tmp_path / "bad.npz", X=X, y=[0, 1, 2, 12]), ds)


# --------------------------------------------------------------------------- validation


class _OpensFileWhenUnpickled:
    """Unpickling this object would create ``path``: proof that nothing was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_npz_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled.txt"
    X = np.empty((2, 1), dtype=object)
    X[0, 0] = _OpensFileWhenUnpickled(str(marker))
    X[1, 0] = 1.0
    path = write_npz(tmp_path / "evil.npz", X=X, y=np.array([0, 1]))
    with zipfile.ZipFile(path) as zf:  # the payload really is in the file
        assert str(marker).encode() in zf.read("X.npy")
    with pytest.raises(DataError, match="pickle"):
        load_dataset(path)
    with pytest.raises(DataError, match="pickle"):
        load_queries(path, load_dataset("moons", n_samples=40))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("arrays", "error", "words"),
    [
        ({"features": np.zeros((4, 2)), "y": np.arange(4)}, DataError, r"no array 'X'.*features"),
        ({"X": np.zeros((4, 2))}, DataError, r"no array 'y'"),
        ({"X": np.zeros((4, 2, 2)), "y": np.arange(4)}, DataError, "2-D"),
        ({"X": np.zeros((4, 2)), "y": np.array([0, 1, 0])}, DataError, "3 labels but X has 4"),
        ({"X": np.zeros((4, 2)), "y": np.zeros((4, 1))}, DataError, "1-D"),
        ({"X": np.zeros((4, 2)), "y": np.array([0, 0.5, 1, 1])}, DataError, "integer-valued"),
        ({"X": np.zeros((4, 2)), "y": np.zeros(4)}, DataError, "only one class"),
        ({"X": np.array(["a", "b"]).reshape(2, 1), "y": [0, 1]}, DataError, "not numbers"),
        (
            {"X": np.zeros((20, 2)), "y": np.array([0] * 10 + [1] * 9 + [2])},
            DataError,
            r"class '2'.*only 1",
        ),
        (
            {"X": np.zeros((4, 2)), "y": np.arange(4), "groups": np.arange(3)},
            DataError,
            "one group label per row",
        ),
    ],
)
def test_npz_validation_errors(tmp_path, arrays, error, words):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(error, match=words):
        load_dataset(path)


def test_non_finite_values_are_located(tmp_path):
    X, y = tabular(n=30, d=3, classes=(0, 1))
    X[4, 1] = np.nan
    X[17, 2] = np.inf
    X[17, 1] = np.nan
    with pytest.raises(DataError, match=r"3 NaN or infinite.*rows 4, 17.*columns 1, 2"):
        load_dataset(write_npz(tmp_path / "nan.npz", X=X, y=y))

    df = pd.DataFrame(X, columns=["a", "b", "c"]).assign(label=y)
    df.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(DataError, match=r"rows 4, 17.*'b', 'c'"):
        load_dataset(tmp_path / "nan.csv", label_column="label")


def test_file_problems(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "missing.npz")
    (tmp_path / "notes.txt").write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"neither an \.npz nor a \.csv"):
        load_dataset(tmp_path / "notes.txt")
    (tmp_path / "junk.npz").write_bytes(b"definitely not a zip archive")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(tmp_path / "junk.npz")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(tmp_path / "empty.csv", label_column="y")
    with open(tmp_path / "single.npz", "wb") as fh:  # a bare .npy under an .npz name
        np.save(fh, np.zeros(3))
    with pytest.raises(DataError, match="single array"):
        load_dataset(tmp_path / "single.npz")


def test_unknown_name_lists_the_builtins():
    with pytest.raises(ConfigError, match=r"unknown dataset 'digitz'.*digits, mnist1d"):
        load_dataset("digitz")


# 0 is valid since the user's own split exists (train on every row): tests/data/test_split_and_scaling.py
@pytest.mark.parametrize("value", [1, -0.1, 1.5, float("nan"), "0.2"])
def test_bad_test_fraction(value):
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset("moons", test_fraction=value)


@pytest.mark.parametrize("value", [1, 1.0, -0.1, float("inf")])
def test_bad_label_noise(value):
    with pytest.raises(ConfigError, match="label_noise"):
        load_dataset("moons", label_noise=value)


def test_test_fraction_too_small_for_the_classes(tmp_path):
    X, y = tabular(n=30, d=2, classes=(0, 1, 2))
    with pytest.raises(ConfigError, match="one per class"):
        load_dataset(write_npz(tmp_path / "small.npz", X=X, y=y), test_fraction=0.05)


def test_options_that_do_not_apply_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="moons"):
        load_dataset("digits", n_samples=100)
    with pytest.raises(ConfigError, match="CSV"):
        load_dataset("digits", label_column="y")
    with pytest.raises(ConfigError, match="seed"):
        load_dataset("digits", seed=-1)


@pytest.fixture
def mixed_csv(tmp_path):
    df = pd.DataFrame(
        {
            "age": [30, 40, 50, 60] * 5,
            "city": ["a", "b", "c", "d"] * 5,
            "when": ["x", "y", "x", "y"] * 5,
            "label": [0, 1] * 10,
            "site": ["s1", "s2"] * 10,
        }
    )
    df.to_csv(tmp_path / "mixed.csv", index=False)
    return tmp_path / "mixed.csv"


def test_csv_column_errors(mixed_csv):
    with pytest.raises(DataError, match=r"needs a label_column.*'age', 'city'"):
        load_dataset(mixed_csv)
    with pytest.raises(DataError, match=r"no column 'target'.*'label'"):
        load_dataset(mixed_csv, label_column="target")
    with pytest.raises(DataError, match=r"'city', 'when'.*not numeric.*encode"):
        load_dataset(mixed_csv, label_column="label", group_column="site")
    with pytest.raises(DataError, match="no group column 'ward'"):
        load_dataset(mixed_csv, label_column="label", group_column="ward")
    with pytest.raises(ConfigError, match="both the label and the group"):
        load_dataset(mixed_csv, label_column="label", group_column="label")


def test_csv_missing_label_is_located(tmp_path):
    df = pd.DataFrame({"a": np.arange(10.0), "label": ["x", "y"] * 4 + [None, "x"]})
    df.to_csv(tmp_path / "gap.csv", index=False)
    with pytest.raises(DataError, match=r"'label'.*rows 8"):
        load_dataset(tmp_path / "gap.csv", label_column="label")


# ---- class-conditional label noise (confusion pairs) -------------------------------------


def test_noise_pairs_relabel_a_share_of_each_source_class():
    from attrcore.data.datasets import load_dataset as load

    ds = load("digits", label_noise=0.4, noise_pairs="7:1,2:5", noise_seed=3)
    clean, given = ds.y_train_clean, ds.y_train
    for a, b in ((7, 1), (2, 5)):
        members = clean == a
        changed = members & (given != clean)
        assert changed.sum() == round(0.4 * members.sum())
        assert (given[changed] == b).all()
    assert set(np.flatnonzero(given != clean)) == set(ds.flipped)
    assert set(np.unique(clean[ds.flipped])) == {2, 7}
    again = load(**ds.spec)  # the spec rebuilds the same noisy labels
    assert (again.y_train == given).all() and (again.flipped == ds.flipped).all()
    other_seed = load("digits", label_noise=0.4, noise_pairs="7:1,2:5", noise_seed=4)
    assert (other_seed.X_train == ds.X_train).all()  # the noise seed never moves the split
    assert not (other_seed.flipped.shape == ds.flipped.shape and (other_seed.flipped == ds.flipped).all())


def test_noise_without_pairs_or_seed_keeps_the_old_spec_and_draws():
    from attrcore.data.datasets import load_dataset as load

    a = load("digits", label_noise=0.1)
    assert "noise_pairs" not in a.spec and "noise_seed" not in a.spec
    b = load("digits", label_noise=0.1, noise_seed=0)  # the default noise seed is the split seed
    assert (a.flipped == b.flipped).all() and (a.y_train == b.y_train).all()


@pytest.mark.parametrize(
    ("pairs", "match"),
    [
        ("7:11", "class '11', which is not in the data"),
        ("7:7", "onto itself"),
        ("7:1,7:2", "source of two noise pairs"),
        ("71", "is not 'SOURCE:TARGET'"),
        ("", "empty"),
    ],
)
def test_bad_noise_pairs_get_clear_messages(pairs, match):
    from attrcore.data.datasets import load_dataset as load

    with pytest.raises(ConfigError, match=match):
        load("digits", label_noise=0.4, noise_pairs=pairs)


def test_a_noise_rate_of_one_or_more_is_refused():
    from attrcore.data.datasets import load_dataset as load

    for rate in (1.0, 1.5):
        with pytest.raises(ConfigError, match=r"label_noise must be in \[0, 1\)"):
            load("digits", label_noise=rate, noise_pairs="7:1")
