"""The reviewer's brush: paint the extent of a confirmed defect over the crop of its region.

The detail panel shows the input crop of the flagged region in a small view; with "Paint defect"
on, a left drag paints a translucent mask over it (Erase takes paint away, the brush size is its
diameter in image pixels, Clear empties the mask). A painted mask is kept per region while the
radiograph is open, so moving through the queue loses nothing.

The mask is saved for the region's "defect" verdict (``core.training_set.add_painted_mask``): at
once when the region is given a Defect verdict with paint on it, or with "Save mask" when the
region already has one. It is stored cut to its painted box, at its origin on the full image
(crop origin + offset in the crop), so extraction for retraining uses exactly the painted pixels.
A store failure is a non-blocking message; the mask stays in the brush to be saved again.

Coordinates: the crop's pixel (r, c) covers [r, r + 1) x [c, c + 1) of the view (row-major image,
y down); a stroke is snapped to pixel centres, so a 1 px brush paints exactly the pixels passed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

SIZE_RANGE = (1, 40)  # brush diameter, image px
DEFAULT_SIZE = 5
MASK_RGBA = (255, 48, 48, 110)  # translucent red over the grey crop
VIEW_PX = 190
CONTROLS_PX = 150


# ---------------------------------------------------------------- pixels (no Qt)


def stroke(mask: np.ndarray, start, end, size: int, value: bool = True) -> None:
    """Paint a stroke of a round brush on ``mask`` in place.

    Parameters
    ----------
    mask : ndarray (M, N) bool
    start, end : (float, float)
        (row, col) of the stroke's ends in pixel units (pixel (r, c) covers [r, r + 1) x
        [c, c + 1)); each end is snapped to its pixel's centre. Equal ends paint one dab.
    size : int
        Brush diameter in pixels: every pixel whose centre is within ``size / 2`` of the
        segment between the two centres is set.
    value : bool
        True paints, False erases.
    """
    radius = max(float(size), 1.0) / 2.0
    p0 = np.floor(np.asarray(start, float)) + 0.5
    p1 = np.floor(np.asarray(end, float)) + 0.5
    h, w = mask.shape
    r_lo = max(int(np.floor(min(p0[0], p1[0]) - radius)), 0)
    r_hi = min(int(np.ceil(max(p0[0], p1[0]) + radius)) + 1, h)
    c_lo = max(int(np.floor(min(p0[1], p1[1]) - radius)), 0)
    c_hi = min(int(np.ceil(max(p0[1], p1[1]) + radius)) + 1, w)
    if r_lo >= r_hi or c_lo >= c_hi:
        return
    rr, cc = np.mgrid[r_lo:r_hi, c_lo:c_hi].astype(float) + 0.5
    d = p1 - p0
    length2 = float(d @ d)
    t = 0.0 if length2 == 0 else np.clip(((rr - p0[0]) * d[0] + (cc - p0[1]) * d[1]) / length2,
                                         0.0, 1.0)
    dist2 = (rr - p0[0] - t * d[0]) ** 2 + (cc - p0[1] - t * d[1]) ** 2
    mask[r_lo:r_hi, c_lo:c_hi][dist2 <= radius * radius + 1e-9] = bool(value)


def overlay_rgba(mask: np.ndarray, rgba=MASK_RGBA) -> np.ndarray:
    """RGBA image (M, N, 4) uint8 of ``mask``: ``rgba`` where painted, transparent elsewhere."""
    out = np.zeros(mask.shape + (4,), np.uint8)
    out[np.asarray(mask, bool)] = rgba
    return out


def trimmed(mask: np.ndarray, origin) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The painted box of ``mask`` and its (row, col) on the full image, or None when empty.

    ``origin`` is the (row, col) of ``mask[0, 0]`` on the full image.
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    return (np.array(mask[r0:r1, c0:c1], bool),
            (int(origin[0]) + int(r0), int(origin[1]) + int(c0)))


@dataclass
class Painting:
    """The mask painted over one region's crop.

    ``origin`` is the crop's (row, col) on the full image; ``saved_for`` the verdict id the mask
    as it is now was stored for (None: not stored since the last change).
    """

    mask: np.ndarray
    origin: tuple[int, int]
    saved_for: int | None = None


# ---------------------------------------------------------------- the brush widget


class BrushViewBox(pg.ViewBox):
    """A ViewBox whose left drag and click paint while the brush is on (else: pan and zoom)."""

    def __init__(self, brush: MaskBrush) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self.brush = brush

    def _point(self, scene_pos) -> tuple[float, float]:
        p = self.mapSceneToView(scene_pos)
        return float(p.y()), float(p.x())

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 (pyqtgraph API)
        if ev.button() == Qt.MouseButton.LeftButton and self.brush.painting:
            ev.accept()
            last = ev.buttonDownScenePos(Qt.MouseButton.LeftButton) if ev.isStart() \
                else ev.lastScenePos()
            self.brush.paint(self._point(last), self._point(ev.scenePos()))
            return
        super().mouseDragEvent(ev, axis)

    def mouseClickEvent(self, ev):  # noqa: N802 (pyqtgraph API)
        if ev.button() == Qt.MouseButton.LeftButton and self.brush.painting:
            ev.accept()
            p = self._point(ev.scenePos())
            self.brush.paint(p, p)
            return
        super().mouseClickEvent(ev)


class MaskBrush(QWidget):
    """The crop of the region shown with a paintable mask over it, and the brush controls.

    Signals
    -------
    changed()
        The mask was painted, erased or cleared.
    save_requested()
        "Save mask" was pressed.
    """

    changed = Signal()
    save_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.paintings: dict[tuple, Painting] = {}  # region key -> its painting
        self.key: tuple | None = None  # the region shown

        self.view_box = BrushViewBox(self)
        self.graphics = pg.GraphicsView()
        self.graphics.setCentralItem(self.view_box)
        self.graphics.setBackground("#000000")
        self.graphics.setMinimumSize(VIEW_PX, VIEW_PX)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.mask_item = pg.ImageItem(axisOrder="row-major")
        self.mask_item.setZValue(10)
        self.view_box.addItem(self.image_item)
        self.view_box.addItem(self.mask_item)

        self.paint_button = QPushButton("Paint defect")
        self.paint_button.setCheckable(True)
        self.paint_button.setToolTip("Left-drag over the crop to paint the defect's extent "
                                     "(off: drag pans, wheel zooms)")
        self.erase_button = QPushButton("Erase")
        self.erase_button.setCheckable(True)
        self.erase_button.setToolTip("Left-drag takes paint away")
        self.paint_button.toggled.connect(lambda on: on and self.erase_button.setChecked(False))
        self.erase_button.toggled.connect(lambda on: on and self.paint_button.setChecked(False))
        self.size_box = QSpinBox()
        self.size_box.setRange(*SIZE_RANGE)
        self.size_box.setValue(DEFAULT_SIZE)
        self.size_box.setSuffix(" px")
        self.size_box.setToolTip("Brush diameter in image pixels")
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear_mask)
        self.save_button = QPushButton("Save mask")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.save_requested)
        self.state_label = QLabel("")
        self.state_label.setWordWrap(True)
        self.state_label.setObjectName("maskState")

        panel = QWidget()  # fixed width: a new state text must not resize the view mid-stroke
        panel.setFixedWidth(CONTROLS_PX)
        controls = QVBoxLayout(panel)
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(self.paint_button)
        controls.addWidget(self.erase_button)
        form = QFormLayout()
        form.addRow("Brush", self.size_box)
        controls.addLayout(form)
        controls.addWidget(self.clear_button)
        controls.addWidget(self.save_button)
        controls.addWidget(self.state_label, 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(panel)
        self._set_enabled(False)

    # ----- state
    @property
    def painting(self) -> bool:
        """True while a left drag paints or erases."""
        return self.current is not None and (self.paint_button.isChecked()
                                             or self.erase_button.isChecked())

    @property
    def current(self) -> Painting | None:
        """The painting of the region shown (None when no region is shown)."""
        return self.paintings.get(self.key) if self.key is not None else None

    @property
    def mask(self) -> np.ndarray | None:
        """The mask over the crop shown (bool, crop-shaped), or None."""
        p = self.current
        return None if p is None else p.mask

    def _set_enabled(self, on: bool) -> None:
        for w in (self.paint_button, self.erase_button, self.size_box, self.clear_button):
            w.setEnabled(on)

    # ----- showing
    def show_crop(self, values: np.ndarray, origin, key: tuple, levels) -> None:
        """Show the crop ``values`` (at ``origin`` on the full image) of the region ``key``.

        A painting kept for ``key`` is shown again; else an empty mask is started.
        """
        values = np.asarray(values, np.float32)
        origin = (int(origin[0]), int(origin[1]))
        kept = self.paintings.get(key)
        if kept is None or kept.mask.shape != values.shape or kept.origin != origin:
            self.paintings[key] = Painting(np.zeros(values.shape, bool), origin)
        self.key = key
        self.image_item.setImage(np.nan_to_num(values, nan=float(levels[0])), autoLevels=False,
                                 levels=tuple(float(v) for v in levels))
        self.view_box.autoRange(padding=0)
        self._set_enabled(True)
        self._redraw()

    def set_saved(self, key: tuple, mask: np.ndarray, verdict_id: int) -> None:
        """Replace the painting of ``key`` by ``mask`` as stored for verdict ``verdict_id``."""
        p = self.paintings[key]
        p.mask, p.saved_for = np.array(mask, bool), int(verdict_id)
        if key == self.key:
            self._redraw()

    def mark_saved(self, key: tuple, verdict_id: int) -> None:
        self.paintings[key].saved_for = int(verdict_id)

    def set_save_state(self, enabled: bool, text: str) -> None:
        """Enable "Save mask" or not, with ``text`` saying why (also its tooltip)."""
        self.save_button.setEnabled(bool(enabled))
        self.save_button.setToolTip(text)
        self.state_label.setText(text)

    def reset(self) -> None:
        """Forget every painting and show nothing (another radiograph)."""
        self.paintings.clear()
        self.key = None
        self.image_item.clear()
        self.mask_item.clear()
        self.paint_button.setChecked(False)
        self.erase_button.setChecked(False)
        self._set_enabled(False)
        self.set_save_state(False, "")

    # ----- painting
    def paint(self, start, end) -> None:
        """Paint (or erase, in Erase mode) a stroke from ``start`` to ``end`` ((row, col))."""
        p = self.current
        if p is None:
            return
        stroke(p.mask, start, end, self.size_box.value(), not self.erase_button.isChecked())
        p.saved_for = None
        self._redraw()
        self.changed.emit()

    def clear_mask(self) -> None:
        p = self.current
        if p is None or not p.mask.any():
            return
        p.mask[:] = False
        p.saved_for = None
        self._redraw()
        self.changed.emit()

    def _redraw(self) -> None:
        p = self.current
        if p is None:
            self.mask_item.clear()
            return
        self.mask_item.setImage(overlay_rgba(p.mask), autoLevels=False)


# ---------------------------------------------------------------- saving for the verdict


class RegionMasks:
    """Connects the brush to the review session: which verdict a mask belongs to, and saving.

    A painting belongs to a flagged region of the current scan (key: region number and bbox);
    it can be stored once that region's verdict in force is "defect".
    """

    def __init__(self, window) -> None:
        self.window = window
        self.brush: MaskBrush = window.detail.brush
        self.brush.save_requested.connect(self.save)
        self.brush.changed.connect(self.refresh)
        window.detail.region_shown.connect(self.region_shown)

    def _region(self, key):
        """The session's QueueRegion of ``key``, or None (not a flagged region of this scan)."""
        session = self.window.session
        if key is None or session is None:
            return None
        number, bbox = key
        region = session.region(number)
        return region if region is not None and tuple(region.bbox) == tuple(bbox) else None

    def refresh(self) -> None:
        """Say whether the mask shown can be saved now, and why not."""
        p, region = self.brush.current, self._region(self.brush.key)
        if p is None:
            self.brush.set_save_state(False, "")
        elif self.window.session is None:
            self.brush.set_save_state(False, "No review database or user: a painted mask "
                                             "cannot be saved.")
        elif region is None:
            self.brush.set_save_state(False, "Only a flagged region of the current scan can "
                                             "carry a painted mask.")
        elif not p.mask.any():
            self.brush.set_save_state(False, "Paint the defect's extent; the mask is saved with "
                                             "the region's Defect verdict.")
        elif region.verdict != "defect":
            self.brush.set_save_state(False, f"{int(p.mask.sum())} px painted, not saved: give "
                                             "the region a Defect verdict (D) to save it.")
        elif p.saved_for == region.verdict_id:
            self.brush.set_save_state(False, f"{int(p.mask.sum())} px: saved with the Defect "
                                             f"verdict {region.verdict_id}.")
        else:
            self.brush.set_save_state(True, f"{int(p.mask.sum())} px painted, not saved yet: "
                                            "press Save mask.")

    def region_shown(self) -> None:
        """Show the stored mask of a region with a Defect verdict (unless paint is kept)."""
        key, p = self.brush.key, self.brush.current
        region = self._region(key)
        if region is not None and region.verdict == "defect" and p is not None \
                and not p.mask.any() and p.saved_for is None:
            from core.training_set import painted_mask

            shape = self.window.radiograph.image.shape
            try:
                full = painted_mask(self.window.store, region.verdict_id, shape)
            except Exception as exc:  # noqa: BLE001 - showing the region matters more
                self.window.show_status(f"The stored mask of region {region.id} could not be "
                                        f"read: {exc}")
                full = None
            if full is not None:
                (r0, c0), (h, w) = p.origin, p.mask.shape
                self.brush.set_saved(key, full[r0:r0 + h, c0:c0 + w], region.verdict_id)
        self.refresh()

    def verdict_given(self, number: int) -> None:
        """After a verdict on region ``number``: a Defect verdict stores the paint on it."""
        session = self.window.session
        region = session.region(number) if session is not None else None
        key = None if region is None else (number, tuple(int(v) for v in region.bbox))
        p = self.brush.paintings.get(key)
        if region is not None and region.verdict == "defect" and p is not None \
                and p.mask.any() and p.saved_for != region.verdict_id:
            self.save(key)
        self.refresh()

    def save(self, key: tuple | None = None) -> bool:
        """Store the painting of ``key`` (default: the region shown) for its Defect verdict.

        Returns True when stored. A failure is a non-blocking message; the painting is kept.
        """
        from core.training_set import add_painted_mask

        key = self.brush.key if key is None else key
        region, p = self._region(key), self.brush.paintings.get(key)
        cut = trimmed(p.mask, p.origin) if p is not None else None
        if region is None or region.verdict != "defect" or cut is None:
            self.refresh()
            return False
        mask, origin = cut
        try:
            add_painted_mask(self.window.store, region.verdict_id, mask, origin=origin,
                             user=self.window.session.user)
        except Exception as exc:  # noqa: BLE001 - store locked, read-only, disk full
            self.window.show_error(
                f"The painted mask of region {region.id} was not saved: {exc}. The mask is kept "
                "in the Evidence panel; press Save mask to try again.")
            self.refresh()
            return False
        self.brush.mark_saved(key, region.verdict_id)
        self.window.show_status(f"Region {region.id}: painted mask of {int(mask.sum())} px saved "
                                f"with its Defect verdict.")
        self.refresh()
        return True
