"""Detection metrics of the benchmark: TPR at a fixed FPR, ROC curves, mean and spread over seeds.

Conventions (used everywhere in the benchmark):

- A higher score means "more anomalous"; a patch is flagged when its score is *strictly greater*
  than the threshold.
- The threshold for a target false positive rate ``fpr`` on ``N`` okay scores is the
  ``k``-th largest okay score with ``k = floor(fpr * N)`` (0-based from the top), so at most ``k``
  okay scores lie strictly above it: the achieved FPR never exceeds the target (ties only lower it).
- The spread over seeds is the paper's ``(max - min) / 2`` (Section 4), not a standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _scores(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty; pass at least one score")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite scores; remove them before computing rates")
    return arr


def threshold_at_fpr(okay_scores, *, fpr: float = 0.001) -> float:
    """Return the threshold whose false positive rate on ``okay_scores`` is at most ``fpr``.

    Parameters
    ----------
    okay_scores : array_like of shape (N,)
        Scores of patches known to be okay.
    fpr : float
        Target false positive rate in [0, 1).

    Returns
    -------
    threshold : float
        Flag a patch when ``score > threshold``. With ``k = floor(fpr * N)`` this is the k-th
        largest okay score (0-based), so at most ``k`` okay patches are flagged.
    """
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    ok = np.sort(_scores(okay_scores, "okay_scores"))[::-1]
    k = int(np.floor(fpr * ok.size + 1e-9))
    return float(ok[k])


def rate_above(scores, threshold: float) -> float:
    """Fraction of ``scores`` strictly greater than ``threshold`` (a TPR or an FPR)."""
    arr = _scores(scores, "scores")
    return float(np.mean(arr > threshold))


def tpr_at_fpr(okay_scores, defect_scores, *, fpr: float = 0.001) -> float:
    """TPR on ``defect_scores`` at the threshold that gives ``fpr`` on ``okay_scores``."""
    return rate_above(defect_scores, threshold_at_fpr(okay_scores, fpr=fpr))


def roc_curve(okay_scores, defect_scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic over every distinct score.

    Returns
    -------
    fpr, tpr : ndarray of shape (K + 1,)
        Rates of the rule ``score > threshold``, from (0, 0) (threshold = +inf) to (1, 1).
    thresholds : ndarray of shape (K + 1,)
        The thresholds, decreasing; the first is ``+inf``, the last is below every score.
    """
    ok = _scores(okay_scores, "okay_scores")
    bad = _scores(defect_scores, "defect_scores")
    values = np.unique(np.concatenate([ok, bad]))[::-1]
    # rule score > t for t = each distinct value, then below the minimum
    below_min = values[-1] - 1.0
    thresholds = np.concatenate([[np.inf], values[1:], [below_min]])
    ok_sorted = np.sort(ok)
    bad_sorted = np.sort(bad)
    fpr = 1.0 - np.searchsorted(ok_sorted, thresholds, side="right") / ok.size
    tpr = 1.0 - np.searchsorted(bad_sorted, thresholds, side="right") / bad.size
    return fpr, tpr, thresholds


def auc(fpr, tpr) -> float:
    """Area under a curve given by increasing ``fpr`` (trapezoids)."""
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def threshold_ratio(values, thresholds) -> np.ndarray:
    """``values / thresholds`` elementwise (broadcast); where a threshold is 0, inf for a positive
    value and 0 otherwise (a test whose threshold is 0 fails on anything above it)."""
    v = np.asarray(values, dtype=np.float64)
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), v.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, v / np.where(t > 0, t, 1.0), np.where(v > 0, np.inf, 0.0))


def combined_score(scores, thresholds) -> np.ndarray:
    """One score per patch for the OOD detector's tests: ``max`` over columns of score / threshold.

    Parameters
    ----------
    scores : array_like of shape (N, K)
        Per patch ``(max |local mean|, max local std)`` over the aperture (K = 2), or that pair
        for the weld region's interior and for its edge band (K = 4).
    thresholds : sequence of K floats
        One threshold per column, e.g. ``core.calibration.Thresholds.columns(K)``.

    Returns
    -------
    ndarray of shape (N,)
        ``> 1`` exactly when the patch fails one of the tests, so sweeping a threshold over this
        score gives a ROC curve that passes through the calibrated operating point.
    """
    arr = np.asarray(scores, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    if arr.ndim != 2 or t.shape != (arr.shape[1],):
        raise ValueError(f"scores of shape (N, K) and K thresholds needed, got {arr.shape} and {t.shape}")
    return threshold_ratio(arr, t).max(axis=1)


@dataclass(frozen=True)
class SeedSummary:
    """Mean and the paper's spread ``(max - min) / 2`` of one figure over seeds."""

    mean: float
    spread: float
    values: tuple[float, ...] = field(default_factory=tuple)

    def percent(self) -> str:
        """The paper's table cell, e.g. ``"94 (3)"`` for 0.94 and a spread of 0.03."""
        return f"{100 * self.mean:.0f} ({100 * self.spread:.0f})"


def mean_spread(values) -> SeedSummary:
    """Summarise one figure over seeds as mean and ``(max - min) / 2``."""
    arr = _scores(values, "values")
    return SeedSummary(
        mean=float(arr.mean()),
        spread=float((arr.max() - arr.min()) / 2.0),
        values=tuple(float(v) for v in arr),
    )
