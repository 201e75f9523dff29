"""The contrast figure on synthetic patches with a known contrast, and the high/mid/low grading."""

from __future__ import annotations

import numpy as np
import pytest

from core.contrast import GRADE_THRESHOLDS, defect_contrast, grade, grade_patches

NOISE = 0.01


def disc_patch(rng, delta, *, radius=8, centre=(96, 96), gradient=0.0, noise=NOISE):
    rr, cc = np.mgrid[:192, :192]
    mask = (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius ** 2
    background = 0.5 + gradient * (cc - 96) / 192
    patch = background + delta * mask + rng.normal(0, noise, (192, 192))
    return patch.astype(np.float32), mask


def test_contrast_measures_step_over_noise():
    rng = np.random.default_rng(0)
    patch, mask = disc_patch(rng, -0.05)
    c = defect_contrast(patch, mask)
    assert c.delta == pytest.approx(-0.05, abs=0.003)
    # white noise: the high-pass (sigma 2 px) keeps about 97 % of its std
    assert c.noise == pytest.approx(0.97 * NOISE, rel=0.1)
    assert c.contrast == pytest.approx(5.0 / 0.97, rel=0.12)
    assert c.area_px == mask.sum()


def test_contrast_ignores_a_linear_background_gradient():
    rng = np.random.default_rng(1)
    flat = defect_contrast(*disc_patch(rng, 0.1))
    steep = defect_contrast(*disc_patch(np.random.default_rng(1), 0.1, gradient=0.5))
    assert steep.contrast == pytest.approx(flat.contrast, rel=0.05)


def test_grades_follow_the_thresholds():
    high, mid = GRADE_THRESHOLDS
    rng = np.random.default_rng(2)
    patches, masks = zip(*(disc_patch(rng, d) for d in (-2 * high * NOISE, -(high + mid) / 2 * NOISE,
                                                         -0.5 * mid * NOISE)))
    contrasts, grades = grade_patches(np.stack(patches), np.stack(masks))
    assert list(grades) == ["high", "mid", "low"]
    assert contrasts[0] > contrasts[1] > contrasts[2]


def test_the_most_visible_region_sets_the_figure():
    rng = np.random.default_rng(3)
    patch, mask = disc_patch(rng, -0.02, centre=(60, 60))
    strong, mask2 = disc_patch(rng, -0.2, centre=(130, 130))
    combined = patch + (strong - 0.5) * mask2  # a faint and a strong disc in one patch
    c = defect_contrast(combined, mask | mask2)
    assert c.delta == pytest.approx(-0.2, abs=0.01)


def test_defect_outside_the_aperture_has_no_figure():
    rng = np.random.default_rng(4)
    patch, mask = disc_patch(rng, -0.1, radius=5, centre=(8, 96))  # in the 18 px margin only
    c = defect_contrast(patch, mask)
    assert np.isnan(c.contrast)
    assert grade(c.contrast) == "low"


def test_grade_rejects_swapped_thresholds():
    with pytest.raises(ValueError, match="high > mid"):
        grade(5.0, thresholds=(3.0, 7.0))
