"""Scan overlays on the viewer: residual, local mean, local std, flagged kernels, region outlines.

Every colour scale is fixed to the calibrated thresholds: a map is divided by its threshold, so
1.0 means "at the threshold" on every image and a clean weld stays calm (nothing is normalised
per image). Flag colours follow the paper's Figure 5e: both tests = blue, std only = green,
mean only = orange. NaN (undefined, e.g. outside the scanned area) is drawn transparent.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QCheckBox, QLabel, QSlider, QVBoxLayout, QWidget

from app.viewer import ImageViewer

MAP_KINDS = ("residual", "local_mean", "local_std")
KINDS = (*MAP_KINDS, "flags", "outlines")
KIND_LABELS = {
    "residual": "Residual",
    "local_mean": "Local mean (9x9)",
    "local_std": "Local std (9x9)",
    "flags": "Flagged kernels",
    "outlines": "Region outlines",
}
FLAG_COLOURS = {  # flags value -> RGB; 1 = mean test, 2 = std test, 3 = both
    1: (255, 140, 0),  # mean only: orange
    2: (0, 190, 60),  # std only: green
    3: (30, 90, 255),  # both: blue
}
TEST_COLOURS = {"mean": FLAG_COLOURS[1], "std": FLAG_COLOURS[2], "both": FLAG_COLOURS[3]}
RATIO_LIMIT = 2.0  # colour scales run to twice the threshold
SIGNED = (-RATIO_LIMIT, RATIO_LIMIT)
UNSIGNED = (0.0, RATIO_LIMIT)


def ratio_map(values: np.ndarray, threshold: float) -> np.ndarray:
    """``values / threshold`` as C-contiguous float32 with NaN replaced by 0 (drawn transparent)."""
    if not threshold or not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a positive number, got {threshold!r}")
    out = np.asarray(values, dtype=np.float32) / np.float32(threshold)
    return np.ascontiguousarray(np.nan_to_num(out, nan=0.0, posinf=RATIO_LIMIT,
                                              neginf=-RATIO_LIMIT))


def lut_index(ratio: np.ndarray, levels: tuple[float, float], n: int = 256) -> np.ndarray:
    """Quantise a ratio map onto ``n`` LUT entries spanning ``levels`` (uint8, C-contiguous).

    pyqtgraph draws uint8 data through a LUT of at most 256 entries without any float pass, so
    these layers stay cheap to redraw on a 5000 px long radiograph.
    """
    lo, hi = levels
    step = np.float32((n - 1) / (hi - lo))
    scaled = (np.asarray(ratio, dtype=np.float32) - np.float32(lo)) * step
    return np.ascontiguousarray(np.clip(np.rint(scaled), 0, n - 1).astype(np.uint8))


def diverging_lut(n: int = 256) -> np.ndarray:
    """RGBA LUT for signed ratios on levels (-2, 2): blue below, red above, transparent at 0.

    Opacity grows with |ratio| up to the threshold (|ratio| = 1) and is full beyond it.
    """
    r = np.linspace(-RATIO_LIMIT, RATIO_LIMIT, n)
    a = np.clip(np.abs(r), 0, 1)
    lut = np.zeros((n, 4), np.uint8)
    hot = np.abs(r) >= 1.0
    lut[:, 0] = np.where(r > 0, 255, np.where(hot, 40, 60))
    lut[:, 1] = np.where(hot, np.where(r > 0, 40, 120), 120)
    lut[:, 2] = np.where(r < 0, 255, np.where(hot, 40, 60))
    lut[:, 3] = (a**1.5 * 230).astype(np.uint8)
    return lut


def sequential_lut(n: int = 256) -> np.ndarray:
    """RGBA LUT for ratios on levels (0, 2): transparent at 0, yellow near 1, red beyond 1."""
    r = np.linspace(0.0, RATIO_LIMIT, n)
    lut = np.zeros((n, 4), np.uint8)
    below = r < 1.0
    lut[:, 0] = 255
    lut[:, 1] = np.where(below, 220, np.clip(220 - (r - 1.0) * 220, 0, 220)).astype(np.uint8)
    lut[:, 2] = np.where(below, 40, 0)
    lut[:, 3] = np.where(below, (r**1.5) * 200, 240).astype(np.uint8)
    return lut


def flag_rgba(flags: np.ndarray) -> np.ndarray:
    """RGBA image (M, N, 4) uint8 of the flag map in the paper's colours; unflagged transparent."""
    lut = np.zeros((256, 4), np.uint8)
    for value, rgb in FLAG_COLOURS.items():
        lut[value, :3] = rgb
        lut[value, 3] = 255
    return lut[np.asarray(flags, dtype=np.uint8)]


