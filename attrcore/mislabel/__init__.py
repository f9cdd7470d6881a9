"""Mislabeled-data debugging: inject noise, rank suspicious labels, review, fix, retrain, export.

Interface (the workflow in order)::

    data = NoiseSpec(0.4, pairs="7:1,2:5", seed=0).load("digits")   # records the flips
    run = fit(data, ...)                                             # a run with responses
    results = compute_signals(run, ["forward-only", "loss", "trak-10"])
    rows = detection_rows(results, is_flipped)                       # ROC-AUC, AP per signal
    set_marks(store, run.name, fix_top(results["forward-only"].scores, 0.15, data))
    retrain_with_marks(run, load_marks(store, run.name))             # accuracy before / after
    export_csv(apply_marks(data, marks), "clean.csv")

Parts:

- ``noise`` — :class:`NoiseSpec`, uniform or class-conditional noise (implemented once, in
  :func:`attrcore.data.load_dataset`), :func:`flip_table`;
- ``signals`` — suspicion scores per training example: forward-only self-influence (loss
  and margin; the diagonal :func:`attrcore.engine.readout.self_scores`), TRAK-1/10 and
  influence-function self-influence, and the controls (training loss, confidence in the
  given label, cleanlab's ``find_label_issues`` on cross-validated probabilities);
- ``trajectory`` — signals read out over the training trajectory (recorded by an
  ``on_epoch`` hook while the run trains): self-influence summed over checkpoints, and
  the controls training loss over the trajectory and the area under the margin (AUM);
- ``report`` — detection tables, the found-vs-inspected curves and the JSON report (the
  metrics themselves are pure functions in :mod:`attrcore.evaluation.metrics`);
- ``marks`` — keep / remove / relabel decisions, persisted in the run store;
- ``fix`` — apply marks, retrain with the same recipe, "fix the top k %", export CSV/NPZ.
"""

from .fix import CleanedData, apply_marks, export, export_bytes, export_csv, export_npz, fix_top, retrain_with_marks
from .marks import (
    ACTIONS,
    MARKS_KIND,
    Mark,
    clear_marks,
    load_marks,
    marked_runs,
    marks_from_csv,
    marks_to_frame,
    save_marks,
    set_marks,
)
from .noise import NoiseSpec, flip_table, parse_noise_pairs
from .report import curves, detection_rows, finding, format_table, ranking_frame, report_dict
from .signals import DEFAULT_SIGNALS, SIGNALS, SignalResult, compute_signal, compute_signals, parse_signals
from .trajectory import TRAJECTORY_SIGNALS, TrajectoryRecorder, recorder_for, second_half

__all__ = [
    "ACTIONS",
    "CleanedData",
    "DEFAULT_SIGNALS",
    "MARKS_KIND",
    "Mark",
    "NoiseSpec",
    "SIGNALS",
    "SignalResult",
    "TRAJECTORY_SIGNALS",
    "TrajectoryRecorder",
    "apply_marks",
    "clear_marks",
    "compute_signal",
    "compute_signals",
    "curves",
    "detection_rows",
    "export",
    "export_bytes",
    "export_csv",
    "export_npz",
    "finding",
    "fix_top",
    "flip_table",
    "format_table",
    "load_marks",
    "marked_runs",
    "marks_from_csv",
    "marks_to_frame",
    "parse_noise_pairs",
    "parse_signals",
    "ranking_frame",
    "recorder_for",
    "report_dict",
    "retrain_with_marks",
    "save_marks",
    "second_half",
    "set_marks",
]
