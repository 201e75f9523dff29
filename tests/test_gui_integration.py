"""The review window with the weld region of interest, undo of a first verdict, the 'radiograph
done' record and the supervisor's view, driven offscreen like a user would.

Uses the tiny calibrated model and the spot images of tests/test_gui_review.py (the grey plate
with six spots); the weld-region tests use a small core.synthetic weld with markers and IQI wires.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from gui_support import drag, image_to_widget, no_thread_leak, qsettings, settle_view  # noqa: F401
from test_gui_review import PIXEL_UM, background, tiny_model, with_spots, write_tiff  # noqa: F401

SCAN_TIMEOUT_MS = 120_000


@pytest.fixture
def store(tmp_path):
    from core.store import Store

    s = Store(tmp_path / "review.sqlite")
    s.add_user("ana", role="interpreter")
    s.add_user("sam", role="supervisor")
    yield s
    s.close()


@pytest.fixture
def make_window(qtbot, qsettings, tiny_model):  # noqa: F811
    from app.main_window import MainWindow

    made = []

    def make(store, user="ana", *, weld_roi=True, model=None):
        qsettings.setValue("scan/weld_roi", weld_roi)
        w = MainWindow(store=store, user=user, settings=qsettings, model_path=model or tiny_model)
        w.scan_tile = 256
        qtbot.addWidget(w)
        w.show()
        qtbot.waitExposed(w)
        made.append(w)
        return w

    yield make
    for w in made:
        if w.supervisor_window is not None:
            w.supervisor_window.close()
        w.close()


@pytest.fixture(scope="module")
def weld_file(tmp_path_factory) -> Path:
    from core.synthetic import generate_weld, write_radiograph

    folder = tmp_path_factory.mktemp("weld")
    return write_radiograph(folder / "weld.tif", generate_weld(
        3, shape=(320, 1536), pixel_size_um=PIXEL_UM, iqi=True, markers=True))


@pytest.fixture(scope="module")
def spots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("spots")
    for seed in (8, 9):
        write_tiff(folder / f"weld_{seed}.tif", with_spots(background(seed)))
    return folder


def wait_idle(qtbot, window):
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SCAN_TIMEOUT_MS)


def press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier):
    qtbot.keyClick(window.focusWidget() or window, key, modifier)


def flat_plate(path: Path, seed: int) -> Path:
    """A plate with noise and no weld: core.roi finds nothing."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return write_tiff(path, 0.5 + gaussian_filter(rng.normal(0, 0.02, (320, 1024)), 1.0))


def test_the_scan_tests_the_heat_affected_zone_at_its_own_thresholds(make_window, store, weld_file,
                                                                      qtbot, tmp_path, tiny_model):  # noqa: F811
    # two copies of one model: the bead never flags in either; the HAZ never in one, always in
    # the other. The window's scan must tell the zone from the bead (the region's label map).
    from dataclasses import replace

    from core.calibration import Thresholds
    from core.modelfile import load_model, update_metadata
    from test_haz_zone import _copy_model

    never = 1e6
    thresholds = replace(load_model(tiny_model).thresholds, mean=never, std=never, edge_mean=None,
                         edge_std=None, edge_band_px=0, inner_bands=(), slope_zones=(),
                         slope_sigma_px=0)
    flags = {}
    for name, haz in (("calm", never), ("alarmed", 0.0)):
        path = _copy_model(tiny_model, tmp_path / f"{name}.keras")
        update_metadata(path, thresholds=replace(thresholds, haz_mean=haz, haz_std=haz).to_dict())
        assert Thresholds.from_dict(load_model(path).metadata["thresholds"]).has_haz
        w = make_window(store, model=path)
        w.open_paths([str(weld_file)])
        wait_idle(qtbot, w)
        assert w.result is not None, w.messages
        flags[name], labels = w.result.flags, w.weld_roi.labels()
        w.close()
    assert not flags["calm"].any()
    haz = labels == 2
    assert flags["alarmed"][haz].mean() > 0.9 and not flags["alarmed"][~haz].any()


