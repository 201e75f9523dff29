"""Local 9x9 mean and std (Equations 8 and 9) against a naive loop; flag bits."""

from __future__ import annotations

import numpy as np
import pytest

from core.residual import FLAG_MEAN, FLAG_STD, aperture_scores, flag_kernels, local_mean_std


def _naive(r: np.ndarray, ks: int = 9):
    h = ks // 2
    mean = np.full(r.shape, np.nan)
    std = np.full(r.shape, np.nan)
    for i in range(h, r.shape[0] - h):
        for j in range(h, r.shape[1] - h):
            w = r[i - h:i + h + 1, j - h:j + h + 1].astype(np.float64)
            mean[i, j] = w.mean()
            std[i, j] = np.sqrt(((w - w.mean()) ** 2).mean())
    return mean, std


def test_matches_naive_kernels():
    rng = np.random.default_rng(0)
    r = (0.003 * rng.standard_normal((40, 57)) + 0.5).astype(np.float32)  # small noise, large offset
    mean, std = local_mean_std(r)
    ref_m, ref_s = _naive(r)
    assert mean.dtype == np.float32 and mean.shape == r.shape
    np.testing.assert_array_equal(np.isnan(mean), np.isnan(ref_m))
    np.testing.assert_allclose(mean, ref_m, rtol=1e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(std, ref_s, rtol=1e-4, atol=1e-8, equal_nan=True)


def test_nan_is_undefined_within_kernel_reach():
    r = np.random.default_rng(1).standard_normal((30, 30)).astype(np.float32)
    r[:18] = np.nan
    mean, std = local_mean_std(r)
    assert np.isnan(mean[:22]).all() and np.isnan(std[:22]).all()
    assert np.isfinite(mean[22:26, 4:26]).all()
    ref_m, ref_s = _naive(r[18:])
    np.testing.assert_allclose(mean[18:], ref_m, rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(std[18:], ref_s, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_flag_bits_record_which_test_fired():
    mean = np.array([[0.0, 0.2, -0.2, 0.0, np.nan]])
    std = np.array([[0.0, 0.0, 0.3, 0.3, np.nan]])
    flags = flag_kernels(mean, std, 0.1, 0.1)
    assert flags.tolist() == [[0, FLAG_MEAN, FLAG_MEAN | FLAG_STD, FLAG_STD, 0]]


def test_aperture_scores_see_a_local_offset():
    rng = np.random.default_rng(2)
    res = 0.01 * rng.standard_normal((2, 156, 156))
    res[1, 70:80, 70:80] -= 0.1  # a dark spot in patch 1
    scores = aperture_scores(res)
    assert scores.shape == (2, 2)
    assert scores[1, 0] > 5 * scores[0, 0]
    assert scores[1, 0] == pytest.approx(0.1, rel=0.1)


def test_even_kernel_refused():
    with pytest.raises(ValueError, match="odd"):
        local_mean_std(np.zeros((20, 20)), ks=8)


def test_aperture_scores_count_only_kernels_centred_in_the_weld_region():
    from core.residual import aperture_scores

    residual = np.zeros((1, 60, 60), np.float32)
    residual[0, 5:14, 5:14] = 0.5  # a lead letter outside the weld
    residual[0, 40:49, 40:49] = 0.1  # a faint indication inside it
    region = np.zeros((1, 60, 60), bool)
    region[0, 30:, 30:] = True
    everywhere = aperture_scores(residual)
    in_weld = aperture_scores(residual, regions=region)
    assert everywhere[0, 0] == pytest.approx(0.5)
    assert in_weld[0, 0] == pytest.approx(0.1)
    assert aperture_scores(residual, regions=np.zeros_like(region))[0].tolist() == [0.0, 0.0]


def test_input_is_left_unchanged():
    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64):
        r = (0.01 * rng.standard_normal((30, 40))).astype(dtype)
        r[3, 7] = np.nan
        before = r.copy()
        mean, std = local_mean_std(r)
        np.testing.assert_array_equal(r, before)
        assert np.isnan(mean[3, 7]) and np.isnan(std[7, 11]) and not np.isnan(mean[12, 16])
