"""TPR at a fixed FPR, ROC and the seed summary, checked against hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from core.metrics import (auc, combined_score, mean_spread, rate_above, roc_curve,
                          threshold_at_fpr, tpr_at_fpr)

OKAY = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
DEFECT = [0.5, 0.95, 1.2, 0.9]


def test_threshold_at_fpr_allows_floor_of_fpr_times_n_false_positives():
    # 10 okay scores, FPR 10 %: one okay patch may be flagged, so the threshold is the 2nd largest
    assert threshold_at_fpr(OKAY, fpr=0.1) == pytest.approx(0.9)
    assert rate_above(OKAY, 0.9) == pytest.approx(0.1)
    # 5 % of 10 patches allows none: the threshold is the largest okay score
    assert threshold_at_fpr(OKAY, fpr=0.05) == pytest.approx(1.0)
    assert threshold_at_fpr(OKAY, fpr=0.0) == pytest.approx(1.0)


def test_tpr_at_fpr_hand_worked():
    # threshold 0.9: defects strictly above are 0.95 and 1.2 -> 2 of 4
    assert tpr_at_fpr(OKAY, DEFECT, fpr=0.1) == pytest.approx(0.5)
    # threshold 1.0: only 1.2 -> 1 of 4
    assert tpr_at_fpr(OKAY, DEFECT, fpr=0.05) == pytest.approx(0.25)


def test_tpr_at_fpr_paper_operating_point_never_exceeds_target_with_ties():
    okay = np.concatenate([np.zeros(1995), np.ones(5)])  # 5 tied top scores in 2000
    t = threshold_at_fpr(okay, fpr=0.001)  # 2 false positives allowed, ties push it to 1.0
    assert rate_above(okay, t) <= 0.001
    assert tpr_at_fpr(okay, [1.5, 0.5], fpr=0.001) == pytest.approx(0.5)


def test_roc_curve_and_auc_hand_worked():
    fpr, tpr, thr = roc_curve([0.1, 0.4], [0.35, 0.8])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert thr[0] == np.inf and np.all(np.diff(thr) < 0)
    # 3 of the 4 (defect, okay) pairs are ordered correctly
    assert auc(fpr, tpr) == pytest.approx(0.75)


def test_roc_of_separated_scores_has_unit_area():
    rng = np.random.default_rng(0)
    fpr, tpr, _ = roc_curve(rng.uniform(0, 1, 500), rng.uniform(2, 3, 50))
    assert auc(fpr, tpr) == pytest.approx(1.0)


def test_mean_spread_is_half_the_range_as_in_the_paper():
    s = mean_spread([0.90, 0.94, 0.98])
    assert s.mean == pytest.approx(0.94)
    assert s.spread == pytest.approx(0.04)
    assert s.percent() == "94 (4)"


def test_combined_score_exceeds_one_exactly_when_a_test_fails():
    scores = np.array([[0.5, 0.5], [1.5, 0.5], [0.5, 3.0], [0.99, 1.99]])
    c = combined_score(scores, (1.0, 2.0))
    np.testing.assert_array_equal(c > 1, [False, True, True, False])


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        threshold_at_fpr([0.1, np.nan], fpr=0.1)
    with pytest.raises(ValueError, match="fpr"):
        threshold_at_fpr(OKAY, fpr=1.0)
    with pytest.raises(ValueError, match="empty"):
        tpr_at_fpr([], [1.0])
