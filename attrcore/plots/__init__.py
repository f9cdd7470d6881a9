"""Figures: pure functions from numpy arrays to plotly figures, one module per topic.

Nothing here reads a run, a store or Streamlit state; every function takes plain arrays (and
names) and returns a :class:`plotly.graph_objects.Figure`. Every figure function is
re-exported here (``from attrcore import plots; plots.lds_curves(...)``); a new topic is a new
module plus one import line below.

Implementations, by page:

- ``style`` — the shared colours (proponents blue, opponents red) and layout;
- ``training`` — Train: :func:`training_curves`;
- ``examples`` — :func:`example_mosaic`, :func:`feature_heatmap`, :func:`points_scatter`,
  :func:`decision_boundary`;
- ``explore`` — Explore: :func:`score_bars`, :func:`method_scatter`, :func:`agreement_heatmap`,
  :func:`counterfactual_bars`;
- ``evaluation`` — Evaluate: :func:`lds_bars`, :func:`lds_curves`, :func:`predicted_vs_actual`;
- ``cost`` — Cost: :func:`cost_curves`, :func:`memory_bars`;
- ``mislabel`` — Mislabeled data: :func:`found_vs_inspected`, :func:`detection_bars`,
  :func:`accuracy_bars`;
- ``compress`` — compressed responses (Evaluate): :func:`lds_against_rank`;
- ``scale`` — the scaling benchmark (Cost): :func:`scaling_lines`, :func:`speedup_bars`;
- ``tradeoff`` — Evaluate: :func:`lds_vs_time` (every benchmarked setting, LDS against time).
"""

from .compress import lds_against_rank
from .cost import cost_curves, memory_bars
from .evaluation import lds_bars, lds_curves, predicted_vs_actual
from .examples import decision_boundary, example_mosaic, feature_heatmap, points_scatter
from .explore import agreement_heatmap, counterfactual_bars, method_scatter, score_bars
from .mislabel import accuracy_bars, detection_bars, found_vs_inspected
from .scale import scaling_lines, speedup_bars
from .style import CLASS_COLOURS, NEUTRAL, OPPONENT, PROPONENT, QUERY, class_colour
from .tradeoff import lds_vs_time
from .training import training_curves

__all__ = [
    "CLASS_COLOURS",
    "NEUTRAL",
    "OPPONENT",
    "PROPONENT",
    "QUERY",
    "accuracy_bars",
    "agreement_heatmap",
    "class_colour",
    "cost_curves",
    "counterfactual_bars",
    "decision_boundary",
    "detection_bars",
    "example_mosaic",
    "feature_heatmap",
    "found_vs_inspected",
    "lds_against_rank",
    "lds_bars",
    "lds_curves",
    "lds_vs_time",
    "memory_bars",
    "method_scatter",
    "points_scatter",
    "predicted_vs_actual",
    "score_bars",
    "scaling_lines",
    "speedup_bars",
    "training_curves",
]
