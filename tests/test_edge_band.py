"""The weld region's edge band: its own pair of thresholds, in calibration and in the scan."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from core.calibration import Thresholds, calibrate, encode_scores, thresholds_from_metadata
from core.model import build_autoencoder
from core.residual import aperture_scores, edge_band
from core.scanning import patch_scores, reconstruct_whole, scan_image


@dataclass
class _Bundle:
    model: object
    sha256: str = "0" * 64
    metadata: dict = field(default_factory=dict)


def _band_thresholds(mean=0.01, std=0.01, edge_mean=0.05, edge_std=0.05, band=8) -> Thresholds:
    return Thresholds(mean, std, 0.001, 3000, 0.0, (0.0, 0.0012), edge_mean=edge_mean,
                      edge_std=edge_std, edge_band_px=band)


def test_edge_band_is_the_region_rim_and_ignores_the_array_border():
    roi = np.zeros((60, 80), bool)
    roi[10:50, :] = True  # a horizontal weld running off both ends of the array
    band = edge_band(roi, 4)
    assert band[10:14].all() and band[46:50].all()
    assert not band[14:46].any() and not band[~roi].any()
    # the region continues beyond the left and right edges: no band there
    assert not band[20, :3].any() and not band[20, -3:].any()
    stack = edge_band(np.stack([roi, roi]), 4)
    assert stack.shape == (2, 60, 80) and (stack[0] == band).all()
    assert not edge_band(roi, 0).any()


def test_aperture_scores_split_interior_and_band():
    res = np.zeros((1, 40, 40))
    res[0, 2:12, 15:25] = 0.3  # a bright block in the band only
    regions = np.ones((1, 40, 40), bool)
    edges = np.zeros((1, 40, 40), bool)
    edges[0, :16] = True  # interior kernels (centres from row 16) do not reach the block
    s = aperture_scores(res, regions=regions, edges=edges)
    assert s.shape == (1, 4)
    assert s[0, 0] < 0.1 and s[0, 2] == pytest.approx(0.3, abs=1e-6)
    assert aperture_scores(res, regions=regions).shape == (1, 2)


def test_four_column_calibration_meets_the_target_and_keeps_the_band_apart():
    rng = np.random.default_rng(0)
    interior = rng.gamma(4, 0.005, size=(4000, 2))
    edge = rng.gamma(4, 0.005, size=(4000, 2)) * 3  # the band's residuals are larger
    scores = np.hstack([interior, edge])
    thr = calibrate(scores, fpr=0.001, edge_band_px=32)
    assert thr.has_edge_band and thr.edge_band_px == 32
    assert thr.edge_mean > 2 * thr.mean and thr.edge_std > 2 * thr.std
    assert thr.flagged(scores).mean() <= 0.001
    # one pair over interior and band together would have to sit above the band's residuals
    single = calibrate(np.maximum(interior, edge), fpr=0.001)
    assert thr.mean < 0.5 * single.mean
    # a patch whose interior crosses the interior threshold is caught by the split thresholds
    probe = np.array([[thr.mean * 1.2, 0.0, 0.0, 0.0]])
    assert thr.flagged(probe)[0] and not single.flagged(probe[:, :2])[0]
    assert thr.combined(probe)[0] == pytest.approx(1.2)
    # without a weld region the larger of each pair is used
    assert thr.whole == (max(thr.mean, thr.edge_mean), max(thr.std, thr.edge_std))


def test_band_thresholds_survive_the_model_file_round_trip():
    rng = np.random.default_rng(1)
    scores = np.hstack([rng.gamma(4, 0.005, (3000, 2)), rng.gamma(4, 0.01, (3000, 2))])
    thr = calibrate(scores, fpr=0.001, edge_band_px=24)
    metadata = {"thresholds": thr.to_dict(), "okay_scores": encode_scores(scores)}
    assert thresholds_from_metadata(metadata) == Thresholds.from_dict(thr.to_dict())
    looser = thresholds_from_metadata(metadata, fpr=0.01)
    assert looser.has_edge_band and looser.edge_band_px == 24 and looser.mean < thr.mean
    old = Thresholds.from_dict({k: v for k, v in thr.to_dict().items() if not k.startswith("edge")})
    assert not old.has_edge_band and old.whole == (thr.mean, thr.std)


@pytest.fixture(scope="module")
def model():
    return build_autoencoder(seed=3)


def _flat(shape=(200, 260), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.5 + 0.002 * rng.standard_normal(shape), 0, 1).astype(np.float32)


def test_scan_uses_the_band_pair_in_the_band_and_the_interior_pair_inside(model):
    img = _flat()
    roi = np.zeros(img.shape, bool)
    roi[40:160, :] = True
    band = edge_band(roi, 8)
    # the untrained model's residual, then thresholds placed between interior and band values
    base = scan_image(img, _Bundle(model), thresholds=_band_thresholds(1, 1, 1, 1), roi=roi)
    m = np.abs(base.local_mean)
    level = float(np.nanpercentile(m[roi & ~band], 50))
    thr = _band_thresholds(mean=level, std=1.0, edge_mean=10.0, edge_std=10.0, band=8)
    res = scan_image(img, _Bundle(model), thresholds=thr, roi=roi)
    flagged = res.flags > 0
    interior = roi & ~band & np.isfinite(m)
    assert flagged[interior].mean() == pytest.approx((m[interior] > level).mean(), abs=1e-6)
    assert not flagged[band].any() and not flagged[~roi].any()
    for r in res.regions:  # ratios are to each kernel's own threshold
        assert r.mean_ratio > 1.0 and r.severity >= r.mean_ratio
    # without the band the same interior threshold applies in the band too
    single = scan_image(img, _Bundle(model), thresholds=Thresholds(level, 1.0, 0.001, 3000, 0.0, (0, 1)),
                        roi=roi)
    assert (single.flags[band & np.isfinite(m)] > 0).mean() == pytest.approx(
        (m[band & np.isfinite(m)] > level).mean(), abs=1e-6)


def test_patch_scores_with_band_match_a_scan_of_the_patch(model):
    rng = np.random.default_rng(2)
    patches = np.clip(0.5 + 0.01 * rng.standard_normal((3, 192, 192)), 0, 1).astype(np.float32)
    regions = np.zeros((3, 192, 192), bool)
    regions[:, 60:140, :] = True
    s = patch_scores(patches, model, regions=regions, edge_band_px=16)
    assert s.shape == (3, 4)
    for i in range(3):
        recon = reconstruct_whole(patches[i], model)
        from core.residual import local_mean_std

        m, sd = local_mean_std(patches[i] - recon)
        band = edge_band(regions[i], 16)
        inner = regions[i] & ~band & np.isfinite(m)
        edge = band & np.isfinite(m)
        # the aperture is the central 156 x 156 of the patch; kernels 4 px inside it count
        keep = np.zeros((192, 192), bool)
        keep[22:170, 22:170] = True
        np.testing.assert_allclose(s[i, 0], np.abs(m[inner & keep]).max(), atol=2e-5)
        np.testing.assert_allclose(s[i, 3], sd[edge & keep].max(), atol=2e-5)


def test_edge_zones_split_the_band_by_distance_from_the_edge():
    from core.residual import edge_zones

    roi = np.zeros((200, 300), bool)
    roi[40:160] = True  # a horizontal weld region 120 px wide
    outer, shoulder = edge_zones(roi, (32, 48))
    assert np.array_equal(outer, edge_band(roi, 32))
    assert np.array_equal(shoulder, edge_band(roi, 48) & ~edge_band(roi, 32))
    assert not (outer & shoulder).any()
    col = 150
    assert np.flatnonzero(shoulder[:, col]).tolist() == list(range(72, 88)) + list(range(112, 128))
    with pytest.raises(ValueError, match="increasing"):
        edge_zones(roi, (48, 32))


def test_three_zone_calibration_keeps_a_shoulder_out_of_the_interior():
    """A bead's shoulder 32-48 px inside the edge gets its own pair instead of the interior's."""
    from core.calibration import Thresholds, describe
    from core.residual import edge_zones

    rng = np.random.default_rng(2)
    interior = rng.gamma(4, 0.004, size=(4500, 2))
    edge = rng.gamma(4, 0.004, size=(4500, 2)) * 4
    shoulder = rng.gamma(4, 0.004, size=(4500, 2)) * 2
    three = calibrate(np.hstack([interior, edge, shoulder]), fpr=0.001, edge_band_px=(32, 48))
    assert three.band_bounds == (32, 48) and three.inner_bands[0][0] == 48
    # with two zones the shoulder belongs to the interior and sets its thresholds
    two = calibrate(np.hstack([np.maximum(interior, shoulder), edge]), fpr=0.001, edge_band_px=32)
    assert three.mean < 0.7 * two.mean and three.inner_bands[0][1] > three.mean
    assert three.flagged(np.hstack([interior, edge, shoulder])).mean() <= 0.001
    assert three.columns(6).tolist() == [three.mean, three.std, three.edge_mean, three.edge_std,
                                         three.inner_bands[0][1], three.inner_bands[0][2]]
    assert three.whole == (max(three.mean, three.edge_mean, three.inner_bands[0][1]),
                           max(three.std, three.edge_std, three.inner_bands[0][2]))
    assert Thresholds.from_dict(three.to_dict()) == three
    assert "32-48 px from its edge" in describe(three)
    with pytest.raises(ValueError, match="take 2 or 6"):
        three.columns(4)

    # aperture scores put a block 32-48 px inside the edge in the shoulder's columns only
    res = np.zeros((1, 156, 156))
    res[0, 36:46, 70:80] = 0.3  # rows 36-45: kernels centred 40-41 lie 32-48 px from the edge
    full = np.zeros((1, 156, 156), bool)
    full[0, :, :] = True
    full[0, :2] = False  # the region's edge runs along the top
    zones = edge_zones(full, (32, 48))
    s = aperture_scores(res, regions=full, edges=zones)
    assert s.shape == (1, 6)
    assert s[0, 4] == pytest.approx(0.3, abs=1e-6) and s[0, 0] < 0.1 and s[0, 2] < 0.3

    # a scan applies each zone's pair where it lies
    from core.scanning import _zones, threshold_maps

    roi = np.zeros((200, 300), bool)
    roi[40:160] = True
    t_mean, t_std = threshold_maps(three, _zones(three, roi), np.s_[:, :])
    assert t_mean[45, 100] == three.edge_mean and t_mean[80, 100] == three.inner_bands[0][1]
    assert t_mean[100, 100] == three.mean and t_mean[10, 100] == three.whole[0]
    assert t_std[80, 100] == three.inner_bands[0][2]
