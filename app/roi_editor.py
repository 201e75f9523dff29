"""The weld region of interest over the radiograph: its outline, and the ways to adjust it.

The region (a ``core.roi.WeldROI``) is drawn as the outline of its mask. The user adjusts it by
dragging the handles of its two edge polylines (pyqtgraph ``PolyLineROI``; the new region is the
band between them, ``WeldROI.from_edges``), by widening, narrowing or shifting it across the weld,
or by adding or cutting a rectangle (``WeldROI.edited``); on a radiograph where no weld was found
a rectangle can be drawn as the region. The functions here compute the adjusted regions (no Qt);
:class:`WeldRoiLayer` draws and edits on an :class:`app.viewer.ImageViewer`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal

OUTLINE_COLOUR = (255, 220, 0)
HANDLE_POINTS = 8  # handles per edge polyline
MAX_OUTLINE_SIDE = 2000  # the outline is traced on a block-reduced mask above this size


# ------------------------------------------------------------------ geometry (no Qt)
def roi_outline(mask: np.ndarray, *, max_side: int = MAX_OUTLINE_SIDE) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """The outline of a region as (x, y) = (col, row) points, NaN between separate contours."""
    step = max(1, int(np.ceil(max(mask.shape) / max_side)))
    return _trace(mask[::step, ::step], step)


def bead_outline(roi, *, max_side: int = MAX_OUTLINE_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """The bead's edge inside a weld region: where its heat-affected-zone margin ends.

    The same split as ``core.roi.WeldROI.labels`` (bead: more than ``haz_margin_px`` from the
    region's edge; the image border is no edge), traced on the block-reduced mask so that it
    costs milliseconds on the GUI thread. Empty for a region without a margin.
    """
    from scipy import ndimage

    if roi is None or roi.haz_margin_px <= 0:
        return np.zeros(0), np.zeros(0)
    step = max(1, int(np.ceil(max(roi.mask.shape) / max_side)))
    small = roi.mask[::step, ::step]
    bead = small & (ndimage.distance_transform_edt(small, sampling=step) > roi.haz_margin_px)
    return _trace(bead, step)


def _trace(small: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Contours of a block-reduced mask in full-image (x, y), NaN between separate contours."""
    from skimage.measure import find_contours

    padded = np.pad(small.astype(np.float32), 1)
    xs, ys = [], []
    for contour in find_contours(padded, 0.5):
        rows = (contour[:, 0] - 1) * step + (step - 1) / 2.0
        cols = (contour[:, 1] - 1) * step + (step - 1) / 2.0
        xs += [cols, [np.nan]]
        ys += [rows, [np.nan]]
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs), np.concatenate(ys)


def _normals(centreline: np.ndarray) -> np.ndarray:
    """Unit normals (row, col) to a polyline, pointing to its left as seen on screen."""
    tangent = np.gradient(centreline, axis=0) if len(centreline) > 2 else \
        np.repeat(np.diff(centreline, axis=0), len(centreline), axis=0)
    norm = np.hypot(tangent[:, 0], tangent[:, 1])
    norm[norm == 0] = 1.0
    t = tangent / norm[:, None]
    return np.column_stack([-t[:, 1], t[:, 0]])


def _resample(points: np.ndarray, k: int) -> np.ndarray:
    seg = np.hypot(*np.diff(points, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return np.repeat(points[:1], k, axis=0)
    t = np.linspace(0.0, s[-1], k)
    return np.column_stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])])


