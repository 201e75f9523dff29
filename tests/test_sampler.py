"""PatchSampler: translation, rotation, turns and flips; okay patches free of defects; ROI."""

from __future__ import annotations

import numpy as np
import pytest

from core.model import APERTURE, OFFSET, PATCH
from core.sampler import PatchSampler, aperture

ROWS, COLS = 420, 700


def coordinate_image():
    """Pixel value = a * row + b * col: linear interpolation reproduces it exactly."""
    r, c = np.mgrid[:ROWS, :COLS]
    return (r * 1e-3 + c * 1e-3 / 1.7).astype(np.float32)


def blob_mask():
    mask = np.zeros((ROWS, COLS), bool)
    r, c = np.mgrid[:ROWS, :COLS]
    for cr, cc, rad in ((200, 150, 6), (120, 450, 3), (300, 600, 9)):
        mask |= np.hypot(r - cr, c - cc) <= rad
    return mask


def two_level_image(mask):
    """0.5 everywhere, 0.9 on defect pixels."""
    return np.where(mask, 0.9, 0.5).astype(np.float32)


def expected_patch(geometry):
    """coordinate_image() evaluated at the patch's source positions."""
    i, j = np.mgrid[:PATCH, :PATCH].astype(float) - (PATCH - 1) / 2
    m = geometry.matrix
    rows = geometry.centre[0] + m[0, 0] * i + m[0, 1] * j
    cols = geometry.centre[1] + m[1, 0] * i + m[1, 1] * j
    return rows * 1e-3 + cols * 1e-3 / 1.7


def test_okay_patches_contain_no_defect_pixel():
    mask = blob_mask()
    for order in (1, 3):
        sampler = PatchSampler([two_level_image(mask)], [mask], seed=3, order=order)
        patches = sampler.okay(60)
        assert patches.shape == (60, PATCH, PATCH) and patches.dtype == np.float32
        # linear interpolation is exact; cubic splines ring a little near (not on) defects
        tol = 1e-5 if order == 1 else 0.03
        assert patches.max() <= 0.5 + tol


@pytest.mark.parametrize("rotate", [True, False])
def test_the_quick_defect_check_answers_as_the_full_patch_does(rotate):
    # okay draws look at a block table and every fourth pixel before the whole patch: same answer
    from core.sampler import PatchGeometry, extract, random_matrix

    rng = np.random.default_rng(3)
    mask = blob_mask()
    mask[rng.integers(0, ROWS, 6), rng.integers(0, COLS, 6)] = True  # single pixels slip between samples
    sampler = PatchSampler([two_level_image(mask)], [mask], rotate=rotate)
    clear = 0
    for _ in range(1500):
        centre = (float(rng.uniform(140, ROWS - 140)), float(rng.uniform(140, COLS - 140)))
        geo = PatchGeometry(0, centre, random_matrix(rng, rotate=rotate))
        full = extract(sampler._forbidden[0], geo, order=0, output=bool)
        assert np.array_equal(extract(sampler._forbidden[0], geo, order=0, output=bool, step=4), full[::4, ::4])
        assert sampler._clear(geo) == (not full.any())
        clear += not full.any()
    assert 0 < clear < 1500  # both answers occurred


def test_defect_patches_have_defect_pixels_in_the_aperture_and_a_matching_mask():
    mask = blob_mask()
    sampler = PatchSampler([two_level_image(mask)], [mask], seed=4, order=1)
    patches, masks = sampler.defect(60)
    assert masks.dtype == bool and masks.shape == (60, PATCH, PATCH)
    assert aperture(masks).any(axis=(1, 2)).all()
    # the returned mask marks where the patch shows the defect
    assert patches[masks].mean() > 0.85
    assert patches[~masks].mean() < 0.52


def test_without_rotation_patches_are_exact_pixel_copies_turned_and_flipped():
    image = coordinate_image()
    sampler = PatchSampler([image], seed=5, rotate=False)
    seen = set()
    for patch in sampler.okay(40):
        d_row = np.unique(np.round((patch[1:, :] - patch[:-1, :]) * 1e5))
        d_col = np.unique(np.round((patch[:, 1:] - patch[:, :-1]) * 1e5))
        # each step along a patch axis is exactly one image row or one image column
        assert d_row.size == 1 and d_col.size == 1
        steps = {abs(d_row[0]), abs(d_col[0])}
        assert steps == {100.0, round(1e2 / 1.7)}
        seen.add((np.sign(d_row[0]), np.sign(d_col[0]), abs(d_row[0]) == 100.0))
    assert len(seen) == 8  # all four turns, each with and without a flip


def test_patches_sample_the_image_on_the_rotated_grid_of_their_geometry():
    image = coordinate_image()
    sampler = PatchSampler([image], seed=6, order=1)
    rng = np.random.default_rng(0)
    for _ in range(5):
        geo = sampler.okay_geometry(rng)
        np.testing.assert_allclose(sampler.patch(geo), expected_patch(geo), atol=2e-5)


def test_rotation_angles_are_uniform_and_both_handednesses_occur():
    sampler = PatchSampler([coordinate_image()], seed=6)
    rng = np.random.default_rng(1)
    geos = [sampler.okay_geometry(rng) for _ in range(800)]
    angles = np.mod([np.arctan2(g.matrix[1, 0], g.matrix[0, 0]) for g in geos], 2 * np.pi)
    hist, _ = np.histogram(angles, bins=8, range=(0, 2 * np.pi))
    assert hist.min() > 60  # 100 expected per 45-degree bin
    dets = np.array([np.linalg.det(g.matrix) for g in geos])
    np.testing.assert_allclose(np.abs(dets), 1, atol=1e-9)
    assert 0.4 < np.mean(dets < 0) < 0.6  # flipped half of the time


def test_patch_centres_stay_inside_the_roi():
    image = coordinate_image()
    roi = np.zeros((ROWS, COLS), bool)
    roi[180:240, 300:420] = True
    sampler = PatchSampler([image], rois=[roi], seed=7, order=1)
    rng = np.random.default_rng(2)
    for _ in range(100):
        geo = sampler.okay_geometry(rng)
        assert roi[int(round(geo.centre[0])), int(round(geo.centre[1]))]
    tiny = np.zeros((ROWS, COLS), bool)
    tiny[:5, :5] = True
    with pytest.raises(ValueError, match="no patch centre"):
        PatchSampler([image], rois=[tiny])


def test_defect_patch_mask_follows_the_roi_and_the_patch_geometry():
    mask = blob_mask()
    sampler = PatchSampler([two_level_image(mask)], [mask], seed=8, rotate=False)
    patches, masks = sampler.defect(20)
    # without rotation the mask patch equals the thresholded image patch exactly
    np.testing.assert_array_equal(masks, patches > 0.7)


def test_invalid_inputs_raise_clear_errors():
    image = np.zeros((ROWS, COLS), np.float32)
    with pytest.raises(ValueError, match="float32"):
        PatchSampler([image.astype(np.float64)])
    with pytest.raises(ValueError, match="smaller than"):
        PatchSampler([np.zeros((100, 400), np.float32)])
    with pytest.raises(ValueError, match="differs from its image"):
        PatchSampler([image], [np.zeros((10, 10), bool)])
    with pytest.raises(ValueError, match="no defect pixels"):
        PatchSampler([image]).defect(1)


def test_aperture_is_the_central_156_pixels():
    x = np.zeros((2, PATCH, PATCH))
    x[:, OFFSET:OFFSET + APERTURE, OFFSET:OFFSET + APERTURE] = 1
    assert aperture(x).shape == (2, APERTURE, APERTURE) and aperture(x).all()
