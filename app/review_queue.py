"""The review queues: the flagged regions of the current radiograph (most severe first, each with a
thumbnail, its severity as ratio to threshold, the tests that fired and the verdict so far) and of
the whole worklist (from the store)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QIcon, QImage, QPixmap
from PySide6.QtWidgets import QApplication, QListWidget, QListWidgetItem

from app.detail_panel import thumbnail_array
from app.overlays import TEST_COLOURS
from app.theme import current_theme

VERDICT_LABELS = {
    "defect": "defect", "acceptable": "acceptable indication", "false_alarm": "false alarm",
    "unsure": "unsure",
}
THUMB_PX = 56
THUMBS_PER_TICK = 8


def sort_by_severity(regions) -> list:
    """Regions most severe first (ties: larger area first, then id)."""
    return sorted(regions, key=lambda r: (-float(r.severity), -int(r.area_px), r.id))


def queue_text(region, verdict: str | None) -> str:
    """The line shown for a region in the queue."""
    size = ""
    if region.size_mm is not None:
        size = f"  {region.size_mm[0]:.1f} x {region.size_mm[1]:.1f} mm"
    state = VERDICT_LABELS.get(verdict, verdict) if verdict else "not reviewed"
    return f"#{region.id}  {region.severity:.2f} x thr  [{region.tests}]{size}\n{state}"


class ReviewQueue(QListWidget):
    """List of flagged regions; emits ``region_selected(region_id)``."""

    region_selected = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.setUniformItemSizes(True)
        self.regions: list = []
        self.verdicts: dict[int, str | None] = {}
        self.currentRowChanged.connect(self._on_row)
        self._thumb_timer = QTimer(self)
        self._thumb_timer.setInterval(0)
        self._thumb_timer.timeout.connect(self._add_thumbnails)
        self._thumb_image = None
        self._thumbs: dict = {}
        self._thumb_next = 0

    def set_regions(self, regions, image: np.ndarray | None, *, verdicts=None,
                    thumbnails: dict | None = None) -> None:
        """Fill the queue; ``verdicts`` maps region id -> current verdict (or None).

        ``thumbnails`` maps a region's bbox to an 8-bit array (made in the worker thread); the
        icons are set a few at a time from the event loop, so a long queue never blocks it.
        """
        self._thumb_timer.stop()
        self.blockSignals(True)
        self.clear()
        self.regions = sort_by_severity(regions)
        self.verdicts = dict(verdicts or {})
        for region in self.regions:
            item = QListWidgetItem(queue_text(region, self.verdicts.get(region.id)))
            item.setData(Qt.ItemDataRole.UserRole, region.id)
            self.addItem(item)
            self._colour(item, region)
        self.blockSignals(False)
        self._thumb_image = image
        self._thumbs = dict(thumbnails or {})
        self._thumb_next = 0
        if image is not None and self.regions:
            self._thumb_timer.start()

    def _add_thumbnails(self) -> None:
        end = min(self._thumb_next + THUMBS_PER_TICK, len(self.regions))
        for row in range(self._thumb_next, end):
            region = self.regions[row]
            arr = self._thumbs.get(tuple(region.bbox))
            if arr is None:
                arr = thumbnail_array(self._thumb_image, region.bbox, size=THUMB_PX)
            h, w = arr.shape
            qimg = QImage(arr.data, w, h, w, QImage.Format.Format_Grayscale8)
            self.item(row).setIcon(QIcon(QPixmap.fromImage(qimg)))
        self._thumb_next = end
        if end >= len(self.regions):
            self._thumb_timer.stop()
            self._thumb_image, self._thumbs = None, {}

    def thumbnails_done(self) -> bool:
        return not self._thumb_timer.isActive()

    def _colour(self, item: QListWidgetItem, region) -> None:
        if self.verdicts.get(region.id):
            item.setForeground(QColor(128, 128, 128))
            return
        colour = QColor(*TEST_COLOURS.get(region.tests, (128, 128, 128)))
        dark_theme = current_theme(QApplication.instance()) == "dark"
        item.setForeground(colour.lighter(140) if dark_theme else colour.darker(110))

    def region_ids(self) -> list[int]:
        return [r.id for r in self.regions]

    def current_region(self):
        row = self.currentRow()
        return self.regions[row] if 0 <= row < len(self.regions) else None

    def select_region(self, region_id: int) -> None:
        for row, region in enumerate(self.regions):
            if region.id == region_id:
                self.setCurrentRow(row)
                return

    def set_verdict(self, region_id: int, verdict: str | None) -> None:
        """Update the line of one region after a verdict (or its undo)."""
        self.verdicts[region_id] = verdict
        for row, region in enumerate(self.regions):
            if region.id == region_id:
                item = self.item(row)
                item.setText(queue_text(region, verdict))
                self._colour(item, region)

    def next_unreviewed(self, *, after: int | None = None) -> int | None:
        """Row of the next region without a verdict after row ``after`` (wrapping), or None."""
        n = len(self.regions)
        start = -1 if after is None else after
        for k in range(1, n + 1):
            row = (start + k) % n
            if not self.verdicts.get(self.regions[row].id):
                return row
        return None

    def move(self, step: int) -> None:
        """Select the next (+1) or previous (-1) region."""
        if not self.regions:
            return
        row = self.currentRow()
        row = 0 if row < 0 else min(max(row + step, 0), len(self.regions) - 1)
        self.setCurrentRow(row)

    def n_reviewed(self) -> int:
        return sum(1 for r in self.regions if self.verdicts.get(r.id))

    def _on_row(self, row: int) -> None:
        if 0 <= row < len(self.regions):
            self.region_selected.emit(self.regions[row].id)


def worklist_text(row: dict) -> str:
    """The line of a region in the whole-worklist queue."""
    size = ""
    if row.get("size_mm") is not None:
        size = f"  {row['size_mm'][0]:.1f} x {row['size_mm'][1]:.1f} mm"
    verdict = row.get("verdict")
    state = VERDICT_LABELS.get(verdict, verdict) if verdict else "not reviewed"
    return (f"{row['path'].name}  #{row['number']}  {row['severity']:.2f} x thr  "
            f"[{row['tests']}]{size}\n{state}")


class WorklistQueue(QListWidget):
    """Flagged regions of every scanned radiograph of the worklist, most severe first.

    Activating one (Enter, double-click) emits ``open_region(path, number)``; the window opens
    that radiograph and selects the region in the per-radiograph queue.
    """

    open_region = Signal(object, int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[dict] = []
        self.itemActivated.connect(self._on_activated)

    def set_rows(self, rows) -> None:
        """``rows``: dicts with path, number, severity, tests, size_mm, verdict."""
        current = self.currentRow()
        self.clear()
        self.rows = sorted(rows, key=lambda r: (-float(r["severity"] or 0), str(r["path"]),
                                                r["number"]))
        for row in self.rows:
            item = QListWidgetItem(worklist_text(row))
            if row.get("verdict"):
                item.setForeground(QColor(128, 128, 128))
            self.addItem(item)
        if 0 <= current < self.count():
            self.setCurrentRow(current)

    def _on_activated(self, item: QListWidgetItem) -> None:
        row = self.rows[self.row(item)]
        self.open_region.emit(row["path"], int(row["number"]))
