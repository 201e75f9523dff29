"""The viewer, window/level and measurement tools, driven by real mouse events (offscreen)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from gui_support import drag, image_to_widget, no_thread_leak  # noqa: F401

PIXEL_UM = 50.0


@pytest.fixture
def viewer(qtbot):
    from app.viewer import ImageViewer

    rng = np.random.default_rng(3)
    raw = (rng.normal(2000, 150, (300, 500)).clip(0, 4095)).astype(np.uint16)
    raw[100:140, 200:260] = 3500
    v = ImageViewer()
    qtbot.addWidget(v)
    v.resize(800, 500)
    v.show()
    qtbot.waitExposed(v)
    v.set_image(raw, pixel_size_um=PIXEL_UM, bit_depth=12)
    qtbot.wait(50)
    return v


def test_image_is_drawn_at_full_bit_depth_with_explicit_levels(viewer):
    assert viewer.image_item.image.dtype == np.uint16
    assert viewer.image_item.image.flags["C_CONTIGUOUS"]
    lo, hi = viewer.levels()
    assert 1000 < lo < hi < 4095  # the auto window, in raw 12-bit units


def test_right_drag_changes_width_and_level(viewer, qtbot):
    from PySide6.QtWidgets import QApplication

    before = viewer.levels()
    centre = QPointF(viewer.graphics.width() / 2, viewer.graphics.height() / 2)
    drag(viewer.graphics.viewport(), centre, centre + QPointF(120, 0),
         button=Qt.MouseButton.RightButton)
    after_width = viewer.levels()
    assert (after_width[1] - after_width[0]) > (before[1] - before[0]) + 100
    qtbot.wait(QApplication.doubleClickInterval() + 50)  # two presses are not a double click
    start = centre + QPointF(-100, -60)
    drag(viewer.graphics.viewport(), start, start + QPointF(0, 80),
         button=Qt.MouseButton.RightButton)
    after_level = viewer.levels()
    assert sum(after_level) / 2 > sum(after_width) / 2 + 50
    assert math.isclose(after_level[1] - after_level[0], after_width[1] - after_width[0],
                        rel_tol=1e-6)
    # the histogram widget shows the same window
    assert np.allclose(viewer.histogram.item.getLevels(), after_level)


def test_presets_and_auto_window(viewer):
    assert viewer.apply_preset("full") == (0.0, 4095.0)
    lo, hi = viewer.auto_window()
    assert (lo, hi) == pytest.approx(tuple(np.percentile(viewer.raw, [0.5, 99.5])), rel=0.02)


def test_fit_and_one_to_one(viewer):
    viewer.one_to_one()
    assert viewer.pixels_per_screen_pixel() == pytest.approx(1.0, rel=0.02)
    viewer.fit()
    (x0, x1), (y0, y1) = viewer.view_box.viewRange()
    assert x0 <= 0 and x1 >= 500 and y0 <= 0 and y1 >= 300


def test_cursor_readout_gives_raw_value_and_mm(viewer, qtbot):
    texts = []
    viewer.cursor_moved.connect(texts.append)
    p = image_to_widget(viewer, 120.5, 230.5)
    scene = viewer.graphics.mapToScene(p.toPoint())
    viewer.graphics.scene().sigMouseMoved.emit(scene)
    assert texts and "row 120, col 230" in texts[-1] and "value 3500" in texts[-1]
    assert "6.00 mm" in texts[-1] and "11.50 mm" in texts[-1]


def test_line_tool_gives_length_in_mm_and_profile(viewer):
    from app.measure import MeasureTools

    tools = MeasureTools(viewer)
    tools.set_tool("line")
    a, b = (50.0, 100.0), (170.0, 260.0)  # 200 px long
    drag(viewer.graphics.viewport(), image_to_widget(viewer, *a), image_to_widget(viewer, *b))
    m = tools.last_line
    assert m is not None
    expected_px = math.hypot(b[0] - a[0], b[1] - a[1])
    # the drag is quantised to screen pixels (< 1 image px here)
    assert m.length_px == pytest.approx(expected_px, abs=2.0)
    assert m.length_mm == pytest.approx(m.length_px * PIXEL_UM / 1000)
    assert "mm" in m.text()
    # the profile crosses the bright block (3500) and the background (~2000)
    assert m.profile.max() > 3000 and m.profile.min() < 2500
    assert m.distance[-1] == pytest.approx(m.length_mm)


def test_rect_tool_gives_mean_and_std(viewer):
    from app.measure import MeasureTools

    tools = MeasureTools(viewer)
    tools.set_tool("rect")
    drag(viewer.graphics.viewport(), image_to_widget(viewer, 105, 205),
         image_to_widget(viewer, 135, 255))
    m = tools.last_rect
    assert m is not None and m.mean == pytest.approx(3500, abs=1) and m.std < 1
    assert m.size_mm[0] == pytest.approx((m.bbox[2] - m.bbox[0]) * PIXEL_UM / 1000)


def test_line_without_pixel_size_is_in_px():
    from app.measure import line_length

    assert line_length((0, 0), (3, 4), pixel_size_um=None) == (5.0, None)
    assert line_length((0, 0), (3, 4), pixel_size_um=100.0) == (5.0, pytest.approx(0.5))
