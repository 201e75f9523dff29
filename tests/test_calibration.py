"""Joint threshold calibration to a patch-level FPR, its refusal rule, CI and flags per metre."""

from __future__ import annotations

import numpy as np
import pytest

from core.calibration import (
    Thresholds, calibrate, clopper_pearson, decode_scores, encode_scores,
    expected_false_flags_per_metre, min_okay_patches, thresholds_from_metadata,
)
from core.errors import CalibrationError


def _scores(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    common = rng.gamma(4.0, 1.0, n)  # the two scores of a patch are correlated
    return np.column_stack([0.002 * (common + rng.gamma(2.0, 1.0, n)),
                            0.004 * (common + rng.gamma(3.0, 1.0, n))])


def _false_positives(s, t_mean, t_std) -> int:
    return int(np.count_nonzero((s[:, 0] > t_mean) | (s[:, 1] > t_std)))


def test_meets_target_with_the_most_sensitive_common_quantile():
    s = _scores(6000)
    thr = calibrate(s, fpr=0.001)
    fp = _false_positives(s, thr.mean, thr.std)
    assert thr.fpr_achieved == fp / 6000 <= 0.001
    assert thr.n_okay == 6000 and thr.fpr_target == 0.001
    # one order statistic lower on both scores breaks the target
    a, b = np.sort(s[:, 0]), np.sort(s[:, 1])
    k = int(np.searchsorted(a, thr.mean))
    assert b[k] == thr.std
    assert _false_positives(s, a[k - 1], b[k - 1]) > 6
    lo, hi = thr.fpr_ci
    assert lo <= thr.fpr_achieved <= hi and hi < 0.003


def test_lower_target_gives_higher_thresholds():
    s = _scores(6000)
    loose, strict = calibrate(s, fpr=0.01), calibrate(s, fpr=0.001)
    assert strict.mean >= loose.mean and strict.std >= loose.std
    assert (strict.mean, strict.std) != (loose.mean, loose.std)


def test_refuses_too_few_okay_patches():
    assert min_okay_patches(0.001) == 3000
    with pytest.raises(CalibrationError, match="at least 3000"):
        calibrate(_scores(2999), fpr=0.001)
    calibrate(_scores(60), fpr=0.05)  # 3 / 0.05 = 60 is enough
    with pytest.raises(CalibrationError, match="NaN"):
        s = _scores(100)
        s[3, 1] = np.nan
        calibrate(s, fpr=0.05)


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 3000)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 3000), rel=1e-6)
    lo, hi = clopper_pearson(5, 100)
    assert lo == pytest.approx(0.01643, abs=1e-4) and hi == pytest.approx(0.11284, abs=1e-4)


def test_stored_scores_derive_other_operating_points():
    s = _scores(6000)
    thr = calibrate(s, fpr=0.001)
    meta = {"thresholds": thr.to_dict(), "okay_scores": encode_scores(s)}
    assert thresholds_from_metadata(meta) == thr
    assert Thresholds.from_dict(thr.to_dict()) == thr
    other = thresholds_from_metadata(meta, fpr=0.01)
    np.testing.assert_allclose(decode_scores(meta["okay_scores"]), s, rtol=1e-6)
    expected = calibrate(s.astype(np.float32).astype(np.float64), fpr=0.01)
    assert other.mean == pytest.approx(expected.mean) and other.std == pytest.approx(expected.std)
    with pytest.raises(CalibrationError, match="at least 30000"):
        thresholds_from_metadata(meta, fpr=0.0001)
    assert thresholds_from_metadata({}) is None


def test_expected_false_flags_per_metre():
    # 156 px at 40 um = 6.24 mm apertures: 160.26 per metre, two rows across a 10 mm band
    assert expected_false_flags_per_metre(0.001, 40.0) == pytest.approx(0.001 * 1000 / 6.24)
    assert expected_false_flags_per_metre(0.001, 40.0, weld_width_mm=10.0) == pytest.approx(
        2 * 0.001 * 1000 / 6.24)
    with pytest.raises(ValueError, match="pixel size"):
        expected_false_flags_per_metre(0.001, None)


def _zoned_scores(n: int = 3000, seed: int = 1) -> np.ndarray:
    """Interior, HAZ and two edge zones' pairs (8 columns); the interior's |mean| has three okay
    patches far above the rest, as one film's shoulder gives on GDXray (notes item 15)."""
    rng = np.random.default_rng(seed)
    s = np.column_stack([0.002 * (k + 1) * rng.gamma(4.0, 1.0, n) for k in range(8)])
    s[[10, 20, 30], 0] = 3.0 * s[:, 0].max()
    return s


def test_the_tail_rule_spends_the_false_positives_where_a_zone_s_largest_stand_out():
    s = _zoned_scores()
    zones = {"edge_band_px": (32, 48), "haz": True}
    common = calibrate(s, fpr=0.001, **zones)
    tail = calibrate(s, fpr=0.001, rule="tail", **zones)
    # 3 allowed over 8 columns: the common quantile ends at the interior's outliers
    assert common.mean == s[:, 0].max() and common.rule == "common"
    # the tail rule lowers that threshold past them, to the rest of the column, within the target
    assert tail.rule == "tail" and tail.mean <= np.sort(s[:, 0])[-4] < common.mean / 2
    assert tail.fpr_achieved <= 0.001 and tail.flagged(s).sum() == round(tail.fpr_achieved * 3000)
    # and it stops where it must: any threshold one okay patch lower breaks the target
    columns = tail.columns(8)
    for j in range(8):
        lower = np.sort(s[:, j])[np.sort(s[:, j]) < columns[j]]
        if lower.size:
            t = columns.copy()
            t[j] = lower[-1]
            assert (s > t).any(axis=1).sum() > 3, j
    # stored, read back and re-derived with the same rule
    assert Thresholds.from_dict(tail.to_dict()) == tail
    assert tail.to_dict()["rule"] == "joint heaviest tail; Clopper-Pearson 95%"
    meta = {"thresholds": tail.to_dict(), "okay_scores": encode_scores(s)}
    assert thresholds_from_metadata(meta).rule == "tail"
    assert thresholds_from_metadata(meta, fpr=0.01).mean <= calibrate(s, fpr=0.01, **zones).mean
    # thresholds stored before the rule existed were common-quantile ones
    old = common.to_dict()
    old.pop("rule")
    assert Thresholds.from_dict(old).rule == "common"
    with pytest.raises(CalibrationError, match="common, tail"):
        calibrate(s, fpr=0.001, rule="fast", **zones)
