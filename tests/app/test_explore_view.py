"""The Explore page's view model (attrcore.app.explore): the words, tables and choices the
page shows, computed without Streamlit."""

from __future__ import annotations

import numpy as np
import pytest

from attrcore import RunStore, SimulationConfig, TrainConfig, fit, load_dataset
from attrcore.app import explore as ex


@pytest.fixture(scope="module")
def run():
    data = load_dataset("moons", n_samples=60, label_noise=0.1)
    return fit(data, hidden=(4,), train_config=TrainConfig(epochs=2), simulation=SimulationConfig(horizon=1))


@pytest.fixture(scope="module")
def grouped():
    data = load_dataset("moons", n_samples=60)
    return fit(
        data, hidden=(4,), train_config=TrainConfig(epochs=2), simulation=SimulationConfig(horizon=1), sources="class"
    )


def view_of(run, pred):
    """A QueryView whose model predicts ``pred`` (one-hot probabilities)."""
    X, y, _ = ex.query_pool(run.dataset)
    probs = np.full((len(X), 2), 0.1)
    probs[np.arange(len(X)), pred] = 0.9
    return ex.QueryView.of(run, probs)


def test_query_filters_pick_mistakes_and_classes_and_fall_back_to_all(run):
    y = ex.query_pool(run.dataset)[1]
    pred = y.copy()
    pred[[1, 4]] = 1 - y[[1, 4]]
    view = view_of(run, pred)
    assert view.filters() == ["all", "misclassified", "class 0", "class 1"]
    np.testing.assert_array_equal(view.filter("misclassified")[0], [1, 4])
    np.testing.assert_array_equal(view.filter("class 1")[0], np.flatnonzero(y == 1))
    everything, fell_back = view.filter("all")
    np.testing.assert_array_equal(everything, np.arange(len(y)))
    assert not fell_back and not view.filter("misclassified")[1]
    assert view.first_query() == 1
    assert view.label(1) == f"#1 · true {y[1]} · predicted {1 - y[1]} (wrong)"
    assert view.gallery_titles([0, 1]) == [f"{y[0]}", f"{y[1]}→{1 - y[1]}"]
    assert view.gallery_borders([0, 1])[0] is None and view.gallery_borders([0, 1])[1] is not None
    perfect = view_of(run, y)
    candidates, fell_back = perfect.filter("misclassified")
    assert fell_back and len(candidates) == len(y) and perfect.first_query() == 0
    table = view.table(np.array([0, 1]), run.dataset.feature_names)
    assert list(table.columns[:3]) == ["id", "true", "predicted"] and table["id"].tolist() == [0, 1]
    assert "(wrong)" in view.verdict(1) and "(correct)" in view.verdict(0)
    assert view.top_classes(0)["probability"].iloc[0] == pytest.approx(0.9)


def test_sources_are_named_with_their_label_and_flips(run, grouped):
    ds = run.dataset
    j = int(ds.flipped[0])
    assert ex.source_label(run, j).endswith("(flipped!)") and ex.any_flipped(run, [j])
    clean = next(i for i in range(ds.n_train) if i not in set(ds.flipped.tolist()))
    assert ex.source_label(run, clean) == f"#{clean} · {ds.class_names[ds.y_train[clean]]}"
    row = np.linspace(-1, 1, run.n_sources)
    table = ex.source_table(run, np.array([clean]), row)
    assert table["score"].tolist() == [row[clean]] and len(table.columns) == 2 + ds.n_features
    groups = ex.grouped_sources_table(grouped, np.array([0.5, -0.5]))
    assert groups["source"].tolist() == list(grouped.source_names) and groups["examples"].sum() == ds.n_train
    assert ex.source_label(grouped, 1) == grouped.source_names[1]


def test_agreement_table_compares_every_method_with_this_run(run):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 30))
    this = ex.method_label(run, this=True)
    other = ex.method_label(run)
    assert this.startswith("forward-only (this run, K=1") and ex.short_method_labels([this, other]) == [
        "forward-only",
        other,
    ]
    table = ex.agreement_table(this, {this: a[0], other: a[0], "noise": -a[0]}, {this: a, other: a, "noise": -a}, 3)
    assert table["method"].tolist() == [other, "noise"]
    assert table["Spearman (this query)"].tolist() == pytest.approx([1.0, -1.0])
    assert table["top-3 overlap (all queries)"].tolist() == pytest.approx([1.0, 0.0])


def test_counterfactual_plan_predicts_minus_the_removed_scores_and_keys_what_is_stored(run, tmp_path):
    row = np.array([0.5, -2.0, 3.0, 1.0, -0.25, 0.0])
    chosen, predicted = ex.counterfactual_plan(row, 2, "proponents")
    assert sorted(chosen.tolist()) == [2, 3] and predicted == pytest.approx(-4.0)
    chosen, predicted = ex.counterfactual_plan(row, 2, "opponents")
    assert sorted(chosen.tolist()) == [1, 4] and predicted == pytest.approx(2.25)
    store = RunStore(tmp_path / "home")
    scores = np.zeros(run.n_sources)
    res = ex.counterfactual(store, run, "v", 0, [3, 1], scores)
    assert store.get_artifact(ex.COUNTERFACTUAL_KIND, ex.counterfactual_key(run, "v", 0, [1, 3], "margin")) is not None
    caption, verdict = ex.counterfactual_words(res)
    assert "Removed 2 source(s) = 2 training example(s)" in caption and "direction" in verdict
    assert ex.run_caption(run).startswith("Run **None** · moons (2-D points) · trajectory K=1")
