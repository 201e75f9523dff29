"""Zones by the film's slope: the slope map, the zones, their calibration and the scan's use of them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from core.calibration import Thresholds, calibrate, describe, encode_scores, thresholds_from_metadata
from core.errors import CalibrationError
from core.model import build_autoencoder
from core.residual import slope_bounds, slope_map, slope_spans, slope_zones
from core.scanning import patch_scores, reconstruct_whole, scan_image


@dataclass
class _Bundle:
    model: object
    sha256: str = "0" * 64
    metadata: dict = field(default_factory=dict)


def _bead(shape=(200, 260), seed=0) -> np.ndarray:
    """A flat plate, a bead rising across rows 60-100 and falling across 140-180, light noise."""
    rows = np.arange(shape[0], dtype=np.float64)
    profile = 0.3 + 0.5 * (np.clip((rows - 60) / 40, 0, 1) - np.clip((rows - 140) / 40, 0, 1))
    rng = np.random.default_rng(seed)
    img = profile[:, None] + 0.002 * rng.standard_normal(shape)
    return np.clip(img, 0, 1).astype(np.float32)


def test_slope_map_is_the_smoothed_gradient_magnitude():
    ramp = np.tile(np.linspace(0, 1, 300, dtype=np.float32), (120, 1))  # 1/299 grey level per px
    s = slope_map(ramp, 4)
    assert s.dtype == np.float32 and s.shape == ramp.shape
    np.testing.assert_allclose(s[20:100, 20:280], 1 / 299, rtol=1e-3)
    # rotation does not change it; a flat film has none
    np.testing.assert_allclose(slope_map(ramp.T.copy(), 4)[20:280, 20:100], s[20:100, 20:280].T, rtol=1e-6)
    assert slope_map(np.full((50, 50), 0.4, np.float32), 4).max() == 0
    with pytest.raises(ValueError, match="positive"):
        slope_map(ramp, 0)


def test_slope_zones_partition_the_region_by_slope():
    img = _bead()
    s = slope_map(img, 8)
    roi = np.zeros(img.shape, bool)
    roi[50:190] = True
    bounds = slope_bounds(s[None], roi[None], (0.5, 0.8))
    assert bounds[0] < bounds[1]
    zones = slope_zones(roi, s, bounds)
    assert len(zones) == 2
    interior = roi & ~zones[0] & ~zones[1]
    assert not (zones[0] & zones[1]).any() and not (zones[0] | zones[1])[~roi].any()
    # half the region is below the median, a fifth at or above the 80 % quantile
    assert interior.sum() / roi.sum() == pytest.approx(0.5, abs=0.01)
    assert zones[1].sum() / roi.sum() == pytest.approx(0.2, abs=0.01)
    # the bead's flanks are the steep zone, its crown and the plate the interior
    assert zones[1][80].all() and zones[1][160].all() and interior[120].all()
    assert slope_spans(bounds) == [f"slope {bounds[0]:.4f}-{bounds[1]:.4f}", f"slope >= {bounds[1]:.4f}"]
    with pytest.raises(ValueError, match="increasing"):
        slope_zones(roi, s, (bounds[1], bounds[0]))
    with pytest.raises(ValueError, match="no distinct zones"):  # a flat film has no slope to split
        slope_bounds(np.zeros((1, 20, 20)), np.ones((1, 20, 20), bool), (0.5, 0.8))


def test_slope_zone_calibration_round_trips_and_describes_itself():
    rng = np.random.default_rng(4)
    flat, mid, steep = (rng.gamma(4, 0.005, (3000, 2)) * k for k in (1, 1.5, 4))
    scores = np.hstack([flat, mid, steep])
    thr = calibrate(scores, fpr=0.001, slope_bounds=(0.002, 0.005), slope_sigma_px=16)
    assert thr.slope_bounds == (0.002, 0.005) and thr.has_zones and not thr.has_edge_band
    assert thr.band_bounds == () and thr.flagged(scores).mean() <= 0.001
    assert thr.zone_pairs()[1][0] > 2 * thr.mean  # the steep kernels do not set the interior's
    assert thr.columns(6).tolist() == [thr.mean, thr.std, *thr.zone_pairs()[0], *thr.zone_pairs()[1]]
    assert thr.whole == (max(thr.mean, *(m for m, _ in thr.zone_pairs())),
                         max(thr.std, *(s for _, s in thr.zone_pairs())))
    assert Thresholds.from_dict(thr.to_dict()) == thr
    assert thr.zone_labels() == ["slope 0.0020-0.0050", "slope >= 0.0050"]
    text = describe(thr)
    assert "slope is below 0.0020" in text and "slope >= 0.0050" in text and "16 px" in text
    # another FPR derived from the stored scores keeps the zones
    metadata = {"thresholds": thr.to_dict(), "okay_scores": encode_scores(scores)}
    looser = thresholds_from_metadata(metadata, fpr=0.01)
    assert looser.slope_bounds == thr.slope_bounds and looser.slope_sigma_px == 16
    assert looser.mean < thr.mean
    with pytest.raises(CalibrationError, match="not both"):
        calibrate(scores, fpr=0.001, slope_bounds=(0.002, 0.005), edge_band_px=(32, 48))
    with pytest.raises(CalibrationError, match="shape"):
        calibrate(scores[:, :4], fpr=0.001, slope_bounds=(0.002, 0.005))


@pytest.fixture(scope="module")
def model():
    return build_autoencoder(seed=3)


def test_scan_gives_each_slope_zone_its_own_pair(model):
    img = _bead()
    roi = np.zeros(img.shape, bool)
    roi[40:200] = True
    bounds = (0.004, 0.008)
    zones = slope_zones(roi, slope_map(img, 16), bounds)
    steep = zones[0] | zones[1]
    flat = roi & ~steep
    base = scan_image(img, _Bundle(model), thresholds=Thresholds(1, 1, 0.001, 3000, 0.0, (0, 1)), roi=roi)
    m = np.abs(base.local_mean)
    level = float(np.nanpercentile(m[flat], 50))
    thr = Thresholds(level, 1.0, 0.001, 3000, 0.0, (0, 1), slope_zones=((bounds[0], 10.0, 10.0),
                     (bounds[1], 10.0, 10.0)), slope_sigma_px=16)
    res = scan_image(img, _Bundle(model), thresholds=thr, roi=roi)
    flagged = res.flags > 0
    defined = flat & np.isfinite(m)
    assert flagged[defined].mean() == pytest.approx((m[defined] > level).mean(), abs=1e-6)
    assert flagged[defined].any() and not flagged[steep].any() and not flagged[~roi].any()
    # the slope comes from the radiograph as given, not from the model's input
    normalised = _Bundle(model, metadata={"input": {"background_sigma": 24, "background_method": "twicing"}})
    again = scan_image(img, normalised, thresholds=thr, roi=roi)
    assert not (again.flags[steep] > 0).any()


def test_patch_scores_by_slope_match_the_patch_analysed_whole(model):
    rng = np.random.default_rng(2)
    patches = np.clip(0.5 + 0.01 * rng.standard_normal((2, 192, 192)), 0, 1).astype(np.float32)
    regions = np.zeros((2, 192, 192), bool)
    regions[:, 40:160, :] = True
    slopes = np.broadcast_to(np.linspace(0, 0.01, 192, dtype=np.float32)[:, None], (2, 192, 192))
    s = patch_scores(patches, model, regions=regions, slopes=slopes, slope_bounds=(0.004,))
    assert s.shape == (2, 4)
    from core.residual import local_mean_std

    keep = np.zeros((192, 192), bool)
    keep[22:170, 22:170] = True  # kernels wholly inside the 156 x 156 aperture
    for i in range(2):
        m, sd = local_mean_std(patches[i] - reconstruct_whole(patches[i], model))
        ok = regions[i] & keep & np.isfinite(m)
        low, high = ok & (slopes[i] < 0.004), ok & (slopes[i] >= 0.004)
        np.testing.assert_allclose(s[i, 0], np.abs(m[low]).max(), atol=2e-5)
        np.testing.assert_allclose(s[i, 2], np.abs(m[high]).max(), atol=2e-5)
        np.testing.assert_allclose(s[i, 3], sd[high].max(), atol=2e-5)
    with pytest.raises(ValueError, match="slope"):
        patch_scores(patches, model, regions=regions, slope_bounds=(0.004,))
