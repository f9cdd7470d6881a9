"""How attributions are judged: pure metrics, ground truth by retraining, and the benchmark.

Interface: the metrics (:func:`~attrcore.evaluation.metrics.lds`, ``pearson``, ``spearman``,
``loo_correlation``, ``seed_ceiling``, ``summarize``) and the ground truth
(:func:`~attrcore.evaluation.ground_truth.lds_ground_truth`,
:func:`~attrcore.evaluation.ground_truth.loo_ground_truth`).

Implementations:

- ``metrics`` — pure NumPy metric functions;
- ``ground_truth`` — LDS / LOO ground truth: units keyed, stored and resumed;
- ``executors`` — where the retraining units run (in process, joblib, Dask);
- ``bench`` — every method on a benchmark task, written as a table and JSON
  (import :mod:`attrcore.evaluation.bench` explicitly; it is not re-exported here).
"""

from .ground_truth import LDSGroundTruth, LOOGroundTruth, draw_subset, lds_ground_truth, loo_ground_truth
from .metrics import Correlations, lds, loo_correlation, pearson, seed_ceiling, spearman, summarize

__all__ = [
    "Correlations",
    "LDSGroundTruth",
    "LOOGroundTruth",
    "draw_subset",
    "lds",
    "lds_ground_truth",
    "loo_correlation",
    "loo_ground_truth",
    "pearson",
    "seed_ceiling",
    "spearman",
    "summarize",
]
