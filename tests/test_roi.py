"""Weld seam region of interest: found where the weld is, robust to markers, stored compactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import WeldreviewError
from core.roi import WeldNotFoundError, WeldROI, find_weld, region_agreement
from core.synthetic import generate_weld

OUTLINES = Path(__file__).parent / "data" / "weld_outlines.json"
SHAPE = (400, 1600)
PIXEL_UM = 40.0


def synthetic(seed: int, angle: float = 0.0, bend: float = 0.0, **kwargs):
    r = generate_weld(seed, shape=SHAPE, pixel_size_um=PIXEL_UM, angle_deg=angle, bend_px=bend,
                      defects=None, **kwargs)
    return r.image / np.float32(65535), r.weld_mask


def synthetic_truth(seed: int, angle: float = 0.0, bend: float = 0.0):
    """Image and the generator's exact region (mask, centre line, widths)."""
    r = generate_weld(seed, shape=SHAPE, pixel_size_um=PIXEL_UM, angle_deg=angle, bend_px=bend,
                      defects=None)
    return r.image / np.float32(65535), WeldROI(r.weld_mask, r.centreline, r.widths, angle)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def angle_error(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def block_mean(image: np.ndarray, f: int) -> np.ndarray:
    m, n = (image.shape[0] // f) * f, (image.shape[1] // f) * f
    return image[:m, :n].reshape(m // f, f, n // f, f).mean(axis=(1, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def straight():
    image, truth = synthetic(11, 0.0)
    return image, truth, find_weld(image)


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0])
def test_straight_weld_is_found_in_any_orientation(angle):
    image, truth = synthetic(1, angle)
    roi = find_weld(image)
    assert roi.mask.shape == image.shape and roi.mask.dtype == bool
    assert iou(roi.mask, truth) > 0.7
    assert angle_error(roi.angle_deg, angle) < 4
    # only the part inside the film counts towards the weld length (flags per metre of weld)
    rad = np.deg2rad(angle)
    across_px = min(SHAPE[1] / max(abs(np.cos(rad)), 1e-9), SHAPE[0] / max(abs(np.sin(rad)), 1e-9))
    assert roi.length_mm(PIXEL_UM) == pytest.approx(across_px * PIXEL_UM / 1000, rel=0.05)
    # nearly all of the found band is weld (the bead's faint shoulders may lie outside it)
    assert (roi.mask & truth).sum() / roi.mask.sum() > 0.95


def test_curved_weld_is_followed():
    image, truth = synthetic_truth(5, -20.0, bend=90.0)
    roi = find_weld(image)
    agreement = region_agreement(roi, truth)
    assert agreement["iou"] > 0.7
    assert agreement["centre_mean_px"] < 8
    assert agreement["centre_max_px"] < 25


def test_lead_marker_and_iqi_wires_do_not_pull_the_region(straight):
    image, truth, clean = straight
    rows = np.flatnonzero(truth[:, 800])
    top, bottom = rows.min(), rows.max()
    pasted = image.copy()
    # a block of lead letters (near white, dark strokes) just above the bead, as on every film
    marker = (slice(max(top - 120, 0), top - 25), slice(300, 750))
    pasted[marker] = 0.95
    pasted[marker][:, ::40] = 0.3
    # a wire IQI lying across the weld: seven bright wires of falling diameter
    for k, width in enumerate((6, 5, 4, 3, 3, 2, 2)):
        col = 1100 + 25 * k
        pasted[20:SHAPE[0] - 20, col:col + width] += np.float32(0.15)
    np.clip(pasted, 0, 1, out=pasted)
    found = find_weld(pasted)
    assert iou(found.mask, truth) > iou(clean.mask, truth) - 0.05
    assert found.mask[marker].mean() < 0.02
    assert found.mask[bottom + 60:, 1100:1300].mean() < 0.02


@pytest.mark.parametrize("kind", ["flat plate", "white noise", "density wedge"])
def test_image_without_weld_raises_with_the_two_ways_out(kind):
    rng = np.random.default_rng(5)
    rows, cols = np.mgrid[0:300:1.0, 0:1200:1.0]
    image = {
        "flat plate": 0.45 + 0.01 * rng.standard_normal((300, 1200)),
        "white noise": rng.random((300, 1200)),
        "density wedge": 0.2 + 0.5 * cols / 1200 + 0.1 * rows / 300
        + 0.005 * rng.standard_normal((300, 1200)),
    }[kind].astype(np.float32)
    with pytest.raises(WeldNotFoundError) as info:
        find_weld(image)
    assert isinstance(info.value, WeldreviewError)
    message = str(info.value)
    assert "No weld seam found" in message
    assert "whole image" in message and "by hand" in message


def test_bad_input_is_rejected_with_a_hint():
    with pytest.raises(ValueError, match="2-D"):
        find_weld(np.zeros((4, 40, 40), np.float32))
    with pytest.raises(ValueError, match="float radiograph"):
        find_weld(np.zeros((100, 100), np.uint8))
    with pytest.raises(ValueError, match="polarity"):
        find_weld(np.zeros((100, 100), np.float32), polarity="up")


def test_heat_affected_zone_margin_widens_the_band(straight):
    image, truth, plain = straight
    haz = find_weld(image, include_haz=True, haz_margin_px=30)
    assert haz.haz_margin_px == 30
    np.testing.assert_allclose(haz.widths - plain.widths, 60.0, atol=0.2)
    assert (plain.mask & ~haz.mask).sum() == 0
    # about 2 x 30 px more along the whole 1600 px length
    assert 0.8 * 60 * SHAPE[1] < haz.mask.sum() - plain.mask.sum() < 1.2 * 60 * SHAPE[1]
    default = find_weld(image, include_haz=True)
    assert default.haz_margin_px > 0 and default.mask.sum() > plain.mask.sum()


def test_length_in_millimetres(straight):
    image, truth, roi = straight
    # the weld crosses the whole 1600 px film at 40 micrometres per pixel: 64 mm
    assert roi.length_mm(PIXEL_UM) == pytest.approx(64.0, rel=0.03)
    assert WeldROI.from_mask(truth).length_mm(PIXEL_UM) == pytest.approx(64.0, rel=0.03)
    with pytest.raises(ValueError, match="pixel_size_um"):
        roi.length_mm(0)


def test_json_round_trip_of_found_and_hand_edited_regions(straight):
    image, truth, roi = straight
    text = roi.to_json()
    assert len(text) < 4000  # centre line + widths, not pixels
    back = WeldROI.from_json(text)
    assert np.array_equal(back.mask, roi.mask)
    np.testing.assert_allclose(back.centreline, roi.centreline)
    np.testing.assert_allclose(back.widths, roi.widths)
    assert back.angle_deg == roi.angle_deg and not back.hand_edited

    # the user moves both edges out by 10 px: still stored as geometry
    wider = roi.edited(widths=roi.widths + 20)
    assert not wider.hand_edited and wider.mask.sum() > roi.mask.sum()
    assert (roi.mask & ~wider.mask).sum() == 0
    assert np.array_equal(WeldROI.from_json(wider.to_json()).mask, wider.mask)

    # the user cuts off the left end and adds a patch: stored as a run-length mask
    cut = np.zeros_like(roi.mask)
    cut[:, :200] = True
    add = np.zeros_like(roi.mask)
    add[20:60, 900:1000] = True
    edited = roi.edited(add=add, cut=cut)
    assert edited.hand_edited
    assert not edited.mask[:, :200].any() and edited.mask[20:60, 900:1000].all()
    assert edited.length_mm(PIXEL_UM) < roi.length_mm(PIXEL_UM)
    restored = WeldROI.from_json(edited.to_json())
    assert restored.hand_edited and np.array_equal(restored.mask, edited.mask)

    with pytest.raises(ValueError, match="JSON"):
        WeldROI.from_json("{not json")


def test_hand_outlines_are_well_formed():
    doc = json.loads(OUTLINES.read_text())
    assert len(doc["images"]) >= 15
    for name, entry in doc["images"].items():
        upper, lower = np.array(entry["upper"]), np.array(entry["lower"])
        rows, cols = entry["shape"]
        assert upper.shape == lower.shape and len(upper) >= 5, name
        assert np.array_equal(upper[:, 1], lower[:, 1]) and np.all(np.diff(upper[:, 1]) > 0), name
        assert upper[0, 1] == 0 and upper[-1, 1] == cols - 1, name
        assert np.all(upper[:, 0] < lower[:, 0]) and lower[:, 0].max() < rows, name
        assert entry["confidence"] in ("high", "medium", "low"), name


GDX_SUBSET = ("W0001_0002", "W0001_0004", "W0001_0007", "W0003_0001", "W0003_0002", "W0003_0010",
              "W0003_0068")


@pytest.mark.gdxray
def test_found_region_matches_hand_outlines_on_gdxray(gdxray):
    from core.imageio import load_radiograph

    doc = json.loads(OUTLINES.read_text())
    f = 4  # downsample for speed; the detector works on ~400 px anyway
    ious = {}
    for name in GDX_SUBSET:
        entry = doc["images"][name]
        small = block_mean(load_radiograph(gdxray / name[:5] / f"{name}.png").image, f)
        scale = lambda pts: (np.asarray(pts, dtype=np.float64) + 0.5) / f - 0.5  # noqa: E731
        reference = WeldROI.from_edges(small.shape, scale(entry["upper"]), scale(entry["lower"]))
        agreement = region_agreement(find_weld(small), reference)
        ious[name] = agreement["iou"]
        assert agreement["centre_mean_px"] * f < 40, name
        if name == "W0001_0004":  # the same film turned on its side
            turned = find_weld(np.ascontiguousarray(np.rot90(small)))
            assert angle_error(turned.angle_deg, 90.0) < 5
            ious["W0001_0004 rot90"] = iou(turned.mask, np.rot90(reference.mask))
    assert min(ious.values()) > 0.75, ious
    assert np.mean(list(ious.values())) > 0.85, ious
