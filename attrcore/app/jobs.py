"""The job runner of the pages: one long action with progress, cancel and a readable error.

Interface: :func:`run_job` ``(fn, show, ...) ->`` :class:`JobOutcome`. ``fn(progress)`` is
the long action; ``progress`` is a :class:`JobProgress`, which is attrcore's ``progress``
callback (a :class:`~attrcore.engine.train.Progress` per report) and also takes free-form
steps (``progress.say(text, fraction)``). Every report goes to ``show(fraction, text)`` (a
progress bar), the per-epoch training metrics to ``on_epoch(history)`` (a live curve).
``cancelled()`` is asked after every report; when it says True the job stops with
:class:`~attrcore.errors.CancelledError`, before anything is saved. The outcome carries
the value, or the message to show: an attrcore error rendered in the page's words, or a
one-line note when a third-party library (e.g. ``traker``) fails, never a traceback.

No Streamlit here: ``pages/_shared.py`` wires it to a progress bar, a Cancel button and a
rerun, so every page's long action behaves the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..engine.train import Progress
from ..errors import AttrcoreError, CancelledError
from .training import ProgressAdapter, error_text, stage_text


@dataclass
class JobOutcome:
    """How a job ended: ``ok`` with its ``value``, or a ``message`` (``cancelled`` or failed)."""

    ok: bool
    value: object = None
    message: str | None = None
    cancelled: bool = False


class JobProgress(ProgressAdapter):
    """The progress callback a job's function gets."""

    def __init__(
        self,
        show: Callable[[float, str], None],
        text: Callable[[Progress], str],
        on_epoch: Callable[[list[dict]], None] | None,
        cancelled: Callable[[], bool],
    ) -> None:
        def draw(p: Progress, history: list[dict]) -> None:
            show(min(1.0, p.done / max(1, p.total)), text(p))
            if on_epoch is not None and p.stage == "train" and history:
                on_epoch(history)

        super().__init__(draw, cancelled)
        self._show = show

    def say(self, text: str, fraction: float) -> None:
        """A free-form step (for jobs that are not a training run)."""
        self._show(min(1.0, max(0.0, float(fraction))), text)
        if self.cancelled():
            raise CancelledError("the job was cancelled; nothing was saved.")


def run_job(
    fn: Callable[[JobProgress], object],
    show: Callable[[float, str], None],
    *,
    text: Callable[[Progress], str] = stage_text,
    on_epoch: Callable[[list[dict]], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    label: str = "The job",
) -> JobOutcome:
    """Run ``fn`` with a :class:`JobProgress`; never raises for an error a user can act on."""
    progress = JobProgress(show, text, on_epoch, cancelled)
    try:
        value = fn(progress)
    except CancelledError as err:
        return JobOutcome(ok=False, message=error_text(err), cancelled=True)
    except AttrcoreError as err:
        return JobOutcome(ok=False, message=error_text(err))
    except Exception as err:  # noqa: BLE001 - a third-party library failing: a readable line, no traceback
        return JobOutcome(ok=False, message=f"{label} failed: {type(err).__name__}: {err}")
    return JobOutcome(ok=True, value=value)
