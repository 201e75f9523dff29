"""Overlay colour scales are fixed to the thresholds, flags use the paper's colours, NaN is
transparent; the evidence panel shows each map's maximum."""

from __future__ import annotations

import numpy as np
import pytest

from gui_support import no_thread_leak  # noqa: F401


def make_result(shape=(200, 300), *, spot=0.0):
    """A real core ScanResult with a quiet residual and optionally one strong spot."""
    from core.calibration import Thresholds
    from core.residual import local_mean_std
    from core.scanning import Region, ScanResult

    rng = np.random.default_rng(5)
    image = rng.uniform(0.4, 0.6, shape).astype(np.float32)
    residual = rng.normal(0, 0.002, shape).astype(np.float32)
    residual[100:110, 150:160] += spot
    residual[:18], residual[-18:] = np.nan, np.nan
    mean, std = local_mean_std(residual)
    thr = Thresholds(mean=0.01, std=0.01, fpr_target=0.001, n_okay=3000, fpr_achieved=0.001,
                     fpr_ci=(0.0005, 0.002))
    with np.errstate(invalid="ignore"):
        flags = ((np.abs(mean) > thr.mean) * 1 | (std > thr.std) * 2).astype(np.uint8)
    regions = []
    if spot:
        regions = [Region(1, (96, 146, 114, 164), 300, spot, 0.02, spot / 0.01, 2.0,
                          spot / 0.01, "both", (0.7, 0.7))]
    return ScanResult(image=image, residual=residual, local_mean=mean, local_std=std,
                      flags=flags, regions=regions, thresholds=thr, model_sha256="ab" * 32,
                      pixel_size_um=40.0)


def test_scale_is_fixed_to_the_threshold_not_the_image():
    from app.overlays import SIGNED, diverging_lut, lut_index, ratio_map

    lut = diverging_lut()
    at_threshold = lut_index(ratio_map(np.array([[0.01, -0.01, 0.0, np.nan]]), 0.01), SIGNED)
    hot_plus, hot_minus, zero, nan = (lut[i] for i in at_threshold[0])
    assert hot_plus[3] > 200 and hot_plus[0] == 255  # red, opaque at 1.0 = threshold
    assert hot_minus[3] > 200 and hot_minus[2] == 255  # blue for negative
    assert zero[3] == 0 and nan[3] == 0  # zero and undefined are transparent
    # a quiet map stays quiet: the same values give the same colours whatever the image's range
    quiet = lut_index(ratio_map(np.full((2, 2), 0.002), 0.01), SIGNED)
    assert (lut[quiet][..., 3] < 40).all()


def test_flag_colours_are_the_papers():
    from app.overlays import flag_rgba

    rgba = flag_rgba(np.array([[0, 1, 2, 3]], np.uint8))
    assert rgba[0, 0, 3] == 0
    assert tuple(rgba[0, 1, :3]) == (255, 140, 0)  # mean only: orange
    assert tuple(rgba[0, 2, :3]) == (0, 190, 60)  # std only: green
    assert tuple(rgba[0, 3, :3]) == (30, 90, 255)  # both: blue


def test_overlays_on_the_viewer_switch_and_fade(qtbot):
    from app.overlays import Overlays
    from app.viewer import ImageViewer

    result = make_result(spot=0.05)
    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.set_image(result.image)
    overlays = Overlays(viewer)
    overlays.set_result(result)
    for kind in ("residual", "local_mean", "local_std"):
        item = overlays.items[kind]
        assert item.image.dtype == np.uint8 and item.image.flags["C_CONTIGUOUS"]
        assert tuple(item.levels) == (0, 255)
    assert overlays.items["flags"].isVisible() and len(overlays.outline_items) == 1
    assert not overlays.items["local_std"].isVisible()
    overlays.set_visible("local_std", True)
    overlays.set_opacity(0.3)
    assert overlays.items["local_std"].isVisible()
    assert overlays.items["local_std"].opacity() == pytest.approx(0.3)
    overlays.set_visible("outlines", False)
    assert not overlays.outline_items[0].isVisible()
    overlays.set_result(None)
    assert not overlays.items["flags"].isVisible() and overlays.outline_items == []


def test_evidence_panel_shows_each_maximum(qtbot):
    from app.detail_panel import PANELS, DetailPanel

    result = make_result(spot=0.05)
    panel = DetailPanel()
    qtbot.addWidget(panel)
    panel.show_region(result.image, result, result.regions[0])
    assert set(panel.maxima) == set(PANELS)
    assert panel.maxima["residual"] == pytest.approx(np.nanmax(np.abs(result.residual)), rel=1e-5)
    assert panel.maxima["local_mean"] == pytest.approx(0.05, rel=0.1)
    assert "x thr" in panel.captions["local_mean"].text()
    assert all(not panel.images[name].pixmap().isNull() for name in PANELS)


def test_evidence_panel_names_the_edge_band_thresholds(qtbot):
    from dataclasses import replace

    from app.detail_panel import DetailPanel

    result = make_result(spot=0.05)
    panel = DetailPanel()
    qtbot.addWidget(panel)
    panel.show_region(result.image, result, result.regions[0])
    assert "edge band" not in panel.summary.text()
    result.thresholds = replace(result.thresholds, edge_mean=0.03, edge_std=0.025, edge_band_px=32)
    panel.show_region(result.image, result, result.regions[0])
    text = panel.summary.text()
    assert "32 px edge band: 0.0300, 0.0250" in text and "local mean 0.0100" in text
    # zones by the film's slope instead: named by their slopes, not by px from the edge
    result.thresholds = replace(result.thresholds, edge_mean=None, edge_std=None, edge_band_px=0,
                                slope_zones=((0.002, 0.03, 0.025), (0.005, 0.04, 0.035)), slope_sigma_px=16)
    panel.show_region(result.image, result, result.regions[0])
    text = panel.summary.text()
    assert "slope is below 0.0020 grey levels/px (after a 16 px Gaussian" in text
    assert "slope 0.0020-0.0050: 0.0300, 0.0250; slope >= 0.0050: 0.0400, 0.0350" in text
    assert "edge band" not in text and "px from its edge" not in text
    # the application's region: the heat-affected zone's pair, then zones from the bead's edge
    result.thresholds = replace(result.thresholds, slope_zones=(), slope_sigma_px=0, haz_mean=0.02,
                                haz_std=0.015, edge_mean=0.03, edge_std=0.025, edge_band_px=32)
    panel.show_region(result.image, result, result.regions[0])
    text = panel.summary.text()
    assert "bead's interior; HAZ: 0.0200, 0.0150; bead 0-32 px: 0.0300, 0.0250" in text
