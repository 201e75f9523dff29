"""Perturbation sets of Section 3.3: real defects, SNI sampling rules, the six synthetic types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage import io

from core.model import APERTURE, OFFSET, PATCH
from core.perturbations import (
    ANOMALY_KINDS, BUNDLED_NATURAL, CachedPerturbations, RealDefectPerturbations, SNIPerturbations,
    SyntheticAnomalies, _smooth_into, apply_perturbation, border_ring_means, grow_region, label_regions,
    lorentzian_kernel, walk_steps,
)
from core.sampler import aperture


def constant_natural(value=255):
    return [np.full((256, 256), value, np.uint8)]


# -- Equation 2 ------------------------------------------------------------------------------------
def test_apply_perturbation_adds_delta_only_where_w_is_one():
    rng = np.random.default_rng(0)
    x, d = rng.random((2, 3, PATCH, PATCH), dtype=np.float32)
    w = (rng.random((3, PATCH, PATCH)) > 0.5).astype(np.float32)
    out = apply_perturbation(x, d, w)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[w == 0], x[w == 0])
    np.testing.assert_allclose(out[w == 1], (x + d)[w == 1])
    with pytest.raises(ValueError, match="shapes differ"):
        apply_perturbation(x, d[:2], w)


# -- real defects ------------------------------------------------------------------------------------
def test_labelling_uses_two_connectivity():
    mask = np.zeros((6, 6), bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal neighbours: one region
    mask[4, 4] = True  # two pixels away: another
    labels = label_regions(mask)
    assert labels.max() == 2 and labels[1, 1] == labels[2, 2] != labels[4, 4]


def test_border_ring_mean_on_a_hand_made_example():
    image = np.full((10, 10), 100.0, np.float32)  # pixels outside every ring must not count
    labels = np.zeros((10, 10), np.int32)
    labels[3:5, 3:5] = 1  # 2 x 2 region: its ring is the 4 x 4 block around it minus itself
    ring = np.zeros((10, 10), bool)
    ring[2:6, 2:6] = True
    ring[3:5, 3:5] = False
    image[ring] = np.arange(1, 13)  # ring mean = 6.5
    image[3:5, 3:5] = -7.0  # region values must not count
    labels[0, 8:] = 2  # region in the corner: ring clipped to the image (4 pixels)
    image[0, 7] = image[1, 7] = image[1, 8] = image[1, 9] = 10.0
    means = border_ring_means(image, labels)
    assert means[0] == 0
    assert means[1] == pytest.approx(6.5)
    assert means[2] == pytest.approx(10.0)


def test_rings_may_be_shared_by_two_regions():
    image = np.zeros((5, 7), np.float32)
    labels = np.zeros((5, 7), np.int32)
    labels[2, 2], labels[2, 4] = 1, 2
    image[1:4, 3] = 9.0  # the column between them is in both rings
    means = border_ring_means(image, labels)
    assert means[1] == pytest.approx(27 / 8) and means[2] == pytest.approx(27 / 8)


def defect_scene():
    """A 0.6 plate with a linear shading and three 0.4-darker defects."""
    r, c = np.mgrid[:400, :640]
    image = (0.6 + 1e-4 * c).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    for cr, cc, rad in ((150, 200, 8), (260, 330, 5), (200, 480, 12)):
        mask |= np.hypot(r - cr, c - cc) <= rad
    image[mask] -= 0.4
    return image, mask


def test_real_defects_are_contrast_relative_to_the_border_ring():
    image, mask = defect_scene()
    source = RealDefectPerturbations.from_images([image], [mask], rotate=False)
    assert source.n_regions == 3
    delta, weight = source.sample(np.random.default_rng(0), 20)
    assert delta.dtype == weight.dtype == np.float32 and delta.shape == (20, PATCH, PATCH)
    assert set(np.unique(weight)) <= {0.0, 1.0}
    assert aperture(weight).any(axis=(1, 2)).all()  # defect pixels inside the aperture
    assert (delta[weight == 0] == 0).all()
    # the shading across a defect (< 25 px * 1e-4) is all that remains beside the -0.4 contrast
    np.testing.assert_allclose(delta[weight == 1], -0.4, atol=3e-3)


def test_real_defects_with_rotation_keep_their_contrast():
    image, mask = defect_scene()
    source = RealDefectPerturbations.from_images([image], [mask])
    delta, weight = source.sample(np.random.default_rng(1), 20)
    inside = delta[weight == 1]
    assert np.median(inside) == pytest.approx(-0.4, abs=0.01)
    assert inside.max() < 0  # interpolation only blends at the rim, never flips the sign


def test_real_defects_need_a_defect():
    image, mask = defect_scene()
    with pytest.raises(ValueError, match="no defect"):
        RealDefectPerturbations.from_images([image], [np.zeros_like(mask)])


@pytest.mark.gdxray
def test_gdxray_defects_are_mostly_darker_than_their_rings(gdxray):
    from core.datasets import load_dataset

    item = next(d for d in load_dataset(gdxray, include_unmasked=False) if d.name == "W0001_0002")
    source = RealDefectPerturbations.from_images([item.image], [item.mask])
    assert source.n_regions > 20
    delta, weight = source.sample(np.random.default_rng(0), 30)
    inside = delta[weight == 1]
    assert inside.mean() < -0.01 and np.mean(inside < 0) > 0.8


# -- SNI ---------------------------------------------------------------------------------------------
def test_sni_parameters_follow_the_papers_distributions():
    sni = SNIPerturbations(constant_natural())
    rng = np.random.default_rng(0)
    draws = [sni.draw_parameters(rng) for _ in range(4000)]
    counts = np.bincount([len(d) for d in draws], minlength=5)
    assert counts[0] == 0 and (np.abs(counts[1:] / 4000 - 0.25) < 0.03).all()  # U{1..4}
    regions = [r for d in draws for r in d]
    px = np.array([r.n_pixels for r in regions])
    assert px.min() >= 10 and px.max() <= 8000 and abs(px.mean() - 4005) < 150
    e = np.array([r.elongation for r in regions])
    assert e.min() >= 1 and e.max() <= 40 and abs(e.mean() - 20.5) < 0.8
    s = np.array([r.scale for r in regions])
    assert s.min() >= 0.05 and s.max() <= 0.2 and abs(s.mean() - 0.125) < 0.004
    gauss = np.array([r.psf == "gaussian" for r in regions])
    assert abs(gauss.mean() - 0.5) < 0.03
    sigma = np.array([r.psf_param for r in regions if r.psf == "gaussian"])
    hwhm = np.array([r.psf_param for r in regions if r.psf == "lorentzian"])
    assert sigma.min() >= 2 and sigma.max() <= 9 and abs(sigma.mean() - 5.5) < 0.15
    assert hwhm.min() >= 0.15 and hwhm.max() <= 0.4 and abs(hwhm.mean() - 0.275) < 0.005
    starts = np.array([r.start for r in regions])
    assert starts.min() >= OFFSET and starts.max() < OFFSET + APERTURE
    assert {r.axis for r in regions} == {0, 1}


@pytest.mark.parametrize("n_pixels", [10, 500, 8000])
def test_grown_region_has_exactly_its_pixel_count_and_is_connected(n_pixels):
    rows, cols = grow_region(np.random.default_rng(n_pixels), n_pixels, 7.0, start=(96, 96))
    assert len(set(zip(rows.tolist(), cols.tolist()))) == n_pixels == rows.size
    assert rows.min() >= 0 and cols.min() >= 0 and max(rows.max(), cols.max()) < PATCH
    region = np.zeros((PATCH, PATCH), bool)
    region[rows, cols] = True
    assert ndimage.label(region, structure=np.ones((3, 3)))[1] == 1  # one 8-connected walk


@pytest.mark.parametrize("e", [1.0, 7.0, 40.0])
def test_walk_steps_follow_the_elongation_rule(e):
    """P(0-step) = e / (e + 2) in the chosen dimension, -1 / 0 / +1 uniform in the other."""
    steps = walk_steps(np.random.default_rng(3), 200_000, e, axis=1)
    slow, free = steps[:, 1], steps[:, 0]
    assert set(np.unique(steps)) <= {-1, 0, 1}
    assert np.mean(slow == 0) == pytest.approx(e / (e + 2), abs=0.004)
    assert np.mean(slow == 1) == pytest.approx(np.mean(slow == -1), abs=0.004)
    np.testing.assert_allclose(np.bincount(free + 1) / free.size, 1 / 3, atol=0.004)


def test_high_elongation_makes_elongated_regions():
    rng = np.random.default_rng(4)

    def aspect(e):
        ratios = []
        for _ in range(30):
            rows, cols = grow_region(rng, 800, e, axis=0, start=(96, 96))
            ratios.append(np.std(cols) / np.std(rows))
        return np.median(ratios)

    assert aspect(40.0) > 2.0  # spread along the free dimension
    assert 0.6 < aspect(1.0) < 1.6  # e = 1: every step uniform, no preferred direction


def test_sni_region_values_are_the_natural_image_times_the_scale():
    sni = SNIPerturbations([np.tile(np.linspace(0, 1, 200), (200, 1))])  # 200 px: not rescaled
    rng = np.random.default_rng(5)
    (region, *_) = [r for r in sni.draw_parameters(rng)]
    values, r0, c0 = sni.render_region(rng, region)
    inside = values[values != 0]
    assert inside.size <= region.n_pixels and inside.max() <= region.scale + 1e-6
    # columns of the crop carry the ramp: value / scale = (crop col + col) / 255
    rows, cols = np.nonzero(values)
    expected = np.round(np.linspace(0, 1, 200) * 255)[region.crop[1] + c0 + cols] / 255 * region.scale
    np.testing.assert_allclose(values[rows, cols], expected, atol=2e-3 * region.scale)


def test_sni_samples_are_positive_by_default_and_signed_on_request():
    rng = np.random.default_rng(6)
    delta, weight = SNIPerturbations(constant_natural()).sample(rng, 12)
    assert delta.shape == weight.shape == (12, PATCH, PATCH) and delta.dtype == np.float32
    assert delta.min() >= 0 and (delta[weight == 0] == 0).all()
    assert aperture(weight).any(axis=(1, 2)).all()
    signed, _ = SNIPerturbations(constant_natural(), signed=True).sample(rng, 30)
    assert (signed.min(axis=(1, 2)) < 0).any() and (signed.max(axis=(1, 2)) > 0).any()


def test_lorentzian_psf_has_the_requested_half_width():
    for hwhm in (0.15, 0.275, 0.4):
        k = lorentzian_kernel(hwhm)
        assert k.sum() == pytest.approx(1, abs=1e-6)
        np.testing.assert_allclose(k, k.T, atol=1e-7)
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-7)
        # the line-spread function is the Lorentzian of that HWHM, integrated over each pixel
        lsf = k.sum(axis=0)
        x = np.arange(-3, 4)
        expected = (np.arctan((x + 0.5) / hwhm) - np.arctan((x - 0.5) / hwhm)) / np.pi
        centre = lsf.size // 2
        np.testing.assert_allclose(lsf[centre - 3:centre + 4], expected, rtol=0.05)
    narrow = lorentzian_kernel(0.15)
    assert narrow[12, 12] > 0.7  # HWHM 0.15 px: the centre pixel keeps most of the signal


def test_windowed_smoothing_equals_smoothing_the_whole_patch():
    rng = np.random.default_rng(7)
    shape = rng.random((30, 20)).astype(np.float32)
    for r0, c0 in ((2, 3), (80, 100), (160, 170)):
        shape_fit = shape[: PATCH - r0, : PATCH - c0]
        full = np.zeros((PATCH, PATCH), np.float32)
        full[r0:r0 + shape_fit.shape[0], c0:c0 + shape_fit.shape[1]] = shape_fit
        out = np.zeros((PATCH, PATCH), np.float32)
        _smooth_into(out, shape_fit, r0, c0, "gaussian", 6.0)
        expected = ndimage.gaussian_filter(full, 6.0, mode="constant", truncate=4.0)
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_bundled_natural_images_ship_with_scikit_image():
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    assert all((folder / name).is_file() for name in BUNDLED_NATURAL)  # local files: no download
    sni = SNIPerturbations()
    assert len(sni.natural) == len(BUNDLED_NATURAL)
    assert all(min(im.shape) == 200 and im.dtype == np.uint8 for im in sni.natural)


def test_natural_images_from_a_users_folder(tmp_path):
    rng = np.random.default_rng(8)
    io.imsave(tmp_path / "a.png", rng.integers(0, 256, (300, 240, 3), dtype=np.uint8), check_contrast=False)
    io.imsave(tmp_path / "b.jpg", rng.integers(0, 256, (180, 400), dtype=np.uint8), check_contrast=False)
    (tmp_path / "notes.txt").write_text("not an image")
    sni = SNIPerturbations(tmp_path)
    assert len(sni.natural) == 2
    delta, _ = sni.sample(rng, 2)
    assert np.abs(delta).max() > 0
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no readable natural images"):
        SNIPerturbations(empty)


# -- synthetic anomalies -------------------------------------------------------------------------------
EXPECTED_AREA = {  # px of the unsmoothed shape
    "circular_hollow": (np.pi * (18**2 - 9**2),) * 2,
    "dogbone": (157.9,) * 2,  # 22 x 4 bar + two 8 px discs less their halves of the bar strip
    "elongated": (20 * 5 + np.pi * 2.5**2,) * 2,
    "partial_circle": (np.pi * (18**2 - 9**2) * 10 / 360, np.pi * (18**2 - 9**2) * 180 / 360),
    "circular_indication": (np.pi * 10**2, np.pi * 30**2),
    "raster": (2 * 5 * 4 * 50 - 25 * 16, 2 * 5 * 5 * 50 - 25 * 25),
}


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_synthetic_shapes_have_the_papers_size_amplitude_and_placement(kind):
    rng = np.random.default_rng(9)
    sharp = SyntheticAnomalies(kind, psf_sigma=0)
    delta, weight = sharp.sample(rng, 40)
    amp = {"partial_circle": 0.1, "circular_indication": -0.1}.get(kind, 0.2)
    assert sharp.amplitude == amp
    np.testing.assert_allclose(np.unique(delta[weight == 1]), [amp], rtol=1e-6)
    areas = weight.sum(axis=(1, 2))
    lo, hi = EXPECTED_AREA[kind]
    assert lo * 0.92 <= areas.min() and areas.max() <= hi * 1.08
    outside = weight.copy()
    outside[:, OFFSET:OFFSET + APERTURE, OFFSET:OFFSET + APERTURE] = 0
    assert outside.sum() == 0  # placed wholly inside the aperture


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_psf_sigma_9_keeps_the_mass_and_lowers_the_peak(kind):
    seed = 10
    sharp, _ = SyntheticAnomalies(kind, psf_sigma=0).sample(np.random.default_rng(seed), 5)
    smooth, weight = SyntheticAnomalies(kind).sample(np.random.default_rng(seed), 5)
    for s, m, w in zip(sharp, smooth, weight):
        assert abs(m).max() < abs(s).max()
        assert m.sum() == pytest.approx(s.sum(), rel=0.05)  # 1 % support cut-off loses little
        assert (m[w == 0] == 0).all() and w[np.abs(m) >= 0.01 * np.abs(m).max()].all()


@pytest.mark.parametrize("kind", ["circular_hollow", "dogbone", "elongated", "raster"])
def test_anomalies_are_centred_in_the_region_and_the_rng_draws_as_without(kind):
    """With regions (the weld region a scan inspects), every anomaly's centre lies in its patch's
    region and in the aperture; the shapes are the ones drawn without, moved by whole pixels, and
    the main rng is left where it would have been, so the patches drawn after it do not change."""
    n = 30
    regions = np.zeros((n, PATCH, PATCH), bool)
    regions[:, 120:, :] = True  # a region along the aperture's lower part only
    regions[-1] = False  # no room: the first draw is kept
    free_rng, placed_rng = np.random.default_rng(4), np.random.default_rng(4)
    free, _ = SyntheticAnomalies(kind, psf_sigma=0).sample(free_rng, n)
    placed, weight = SyntheticAnomalies(kind, psf_sigma=0).sample(
        placed_rng, n, regions=regions, place_rng=np.random.default_rng(0))
    assert free_rng.random() == placed_rng.random()
    outside = weight.copy()
    outside[:, OFFSET:OFFSET + APERTURE, OFFSET:OFFSET + APERTURE] = 0
    assert outside.sum() == 0  # still wholly inside the aperture
    for a, b, region in zip(free, placed, regions):
        ra, ca = np.nonzero(a)
        rb, cb = np.nonzero(b)
        dr, dc = rb.min() - ra.min(), cb.min() - ca.min()
        np.testing.assert_array_equal(np.roll(a, (dr, dc), axis=(0, 1)), b)  # the same shape, moved
        if region.any():  # rows 120 on; these shapes are symmetric about their centre
            assert (rb.min() + rb.max()) / 2 >= 119.5
        else:
            assert (dr, dc) == (0, 0)
    with pytest.raises(ValueError, match="place_rng"):
        SyntheticAnomalies(kind).sample(np.random.default_rng(0), 1, regions=regions[:1])


def test_elongated_anomalies_turn_through_all_directions():
    rng = np.random.default_rng(11)
    delta, weight = SyntheticAnomalies("elongated", psf_sigma=0).sample(rng, 80)
    angles = []
    for w in weight:
        r, c = np.nonzero(w)
        cov = np.cov(np.vstack([r, c]))
        vals, vecs = np.linalg.eigh(cov)
        v = vecs[:, -1]
        angles.append(np.mod(np.arctan2(v[0], v[1]), np.pi))
        assert 2 * np.sqrt(3 * vals[-1]) == pytest.approx(25, abs=3)  # length of about 25 px
    hist, _ = np.histogram(angles, bins=4, range=(0, np.pi))
    assert hist.min() >= 8


def test_unknown_anomaly_kind_is_refused():
    with pytest.raises(ValueError, match="circular_hollow"):
        SyntheticAnomalies("blob")


def test_cached_source_serves_turned_bank_entries_and_fresh_draws():
    cached = CachedPerturbations(SyntheticAnomalies("elongated", psf_sigma=0), size=8, refresh=0.2)
    rng = np.random.default_rng(12)
    n_fresh, served = 0, set()
    for _ in range(300):
        cached._fill(rng)
        before = {w.tobytes() for w in cached._weight}
        delta, weight = cached.sample(rng, 1)
        assert delta.shape == weight.shape == (1, PATCH, PATCH) and delta.dtype == np.float32
        assert (delta[weight == 0] == 0).all() and np.allclose(delta[weight == 1], 0.2)
        w = weight[0].astype(bool)
        variants = [np.rot90(v, t).tobytes() for v in (w, w[:, ::-1]) for t in range(4)]
        if not before.intersection(variants):  # not a turned bank entry: a fresh draw, now banked
            n_fresh += 1
            assert w.tobytes() in {x.tobytes() for x in cached._weight}
        served.add(w.tobytes())
    assert n_fresh / 300 == pytest.approx(0.2, abs=0.06)
    assert len(served) > 100  # turns, flips and fresh draws keep the variety up