def overlay_layers(result) -> dict[str, np.ndarray]:
    """The arrays the overlay layers draw, from a core ScanResult (run this in the worker thread:
    it takes a few hundred ms on a large radiograph)."""
    th = result.thresholds
    return {
        "residual": lut_index(ratio_map(result.residual, th.mean), SIGNED),
        "local_mean": lut_index(ratio_map(result.local_mean, th.mean), SIGNED),
        "local_std": lut_index(ratio_map(result.local_std, th.std), UNSIGNED),
        "flags": flag_rgba(result.flags),
    }


class Overlays(QObject):
    """The overlay layers of one :class:`ImageViewer`; each can be shown or hidden."""

    changed = Signal()

    def __init__(self, viewer: ImageViewer) -> None:
        super().__init__(viewer)
        self.viewer = viewer
        self.opacity = 0.6
        self.visible = {"residual": False, "local_mean": False, "local_std": False,
                        "flags": True, "outlines": True}
        self.items: dict[str, pg.ImageItem] = {}
        for z, kind in enumerate(("residual", "local_mean", "local_std", "flags"), start=10):
            item = pg.ImageItem(axisOrder="row-major")
            item.setZValue(z)
            item.setVisible(False)
            viewer.view_box.addItem(item)
            self.items[kind] = item
        self.items["residual"].setLookupTable(diverging_lut())
        self.items["local_mean"].setLookupTable(diverging_lut())
        self.items["local_std"].setLookupTable(sequential_lut())
        self.outline_items: list[pg.GraphicsObject] = []
        self.result = None

    def set_result(self, result, *, layers: dict[str, np.ndarray] | None = None) -> None:
        """Show the maps of a core ScanResult (or clear with None).

        ``layers`` are the arrays of :func:`overlay_layers` when already computed elsewhere.
        """
        self.clear()
        self.result = result
        if result is None:
            return
        layers = layers if layers is not None else overlay_layers(result)
        for kind in MAP_KINDS:  # uint8 LUT indices (see lut_index): levels are the index range
            self.items[kind].setImage(layers[kind], autoLevels=False, levels=(0, 255))
        self.items["flags"].setImage(layers["flags"], autoLevels=False)
        for region in result.regions:
            self.outline_items.append(self._outline(region))
        self._apply()

    def _outline(self, region):
        r0, c0, r1, c1 = region.bbox
        pad = 3
        rect = pg.QtWidgets.QGraphicsRectItem(QRectF(c0 - pad, r0 - pad, c1 - c0 + 2 * pad,
                                                     r1 - r0 + 2 * pad))
        pen = QPen(QColor(*TEST_COLOURS.get(region.tests, (255, 255, 255))))
        pen.setWidth(2)
        pen.setCosmetic(True)
        rect.setPen(pen)
        rect.setZValue(20)
        self.viewer.view_box.addItem(rect)
        return rect

    def clear(self) -> None:
        """Remove everything drawn for the last result."""
        for item in self.items.values():
            item.clear()
            item.setVisible(False)
        for rect in self.outline_items:
            self.viewer.view_box.removeItem(rect)
        self.outline_items = []
        self.result = None

    def set_visible(self, kind: str, visible: bool) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown overlay {kind!r}; choose one of {', '.join(KINDS)}")
        self.visible[kind] = bool(visible)
        self._apply()

    def set_opacity(self, opacity: float) -> None:
        """Opacity of the map and flag layers, 0..1."""
        self.opacity = float(min(max(opacity, 0.0), 1.0))
        self._apply()

    def _apply(self) -> None:
        has = self.result is not None
        for kind, item in self.items.items():
            item.setVisible(has and self.visible[kind])
            item.setOpacity(self.opacity)
        for rect in self.outline_items:
            rect.setVisible(has and self.visible["outlines"])
        self.changed.emit()


class OverlayPanel(QWidget):
    """Check boxes for the layers, an opacity slider and the legend of the colours."""

    visibility_requested = Signal(str, bool)

    def __init__(self, overlays: Overlays, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.boxes: dict[str, QCheckBox] = {}
        for kind in KINDS:
            box = QCheckBox(KIND_LABELS[kind])
            box.setChecked(overlays.visible[kind])
            box.toggled.connect(lambda on, k=kind: self.visibility_requested.emit(k, on))
            layout.addWidget(box)
            self.boxes[kind] = box
        layout.addWidget(QLabel("Opacity"))
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(int(overlays.opacity * 100))
        self.opacity.valueChanged.connect(lambda v: overlays.set_opacity(v / 100))
        layout.addWidget(self.opacity)
        swatch = "<span style='color:#{:02x}{:02x}{:02x}'>&#9632; {}</span>"
        legend = QLabel(
            "Scales fixed to the thresholds, 1.0 = threshold, opaque from there on. Residual and "
            "local mean: red = brighter, blue = darker than the reconstruction; local std: "
            "yellow, red above the threshold.<br>Flags: "
            + " ".join(swatch.format(*TEST_COLOURS[t], label) for t, label in
                       (("both", "both tests"), ("std", "std only"), ("mean", "mean only"))))
        legend.setWordWrap(True)
        layout.addWidget(legend)
        layout.addStretch(1)
