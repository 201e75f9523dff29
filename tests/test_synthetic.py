"""Synthetic weld radiographs: determinism, exact ground truth, file output, realistic noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from core.imageio import load_radiograph
from core.synthetic import DEFECT_TYPES, generate_weld, noise_statistics, write_radiograph

SMALL = dict(shape=(320, 1600), pixel_size_um=60.0)

# Measured on GDXray W0001 (7 films) with docs/scripts/synthetic_vs_real.py: min and max over the
# films of the residual std (image - box9) on flat bead / base plate, and of the residual's
# autocorrelation half-width (the two films below 1.2 px are clipped at black or white).
REAL_BEAD_STD = (0.00308, 0.00479)
REAL_BASE_STD = (0.00232, 0.00503)
REAL_ACF_WIDTH = (1.20, 1.83)


def test_same_seed_same_bytes_and_different_seed_differs():
    a = generate_weld(11, **SMALL)
    b = generate_weld(11, **SMALL)
    c = generate_weld(12, **SMALL)
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.labels, b.labels)
    assert a.defects == b.defects
    assert not np.array_equal(a.image, c.image)


def test_shapes_and_types():
    r = generate_weld(3, **SMALL)
    assert r.image.shape == r.mask.shape == r.labels.shape == r.weld_mask.shape == (320, 1600)
    assert r.image.dtype == np.uint16 and r.mask.dtype == bool and r.labels.dtype == np.int32
    assert r.weld_mask.dtype == bool and r.pixel_size_um == 60.0
    assert np.array_equal(r.mask, r.labels > 0)
    assert 1 <= len(r.defects) <= 5
    # the weld is a band across the whole length, bright against the plate
    assert r.weld_mask.any(axis=0).all()
    assert r.image[r.weld_mask].mean() > r.image[~r.haz_mask].mean() + 0.1 * 65535


def test_mask_is_exactly_where_defects_change_the_image():
    kinds = sorted(DEFECT_TYPES)
    r = generate_weld(21, defects=kinds, shape=(400, 2600), pixel_size_um=60.0)
    clean = generate_weld(21, defects=None, shape=(400, 2600), pixel_size_um=60.0)
    assert clean.defects == [] and not clean.mask.any()
    assert np.array_equal(r.mask, r.image != clean.image)
    # defects are darker than the clean weld (less steel), and lie in the weld bead
    assert (r.image[r.mask].astype(int) < clean.image[r.mask]).all()
    assert not (r.mask & ~r.weld_mask).any()
    for d in r.defects:
        rows, cols = np.nonzero(r.labels == d.id)
        assert d.bbox == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)


@pytest.mark.parametrize("kind", sorted(DEFECT_TYPES))
def test_each_type_is_generated_when_asked(kind):
    code, name = DEFECT_TYPES[kind]
    r = generate_weld(5, defects=[kind], **SMALL)
    assert [(d.id, d.iso_code, d.name, d.kind) for d in r.defects] == [(1, code, name, kind)]
    assert (r.labels == 1).sum() > 10
    by_code = generate_weld(5, defects=[code], **SMALL)
    assert np.array_equal(by_code.labels, r.labels)


def test_contrast_is_peak_change_over_noise_std():
    r = generate_weld(8, defects=["porosity", "slag_line"], contrast_range=(8.0, 8.0), **SMALL)
    clean = generate_weld(8, defects=None, **SMALL)
    assert [d.contrast for d in r.defects] == pytest.approx([8.0, 8.0], abs=0.01)
    # peak change about 8 x the pixel noise std (noise std estimated from the clean image)
    noise = noise_statistics(clean.image / 65535.0, clean.weld_mask).residual_std / 0.88
    for d in r.defects:
        own = r.labels == d.id
        change = (clean.image[own].astype(float) - r.image[own]) / 65535.0
        assert 5 * noise < change.max() < 12 * noise


def test_markers_and_iqi_stay_off_the_weld():
    with_marks = generate_weld(4, defects=None, shape=(800, 1600), pixel_size_um=40.0)
    without = generate_weld(4, defects=None, shape=(800, 1600), pixel_size_um=40.0,
                            iqi=False, markers=False)
    changed = with_marks.image != without.image
    assert changed.sum() > 2000  # letters and wires were drawn
    assert not (changed & with_marks.weld_mask).any()
    assert np.array_equal(with_marks.weld_mask, without.weld_mask)


@pytest.mark.parametrize("angle", [0.0, 8.0, -15.0])
def test_weld_direction_follows_angle(angle):
    r = generate_weld(2, shape=(600, 1200), pixel_size_um=60.0, defects=None, angle_deg=angle)
    rows, cols = r.centreline.T
    slope = np.polyfit(cols, rows, 1)[0]
    assert np.degrees(np.arctan(-slope)) == pytest.approx(angle, abs=1.5)
    # the centreline runs through the bead band
    inside = r.weld_mask[np.rint(rows).astype(int), np.rint(cols).astype(int)]
    assert inside.all()


def test_bend_curves_the_centreline():
    r = generate_weld(2, shape=(600, 1600), pixel_size_um=60.0, defects=None, bend_px=60.0)
    rows, cols = r.centreline.T
    ends = rows[np.abs(cols - 800) > 700].mean()
    middle = rows[np.abs(cols - 800) < 50].mean()
    assert ends - middle == pytest.approx(60.0 * 0.9, abs=15)


def test_write_radiograph_round_trip(tmp_path):
    r = generate_weld(9, shape=(256, 768), pixel_size_um=40.3)
    path = write_radiograph(tmp_path / "weld.tif", r)
    loaded = load_radiograph(path)
    assert loaded.bit_depth == 16 and loaded.raw.dtype == np.uint16
    assert np.array_equal(loaded.raw, r.image)
    assert loaded.pixel_size_um == pytest.approx(40.3, rel=1e-4)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == 8  # deflate
    mask = load_radiograph(tmp_path / "weld_mask.png").raw
    assert np.array_equal(mask > 0, r.mask)
    info = json.loads((tmp_path / "weld_defects.json").read_text())
    assert [d["iso_code"] for d in info["defects"]] == [d.iso_code for d in r.defects]
    with pytest.raises(ValueError, match="TIFF"):
        write_radiograph(tmp_path / "weld.png", r)


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="unknown defect type"):
        generate_weld(0, defects=["blowhole"], **SMALL)
    with pytest.raises(ValueError, match="too small"):
        generate_weld(0, shape=(32, 32))
    with pytest.raises(ValueError, match="could not place"):
        generate_weld(0, shape=(96, 96), defects=["lack_of_penetration"] * 4)


def _bead_and_base(r):
    bead = ndi.binary_erosion(r.weld_mask, iterations=int(0.2 * r.widths.mean()))
    base = ~ndi.binary_dilation(r.haz_mask, iterations=20)
    return bead, base


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_matches_gdxray_range(seed):
    r = generate_weld(seed, shape=(600, 1200), pixel_size_um=40.0, defects=None, iqi=False,
                      markers=False)
    image = r.image / np.float32(65535)
    bead, base = _bead_and_base(r)
    on_bead, on_base = noise_statistics(image, bead), noise_statistics(image, base)
    assert REAL_BEAD_STD[0] <= on_bead.residual_std <= REAL_BEAD_STD[1]
    assert REAL_BASE_STD[0] <= on_base.residual_std <= REAL_BASE_STD[1]
    for stats in (on_bead, on_base):
        assert REAL_ACF_WIDTH[0] <= stats.acf_width_px <= REAL_ACF_WIDTH[1]
        assert stats.n_tiles >= 20


@pytest.mark.gdxray
def test_noise_statistics_on_a_real_film(gdxray):
    """The measurement itself, on GDXray W0001_0004 (bead and plate of a clean region)."""
    image = load_radiograph(gdxray / "W0001" / "W0001_0004.png").image[:, 3000:4900]
    smooth = ndi.gaussian_filter(image, 20)
    bead = smooth > 0.7
    base = smooth < 0.25
    on_bead, on_base = noise_statistics(image, bead), noise_statistics(image, base)
    assert REAL_BEAD_STD[0] <= on_bead.residual_std <= REAL_BEAD_STD[1]
    assert REAL_BASE_STD[0] <= on_base.residual_std <= REAL_BASE_STD[1]
    assert REAL_ACF_WIDTH[0] <= on_base.acf_width_px <= REAL_ACF_WIDTH[1]