def edge_polylines(roi, *, points: int = HANDLE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The two edges of the band, (row, col) points along the weld, ``points`` each."""
    c = np.asarray(roi.centreline, dtype=np.float64)
    w = np.asarray(roi.widths, dtype=np.float64)
    n = _normals(c)
    a = c + n * (w[:, None] / 2.0)
    b = c - n * (w[:, None] / 2.0)
    return _resample(a, points), _resample(b, points)


def adjust_step(roi) -> float:
    """Pixels one widen/narrow/shift step moves an edge: 5 % of the median width, >= 2 px."""
    return max(2.0, round(0.05 * float(np.median(roi.widths)), 1))


def widened(roi, pixels: float):
    """The region with each edge moved out by ``pixels`` (in when negative)."""
    from scipy import ndimage

    if not roi.hand_edited:
        widths = np.maximum(np.asarray(roi.widths) + 2.0 * pixels, 2.0)
        return roi.edited(widths=widths)
    # distance transforms: a disk-shaped dilation or erosion at any radius in one pass
    if pixels > 0:
        mask = ndimage.distance_transform_edt(~roi.mask) <= pixels
    else:
        mask = ndimage.distance_transform_edt(roi.mask) > -pixels
    if not mask.any():
        raise ValueError("the region cannot be narrowed further")
    return _from_mask(roi, mask)


def shifted(roi, pixels: float):
    """The region moved ``pixels`` across the weld (to the left of its direction on screen)."""
    from scipy import ndimage

    if not roi.hand_edited:
        c = np.asarray(roi.centreline, dtype=np.float64)
        return roi.edited(centreline=c + _normals(c) * pixels)
    d = np.median(_normals(np.asarray(roi.centreline, dtype=np.float64)), axis=0) * pixels
    mask = ndimage.shift(roi.mask.astype(np.uint8), d, order=0, mode="constant") > 0
    if not mask.any():
        raise ValueError("the region would leave the image")
    return _from_mask(roi, mask)


def box_mask(shape: tuple[int, int], bbox) -> np.ndarray:
    """A mask of the image grid, True inside ``bbox`` (row0, col0, row1, col1), clipped."""
    r0, c0, r1, c1 = (int(round(v)) for v in bbox)
    mask = np.zeros(shape, bool)
    mask[max(r0, 0):max(min(r1, shape[0]), 0), max(c0, 0):max(min(c1, shape[1]), 0)] = True
    return mask


def _from_mask(roi, mask: np.ndarray):
    from core.roi import WeldROI

    out = WeldROI.from_mask(mask, hand_edited=True)
    out.haz_margin_px = roi.haz_margin_px
    return out


# ------------------------------------------------------------------ drawing and editing
def _shown_points(item) -> int:
    x, _ = item.getData()
    return 0 if x is None or not item.isVisible() else int(np.isfinite(x).sum())


class WeldRoiLayer(QObject):
    """The weld region drawn over an ImageViewer, with edge handles in edit mode.

    Signals
    -------
    edges_edited(object, object)
        The two edge polylines ((P, 2) row/col arrays) after the user dragged a handle.
    """

    edges_edited = Signal(object, object)

    def __init__(self, viewer) -> None:
        super().__init__(viewer)
        self.viewer = viewer
        self.roi = None
        self.visible = True
        pen = pg.mkPen(OUTLINE_COLOUR, width=2, style=Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        self.outline = pg.PlotCurveItem(pen=pen, connect="finite")
        self.outline.setZValue(15)
        self.viewer.view_box.addItem(self.outline)
        # the bead's edge: between it and the outline lies the heat-affected zone, which the scan
        # tests at thresholds of its own (core.residual.weld_zones)
        pen = pg.mkPen(OUTLINE_COLOUR, width=1, style=Qt.PenStyle.DotLine)
        pen.setCosmetic(True)
        self.bead_edge = pg.PlotCurveItem(pen=pen, connect="finite")
        self.bead_edge.setZValue(15)
        self.viewer.view_box.addItem(self.bead_edge)
        self.handles: list[pg.PolyLineROI] = []
        self._box_rect = None

    # ----- the outline
    def set_roi(self, roi) -> None:
        """Draw ``roi`` (a WeldROI, or None for no region: the whole image is scanned)."""
        self.stop_editing()
        self.roi = roi
        for item, (x, y) in ((self.outline, roi_outline(roi.mask) if roi is not None else ([], [])),
                             (self.bead_edge, bead_outline(roi))):
            item.setData(x, y)
        self.set_visible(self.visible)

    def set_visible(self, on: bool) -> None:
        self.visible = bool(on)
        self.outline.setVisible(self.visible and self.roi is not None)
        self.bead_edge.setVisible(self.visible and self.roi is not None)
        for h in self.handles:
            h.setVisible(self.visible)

    def outline_points(self) -> int:
        """Number of outline points drawn (0 when nothing is shown)."""
        return _shown_points(self.outline)

    def bead_edge_points(self) -> int:
        """Number of points of the bead's edge drawn (0 when nothing is shown)."""
        return _shown_points(self.bead_edge)

    # ----- edge handles
    @property
    def editing(self) -> bool:
        return bool(self.handles)

    def start_editing(self) -> None:
        """Show draggable handles on the two edges of the band."""
        if self.roi is None or self.editing:
            return
        for edge in edge_polylines(self.roi):
            pen = pg.mkPen(OUTLINE_COLOUR, width=2)
            handle = pg.PolyLineROI([(float(c), float(r)) for r, c in edge], closed=False,
                                    pen=pen, movable=False, removable=False)
            handle.setZValue(30)
            handle.sigRegionChangeFinished.connect(self._on_handles_moved)
            self.viewer.view_box.addItem(handle)
            self.handles.append(handle)

    def stop_editing(self) -> None:
        for handle in self.handles:
            self.viewer.view_box.removeItem(handle)
        self.handles = []

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """The two edges as the handles place them, (P, 2) row/col arrays."""
        out = []
        for handle in self.handles:
            pts = [handle.mapToParent(p) for _, p in handle.getLocalHandlePositions()]
            out.append(np.asarray([(p.y(), p.x()) for p in pts], dtype=np.float64))
        return out[0], out[1]

    def move_handle(self, edge: int, index: int, row: float, col: float) -> None:
        """Move one handle to image point (row, col), as a mouse drag does, and report it."""
        handle = self.handles[edge]
        handle.movePoint(handle.getHandles()[index], pg.Point(col, row), coords="parent",
                         finish=True)

    def _on_handles_moved(self, *_) -> None:
        if len(self.handles) == 2:
            a, b = self.edges()
            self.edges_edited.emit(a, b)

    # ----- drawing a box (add, cut, or draw the region by hand)
    def draw_box(self, done: Callable[[tuple[int, int, int, int]], None]) -> None:
        """Let the next left-drag on the image draw a box; ``done(bbox)`` gets it."""

        def handler(start, now, is_start, is_finish):
            if is_start or self._box_rect is None:
                pen = pg.mkPen(OUTLINE_COLOUR, width=2, style=Qt.PenStyle.DotLine)
                self._box_rect = pg.RectROI((start.x(), start.y()), (1, 1), pen=pen)
                self.viewer.view_box.addItem(self._box_rect)
            x0, x1 = sorted((start.x(), now.x()))
            y0, y1 = sorted((start.y(), now.y()))
            self._box_rect.setPos((x0, y0))
            self._box_rect.setSize((max(x1 - x0, 1), max(y1 - y0, 1)))
            if is_finish:
                self.cancel_box()
                done((int(y0), int(x0), int(round(y1)) + 1, int(round(x1)) + 1))

        self.viewer.view_box.drag_handler = handler

    def cancel_box(self) -> None:
        if self._box_rect is not None:
            self.viewer.view_box.removeItem(self._box_rect)
            self._box_rect = None
        self.viewer.view_box.drag_handler = None
