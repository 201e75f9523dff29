"""The reviewer's brush in the detail panel: paint a defect's extent with the mouse on the real
window, save it with the Defect verdict, survive a locked database, and feed extraction.

Uses the tiny model and spot radiographs of test_gui_review.py.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QMessageBox

from app.mask_brush import stroke, trimmed
from gui_support import drag, image_to_widget, no_thread_leak, qsettings, settle_view  # noqa: F401
from test_gui_review import make_window, store, tiny_model, wait_idle, welds  # noqa: F401


# ---------------------------------------------------------------- pixels


def test_stroke_is_a_capsule_of_the_brush_diameter_and_erases():
    mask = np.zeros((20, 30), bool)
    stroke(mask, (5.2, 3.9), (5.7, 12.1), 1)  # 1 px: exactly the pixels passed
    assert np.argwhere(mask).tolist() == [[5, c] for c in range(3, 13)]
    dab = np.zeros((20, 20), bool)
    stroke(dab, (10.5, 10.5), (10.5, 10.5), 5)  # a disk of diameter 5: 21 pixels
    assert dab.sum() == 21 and dab[10, 8:13].all() and dab[8:13, 10].all() and not dab[8, 8]
    stroke(mask, (5, 3), (5, 20), 3, value=False)
    assert not mask.any()
    edge = np.zeros((10, 10), bool)
    stroke(edge, (0, 0), (-5, -5), 3)  # clipped at the border, no wrap-around
    assert edge[:2, :2].all() and edge.sum() == 4


def test_trimmed_cuts_to_the_painted_box_at_its_full_image_origin():
    mask = np.zeros((50, 40), bool)
    mask[10:13, 7] = True
    mask[20, 9] = True
    small, origin = trimmed(mask, (100, 200))
    assert origin == (110, 207) and small.shape == (11, 3)
    assert np.argwhere(small).tolist() == [[0, 0], [1, 0], [2, 0], [10, 2]]
    assert trimmed(np.zeros((4, 4), bool), (0, 0)) is None


# ---------------------------------------------------------------- on the real window


def _drag_row(qtbot, brush, row: int, c0: int, c1: int) -> None:
    """Drag the mouse along crop row ``row`` from column ``c0`` to ``c1`` (pixel centres)."""
    drag(brush.graphics.viewport(), image_to_widget(brush, row + 0.5, c0 + 0.5),
         image_to_widget(brush, row + 0.5, c1 + 0.5), steps=12, pause_s=0.02)


def test_paint_erase_save_with_the_defect_verdict_locked_store_and_extraction(
        make_window, store, welds, qtbot):
    from core import training_set as ts

    w = make_window(store)
    w.open_paths([str(welds / "weld_8.tif")])
    wait_idle(qtbot, w)
    assert w.result is not None, w.messages
    qtbot.waitUntil(lambda: w.detail.brush.key is not None)
    region = w.queue.current_region()
    brush = w.detail.brush
    assert brush.key == (region.id, tuple(region.bbox))
    origin = brush.current.origin
    crop_shape = brush.mask.shape
    # the crop shown is the input around the region, at full resolution
    assert origin[0] <= region.bbox[0] and origin[1] <= region.bbox[1]
    np.testing.assert_allclose(brush.image_item.image, w.radiograph.image[
        origin[0]:origin[0] + crop_shape[0], origin[1]:origin[1] + crop_shape[1]])
    assert not brush.painting and not brush.save_button.isEnabled()

    # paint a 3 px line across the region's centre with the mouse
    qtbot.mouseClick(brush.paint_button, Qt.MouseButton.LeftButton)
    brush.size_box.setValue(3)
    assert brush.painting
    settle_view(qtbot, brush)
    r = (region.bbox[0] + region.bbox[2]) // 2 - origin[0]
    c = (region.bbox[1] + region.bbox[3]) // 2 - origin[1]
    _drag_row(qtbot, brush, r, c - 10, c + 10)
    expected = np.zeros(crop_shape, bool)
    stroke(expected, (r + 0.5, c - 9.5), (r + 0.5, c + 10.5), 3)
    assert expected.sum() == 3 * 23  # 21 px long, 3 wide, and one more column each end
    np.testing.assert_array_equal(brush.mask, expected)
    # the translucent overlay shows exactly the painted pixels
    rgba = brush.mask_item.image
    assert rgba.shape == crop_shape + (4,)
    assert np.array_equal(rgba[..., 3] > 0, expected) and 0 < rgba[r, c, 3] < 255

    # erase one pixel with a 1 px brush (a click), and a second dab of paint elsewhere
    qtbot.mouseClick(brush.erase_button, Qt.MouseButton.LeftButton)
    assert not brush.paint_button.isChecked()
    brush.size_box.setValue(1)
    qtbot.mouseClick(brush.graphics.viewport(), Qt.MouseButton.LeftButton,
                     pos=image_to_widget(brush, r + 0.5, c + 0.5).toPoint())
    expected[r, c] = False
    np.testing.assert_array_equal(brush.mask, expected)
    # no verdict yet: nothing to save it with
    assert not brush.save_button.isEnabled() and "Defect verdict" in brush.state_label.text()

    # the Defect verdict (key D) stores the mask with it, cut to its box, at the image position
    qtbot.keyClick(brush.graphics.viewport(), Qt.Key.Key_D)
    assert w.queue.verdicts[region.id] == "defect"
    vid = w.session.region(region.id).verdict_id
    full = ts.painted_mask(store, vid, w.radiograph.image.shape)
    assert full is not None and full.sum() == expected.sum()
    want = np.zeros(w.radiograph.image.shape, bool)
    want[origin[0]:origin[0] + crop_shape[0], origin[1]:origin[1] + crop_shape[1]] = expected
    np.testing.assert_array_equal(full, want)
    events = store.audit_log(event=ts.EV_MASK)
    assert len(events) == 1 and events[0]["user"] == "ana"
    assert events[0]["details"]["verdict_id"] == vid
    assert events[0]["details"]["pixels"] == int(expected.sum())
    assert "painted mask" in w.statusBar().currentMessage()

    # back on the region (auto-advance moved on): the mask is there, saved
    assert w.queue.current_region().id != region.id
    w.queue.select_region(region.id)
    np.testing.assert_array_equal(brush.mask, expected)
    assert not brush.save_button.isEnabled() and "saved" in brush.state_label.text()

    # more paint, then Save while another program holds the database: a non-blocking message,
    # and the paint is kept for the next try
    qtbot.mouseClick(brush.paint_button, Qt.MouseButton.LeftButton)
    brush.size_box.setValue(1)
    settle_view(qtbot, brush)
    _drag_row(qtbot, brush, r + 4, c - 3, c + 3)
    expected[r + 4, c - 3:c + 4] = True
    np.testing.assert_array_equal(brush.mask, expected)
    assert brush.save_button.isEnabled()
    other = sqlite3.connect(store.path)
    other.execute("BEGIN IMMEDIATE")
    store.timeout_s = 0.3
    try:
        qtbot.mouseClick(brush.save_button, Qt.MouseButton.LeftButton)
        box = w.last_message_box
        assert isinstance(box, QMessageBox) and box.isVisible() and not box.isModal()
        assert "was not saved" in box.text() and "locked" in box.text()
        np.testing.assert_array_equal(brush.mask, expected)  # nothing lost
        assert brush.save_button.isEnabled()
        assert len(store.audit_log(event=ts.EV_MASK)) == 1
    finally:
        other.rollback()
        other.close()
        store.timeout_s = 30.0
    qtbot.mouseClick(brush.save_button, Qt.MouseButton.LeftButton)
    want[origin[0]:origin[0] + crop_shape[0], origin[1]:origin[1] + crop_shape[1]] = expected
    np.testing.assert_array_equal(ts.painted_mask(store, vid, want.shape), want)
    assert len(store.audit_log(event=ts.EV_MASK)) == 2 and store.verify().ok
    assert not brush.save_button.isEnabled()

    # a fresh panel (as after reopening) shows the stored mask of the region
    w.detail.clear()
    w.queue.select_region(next(x.id for x in w.queue.regions if x.id != region.id))
    w.queue.select_region(region.id)
    np.testing.assert_array_equal(brush.mask, expected)

    # extraction for retraining uses exactly the painted pixels at their place on the image
    report = ts.add_from_verdicts(store, user="ana")
    entry = next(e for e in ts.entries(store, with_data=True) if e.verdict_id == vid)
    assert vid in [e.verdict_id for e in ts.entries(store)] and report.skipped == []
    assert entry.kind == "defect" and entry.source == "painted"
    weight = entry.arrays()["weight"]
    placed = np.argwhere(weight > 0) + np.array(entry.origin)
    assert placed.tolist() == np.argwhere(want).tolist()


def test_paint_is_kept_per_region_and_not_saved_without_a_defect_verdict(
        make_window, store, welds, qtbot):
    from core import training_set as ts

    w = make_window(store)
    w.open_paths([str(welds / "weld_8.tif")])
    wait_idle(qtbot, w)
    qtbot.waitUntil(lambda: w.detail.brush.key is not None)
    brush = w.detail.brush
    first = w.queue.current_region()
    qtbot.mouseClick(brush.paint_button, Qt.MouseButton.LeftButton)
    settle_view(qtbot, brush)
    h, wd = brush.mask.shape
    _drag_row(qtbot, brush, h // 2, wd // 2 - 5, wd // 2 + 5)
    painted = brush.mask.copy()
    assert painted.any()
    # a False alarm verdict does not store it; the next region starts with an empty mask
    qtbot.keyClick(brush.graphics.viewport(), Qt.Key.Key_F)
    assert w.queue.current_region().id != first.id and not brush.mask.any()
    assert ts.painted_mask(store, w.session.region(first.id).verdict_id, (320, 1024)) is None
    assert store.audit_log(event=ts.EV_MASK) == []
    # back to the first region: the paint is still there; Clear empties it
    w.queue.select_region(first.id)
    np.testing.assert_array_equal(brush.mask, painted)
    assert not brush.save_button.isEnabled()
    qtbot.mouseClick(brush.clear_button, Qt.MouseButton.LeftButton)
    assert not brush.mask.any()
    # painting off: a drag pans the view and paints nothing
    qtbot.mouseClick(brush.paint_button, Qt.MouseButton.LeftButton)
    assert not brush.painting
    before = brush.view_box.viewRange()
    drag(brush.graphics.viewport(), QPointF(60, 60), QPointF(120, 90))
    assert not brush.mask.any() and brush.view_box.viewRange() != before


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
