"""The Mislabeled data page under AppTest: train a noisy run, rank, mark, retrain, export,
and the marks survive an app restart."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from attrcore import RunStore, TrainConfig
from attrcore import app as sup
from attrcore import mislabel as ml

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/mislabeled.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_a_fresh_store_offers_to_train_a_noisy_run():
    at = open_page()
    assert at.title[0].value == "Mislabeled data"
    assert "no run to rank yet" in texts(at.info)
    next(n for n in at.number_input if n.key == "ml_epochs").set_value(2)
    button(at, "ml_train").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert RunStore().exists("digits-noisy-u0.1-s0")
    assert "144 of 1437 training labels were flipped" in texts(at.caption)


def test_rank_mark_retrain_export_and_restart():
    store = RunStore()
    sup.NoisyRunRequest("digits", 0.1, None, 0, "noisy", hidden=(16,), train=TrainConfig(epochs=3)).fit_and_save(store)
    # recorded while the run trained, stored with it: ranked without a replay
    assert set(ml.TRAJECTORY_SIGNALS) <= sup.stored_signals(store, "noisy", sup.run_version(store, "noisy"))
    at = open_page()
    assert not at.error, texts(at.error)
    table = next(d for d in at.dataframe if "ROC-AUC" in d.value.columns).value
    assert list(table["signal"])[:2] == ["forward-only self-influence (loss)", "forward-only self-influence (margin)"]
    assert "area under the margin, AUM (control)" in set(table["signal"])
    assert table["ROC-AUC"].between(0.5, 1).all()
    first = at.session_state["ml_pick_noisy_forward-only"]
    button(at, "ml_mark_remove").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert ml.load_marks(RunStore(), "noisy") == {first: ml.Mark(first, "remove")}
    button(at, "ml_fix_top").click().run()  # the top 15 % by forward-only, known flips back to clean
    marks = ml.load_marks(RunStore(), "noisy")
    assert len(marks) == round(0.15 * 1437)
    button(at, "ml_retrain").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(m.label == "test accuracy after the fixes" for m in at.metric)
    assert "of the gap to the model trained on the clean labels" in texts(at.markdown)
    downloads = at.get("download_button")
    assert len(downloads) == 2
    # a restart: a new session on the same store finds the marks and the stored retrain
    again = open_page()
    assert any(m.label == "test accuracy after the fixes" for m in again.metric)
    assert f"{len(marks)} mark(s)" in texts(again.markdown)


def test_relabel_mark_proponents_and_orphaned_marks():
    store = RunStore()
    sup.NoisyRunRequest("digits", 0.1, None, 0, "noisy", hidden=(16,), train=TrainConfig(epochs=3)).fit_and_save(store)
    sup.NoisyRunRequest("digits", 0.1, None, 1, "gone", hidden=(8,), train=TrainConfig(epochs=1)).fit_and_save(store)
    ml.save_marks(store, "gone", [ml.Mark(0, "remove"), ml.Mark(1, "keep")])
    store.delete_run("gone")  # its marks stay (never lost silently) and the page says so
    at = open_page()
    assert not at.error, texts(at.error)
    assert "Marks kept for deleted runs" in texts(at.sidebar.caption) and "gone (2 mark(s))" in texts(
        at.sidebar.caption
    )
    first = at.session_state["ml_pick_noisy_forward-only"]
    to = next(s for s in at.selectbox if s.key == f"ml_to_{first}").value
    button(at, "ml_mark_relabel").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert ml.load_marks(RunStore(), "noisy") == {first: ml.Mark(first, "relabel", int(to))}
    # the strongest proponents and opponents are one click away (a popover of the example)
    assert {"**pushed its margin up**", "**pushed it down**"} <= {str(m.value) for m in at.markdown}
