"""The Streamlit app under ``streamlit.testing.v1.AppTest``: every page opens on a fresh
store and on a store with small prepared runs, and the main interactions work.

Runs are tiny on purpose (hidden 8, 2 epochs, K = 2): the point is the app's wiring, not
attribution quality.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from attrcore import CancelledError, DataError, RunStore, SimulationConfig, TrainConfig
from attrcore import app as sup
from attrcore.data import uploads

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
TIMEOUT = 60

PAGES = {
    "home": (None, "attrcore: which training examples made this prediction?"),
    "train": ("pages/train.py", "Train a model"),
    "explore": ("pages/explore.py", "Explore attributions"),
    "evaluate": ("pages/evaluate.py", "Evaluate attributions"),
    "cost": ("pages/cost.py", "Cost on this machine"),
    "mislabeled": ("pages/mislabeled.py", "Mislabeled data"),
}
TINY = {"hidden": (8,), "train": TrainConfig(epochs=2), "simulation": SimulationConfig(horizon=2)}
PREPARED = {
    "digits-tiny": (sup.DataChoice("digits", test_fraction=0.5), "example"),
    "moons-tiny": (sup.DataChoice("moons", n_samples=200), "example"),
    "cancer-tiny": (sup.DataChoice("breast_cancer"), "example"),
    "digits-class": (sup.DataChoice("digits", test_fraction=0.5), "class"),
}


def make_prepared_store(home: Path) -> Path:
    store = RunStore(home)
    for name, (data, sources) in PREPARED.items():
        sup.TrainRequest(data=data, name=name, sources=sources, **TINY).fit_and_save(store)
    store.close()
    return home


@pytest.fixture(scope="session")
def prepared_store(tmp_path_factory) -> Path:
    return make_prepared_store(tmp_path_factory.mktemp("prepared") / "home")


@pytest.fixture
def prepared_home(prepared_store: Path, tmp_path: Path, monkeypatch) -> Path:
    """A private copy of the prepared store as ``ATTRCORE_HOME`` (tests may write to it)."""
    home = tmp_path / "prepared-home"
    shutil.copytree(prepared_store, home)
    monkeypatch.setenv("ATTRCORE_HOME", str(home))
    return home


def open_page(page: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    path = PAGES[page][0]
    if path is not None:
        at.switch_page(path)
        at.run()
    return at


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


# ----------------------------------------------------------------------------- every page


@pytest.mark.parametrize("store", ["fresh", "prepared"])
@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_opens(page, store, request):
    if store == "prepared":
        request.getfixturevalue("prepared_home")
    at = ok(open_page(page))
    assert at.title[0].value == PAGES[page][1]
    assert not at.error, texts(at.error)
    assert at.expander, "every page explains itself in an expander"
    if store == "fresh" and page in ("explore", "evaluate", "cost"):
        assert "no run to explore yet" in texts(at.info)


def test_home_lists_runs_and_opens_the_demo(prepared_home):
    RunStore().rename_run("digits-tiny", sup.DEMO_RUN)
    at = ok(open_page("home"))
    assert len(at.dataframe) == 1 and set(at.dataframe[0].value["name"]) >= {sup.DEMO_RUN, "moons-tiny"}
    assert "15 epochs instead of 30" in texts(at.markdown)
    at.button[0].click().run()  # "Open the digits demo"
    ok(at)
    assert at.title[0].value == PAGES["explore"][1]
    assert at.session_state["run"] == sup.DEMO_RUN


def test_home_on_a_fresh_store_offers_to_train_the_demo():
    at = ok(open_page("home"))
    assert [b.label for b in at.button] == ["Train the digits demo"]
    assert "No runs yet" in texts(at.info)


# ----------------------------------------------------------------------------- train


def test_train_a_tiny_run_from_the_train_page():
    at = ok(open_page("train"))
    at.selectbox(key="train_dataset").set_value("moons").run()
    at.text_input(key="train_hidden").input("8")
    at.number_input(key="train_epochs").set_value(2)
    at.number_input(key="train_horizon").set_value(2)
    at.text_input(key="train_name").input("moons-from-app")
    ok(at.run())
    assert not at.error, texts(at.error)
    at.button(key="train_button").click().run()
    ok(at)
    assert "Saved run **moons-from-app**" in texts(at.success)
    assert RunStore().exists("moons-from-app")
    assert at.session_state["run"] == "moons-from-app"
    assert any(b.label == "Explore this run" for b in at.button)


def test_train_page_shows_readable_errors_and_refuses_to_overwrite(prepared_home):
    at = ok(open_page("train"))
    at.text_input(key="train_hidden").input("128, lots").run()
    assert "hidden layer widths" in texts(at.error)
    assert at.button(key="train_button").disabled
    at.text_input(key="train_hidden").input("8").run()
    at.selectbox(key="train_dataset").set_value("moons").run()
    at.text_input(key="train_name").input("moons-tiny")
    at.number_input(key="train_epochs").set_value(1)
    at.button(key="train_button").click().run()
    ok(at)
    assert "exists" in texts(at.error)


def test_cancelling_training_saves_nothing():
    store = RunStore()
    seen = []
    adapter = sup.ProgressAdapter(lambda p, history: seen.append(len(history)), cancelled=lambda: True)
    req = sup.TrainRequest(data=sup.DataChoice("moons", n_samples=100), name="cancelled", **TINY)
    with pytest.raises(CancelledError):
        req.fit_and_save(store, progress=adapter)
    assert seen == [1] and not store.exists("cancelled") and store.list_runs() == []


def test_uploads_are_validated(tmp_path):
    with pytest.raises(DataError, match="neither a .csv nor an .npz"):
        uploads.save_upload(tmp_path, "model.pkl", b"\x80\x04")
    with pytest.raises(DataError, match="empty"):
        uploads.save_upload(tmp_path, "data.csv", b"")
    csv = uploads.save_upload(tmp_path, "my data.csv", b"a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n1,1,x\n2,2,y\n")
    assert csv.name == "my_data.csv" and uploads.csv_columns(csv) == ["a", "b", "label"]
    assert uploads.save_upload(tmp_path, "my data.csv", csv.read_bytes()) == csv  # content-addressed
    with pytest.raises(DataError, match="label column"):
        sup.DataChoice(str(csv)).load()
    ds = sup.DataChoice(str(csv), label_column="label", test_fraction=0.34).load()
    assert ds.kind == "points" and ds.class_names == ("x", "y")


# ----------------------------------------------------------------------------- explore


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ("digits-tiny", "Click an example to make it the query"),
        ("moons-tiny", "Click a test point to make it the query"),
        ("cancer-tiny", "Select a row to make it the query"),
        ("digits-class", "Click an example to make it the query"),
    ],
)
def test_explore_renders_each_kind_of_data(prepared_home, run, expected):
    at = ok(open_page("explore", run=run))
    assert at.sidebar.selectbox[0].value == run
    assert expected in texts(at.caption)
    assert any(s.value.startswith("2 · Query #") for s in at.subheader)
    assert [t.label for t in at.tabs] == ["Proponents and opponents", "Compare methods", "Counterfactual check"]
    if run == "moons-tiny":
        assert "decision regions" in texts(at.caption)
    if run == "digits-class":  # class sources: a table of all ten sources
        assert any(len(df.value) == 10 and "examples" in df.value.columns for df in at.dataframe)


def test_explore_pick_a_query_switch_measure_and_compare_methods(prepared_home):
    at = ok(open_page("explore", run="digits-tiny"))
    at.selectbox(key="explore_select_digits-tiny_all").set_value(5).run()
    ok(at)
    assert "2 · Query #5" in texts(at.subheader)
    at.sidebar.selectbox(key="explore_measure").set_value("loss").run()
    ok(at)
    assert "Measurement f = loss" in texts(at.markdown)
    at.multiselect(key="explore_cmp_baselines").set_value(["grad-dot", "random"]).run()
    at.button(key="explore_cmp_compute").click().run()
    ok(at)
    assert not at.error, texts(at.error)
    table = next(df.value for df in at.dataframe if "method" in df.value.columns)
    assert list(table["method"]) == ["Gradient dot product", "Random (control)"]
    assert np.isfinite(table["Spearman (all queries)"]).all()


def test_explore_counterfactual_check(prepared_home):
    at = ok(open_page("explore", run="moons-tiny"))
    at.slider(key="explore_cf_n").set_value(5).run()
    at.button(key="explore_cf_go").click().run()
    ok(at)
    labels = [m.label for m in at.metric]
    assert {"predicted change of f", "f before", "f after retraining"} <= set(labels)
    assert "retraining took" in texts(at.caption)
    # asked again: answered from the store, no button needed
    at2 = ok(open_page("explore", run="moons-tiny", explore_cf_n=5))
    at2.slider(key="explore_cf_n").set_value(5).run()
    assert "f after retraining" in [m.label for m in at2.metric]


def test_picked_id_reads_plotly_selections():
    from pages import _shared as sh

    assert sh.picked_id({"selection": {"points": [{"customdata": [7]}]}}) == 7
    assert sh.picked_id({"selection": {"points": [{"customdata": 3}]}}) == 3
    assert sh.picked_id({"selection": {"points": []}}) is None


# ----------------------------------------------------------------------------- evaluate / cost


def test_evaluate_runs_a_tiny_lds_and_loo(prepared_home, tmp_path, monkeypatch):
    import json

    report = {
        "task": "tiny",
        "created": "today",
        "rows": [
            {
                "method": "forward-only",
                "scheme": "trajectory",
                "horizon": h,
                "models": 1,
                "lds_fixed-seed": {"mean": v, "sem": 0.01, "n": 5},
            }
            for h, v in (("0", 0.1), ("4", 0.2), ("full", 0.3))
        ],
    }
    (tmp_path / "tiny.json").write_text(json.dumps(report))
    monkeypatch.setenv("ATTRCORE_BENCH_DIR", str(tmp_path))
    at = ok(open_page("evaluate", run="moons-tiny"))
    at.number_input(key="eval_subsets").set_value(4)
    at.number_input(key="eval_queries").set_value(10)
    at.run()
    at.button(key="eval_lds_go").click().run()
    ok(at)
    assert "Ground truth: 4 subsets × 10 queries" in texts(at.success)
    lds = at.dataframe[0].value
    assert lds["method"][0].startswith("forward-only (this run") and np.isfinite(lds["LDS"][0])
    assert "LDS of this query" in [m.label for m in at.metric]
    assert at.selectbox(key="eval_bench").value == "tiny.json"  # the benchmark's LDS curves
    at.number_input(key="eval_loo_k").set_value(3)
    at.number_input(key="eval_loo_seeds").set_value(1)
    at.run()
    at.button(key="eval_loo_go").click().run()
    ok(at)
    assert any("Pearson" in df.value.columns for df in at.dataframe)


def test_cost_measures_and_stores_with_the_machine(prepared_home):
    at = ok(open_page("cost", run="moons-tiny"))
    assert "No measurement for this run yet" in texts(at.info)
    at.button(key="cost_go").click().run()
    ok(at)
    assert "forward-only, ms per query" in [m.label for m in at.metric]
    stored = sup.load_cost(RunStore(), "moons-tiny", sup.run_version(RunStore(), "moons-tiny"))
    assert stored["machine"]["cpu_count"] and len(stored["forward_n"]) == len(stored["forward_seconds"])
    at2 = ok(open_page("cost", run="moons-tiny"))  # a new session reads the stored numbers
    assert at2.button(key="cost_go").label == "Re-measure on this machine"


# ----------------------------------------------------------------------------- attrcore.app


def test_grouped_responses_score_like_summed_examples(prepared_store):
    """A group's response is the sum of its members' (linearity), so its scores are too."""
    from attrcore import TrainedRun

    run = TrainedRun.load(RunStore(prepared_store), "moons-tiny")
    ds = run.dataset
    grouped = sup.group_responses(run, ds.y_train, ds.class_names)
    per_example = run.score(ds.X_test[:5], ds.y_test[:5])
    expected = np.stack([per_example[:, ds.y_train == c].sum(1) for c in range(ds.n_classes)], 1)
    np.testing.assert_allclose(grouped.score(ds.X_test[:5], ds.y_test[:5]), expected, rtol=1e-4, atol=1e-6)


def test_rank_agreement_top_k_and_breakeven():
    a = np.array([[3.0, 1.0, -2.0, 0.5, -1.0]])
    assert sup.rank_agreement(a, a, k=2) == {"spearman": 1.0, "top_k_proponents": 1.0, "top_k_opponents": 1.0, "k": 2}
    assert np.isclose(sup.rank_agreement(a, -a, k=2)["spearman"], -1.0)
    pos, neg = sup.top_k(a[0], 2)
    assert list(pos) == [0, 1] and list(neg) == [2, 4]
    names, sp, ov = sup.agreement_matrix({"x": a, "y": a, "z": -a}, k=2)
    assert names == ["x", "y", "z"] and np.allclose(sp, [[1, 1, -1], [1, 1, -1], [-1, -1, 1]])
    assert sup.breakeven_queries(10.0, 0.001, 1.0, 0.01) == pytest.approx(1000.0)
    assert sup.breakeven_queries(1.0, 0.001, 2.0, 0.01) == 0.0
    assert sup.breakeven_queries(10.0, 0.1, 1.0, 0.01) == float("inf")
    assert sup.parse_hidden("64, 32") == (64, 32) and sup.parse_hidden("none") == ()


def test_bench_curves_from_a_benchmark_report():
    def row(method, v, **kw):
        return {"method": method, "lds_fixed-seed": {"mean": v, "sem": 0.01, "n": 10}, **kw}

    rows = [
        row("forward-only", 0.1, scheme="trajectory", horizon="0", models=1),
        row("forward-only", 0.3, scheme="trajectory", horizon="full", models=1),
        row("forward-only", 0.4, scheme="trajectory", horizon="full", models=3),
        row("forward-only", 0.2, scheme="stationary", horizon="100", models=1),
        row("trak", 0.25, models=1, meta={"proj_dim": 512}),
        row("trak", 0.35, models=10, meta={"proj_dim": 512}),
    ]
    curves = sup.bench_curves({"task": "t", "rows": rows})
    assert curves["horizon"]["trajectory"] == ([0.0, 4096.0], [0.1, 0.3])
    assert curves["horizon"]["stationary"] == ([100.0], [0.2])
    assert curves["ensemble"] == {"trajectory K=full": ([1, 3], [0.3, 0.4])}
    assert curves["trak_models"] == {"proj 512": ([1, 10], [0.25, 0.35])}
    assert curves["trak_proj"] == {"1 model(s)": ([512], [0.25]), "10 model(s)": ([512], [0.35])}
