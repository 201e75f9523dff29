"""The evidence of one decision: the region on its radiograph and every verdict ever given on it.

Used by the supervisor's view when the main window does not supply its own evidence display. The
radiograph is read from its file again; when the file is gone or no longer holds the reviewed
content (its sha256 differs), the dialog says so and still lists the verdict history.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QHeaderView, QLabel, QSplitter, QTableView, QVBoxLayout, QWidget,
)

from app.detail_panel import crop_box
from app.supervisor_tables import GREY, Column, RowsModel, file_name, verdict_label, when
from app.viewer import ImageViewer

OUTLINE = QColor(255, 60, 60)


def region_history(store, *, radiograph_id: int, region_id: int | None, bbox=None) -> list[dict]:
    """Every verdict on a flagged region (or on a missed indication), oldest first.

    Each row is a ``Store.decisions`` row plus ``event``: "first verdict", "changed by its
    author", "overrule" (by another user) or "blind second review".
    """
    rows = store.decisions(radiograph=int(radiograph_id))
    if region_id is not None:
        rows = [r for r in rows if r["region_id"] == region_id]
    else:
        box = tuple(bbox) if bbox is not None else None
        rows = [r for r in rows if r["region_id"] is None and r["bbox"] == box]
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        if r["blind"]:
            r["event"] = "blind second review"
        elif r["supersedes"] is None:
            r["event"] = "first verdict"
        elif r["verdict"] == "withdrawn":
            r["event"] = "withdrawn (undo)"
        else:
            old = by_id.get(r["supersedes"])
            r["event"] = "changed by its author" if old and old["user"] == r["user"] else \
                "overrule"
    return rows


HISTORY_COLUMNS = [
    Column("#", lambda r: r["id"]),
    Column("Time (UTC)", lambda r: r["time"], when),
    Column("User", lambda r: r["user"]),
    Column("Event", lambda r: r["event"]),
    Column("Verdict", lambda r: r["verdict"], verdict_label),
    Column("Supersedes", lambda r: r["supersedes"], lambda v: f"#{v}" if v else ""),
    Column("Reason", lambda r: r["reason"]),
    Column("ISO 6520", lambda r: r["iso_code"]),
    Column("Comment", lambda r: r["comment"]),
    Column("In force", lambda r: r["current"], lambda v: "yes" if v else ""),
]


def load_checked(path, sha256: str | None):
    """The radiograph at ``path`` if it still holds the content ``sha256``, else (None, why)."""
    from core.errors import ImageLoadError, WeldreviewWarning
    from core.imageio import load_radiograph

    try:
        with warnings.catch_warnings():  # conversions were reported when it was first opened
            warnings.simplefilter("ignore", WeldreviewWarning)
            radiograph = load_radiograph(path)
    except (ImageLoadError, OSError) as exc:
        return None, f"Image not shown: {exc}"
    if sha256 and radiograph.sha256 != sha256:
        return None, (f"Image not shown: {path} no longer holds the reviewed radiograph "
                      "(its sha256 differs)")
    return radiograph, ""


class RegionView(QWidget):
    """The viewer zoomed to one region with its outline, and the crop around it (``crop``)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = ImageViewer(self)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.crop: np.ndarray | None = None
        self.bbox = None
        self._outline = None
        self._shown = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.viewer, 1)
        layout.addWidget(self.note)

    def show_region(self, radiograph, bbox, *, note: str = "") -> None:
        """Show ``bbox`` (row0, col0, row1, col1) of ``radiograph`` (None: only ``note``)."""
        self.bbox = tuple(int(v) for v in bbox) if bbox is not None else None
        if self._outline is not None:
            self.viewer.view_box.removeItem(self._outline)
            self._outline = None
        self.note.setText(note)
        if radiograph is None or self.bbox is None:
            self.viewer.clear()
            self.crop, self._shown = None, None
            return
        if self._shown is not radiograph:  # a new image; moving between its regions only zooms
            self.viewer.set_image(radiograph.raw, pixel_size_um=radiograph.pixel_size_um,
                                  bit_depth=radiograph.bit_depth)
            self._shown = radiograph
        r0, c0, r1, c1 = self.bbox
        top, left, bottom, right = crop_box(self.bbox, radiograph.image.shape)
        self.crop = radiograph.image[top:bottom, left:right]
        outline = pg.QtWidgets.QGraphicsRectItem(QRectF(c0, r0, c1 - c0, r1 - r0))
        pen = QPen(OUTLINE)
        pen.setCosmetic(True)
        pen.setWidthF(2.0)
        outline.setPen(pen)
        self.viewer.view_box.addItem(outline)
        self._outline = outline
        self.viewer.zoom_to(self.bbox)


class EvidenceDialog(QDialog):
    """Non-modal: the region of a decision on its radiograph, and the region's verdict history.

    Parameters
    ----------
    store : core.store.Store
    decision : dict
        A ``Store.decisions`` row (needs radiograph_id, radiograph_path, radiograph_sha256,
        region_id, bbox, scan_id).
    """

    def __init__(self, store, decision: dict, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowModality(Qt.WindowModality.NonModal)
        self.decision = decision
        where = f"region {decision['region_id']}" if decision["region_id"] else \
            f"missed indication {decision['bbox']}"
        self.setWindowTitle(f"Evidence: {file_name(decision['radiograph_path'])}, {where}")
        self.region_view = RegionView(self)
        self.title = QLabel(
            f"{decision['radiograph_path']}  |  {where}, box {decision['bbox']}  |  scan "
            f"{decision['scan_id'] or '-'}, model {decision.get('model_name') or '-'}")
        self.title.setWordWrap(True)
        self.history = RowsModel(HISTORY_COLUMNS, parent=self,
                                 style=lambda r: (None if r["current"] else GREY, None))
        self.history.set_rows(region_history(
            store, radiograph_id=decision["radiograph_id"], region_id=decision["region_id"],
            bbox=decision["bbox"]))
        self.table = QTableView(self)
        self.table.setModel(self.history)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, parent=self)
        buttons.rejected.connect(self.close)
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(self.region_view)
        split.addWidget(self.table)
        split.setSizes([420, 200])
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(split, 1)
        layout.addWidget(buttons)
        self.resize(900, 720)
        radiograph, why = load_checked(decision["radiograph_path"],
                                       decision.get("radiograph_sha256"))
        self.region_view.show_region(radiograph, decision["bbox"], note=why)
