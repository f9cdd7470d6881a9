"""What real users meet in the app: Explore computes only what it shows, says so when the
open run was deleted elsewhere, and works for a run trained on every row."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.errors import AppTestError
from test_app import APP, TIMEOUT, ok, texts  # noqa: I001  (the shared AppTest helpers)

import attrcore.app as sup
from attrcore import RunStore, SimulationConfig, TrainConfig
from attrcore.run import TrainedRun

TINY = {"hidden": (8,), "train": TrainConfig(epochs=2), "simulation": SimulationConfig(horizon=2)}


def open_explore(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/explore.py")
    at.run()
    return ok(at)


@pytest.fixture
def two_runs(attrcore_home):
    store = RunStore()
    for name in ("moons-a", "moons-b"):
        sup.TrainRequest(data=sup.DataChoice("moons", n_samples=120), name=name, **TINY).fit_and_save(store)
    return store


def test_explore_says_so_when_the_open_run_was_deleted_elsewhere(two_runs):
    at = open_explore(run="moons-a")
    assert at.session_state["run"] == "moons-a" and not at.warning
    two_runs.delete_run("moons-a")  # another tab, or `python -m attrcore delete moons-a`
    at.run()
    ok(at)
    assert "'moons-a', which you had open, was deleted" in texts(at.warning)
    assert "showing 'moons-b' instead" in texts(at.warning)
    assert at.session_state["run"] == "moons-b"
    at.run()  # said once, not on every rerun
    assert not at.warning


def test_explore_scores_only_the_shown_query_and_a_bounded_comparison(two_runs, monkeypatch):
    asked = []
    real = TrainedRun.score

    def spy(self, X, *args, **kwargs):
        asked.append(np.asarray(X).shape[0])
        return real(self, X, *args, **kwargs)

    monkeypatch.setattr(TrainedRun, "score", spy)
    monkeypatch.setattr(sup, "comparison_queries", lambda n_queries, n_sources: 3)
    at = open_explore(run="moons-b")
    assert not at.error, texts(at.error)
    n_test = TrainedRun.load(RunStore(), "moons-b").dataset.n_test
    assert asked and max(asked) <= 3 < n_test  # never the whole test split against every source
    assert 1 in asked  # the selected query, on its own
    keys = [a["key"] for a in RunStore().list_artifacts(sup.SCORES_KIND)]
    assert keys and all(k.get("first") == 3 for k in keys)


def test_explore_works_for_a_run_trained_on_every_row(attrcore_home):
    data = sup.DataChoice("moons", n_samples=80, test_fraction=0.0)
    sup.TrainRequest(data=data, name="all-rows", **TINY).fit_and_save(RunStore())
    at = open_explore(run="all-rows")
    assert not at.error, texts(at.error)
    assert "trained on every row" in texts(at.info)


def test_open_run_notice():
    store = RunStore()
    assert sup.open_run_notice(store, None, ["a"]) is None
    assert sup.open_run_notice(store, "a", ["a"]) is None
    assert "was deleted" in sup.open_run_notice(store, "gone", [])


def open_train() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    return ok(at)


def train_button(at: AppTest):
    return next(b for b in at.button if b.key == "train_button")


@pytest.mark.parametrize(
    ("key", "bad", "good", "words"),
    [
        ("train_lr", 1e6, 0.1, "learning rate"),
        ("train_horizon", -3, 16, "horizon"),
        ("train_epochs", 0, 2, "epochs"),
    ],
)
def test_an_out_of_range_value_blocks_the_train_button_and_says_why(attrcore_home, key, bad, good, words):
    at = open_train()
    assert not train_button(at).disabled
    at.number_input(key=key).set_value(bad).run()
    ok(at)
    assert train_button(at).disabled, "training would run with a value the field shows as invalid"
    assert words in texts(at.error).lower()
    with pytest.raises(AppTestError, match="disabled"):  # a browser user cannot click it
        train_button(at).click()
    assert RunStore().list_runs() == []
    at.number_input(key=key).set_value(good).run()
    assert not train_button(at).disabled and not at.error


def test_a_bad_run_name_blocks_the_train_button(attrcore_home):
    at = open_train()
    at.text_input(key="train_name").set_value("no spaces!").run()
    assert train_button(at).disabled and "invalid run name" in texts(at.error)


def test_tables_and_scatters_draw_a_page_of_queries():
    items = list(range(1234))
    assert sup.page_of(items, 1, 500) == items[:500]
    assert sup.page_of(items, 3, 500) == items[1000:]
    assert sup.page_of(items, 99, 500) == items[1000:]  # clamped


def open_evaluate(run: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["run"] = run
    at.run()
    at.switch_page("pages/evaluate.py")
    at.run()
    return ok(at)


def test_evaluate_says_what_to_do_for_a_run_without_a_test_split(attrcore_home):
    data = sup.DataChoice("moons", n_samples=80, test_fraction=0.0)
    sup.TrainRequest(data=data, name="all-rows", **TINY).fit_and_save(RunStore())
    at = open_evaluate("all-rows")
    assert not at.error, texts(at.error)
    said = texts(at.info)
    assert "no held-out queries" in said and "Your evaluation set" in said and "test fraction" in said
    assert "--eval" in said
    assert not [b for b in at.button if b.key == "eval_lds_go"]  # nothing offered that cannot work


def test_evaluate_uses_the_evaluation_file_of_a_run(attrcore_home, tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("train.csv", 120), ("holdout.csv", 30)):
        X = rng.normal(size=(n, 3))
        rows = ["a,b,c,label", *(f"{x[0]},{x[1]},{x[2]},{int(x[0] > 0)}" for x in X)]
        (tmp_path / name).write_text("\n".join(rows) + "\n")
    data = sup.DataChoice(str(tmp_path / "train.csv"), label_column="label", eval_source=str(tmp_path / "holdout.csv"))
    run = sup.TrainRequest(data=data, name="own-eval", **TINY).fit_and_save(RunStore())
    assert run.dataset.n_test == 30 and run.dataset.n_train == 120
    assert sup.evaluation_queries_missing(run) is None
    at = open_evaluate("own-eval")
    assert not at.error and not at.info, texts(at.error) + texts(at.info)
    assert at.number_input(key="eval_queries").value == 30  # the evaluation file's rows are the queries
    assert [b for b in at.button if b.key == "eval_lds_go"]


def test_cost_and_baselines_use_the_training_rows_of_a_run_without_a_test_split(attrcore_home):
    data = sup.DataChoice("moons", n_samples=80, test_fraction=0.0)
    run = sup.TrainRequest(data=data, name="all-rows", **TINY).fit_and_save(RunStore())
    version = sup.run_version(RunStore(), "all-rows")
    scores = sup.baseline_scores(RunStore(), run, version, "grad-dot")  # Explore › Compare methods
    assert scores.shape == (80, 80)  # one row per query Explore shows (the training rows)
    cost = sup.measure_cost(run, with_trak=False, query_counts=(1, 4))  # the Cost page's button (its queries)
    assert cost["forward_n"] == [1, 4] and all(s > 0 for s in cost["forward_seconds"])
