"""Tests for attrcore.data.sources: each kind partitions the training set; errors are typed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attrcore.data import Sources, load_dataset, make_sources
from attrcore.errors import ConfigError, ShapeError


@pytest.fixture(scope="module")
def moons():
    return load_dataset("moons", n_samples=60, label_noise=0.2, seed=1)


@pytest.fixture
def grouped(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    df["label"] = ["no", "yes"] * 20
    df["hospital"] = [["north", "east", "south"][i % 3] for i in range(40)]
    df.to_csv(tmp_path / "g.csv", index=False)
    return load_dataset(tmp_path / "g.csv", label_column="label", group_column="hospital")


def assert_partition(src: Sources, n: int) -> None:
    """Every example in exactly one source; members, index and one_hot agree."""
    assert src.index.dtype == np.int64 and src.index.shape == (n,)
    one_hot = src.one_hot()
    assert one_hot.shape == (src.m, n) and one_hot.dtype == torch.float32
    torch.testing.assert_close(one_hot.sum(dim=0), torch.ones(n))
    members = [src.members(j) for j in range(src.m)]
    np.testing.assert_array_equal(np.sort(np.concatenate(members)), np.arange(n))
    for j, idx in enumerate(members):
        assert idx.dtype == np.int64
        assert np.all(src.index[idx] == j)
        torch.testing.assert_close(one_hot[j].nonzero().flatten(), torch.from_numpy(idx))


def test_example_sources(moons):
    src = make_sources(moons)
    assert src.kind == "example" and src.m == moons.n_train
    np.testing.assert_array_equal(src.index, np.arange(moons.n_train))
    assert src.names[:3] == ("#0", "#1", "#2")
    np.testing.assert_array_equal(src.members(5), [5])
    torch.testing.assert_close(src.one_hot(torch.float64), torch.eye(moons.n_train, dtype=torch.float64))
    assert_partition(src, moons.n_train)


def test_class_sources_follow_the_noisy_labels(moons):
    assert len(moons.flipped) > 0
    src = make_sources(moons, "class")
    assert src.m == moons.n_classes and src.names == moons.class_names
    np.testing.assert_array_equal(src.index, moons.y_train)
    np.testing.assert_array_equal(src.members(1), np.flatnonzero(moons.y_train == 1))
    assert_partition(src, moons.n_train)


def test_group_sources_from_the_dataset(grouped):
    src = make_sources(grouped, "group")
    assert src.names == ("east", "north", "south")  # sorted
    np.testing.assert_array_equal(np.array(src.names)[src.index], grouped.train_groups)
    assert_partition(src, grouped.n_train)


def test_group_sources_from_an_argument(moons):
    groups = np.arange(moons.n_train) % 12  # numbers sort as numbers: 2 before 10
    src = make_sources(moons, "group", groups=groups)
    assert src.m == 12 and src.names[:3] == ("0", "1", "2") and src.names[-1] == "11"
    np.testing.assert_array_equal(src.index, groups)
    assert_partition(src, moons.n_train)

    mixed = np.array([1, "b", 1, "a"] * (moons.n_train // 4), dtype=object)
    src = make_sources(moons, "group", groups=mixed)
    assert src.names == ("1", "a", "b")
    assert_partition(src, moons.n_train)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=40))
def test_any_grouping_is_a_partition(values):
    ds = _FakeDataset(n_train=len(values))
    src = make_sources(ds, "group", groups=np.array(values))
    assert src.m == len(set(values))
    assert_partition(src, len(values))


class _FakeDataset:
    """The two attributes make_sources reads for groups passed in directly."""

    def __init__(self, n_train: int):
        self.n_train = n_train
        self.name = "fake"
        self.train_groups = None


def test_source_errors(moons):
    with pytest.raises(ConfigError, match="group_column"):
        make_sources(moons, "group")
    with pytest.raises(ShapeError, match=f"{moons.n_train} examples"):
        make_sources(moons, "group", groups=np.zeros(moons.n_train - 1))
    with pytest.raises(ConfigError, match="example, class, group"):
        make_sources(moons, "patient")
    with pytest.raises(ConfigError, match="kind='group'"):
        make_sources(moons, "class", groups=np.zeros(moons.n_train))
    with pytest.raises(ConfigError, match="does not exist"):
        make_sources(moons, "class").members(2)
    with pytest.raises(ShapeError, match="outside"):
        Sources("group", np.array([0, 3]), ("a", "b"))
