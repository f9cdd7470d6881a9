"""Mislabel-detection metrics against hand-computed cases (and scikit-learn's definitions)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from attrcore.errors import ConfigError, DataError, ShapeError
from attrcore.evaluation.metrics import average_precision, found_at, found_vs_inspected, roc_auc

# flipped, clean, flipped, clean; most suspicious first
FLAGS = [1, 0, 1, 0]
SCORES = [0.9, 0.8, 0.3, 0.1]


def test_roc_auc_by_hand():
    # pairs (flipped, clean): 0.9>0.8, 0.9>0.1, 0.3<0.8, 0.3>0.1 -> 3 of 4
    assert roc_auc(FLAGS, SCORES) == pytest.approx(0.75)
    assert roc_auc([1, 1, 0, 0], [4, 3, 2, 1]) == 1.0
    assert roc_auc([0, 0, 1, 1], [4, 3, 2, 1]) == 0.0
    # a tie between a flipped and a clean example counts one half: (0.5 + 1) / 2
    assert roc_auc([1, 0, 0], [1.0, 1.0, 0.0]) == pytest.approx(0.75)


def test_average_precision_by_hand():
    # hits at ranks 1 and 3: (1/1 + 2/3) / 2
    assert average_precision(FLAGS, SCORES) == pytest.approx((1 + 2 / 3) / 2)
    # tied top pair is one threshold: precision 1/2 at recall 1
    assert average_precision([1, 0, 0], [1.0, 1.0, 0.0]) == pytest.approx(0.5)
    assert average_precision([1, 1, 0], [3, 2, 1]) == 1.0


def test_found_vs_inspected_by_hand():
    inspected, found = found_vs_inspected(FLAGS, SCORES)
    assert_allclose(inspected, [0, 0.25, 0.5, 0.75, 1])
    assert_allclose(found, [0, 0.5, 0.5, 1, 1])
    assert found_at(FLAGS, SCORES, 0.5) == 0.5
    assert found_at(FLAGS, SCORES, 0.75) == 1.0


def test_the_metrics_follow_scikit_learns_definitions_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        flags = rng.random(60) < 0.3
        scores = np.round(rng.random(60), 1)  # many ties
        assert roc_auc(flags, scores) == pytest.approx(roc_auc_score(flags, scores))
        assert average_precision(flags, scores) == pytest.approx(average_precision_score(flags, scores))


def test_bad_inputs_get_clear_messages():
    with pytest.raises(DataError, match="both flipped and clean"):
        roc_auc([0, 0, 0], [1, 2, 3])
    with pytest.raises(ShapeError, match="one flag and one score"):
        average_precision([0, 1], [1, 2, 3])
    with pytest.raises(DataError, match="NaN"):
        found_vs_inspected([0, 1], [np.nan, 1])
    with pytest.raises(ConfigError, match="inspected fraction"):
        found_at([0, 1], [1, 2], 1.5)
