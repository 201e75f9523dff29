"""The radiograph viewer: full bit depth, window/level, zoom, pan, fit, 1:1, cursor read-out.

The stored array is drawn as it is (uint16 stays uint16, so 12- and 16-bit data are never squashed
to 8 bits); only the window (levels) decides what is black and what is white. A right-button drag
changes the window like a medical viewer: horizontal = width, vertical = level.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QWidget

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

# name -> (low percentile, high percentile); "full" is the whole range of the bit depth.
PRESETS: dict[str, tuple[float, float] | None] = {
    "full": None,
    "auto": (0.5, 99.5),
    "contrast": (5.0, 95.0),
    "wide": (0.05, 99.95),
}
PRESET_LABELS = {
    "full": "Full range of the bit depth",
    "auto": "Auto window (0.5-99.5 %)",
    "contrast": "High contrast (5-95 %)",
    "wide": "Wide (0.05-99.95 %)",
}
WL_DRAG_PX = 400.0  # a drag of this many screen pixels changes width/level by the full data range

DragHandler = Callable[[QPointF, QPointF, bool, bool], None]


def display_array(raw: np.ndarray) -> np.ndarray:
    """The array pyqtgraph draws: C-contiguous uint8/uint16 as stored, anything else float32.

    Parameters
    ----------
    raw : ndarray of shape (M, N)
        The radiograph as stored in its file.

    Returns
    -------
    ndarray of shape (M, N)
        Integer data unchanged (no rescaling); floats as float32 with NaN replaced by 0.
    """
    if raw.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {raw.shape}")
    if raw.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(raw)
    out = np.ascontiguousarray(raw, dtype=np.float32)
    if not np.isfinite(out).all():
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def data_range(raw: np.ndarray, *, bit_depth: int | None = None) -> tuple[float, float]:
    """Full display range: 0..2**bit_depth-1 for integers, the finite min..max for floats."""
    if np.issubdtype(raw.dtype, np.integer):
        bits = bit_depth or raw.dtype.itemsize * 8
        return 0.0, float(2**bits - 1)
    finite = raw[np.isfinite(raw)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def percentile_window(raw: np.ndarray, low: float, high: float, *, max_samples: int = 250_000):
    """Levels (lo, hi) at the given percentiles, from a regular subsample of at most about
    ``max_samples`` pixels (a few ms on the GUI thread even for a 5000 px long radiograph)."""
    step = max(1, int(np.ceil(np.sqrt(raw.size / max_samples))))
    sample = raw[::step, ::step]
    sample = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, [low, high])
    lo, hi = float(lo), float(hi)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def window_after_drag(levels, dx: float, dy: float, span: float) -> tuple[float, float]:
    """New levels after a window/level drag of (dx, dy) screen pixels.

    Right widens the window, left narrows it; down raises the level (darker image), up lowers it.
    ``span`` is the full data range; a drag of ``WL_DRAG_PX`` pixels changes by that much.
    """
    lo, hi = levels
    width = max(hi - lo, span * 1e-4)
    centre = (lo + hi) / 2.0
    width = max(span * 1e-4, width + dx * span / WL_DRAG_PX)
    centre = centre + dy * span / WL_DRAG_PX
    return centre - width / 2.0, centre + width / 2.0


def cursor_text(row: int, col: int, value, *, pixel_size_um: float | None) -> str:
    """Status-bar text for the pixel under the cursor: position, raw value and mm when known."""
    if np.issubdtype(type(value), np.integer) or isinstance(value, int):
        val = f"{int(value)}"
    else:
        val = f"{float(value):.5g}"
    text = f"row {row}, col {col}  value {val}"
    if pixel_size_um:
        text += f"  ({row * pixel_size_um / 1000:.2f} mm, {col * pixel_size_um / 1000:.2f} mm)"
    return text


class ImageViewBox(pg.ViewBox):
    """A ViewBox whose right-drag sets window/level and whose left-drag a tool can take."""

    sigWindowLevelDrag = Signal(float, float, bool)  # dx, dy (screen px), start of drag

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self.drag_handler: DragHandler | None = None

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 (pyqtgraph API)
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            d = ev.screenPos() - ev.lastScreenPos()
            self.sigWindowLevelDrag.emit(float(d.x()), float(d.y()), bool(ev.isStart()))
            return
        if ev.button() == Qt.MouseButton.LeftButton and self.drag_handler is not None:
            ev.accept()
            start = self.mapSceneToView(ev.buttonDownScenePos(Qt.MouseButton.LeftButton))
            now = self.mapSceneToView(ev.scenePos())
            self.drag_handler(start, now, bool(ev.isStart()), bool(ev.isFinish()))
            return
        super().mouseDragEvent(ev, axis)


class ImageViewer(QWidget):
    """Image view with a histogram/LUT widget for window/level.

    Signals
    -------
    cursor_moved(str)
        Text for the status bar (position, raw value, mm) or "" when outside the image.
    levels_changed(float, float)
        The window changed (by drag, histogram, preset or code).
    """

    cursor_moved = Signal(str)
    levels_changed = Signal(float, float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.raw: np.ndarray | None = None
        self.pixel_size_um: float | None = None
        self._span = (0.0, 1.0)
        self._drag_levels: tuple[float, float] | None = None

        self.view_box = ImageViewBox()
        self.graphics = pg.GraphicsView()
        self.graphics.setCentralItem(self.view_box)
        self.graphics.setBackground("#2b2b2b")
        self.image_item = pg.ImageItem(axisOrder="row-major")
        # no auto-downsampling: uint16 goes through pyqtgraph's LUT fast path (a few ms for
        # 800 x 4900 px) while its block-mean downsampling costs tens of ms per redraw
        self.view_box.addItem(self.image_item)
        self.histogram = pg.HistogramLUTWidget()
        self.histogram.setImageItem(self.image_item)
        self.histogram.setMinimumWidth(110)
        self.histogram.setMaximumWidth(160)
        self.histogram.item.sigLevelsChanged.connect(self._on_hist_levels)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.histogram)

        self.view_box.sigWindowLevelDrag.connect(self._on_wl_drag)
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)

    # ----------------------------------------------------------------- image
    def set_image(self, raw: np.ndarray, *, pixel_size_um: float | None = None,
                  bit_depth: int | None = None, levels: tuple[float, float] | None = None) -> None:
        """Show ``raw`` (the stored array, any bit depth) and fit it into the view.

        The window is ``levels`` when given, else the "auto" preset.
        """
        self.raw = display_array(raw)
        self.pixel_size_um = pixel_size_um
        self._span = data_range(self.raw, bit_depth=bit_depth)
        lv = levels or percentile_window(self.raw, *PRESETS["auto"])
        self.image_item.setImage(self.raw, autoLevels=False, levels=lv)
        self.histogram.item.setHistogramRange(*self._span)
        self.set_levels(*lv)
        self.fit()

    def clear(self) -> None:
        """Remove the image."""
        self.raw = None
        self.image_item.clear()

    @property
    def has_image(self) -> bool:
        return self.raw is not None

    # ----------------------------------------------------------------- window / level
    def levels(self) -> tuple[float, float]:
        """The current window as (low, high) in raw units."""
        lo, hi = self.image_item.getLevels() if self.image_item.levels is not None else (0.0, 1.0)
        return float(lo), float(hi)

    def set_levels(self, lo: float, hi: float) -> None:
        """Set the window explicitly (raw units)."""
        if hi <= lo:
            hi = lo + max(1e-6, (self._span[1] - self._span[0]) * 1e-4)
        self.histogram.item.setLevels(lo, hi)  # also sets the image item's levels
        self.image_item.setLevels((lo, hi))

    def apply_preset(self, name: str) -> tuple[float, float]:
        """Apply a window preset from :data:`PRESETS`; returns the new levels."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        if self.raw is None:
            return self.levels()
        pct = PRESETS[name]
        lv = self._span if pct is None else percentile_window(self.raw, *pct)
        self.set_levels(*lv)
        return lv

    def auto_window(self) -> tuple[float, float]:
        """Window from the 0.5 and 99.5 percentiles of the image."""
        return self.apply_preset("auto")

    def _on_hist_levels(self, *_):
        lo, hi = self.levels()
        self.levels_changed.emit(lo, hi)

    def _on_wl_drag(self, dx: float, dy: float, start: bool) -> None:
        if self.raw is None:
            return
        span = self._span[1] - self._span[0]
        self.set_levels(*window_after_drag(self.levels(), dx, dy, span))

    # ----------------------------------------------------------------- zoom / pan
    def fit(self) -> None:
        """Fit the whole image into the view."""
        if self.raw is not None:
            rows, cols = self.raw.shape
            self.view_box.setRange(xRange=(0, cols), yRange=(0, rows), padding=0.02)

    def one_to_one(self) -> None:
        """One image pixel per screen pixel, keeping the centre of the view."""
        if self.raw is None:
            return
        (x0, x1), (y0, y1) = self.view_box.viewRange()
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        size = self.view_box.size()  # scene units == device-independent screen pixels
        w, h = max(size.width(), 1.0), max(size.height(), 1.0)
        self.view_box.setRange(xRange=(cx - w / 2, cx + w / 2), yRange=(cy - h / 2, cy + h / 2),
                               padding=0)

    def zoom(self, factor: float) -> None:
        """Zoom in (factor < 1) or out (factor > 1) about the centre of the view."""
        self.view_box.scaleBy((factor, factor))

    def zoom_to(self, bbox: tuple[int, int, int, int], *, margin: float = 1.5) -> None:
        """Show the box (row0, col0, row1, col1) in a square view ``margin`` times its size."""
        r0, c0, r1, c1 = bbox
        h, w = max(r1 - r0, 64), max(c1 - c0, 64)
        cy, cx = (r0 + r1) / 2, (c0 + c1) / 2
        half = max(h, w) * margin / 2
        self.view_box.setRange(xRange=(cx - half, cx + half), yRange=(cy - half, cy + half),
                               padding=0)

    def pixels_per_screen_pixel(self) -> float:
        """Image pixels per screen pixel along columns (1.0 at 1:1)."""
        (x0, x1), _ = self.view_box.viewRange()
        return (x1 - x0) / max(self.view_box.size().width(), 1.0)

    # ----------------------------------------------------------------- cursor
    def _on_mouse_moved(self, scene_pos) -> None:
        if self.raw is None or not self.view_box.sceneBoundingRect().contains(scene_pos):
            self.cursor_moved.emit("")
            return
        p = self.view_box.mapSceneToView(scene_pos)
        row, col = int(np.floor(p.y())), int(np.floor(p.x()))
        rows, cols = self.raw.shape
        if 0 <= row < rows and 0 <= col < cols:
            self.cursor_moved.emit(cursor_text(row, col, self.raw[row, col],
                                               pixel_size_um=self.pixel_size_um))
        else:
            self.cursor_moved.emit("")