def test_weld_region_found_shown_adjusted_stored_and_restored(make_window, store, weld_file,
                                                              qtbot):
    from core.synthetic import generate_weld

    truth = generate_weld(3, shape=(320, 1536), pixel_size_um=PIXEL_UM, iqi=True,
                          markers=True).weld_mask
    w = make_window(store)
    w.open_paths([str(weld_file)])
    wait_idle(qtbot, w)
    assert w.result is not None, w.messages
    roi = w.weld_roi
    assert w.roi_kind == "found" and (roi.mask & truth).sum() >= 0.95 * truth.sum()
    # flags outside the region are not raised, not queued, and are listed apart
    assert not w.result.flags[~roi.mask].any()
    assert [r.id for r in w.queue.regions] == [r.id for r in w.result.regions]
    assert w.outside_list.count() == len(w.result.outside_roi)
    assert w.queue_tabs.tabText(2) == f"Outside weld ({len(w.result.outside_roi)})"
    # drawn over the radiograph, toggled from the View menu; false flags per metre of weld
    assert w.roi_layer.outline_points() > 100
    # the bead's edge, dotted inside the outline: the heat-affected zone lies between the two,
    # as wide as the region's margin (the scan's own split, core.roi.WeldROI.labels)
    assert roi.haz_margin_px > 0 and w.roi_layer.bead_edge_points() > 100
    x, y = w.roi_layer.bead_edge.getData()
    inner = np.isfinite(x) & (y > 2) & (y < roi.mask.shape[0] - 3) & (x > 2) & (x < roi.mask.shape[1] - 3)
    rows, cols = np.round(y[inner]).astype(int), np.round(x[inner]).astype(int)
    labels = roi.labels()
    assert (labels[rows, cols] > 0).all()  # inside the region
    near = [labels[max(r - 3, 0):r + 4, max(c - 3, 0):c + 4] for r, c in zip(rows, cols)]
    assert np.mean([(n == 1).any() and (n == 2).any() for n in near]) > 0.95  # where bead meets HAZ
    w.actions["view.weld_roi"].trigger()
    assert w.roi_layer.outline_points() == 0 and w.roi_layer.bead_edge_points() == 0
    w.actions["view.weld_roi"].trigger()
    assert w.roi_layer.outline_points() > 100 and w.roi_layer.bead_edge_points() > 100
    length = roi.length_mm(PIXEL_UM)
    assert f"inside the weld region ({length:.0f} mm of weld here" in w.operating_point
    assert store.scans()[0]["roi"]["kind"] == "found"

    # widen by key: recorded, scanned again with the new region
    area = roi.area_px()
    w.viewer.setFocus()
    press(qtbot, w, Qt.Key.Key_BracketRight)
    assert w.weld_roi.area_px() > area
    wait_idle(qtbot, w)
    assert [s["roi"]["kind"] for s in store.scans()] == ["adjusted", "found"]
    assert not w.result.flags[~w.weld_roi.mask].any()

    # drag an edge handle 25 px outwards (as the handle's mouse drag does)
    w.actions["roi.edit"].trigger()
    assert len(w.roi_layer.handles) == 2
    a, b = w.roi_layer.edges()
    outward = np.sign(a[3, 0] - b[3, 0])
    target = (a[3, 0] + 25 * outward, a[3, 1])
    assert not w.weld_roi.mask[int(target[0] - 3 * outward), int(target[1])]
    w.roi_layer.move_handle(0, 3, *target)
    qtbot.waitUntil(lambda: w.weld_roi.mask[int(target[0] - 3 * outward), int(target[1])],
                    timeout=5000)
    assert len(w.roi_layer.handles) == 2  # still editing, on the new edges
    wait_idle(qtbot, w)
    w.actions["roi.edit"].trigger()
    assert w.roi_layer.handles == []

    # cut a box by dragging on the image
    w.viewer.fit()
    settle_view(qtbot, w.viewer)
    centre = w.weld_roi.centreline[len(w.weld_roi.centreline) // 2]
    r, c = int(centre[0]), int(centre[1])
    assert w.weld_roi.mask[r, c]
    w.actions["roi.cut"].trigger()
    drag(w.viewer.graphics.viewport(), image_to_widget(w.viewer, 0, c - 60),
         image_to_widget(w.viewer, 319, c + 60))
    assert not w.weld_roi.mask[r, c] and w.weld_roi.hand_edited
    wait_idle(qtbot, w)
    final = w.weld_roi.mask.copy()
    assert not w.result.flags[:, c - 50:c + 50].any()
    events = [e for e in store.audit_log(event="roi adjusted")]
    assert len(events) == 3 and events[-1]["details"]["roi"]["kind"] == "adjusted"
    n_scans = len(store.scans())
    w.close()

    # reopened: the adjusted region is used again and its scan reused
    w2 = make_window(store)
    w2.open_paths([str(weld_file)])
    wait_idle(qtbot, w2)
    assert w2.roi_kind == "adjusted" and np.array_equal(w2.weld_roi.mask, final)
    assert len(store.scans()) == n_scans


def test_no_weld_found_offers_whole_image_or_a_region_drawn_by_hand(make_window, store, qtbot,
                                                                    tmp_path):
    plate = flat_plate(tmp_path / "plate.tif", 4)
    w = make_window(store)
    w.open_paths([str(plate)])
    wait_idle(qtbot, w)
    # a clear message that does not block, and the application carries on without a scan
    assert w.roi_state == "not found" and w.result is None and w.viewer.has_image
    box = w.roi_notice
    assert isinstance(box, QMessageBox) and box.isVisible() and not box.isModal()
    assert "plate.tif" in box.text() and "No weld" in box.text()
    buttons = {b.text(): b for b in box.buttons()}
    assert set(buttons) == {"Scan whole image", "Draw region by hand"}
    assert w.messages == []  # a notice, not an error

    buttons["Draw region by hand"].click()
    assert not box.isVisible()
    w.viewer.fit()
    settle_view(qtbot, w.viewer)
    drag(w.viewer.graphics.viewport(), image_to_widget(w.viewer, 100, 200),
         image_to_widget(w.viewer, 220, 900))
    wait_idle(qtbot, w)
    assert w.roi_kind == "drawn" and w.result is not None
    rows, cols = np.nonzero(w.weld_roi.mask)
    assert abs(rows.min() - 100) <= 3 and abs(cols.max() - 900) <= 4
    assert not w.result.flags[~w.weld_roi.mask].any()
    assert store.scans()[0]["roi"]["kind"] == "drawn"

    # reopened, the region drawn by hand is used again
    w.open_paths([str(flat_plate(tmp_path / "plate2.tif", 5))])
    wait_idle(qtbot, w)
    w.open_paths([str(plate)])
    wait_idle(qtbot, w)
    assert w.roi_kind == "drawn" and w.result is not None and len(store.scans()) == 1
    # the other choice: scan the whole image
    w.open_paths([str(tmp_path / "plate2.tif")])
    wait_idle(qtbot, w)
    assert w.roi_state == "not found"
    next(b for b in w.roi_notice.buttons() if b.text() == "Scan whole image").click()
    wait_idle(qtbot, w)
    assert w.result is not None and w.weld_roi is None and w.result.outside_roi == []
    assert store.scans()[0]["roi"] == {"kind": "whole image", "region": None}


def test_undo_of_a_first_verdict_and_the_radiograph_done_record(make_window, store, spots,
                                                                qtbot):
    from app.report import report_content

    w = make_window(store, weld_roi=False)  # the whole image: the six spots are all queued
    w.open_paths([str(spots / "weld_8.tif")])
    wait_idle(qtbot, w)
    n = w.queue.count()
    assert n >= 6 and w.weld_roi is None
    first = w.queue.regions[0]
    press(qtbot, w, Qt.Key.Key_D)
    press(qtbot, w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    # withdrawn, not deleted: the region is unreviewed again and selected
    assert w.queue.verdicts.get(first.id) is None and w.queue.current_region().id == first.id
    assert w.worklist.entries[w.current_path].n_reviewed == 0
    history = [(d["verdict"], d["reason"]) for d in store.decisions()]
    assert history == [("defect", None), ("withdrawn", "undo")]
    assert "withdrawn" in w.statusBar().currentMessage()

    for _ in range(n):
        press(qtbot, w, Qt.Key.Key_F)
    assert w.worklist.entries[w.current_path].state == "done"
    assert w.done_label.text() == "Radiograph done"
    details = w.completion["details"]
    assert details["scan_id"] == w.session.scan_id and details["fpr"] == 0.05
    assert details["model_sha256"] == w.bundle.sha256
    statement = details["statement"]
    assert f"All {n} flagged regions" in statement and "FPR 5.000%" in statement
    assert "Unflagged areas were accepted by the detector" in statement
    assert "expected false flags per metre of weld" in statement
    assert w.done_label.toolTip() == statement
    assert len(store.audit_log(event="radiograph completed")) == 1
    report = " ".join(" ".join(report_content(store, w.session.radiograph_id)
                               .sections["Radiograph done"]).split())
    assert statement in report

    # undoing the last verdict withdraws it: not done any more until it is given again
    press(qtbot, w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert w.done_label.text() == "" and w.completion is None
    press(qtbot, w, Qt.Key.Key_A)
    assert w.done_label.text() == "Radiograph done"
    assert len(store.audit_log(event="radiograph completed")) == 2
    assert store.verify().ok


def test_supervisor_view_from_the_menu_and_evidence_in_the_viewer(make_window, store, spots,
                                                                 qtbot):
    w = make_window(store, user="ana", weld_roi=False)
    w.open_paths([str(spots / "weld_8.tif")])
    wait_idle(qtbot, w)
    w.queue.setCurrentRow(2)
    press(qtbot, w, Qt.Key.Key_U)
    decided = w.session.regions[[r.id for r in w.session.regions].index(
        w.queue.regions[2].id)]
    # an interpreter is refused, with a message
    w.actions["review.supervisor"].trigger()
    assert w.supervisor_window is None and "Only a supervisor" in w.messages[-1]
    w.last_message_box.close()

    w.set_user("sam")
    w.open_paths([str(spots / "weld_9.tif")])  # the main window shows another radiograph
    wait_idle(qtbot, w)
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)
    press(qtbot, w, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier |
          Qt.KeyboardModifier.ShiftModifier)
    sup = w.supervisor_window
    assert sup is not None and sup.isVisible() and sup.open_evidence == w.show_evidence
    tab = sup.decisions
    row = tab.model.find(lambda r: r["region_id"] == decided.db_id)
    rect = tab.table.visualRect(tab.model.index(row, 1))
    qtbot.mouseClick(tab.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(tab.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    wait_idle(qtbot, w)
    qtbot.waitUntil(lambda: w._pending_evidence is None, timeout=5000)
    assert w.current_path.name == "weld_8.tif"
    assert w.queue.current_region().id == decided.id
    r0, c0, r1, c1 = decided.bbox
    (x0, x1), (y0, y1) = w.viewer.view_box.viewRange()
    assert x0 <= c0 <= c1 <= x1 and y0 <= r0 <= r1 <= y1 and (x1 - x0) < 400
    assert set(w.detail.maxima) == {"input", "reconstruction", "residual", "local_mean",
                                    "local_std"}
    assert f"Region {decided.id}" in w.detail.summary.text()
    assert sup.messages == [] or "Cannot show" not in sup.messages[-1]


def test_region_steps_move_the_edges_of_found_and_hand_edited_regions():
    from app.roi_editor import adjust_step, box_mask, edge_polylines, shifted, widened
    from core.roi import WeldROI

    shape = (300, 1000)
    found = WeldROI.from_geometry(shape, [(150, 0), (150, 999)], [80, 80])
    step = adjust_step(found)
    assert step == 4.0  # 5 % of the 80 px width
    wider = widened(found, step)
    assert np.allclose(wider.widths, 88) and wider.mask.sum() > found.mask.sum()
    up = shifted(found, 10)
    assert np.allclose(up.centreline[:, 0], 140)  # across the weld, widths kept
    a, b = edge_polylines(found)
    assert np.allclose(a[:, 0], 110) and np.allclose(b[:, 0], 190)

    drawn = WeldROI.from_mask(box_mask(shape, (100, 50, 200, 950)))
    rows = lambda roi: (np.nonzero(roi.mask)[0].min(), np.nonzero(roi.mask)[0].max())  # noqa: E731
    assert rows(widened(drawn, 5)) == (95, 204) and rows(widened(drawn, -5)) == (105, 194)
    moved = shifted(drawn, 10)
    assert moved.mask.sum() == drawn.mask.sum() and moved.hand_edited
    assert abs(rows(moved)[0] - 100) == 10
    with pytest.raises(ValueError, match="cannot be narrowed"):
        widened(drawn, -60)
