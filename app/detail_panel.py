"""The evidence for one flagged region, like the paper's Figures 5 to 8: input, reconstruction,
residual, local mean and local std around the region, each with its maximum.

Input and reconstruction share one grey window (from the input crop); residual and local mean are
drawn on a fixed scale of +-2 x the mean threshold, local std on 0..2 x the std threshold, so the
pictures of two regions compare directly.

Beside the tiles, the reviewer's brush (:mod:`app.mask_brush`) shows the input crop at full
resolution for painting the defect's extent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QWidget

from app.mask_brush import MaskBrush
from core.residual import zone_spans

PANELS = ("input", "reconstruction", "residual", "local_mean", "local_std")
PANEL_TITLES = {
    "input": "input", "reconstruction": "reconstruction", "residual": "residual",
    "local_mean": "local mean", "local_std": "local std",
}
MIN_CROP = 96
TILE_PX = 150


@dataclass
class Crop:
    """A window of the image grid around a region: slices and the arrays cut from the maps."""

    rows: slice
    cols: slice
    arrays: dict[str, np.ndarray]


def crop_box(bbox, shape, *, min_size: int = MIN_CROP, margin: float = 1.0):
    """A square window (row0, col0, row1, col1) around ``bbox``, ``margin`` x its size each side."""
    r0, c0, r1, c1 = bbox
    side = int(max(min_size, (1 + 2 * margin) * max(r1 - r0, c1 - c0)))
    side = min(side, shape[0], shape[1])
    cr, cc = (r0 + r1) // 2, (c0 + c1) // 2
    top = int(min(max(cr - side // 2, 0), shape[0] - side))
    left = int(min(max(cc - side // 2, 0), shape[1] - side))
    return top, left, top + side, left + side


def region_crop(image: np.ndarray, result, bbox) -> Crop:
    """Cut the input and the four maps of a ScanResult around ``bbox`` (views, no copies)."""
    r0, c0, r1, c1 = crop_box(bbox, image.shape)
    rows, cols = slice(r0, r1), slice(c0, c1)
    arrays = {"input": image[rows, cols]}
    for name in ("residual", "local_mean", "local_std"):
        arrays[name] = getattr(result, name)[rows, cols]
    # input - residual on the crop only (ScanResult.reconstruction computes the whole image)
    arrays["reconstruction"] = arrays["input"] - arrays["residual"]
    return Crop(rows, cols, arrays)


def display_step(side: int, target: int = 2 * TILE_PX) -> int:
    """Subsampling step so a crop of ``side`` px is drawn from at most about ``target`` px."""
    return max(1, -(-side // target))


def thumbnail_array(image: np.ndarray, bbox, *, size: int = 64) -> np.ndarray:
    """An 8-bit grey thumbnail (at most ``size`` px a side) of the image around ``bbox``.

    For display only; windowed to the 0.5-99.5 percentiles of the crop.
    """
    r0, c0, r1, c1 = crop_box(bbox, image.shape, min_size=48, margin=0.5)
    step = display_step(max(r1 - r0, c1 - c0), size)
    crop = np.asarray(image[r0:r1:step, c0:c1:step], dtype=np.float32)
    finite = crop[np.isfinite(crop)]
    lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
    scaled = np.clip((np.nan_to_num(crop, nan=lo) - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    return np.ascontiguousarray(np.round(scaled).astype(np.uint8))


def panel_maximum(name: str, values: np.ndarray) -> float:
    """The maximum shown under a panel: max |value| for residual and local mean, else max.

    NaN (undefined) pixels are ignored; NaN when all are undefined.
    """
    v = np.asarray(values, dtype=np.float32)
    if name in ("residual", "local_mean"):
        v = np.abs(v)
    return float(np.fmax.reduce(v, axis=None)) if v.size else float("nan")


def grey_qimage(values: np.ndarray, lo: float, hi: float) -> QImage:
    """An 8-bit grey QImage of ``values`` windowed to [lo, hi] (for display only; NaN = black)."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=lo)
    scaled = np.clip((v - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * 255.0
    data = np.ascontiguousarray(np.round(scaled).astype(np.uint8))
    h, w = data.shape
    return QImage(data.data, w, h, w, QImage.Format.Format_Grayscale8).copy()


def panel_levels(name: str, crop: Crop, thresholds) -> tuple[float, float]:
    """Display window of a panel: shared percentiles for input/reconstruction, thresholds else."""
    if name in ("input", "reconstruction"):
        src = crop.arrays["input"]
        lo, hi = np.percentile(src[np.isfinite(src)], [0.5, 99.5]) if src.size else (0, 1)
        return float(lo), float(hi) if hi > lo else float(lo) + 1e-3
    if name in ("residual", "local_mean"):
        return -2.0 * thresholds.mean, 2.0 * thresholds.mean
    return 0.0, 2.0 * thresholds.std


def region_key(region) -> tuple:
    """What identifies a region shown in the panel: its number (or label) and its bbox."""
    return region.id, tuple(int(v) for v in region.bbox)


def zones_text(th) -> str:
    """The thresholds' zones after the interior pair, for the summary line ("" without zones)."""
    labelled = "".join(f"; {label}: {m:.4f}, {sd:.4f}" for label, (m, sd) in
                       zip(th.zone_labels(), th.zone_pairs()))
    if th.slope_zones:
        return (f" where the film's slope is below {th.slope_bounds[0]:.4f} grey levels/px (after a "
                f"{th.slope_sigma_px:g} px Gaussian{labelled}; severity is to each kernel's own)")
    if th.has_haz:
        return f" (in the bead's interior{labelled}; severity is to each kernel's own)"
    if not th.has_edge_band:
        return ""
    return (f" (in the weld region's {th.edge_band_px} px edge band: {th.edge_mean:.4f}, {th.edge_std:.4f}"
            + "".join(f"; {a}-{b} px from its edge: {m:.4f}, {sd:.4f}" for (a, b), (m, sd) in
                      zip(zone_spans(th.band_bounds)[1:], th.zone_pairs()[1:]))
            + "; severity is to each kernel's own)")


class DetailPanel(QWidget):
    """Five tiles with captions and the brush; :meth:`show_region` fills them.

    Signals
    -------
    region_shown()
        A region's evidence was shown (the brush shows its crop).
    """

    region_shown = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.images: dict[str, QLabel] = {}
        self.captions: dict[str, QLabel] = {}
        self.maxima: dict[str, float] = {}
        tiles = QWidget()
        grid = QGridLayout(tiles)
        grid.setContentsMargins(0, 0, 0, 0)
        for i, name in enumerate(PANELS):
            img = QLabel()
            img.setFixedSize(TILE_PX, TILE_PX)
            img.setAlignment(Qt.AlignmentFlag.AlignCenter)
            img.setStyleSheet("background: #000000;")
            cap = QLabel(PANEL_TITLES[name])
            cap.setObjectName("detailTitle")
            cap.setAlignment(Qt.AlignmentFlag.AlignCenter)
            cap.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
            grid.addWidget(img, 0, i)
            grid.addWidget(cap, 1, i)
            self.images[name], self.captions[name] = img, cap
        self.summary = QLabel("Select a flagged region to see its evidence.")
        self.summary.setWordWrap(True)
        grid.addWidget(self.summary, 2, 0, 1, len(PANELS))
        grid.setRowStretch(3, 1)
        self.brush = MaskBrush()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(tiles)
        layout.addWidget(self.brush, 1)

    def clear(self) -> None:
        for name in PANELS:
            self.images[name].clear()
            self.captions[name].setText(PANEL_TITLES[name])
        self.maxima = {}
        self.summary.setText("Select a flagged region to see its evidence.")
        self.brush.reset()

    def show_region(self, image: np.ndarray, result, region) -> None:
        """Show the evidence of ``region`` (a core Region) of ``result`` on ``image`` ([0, 1])."""
        crop = region_crop(image, result, region.bbox)
        th = result.thresholds
        step = display_step(crop.rows.stop - crop.rows.start)
        shown = Crop(crop.rows, crop.cols, {k: v[::step, ::step] for k, v in crop.arrays.items()})
        for name in PANELS:
            values = crop.arrays[name]
            lo, hi = panel_levels(name, shown, th)
            pix = QPixmap.fromImage(grey_qimage(shown.arrays[name], lo, hi)).scaled(
                TILE_PX, TILE_PX, Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.FastTransformation)
            self.images[name].setPixmap(pix)
            peak = panel_maximum(name, values)
            self.maxima[name] = peak
            text = f"{PANEL_TITLES[name]}\nmax {peak:.4f}"
            if name == "local_mean":
                text += f" ({peak / th.mean:.2f} x thr)"
            elif name == "local_std":
                text += f" ({peak / th.std:.2f} x thr)"
            self.captions[name].setText(text)
        size = ""
        if region.size_mm is not None:
            size = f", {region.size_mm[0]:.2f} x {region.size_mm[1]:.2f} mm"
        self.summary.setText(
            f"Region {region.id}: {region.tests} test{'s' if region.tests == 'both' else ''}, "
            f"severity {region.severity:.2f} x threshold, {region.area_px} px{size}. "
            f"Thresholds: local mean {th.mean:.4f}, local std {th.std:.4f}{zones_text(th)}."
        )
        self.brush.show_crop(crop.arrays["input"], (crop.rows.start, crop.cols.start),
                             region_key(region), panel_levels("input", crop, th))
        self.region_shown.emit()
