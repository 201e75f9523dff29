"""Measurement tools: a line with its length (mm when the pixel size is known) and profile, a
rectangle with mean and standard deviation of the raw values.

The numbers come from the pure functions at the top; :class:`MeasureTools` draws the ROIs on the
viewer and reports them through signals so the window can show them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, Signal
from skimage.measure import profile_line

from app.viewer import ImageViewer

TOOLS = ("none", "line", "rect")


@dataclass
class LineMeasurement:
    """A measured line: end points (row, col), length in px and mm, and the profile along it."""

    start: tuple[float, float]
    end: tuple[float, float]
    length_px: float
    length_mm: float | None
    distance: np.ndarray  # along the line, mm when known else px
    profile: np.ndarray  # raw values

    def text(self) -> str:
        if self.length_mm is not None:
            return f"line {self.length_mm:.2f} mm ({self.length_px:.1f} px)"
        return f"line {self.length_px:.1f} px (pixel size unknown)"


@dataclass
class RectMeasurement:
    """Statistics of the raw values in a rectangle (row0, col0, row1, col1), end exclusive."""

    bbox: tuple[int, int, int, int]
    mean: float
    std: float
    n: int
    size_mm: tuple[float, float] | None

    def text(self) -> str:
        r0, c0, r1, c1 = self.bbox
        size = f"{r1 - r0} x {c1 - c0} px"
        if self.size_mm is not None:
            size += f" ({self.size_mm[0]:.2f} x {self.size_mm[1]:.2f} mm)"
        return f"rect {size}: mean {self.mean:.5g}, std {self.std:.5g} (n={self.n})"


def line_length(start, end, *, pixel_size_um: float | None) -> tuple[float, float | None]:
    """Length of the line between (row, col) points in px and in mm (None without a pixel size)."""
    px = math.hypot(end[0] - start[0], end[1] - start[1])
    return px, (px * pixel_size_um / 1000.0 if pixel_size_um else None)


def measure_line(image: np.ndarray, start, end, *, pixel_size_um: float | None) -> LineMeasurement:
    """Length and profile (bilinear, one sample per pixel of length) of a line on ``image``."""
    px, mm = line_length(start, end, pixel_size_um=pixel_size_um)
    prof = profile_line(np.asarray(image, dtype=np.float32), start, end, order=1, mode="reflect")
    n = prof.size
    scale = (pixel_size_um / 1000.0) if pixel_size_um else 1.0
    distance = np.linspace(0.0, px * scale, n, dtype=np.float32)
    return LineMeasurement(tuple(map(float, start)), tuple(map(float, end)), px, mm,
                           distance, prof.astype(np.float32))


def clip_bbox(bbox, shape) -> tuple[int, int, int, int]:
    """Clip (row0, col0, row1, col1) to an image of ``shape``; rows/cols ordered."""
    r0, c0, r1, c1 = bbox
    r0, r1 = sorted((int(round(r0)), int(round(r1))))
    c0, c1 = sorted((int(round(c0)), int(round(c1))))
    return (max(0, r0), max(0, c0), min(shape[0], r1), min(shape[1], c1))


def measure_rect(image: np.ndarray, bbox, *, pixel_size_um: float | None) -> RectMeasurement:
    """Mean and standard deviation of ``image`` in the box (clipped to the image)."""
    r0, c0, r1, c1 = clip_bbox(bbox, image.shape)
    crop = np.asarray(image[r0:r1, c0:c1], dtype=np.float64)
    n = int(crop.size)
    mean = float(crop.mean()) if n else float("nan")
    std = float(crop.std()) if n else float("nan")
    size_mm = None
    if pixel_size_um:
        size_mm = ((r1 - r0) * pixel_size_um / 1000.0, (c1 - c0) * pixel_size_um / 1000.0)
    return RectMeasurement((r0, c0, r1, c1), mean, std, n, size_mm)


class MeasureTools(QObject):
    """Line and rectangle tools on an :class:`ImageViewer`.

    With a tool active, a left-drag on the image draws it; the ROI can then be moved and its
    handles dragged, and the measurement updates.
    """

    line_measured = Signal(object)  # LineMeasurement
    rect_measured = Signal(object)  # RectMeasurement
    tool_changed = Signal(str)

    def __init__(self, viewer: ImageViewer) -> None:
        super().__init__(viewer)
        self.viewer = viewer
        self.tool = "none"
        self.line_roi: pg.LineSegmentROI | None = None
        self.rect_roi: pg.RectROI | None = None
        self.last_line: LineMeasurement | None = None
        self.last_rect: RectMeasurement | None = None

    def set_tool(self, tool: str) -> None:
        """Activate "line", "rect" or "none" (left-drag pans again)."""
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")
        self.tool = tool
        self.viewer.view_box.drag_handler = None if tool == "none" else self._on_drag
        self.tool_changed.emit(tool)

    def clear(self) -> None:
        """Remove the drawn ROIs."""
        for roi in (self.line_roi, self.rect_roi):
            if roi is not None:
                self.viewer.view_box.removeItem(roi)
        self.line_roi = self.rect_roi = None

    # (row, col) <-> view (x = col, y = row)
    def set_line(self, start, end) -> LineMeasurement | None:
        """Draw (or move) the line between (row, col) points and measure it."""
        pts = [(start[1], start[0]), (end[1], end[0])]
        if self.line_roi is None:
            self.line_roi = pg.LineSegmentROI(pts, pen=pg.mkPen("#ffd400", width=2))
            self.line_roi.sigRegionChanged.connect(self._line_changed)
            self.viewer.view_box.addItem(self.line_roi)
        else:
            h = self.line_roi.getHandles()
            self.line_roi.movePoint(h[0], QPointF(*pts[0]), finish=False)
            self.line_roi.movePoint(h[1], QPointF(*pts[1]))
        return self._line_changed()

    def set_rect(self, bbox) -> RectMeasurement | None:
        """Draw (or move) the rectangle (row0, col0, row1, col1) and measure it."""
        r0, c0, r1, c1 = bbox
        pos, size = (min(c0, c1), min(r0, r1)), (max(abs(c1 - c0), 1), max(abs(r1 - r0), 1))
        if self.rect_roi is None:
            self.rect_roi = pg.RectROI(pos, size, pen=pg.mkPen("#00d4ff", width=2))
            self.rect_roi.sigRegionChanged.connect(self._rect_changed)
            self.viewer.view_box.addItem(self.rect_roi)
        else:
            self.rect_roi.setPos(pos, finish=False)
            self.rect_roi.setSize(size)
        return self._rect_changed()

    def _on_drag(self, start: QPointF, now: QPointF, is_start: bool, is_finish: bool) -> None:
        a, b = (start.y(), start.x()), (now.y(), now.x())
        if self.tool == "line":
            self.set_line(a, b)
        elif self.tool == "rect":
            self.set_rect((a[0], a[1], b[0], b[1]))

    def _line_changed(self, *_):
        if self.line_roi is None or self.viewer.raw is None:
            return None
        p0, p1 = (self.line_roi.mapToParent(h.pos()) for h in self.line_roi.getHandles())
        m = measure_line(self.viewer.raw, (p0.y(), p0.x()), (p1.y(), p1.x()),
                         pixel_size_um=self.viewer.pixel_size_um)
        self.last_line = m
        self.line_measured.emit(m)
        return m

    def _rect_changed(self, *_):
        if self.rect_roi is None or self.viewer.raw is None:
            return None
        pos, size = self.rect_roi.pos(), self.rect_roi.size()
        bbox = (pos.y(), pos.x(), pos.y() + size.y(), pos.x() + size.x())
        m = measure_rect(self.viewer.raw, bbox, pixel_size_um=self.viewer.pixel_size_um)
        self.last_rect = m
        self.rect_measured.emit(m)
        return m


class ProfilePlot(pg.PlotWidget):
    """The line profile: raw value against distance along the line."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(120)
        self.setLabel("left", "raw value")
        self.setLabel("bottom", "distance")
        self.showGrid(x=True, y=True, alpha=0.3)
        self.curve = self.plot(pen=pg.mkPen("#e0a000", width=1.5))

    def show_line(self, m: LineMeasurement) -> None:
        self.curve.setData(m.distance, m.profile)
        self.setLabel("bottom", "distance (px)" if m.length_mm is None else "distance (mm)")
        self.setTitle(m.text())
