"""Streamlit-free view models for the pages: what each page computes, with no Streamlit in it.

The pages follow one shape: widgets → a config object from here → a cached call into attrcore
(or into a helper here) → figures from :mod:`attrcore.plots`. Everything public is re-exported
here, so a page does ``from attrcore import app as sup`` and calls ``sup.<name>``.

Implementations:

- ``runs`` — cache keys (``store_version``, ``run_version``) and which runs can be used;
- ``training`` — the Train page: ``DataChoice``, ``TrainRequest``, ``ProgressAdapter``, the demo run;
- ``explore`` — the Explore page: scores, top-k, decision grids, agreement, counterfactuals;
- ``baselines`` — baseline methods in the app;
- ``evaluation`` — the Evaluate page: LDS / LOO settings, ground truth, benchmark curves;
- ``cost`` — the Cost page: measured cost, the machine, break-even;
- ``jobs`` — the job runner every long action of the pages goes through;
- ``compression`` — compressed responses: the Train page's estimate, compressed variants of
  dense runs (Cost, Evaluate), the compression benchmark's LDS-vs-rank curves;
- ``mislabel`` — the Mislabeled data page: noisy runs, stored signals, review, retrain results.

Uploads live in :mod:`attrcore.data.uploads`.
"""

from .baselines import BASELINE_KIND, BASELINES, baseline_scores, baselines_available, stored_baselines
from .compression import compress_docs, compressed_variant, estimate_text, rank_curves, simulation_estimate
from .cost import (
    COST_KIND,
    breakeven_queries,
    group_responses,
    load_cost,
    machine_description,
    measure_cost,
    measure_readout_cost,
    save_cost,
    speed_ratio_text,
)
from .evaluation import (
    LDS_DONE_KIND,
    LOO_DONE_KIND,
    LDSSettings,
    LOOSettings,
    bench_curves,
    bench_docs,
    bench_protocols,
    bench_time_points,
    evaluation_available,
    evaluation_queries_missing,
    horizon_tick,
    horizon_x,
    lds_summary,
    lds_truth,
    loo_truth,
    subset_predictions,
    truth_known,
)
from .explore import (
    COUNTERFACTUAL_KIND,
    SCORES_KIND,
    agreement_matrix,
    comparison_queries,
    counterfactual,
    decision_grid,
    measurements,
    page_of,
    predict,
    query_pool,
    query_row,
    query_scores,
    rank_agreement,
    removal_weights,
    retrain,
    top_k,
)
from .jobs import JobOutcome, JobProgress, run_job
from .mislabel import (
    QUICK_SIGNALS,
    RETRAIN_KIND,
    SIGNAL_KIND,
    NoisyRunRequest,
    flipped_flags,
    influence_row,
    judge,
    mislabel_runs,
    most_suspicious,
    retrain_result,
    signal_result,
    stored_retrain,
    stored_signals,
)
from .runs import attributable_runs, comparable_runs, open_run_notice, run_version, same_training, store_version
from .training import (
    DEMO_RUN,
    OPTION_LABELS,
    DataChoice,
    ProgressAdapter,
    TrainRequest,
    Upload,
    default_run_name,
    demo_request,
    error_text,
    load_choice,
    parse_hidden,
    receive_upload,
    stage_text,
    widget_args,
)

__all__ = [
    "BASELINES",
    "BASELINE_KIND",
    "COST_KIND",
    "COUNTERFACTUAL_KIND",
    "DEMO_RUN",
    "DataChoice",
    "JobOutcome",
    "JobProgress",
    "LDSSettings",
    "LDS_DONE_KIND",
    "LOOSettings",
    "LOO_DONE_KIND",
    "OPTION_LABELS",
    "NoisyRunRequest",
    "QUICK_SIGNALS",
    "RETRAIN_KIND",
    "SIGNAL_KIND",
    "ProgressAdapter",
    "SCORES_KIND",
    "TrainRequest",
    "Upload",
    "agreement_matrix",
    "attributable_runs",
    "baseline_scores",
    "baselines_available",
    "bench_curves",
    "bench_docs",
    "bench_protocols",
    "bench_time_points",
    "breakeven_queries",
    "comparable_runs",
    "compress_docs",
    "compressed_variant",
    "comparison_queries",
    "counterfactual",
    "decision_grid",
    "default_run_name",
    "demo_request",
    "error_text",
    "estimate_text",
    "evaluation_available",
    "evaluation_queries_missing",
    "flipped_flags",
    "group_responses",
    "horizon_tick",
    "horizon_x",
    "influence_row",
    "judge",
    "lds_summary",
    "lds_truth",
    "load_cost",
    "loo_truth",
    "machine_description",
    "measure_cost",
    "measure_readout_cost",
    "measurements",
    "mislabel_runs",
    "most_suspicious",
    "open_run_notice",
    "page_of",
    "load_choice",
    "parse_hidden",
    "receive_upload",
    "predict",
    "query_pool",
    "query_row",
    "query_scores",
    "rank_agreement",
    "rank_curves",
    "removal_weights",
    "retrain",
    "run_job",
    "retrain_result",
    "run_version",
    "same_training",
    "simulation_estimate",
    "save_cost",
    "signal_result",
    "speed_ratio_text",
    "stage_text",
    "store_version",
    "stored_baselines",
    "stored_retrain",
    "stored_signals",
    "subset_predictions",
    "top_k",
    "truth_known",
    "widget_args",
]
