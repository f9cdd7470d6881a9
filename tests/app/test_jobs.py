"""attrcore.app.jobs: the one job runner of the pages (no Streamlit)."""

from __future__ import annotations

from attrcore import CancelledError, ConfigError, SimulationConfig
from attrcore import app as sup
from attrcore.engine.train import Progress


def test_a_job_reports_progress_and_returns_its_value():
    shown, curves = [], []

    def fn(progress):
        for e in (1, 2):
            progress(Progress("train", e, 2, {"loss": 1.0 / e}))
        progress.say("finishing", 0.9)
        return "done"

    out = sup.run_job(fn, lambda frac, text: shown.append((frac, text)), on_epoch=lambda h: curves.append(len(h)))
    assert out.ok and out.value == "done" and out.message is None
    assert [f for f, _ in shown] == [0.5, 1.0, 0.9] and shown[0][1].startswith("epoch 1/2")
    assert curves == [1, 2]


def test_a_failed_or_cancelled_job_is_a_readable_message():
    def bad(progress):
        SimulationConfig(memory_budget_mb=0)

    out = sup.run_job(bad, lambda *_: None)
    assert not out.ok and not out.cancelled and "memory budget (MB)" in out.message and "`" not in out.message

    def long(progress):  # a library job: a False from progress means stop (as train() does)
        for e in range(1, 10):
            if progress(Progress("train", e, 9)) is False:
                raise CancelledError("training was cancelled; nothing was saved.")

    out = sup.run_job(long, lambda *_: None, cancelled=lambda: True)
    assert out.cancelled and "cancelled" in out.message

    def third_party(progress):
        raise RuntimeError("traker exploded")

    out = sup.run_job(third_party, lambda *_: None, label="TRAK")
    assert not out.ok and out.message == "TRAK failed: RuntimeError: traker exploded"
    assert isinstance(ConfigError("x"), Exception)
