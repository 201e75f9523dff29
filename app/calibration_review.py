"""Calibration review: the okay patches that set a model's thresholds, and their exclusion.

A model's thresholds are set by the few highest-scoring "okay" patches of its calibration films.
When one of those patches holds an indication the film's defect mask misses (a pore, a scratch, a
processing mark), it sets the operating point and every scan becomes less sensitive. This dialog
lists those patches for one model file (``core.calibration_review.tail``), shows the selected one
as the model sees it next to its residual (loaded in the background: it runs the model), and lets
a supervisor exclude patches that are not accepted weld, or include them again, with a reason.
The thresholds are re-derived at once and the change is an audit event in the review database.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView, QDialog, QGraphicsRectItem, QHBoxLayout, QInputDialog, QLabel, QPushButton,
    QSplitter, QStackedWidget, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from app.worker import JobRunner, error_message
from core.errors import CalibrationError, StoreError
from core.residual import zone_spans

GREY = QColor(128, 128, 128)
RESIDUAL_SPAN = 2.0  # the residual's colour scale: +- this many times the interior |mean| threshold
CHANGE_ERRORS = (ValueError, CalibrationError, StoreError, OSError)


def _item(text, *, align_right: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(str(text))
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if align_right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


def _position(t) -> tuple[str, str]:
    """Film and (row, col) of a tail patch, for the table."""
    if t.origin is None:
        return "(origin not recorded)", ""
    return t.origin.film, f"({t.origin.centre[0]:.0f}, {t.origin.centre[1]:.0f})"


def _status(t) -> str:
    return "" if t.excluded is None else f"excluded by {t.excluded['user']}: {t.excluded['reason']}"


def threshold_change(before, after) -> str:
    """``|mean| threshold a -> b`` and whichever other threshold changed, for the status line."""
    parts = [f"|mean| threshold {before.mean:.4g} -> {after.mean:.4g}"]
    changes = [("std", before.std, after.std)]
    for zone, (m0, s0), (m1, s1) in zip(zone_names(after), before.zone_pairs(), after.zone_pairs()):
        zone = zone if zone == "band" else f"{zone} zone"
        changes += [(f"{zone} |mean|", m0, m1), (f"{zone} std", s0, s1)]
    for name, a, b in changes:
        if a != b:
            parts.append(f"{name} {a:.4g} -> {b:.4g}")
    return ", ".join(parts) + (" (thresholds unchanged)" if before == after else "")


def zone_names(thr) -> list[str]:
    """Each zone of ``thr`` as the table and the status line name it: ``band``, ``32-48 px``, or the
    labels of slope zones (``slope 0.0019-0.0053``) and of zones around a bead (``HAZ``,
    ``bead 0-32 px``); [] without zones or thresholds."""
    if thr is None:
        return []
    if thr.slope_zones or thr.has_haz:
        return thr.zone_labels()
    return ["band" if k == 0 else f"{a}-{b} px" for k, (a, b) in enumerate(zone_spans(thr.band_bounds))]


class CalibrationReview(QDialog):
    """The calibration tail of one model file; supervisors exclude / include patches.

    Signals
    -------
    thresholds_changed(object)
        The ``core.calibration.Thresholds`` now in force, after an exclusion or inclusion.
    """

    thresholds_changed = Signal(object)

    def __init__(self, store, user, model_path, parent=None, *, top: int | None = None):
        super().__init__(parent)
        from core.calibration_review import DEFAULT_TOP

        self.setModal(False)
        self.store, self.user, self.model_path = store, user, Path(model_path)
        self.top = top or DEFAULT_TOP
        self.setWindowTitle(f"Calibration review: {self.model_path.name}")
        self.metadata: dict = {}
        self.thresholds = None
        self.rows: list = []  # core.calibration_review.TailPatch, in table order
        self.shown: dict | None = None  # the review item on view (patch/residual or error)
        self.messages: list[str] = []
        self._bundle = None  # the loaded model, kept for the next patch
        self._wanted: int | None = None  # patch index the selection asks to see
        self._loading: int | None = None  # patch index of the load running or last run
        self.runner = JobRunner(self)
        self.runner.succeeded.connect(self._on_loaded)
        self.runner.failed.connect(self._on_load_failed)
        self.runner.finished.connect(self._load_wanted)

        self.header = QLabel()
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.TextFormat.PlainText)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.films = QLabel()  # each calibration film left out (core.film_check)
        self.films.setWordWrap(True)
        self.films.setTextFormat(Qt.TextFormat.PlainText)
        self.films.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, 0)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.exclude_button = QPushButton("Exclude selected...")
        self.exclude_button.clicked.connect(lambda: self._ask_and_change(True))
        self.spot_button = QPushButton("Exclude the spot...")
        self.spot_button.setToolTip("Exclude every calibration patch whose aperture holds the shown "
                                    "patch's strongest residual (a scratch or pore lies in several)")
        self.spot_button.clicked.connect(self._ask_and_exclude_spot)
        self.include_button = QPushButton("Include again...")
        self.include_button.clicked.connect(lambda: self._ask_and_change(False))
        buttons = QHBoxLayout()
        buttons.addWidget(self.exclude_button)
        buttons.addWidget(self.spot_button)
        buttons.addWidget(self.include_button)
        buttons.addStretch(1)
        left = QWidget()
        lay = QVBoxLayout(left)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.table)
        lay.addLayout(buttons)
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(self._patch_view())
        splitter.setSizes([700, 600])
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.header)
        layout.addWidget(self.films)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.status)
        self.resize(1300, 640)
        self.refresh()

    # ----- layout -------------------------------------------------------------------------
    def _patch_view(self) -> QWidget:
        """The selected patch as the model sees it and its residual, or a message instead."""
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("#2b2b2b")
        self.patch_item = pg.ImageItem(axisOrder="row-major")
        self.residual_item = pg.ImageItem(axisOrder="row-major")
        self.residual_item.setColorMap(pg.colormap.get("CET-D1"))  # blue (dark) - white - red
        self.graphics.addLabel("as the model sees it", row=0, col=0)
        self.residual_title = self.graphics.addLabel("residual", row=0, col=1)
        for col, item in enumerate((self.patch_item, self.residual_item)):
            box = self.graphics.addViewBox(row=1, col=col, lockAspect=True, invertY=True,
                                           enableMouse=False)
            box.addItem(item)
        # the model's aperture inside the patch: what the residual covers
        from core.model import APERTURE, OFFSET

        aperture = QGraphicsRectItem(OFFSET - 0.5, OFFSET - 0.5, APERTURE, APERTURE)
        aperture.setPen(pg.mkPen((255, 200, 0), width=1, style=Qt.PenStyle.DashLine, cosmetic=True))
        aperture.setParentItem(self.patch_item)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.message)
        self.stack.addWidget(self.graphics)
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(0, 0, 0, 0)
        legend = QLabel("Dashed: the model's aperture, which the residual covers. Residual: blue where "
                        "the film is darker than the model's reconstruction, red where brighter.")
        legend.setWordWrap(True)
        lay.addWidget(self.caption)
        lay.addWidget(self.stack, 1)
        lay.addWidget(legend)
        self._show_message("Select a patch to see it as the model sees it, and its residual.")
        return w

    # ----- state --------------------------------------------------------------------------
    def is_supervisor(self) -> bool:
        return self.store.is_supervisor(self.user)

    def refresh(self) -> None:
        """Read the model's metadata again; refill the header and the table, keeping the selection."""
        from core import calibration_review as review
        from core.calibration import Thresholds, decode_scores, describe
        from core.film_check import check_model, describe_checks
        from core.modelfile import read_metadata

        keep = self.selected_indices()
        try:
            self.metadata = read_metadata(self.model_path)
            self.rows = review.tail(self.metadata, self.top)
        except (ValueError, OSError) as exc:  # ModelFileError, CalibrationError
            self.metadata, self.rows, self.thresholds = {}, [], None
            self.header.setText(f"{self.model_path.name}: {error_message(exc)}")
            self.films.setText("")
        else:
            thr = self.thresholds = Thresholds.from_dict(self.metadata["thresholds"])
            scored = len(decode_scores(self.metadata["okay_scores"]))
            name = self.metadata.get("name") or self.model_path.stem
            self.header.setText(
                f"Model {name} ({self.model_path.name})\n"
                f"Thresholds in force: {describe(thr)}\nFPR target {thr.fpr_target:g}, achieved "
                f"{thr.fpr_achieved:.4f} on {thr.n_okay} okay patches ({scored} scored, "
                f"{len(review.exclusions(self.metadata))} excluded). The {len(self.rows)} patches "
                "nearest the thresholds, highest first; score / threshold above 1 is flagged.")
            self.films.setText(describe_checks(check_model(self.metadata), thr.fpr_target))
        self._fill_table()
        self.select_indices(keep)
        supervisor = self.is_supervisor() and bool(self.rows)
        for b in (self.exclude_button, self.include_button):
            b.setEnabled(supervisor)
            b.setToolTip("" if supervisor else "supervisors only")
        self._update_spot_button()
        if self.shown is not None and "patch" in self.shown:
            self._render(self.shown)  # the residual's scale follows the thresholds

    def _fill_table(self) -> None:
        n_scores = len(self.rows[0].scores) if self.rows else 2
        score_names = ["|mean|", "std"]
        for zone in zone_names(self.thresholds):
            score_names += [f"{zone} |mean|", f"{zone} std"]
        score_names = (score_names + [f"score {j + 1}" for j in range(len(score_names), n_scores)])[:n_scores]
        columns = ["Rank", "#", "Score / thr", *score_names, "Film", "Position (row, col)", "Status"]
        self.table.blockSignals(True)
        self.table.clearSelection()
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(self.rows))
        bold = QFont()
        bold.setBold(True)
        for i, t in enumerate(self.rows):
            cells = [_item(t.rank, align_right=True), _item(t.index, align_right=True),
                     _item(f"{t.ratio:.3f}", align_right=True),
                     *(_item(f"{v:.4f}", align_right=True) for v in t.scores),
                     *(_item(text) for text in _position(t)), _item(_status(t))]
            for j, item in enumerate(cells):
                if t.excluded is not None:
                    item.setForeground(GREY)
                elif j == 2 and t.ratio > 1:
                    item.setFont(bold)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        self.table.blockSignals(False)

    def selected_indices(self) -> list[int]:
        """Patch indices (the ``#`` column) of the selected rows, in table order."""
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.rows[r].index for r in rows if r < len(self.rows)]

    def select_rows(self, rows) -> None:
        """Select these table rows (the first one is shown)."""
        model, sel = self.table.model(), self.table.selectionModel()
        self.table.blockSignals(True)
        self.table.clearSelection()
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        for r in rows:
            sel.select(model.index(int(r), 0), flags)
        if rows:
            sel.setCurrentIndex(model.index(int(rows[0]), 0), QItemSelectionModel.SelectionFlag.NoUpdate)
        self.table.blockSignals(False)
        self._on_selection()

    def select_indices(self, indices) -> None:
        """Select the rows of these patch indices (those still listed)."""
        where = {t.index: r for r, t in enumerate(self.rows)}
        self.select_rows([where[i] for i in indices if i in where])

    # ----- the patch view ------------------------------------------------------------------
    def _on_selection(self) -> None:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        current = self.table.currentRow()
        row = current if current in rows else (rows[0] if rows else None)
        self._wanted = None if row is None or row >= len(self.rows) else self.rows[row].index
        if self._wanted is None:
            self.shown = None
            self.caption.setText("")
            self._show_message("Select a patch to see it as the model sees it, and its residual.")
            return
        if self.shown is not None and self.shown["index"] == self._wanted:
            return
        t = self.rows[row]
        self.caption.setText(f"Patch #{t.index} (rank {t.rank}), {' '.join(_position(t))}")
        from core.calibration_review import origins

        if origins(self.metadata) is None:  # no model run can help
            self.shown = {"index": t.index, "origin": None,
                          "error": "This calibration did not record where its okay patches came "
                                   "from, so they cannot be shown; calibrate the model again "
                                   "(weldreview calibrate) to review them."}
            self._show_message(self.shown["error"])
            return
        self._show_message(f"Loading patch #{t.index}...")
        self._load_wanted()

    def _load_wanted(self) -> None:
        """Start loading the wanted patch, unless a load is running (it starts when that ends)."""
        index = self._wanted
        if index is None or self.runner.is_running() or (self.shown and self.shown["index"] == index):
            return
        from core.calibration_review import review_patches
        from core.modelfile import ModelBundle, load_model

        path, metadata, bundle = self.model_path, dict(self.metadata), self._bundle

        def job(progress, cancel):
            model = bundle.model if bundle is not None else load_model(path).model
            loaded = ModelBundle(model, metadata=metadata, path=path)
            return loaded, review_patches(loaded, [index])[0]

        self._loading = index
        self.runner.start(job, name="calibration-patch")

    def _on_loaded(self, result) -> None:
        self._bundle, item = result
        if item["index"] != self._wanted:
            return  # the selection moved on; the wanted patch loads next
        self.shown = item
        if "error" in item:
            self._show_message(f"The patch cannot be shown: {item['error']}")
        else:
            self._render(item)

    def _on_load_failed(self, message: str) -> None:
        if self._loading != self._wanted:
            return  # the selection moved on; the wanted patch loads next
        self.shown = {"index": self._loading, "origin": None, "error": message}
        self._show_message(f"The patch cannot be shown: {message}")

    def _update_spot_button(self) -> None:
        ready = bool(self.shown and self.shown.get("covering") and self.shown["index"] == self._wanted)
        self.spot_button.setEnabled(self.is_supervisor() and bool(self.rows) and ready)

    def _render(self, item: dict) -> None:
        patch, residual = item["patch"], item["residual"]
        lo, hi = np.percentile(patch, [0.5, 99.5])
        self.patch_item.setImage(patch, autoLevels=False, levels=(float(lo), float(hi) + 1e-6))
        span = RESIDUAL_SPAN * (self.thresholds.mean if self.thresholds else float(np.abs(residual).max()))
        span = max(span, 1e-6)
        self.residual_item.setImage(residual, autoLevels=False, levels=(-span, span))
        self.residual_title.setText(f"residual, ±{span:.3g}")
        self.stack.setCurrentWidget(self.graphics)
        if "spot" in item:
            o = item["origin"]
            self.caption.setText(
                f"Patch #{item['index']}, {o.film} ({o.centre[0]:.0f}, {o.centre[1]:.0f}); its strongest "
                f"residual is at ({item['spot'][0]:.0f}, {item['spot'][1]:.0f}) on the film, inside "
                f"{len(item['covering'])} calibration patch(es)")
        self._update_spot_button()

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
        self.stack.setCurrentWidget(self.message)
        self._update_spot_button()

    # ----- actions ------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.messages.append(text)
        self.status.setText(text)

    def exclude_spot(self, reason: str):
        """Exclude every okay patch over the shown patch's strongest residual; the new Thresholds or None."""
        if not (self.shown and self.shown.get("covering")):
            self._say("Select a patch and wait until it is shown: its spot is found on the film.")
            return None
        return self._change(True, reason, indices=self.shown["covering"])

    def exclude_selected(self, reason: str):
        """Exclude the selected patches (a supervisor, with a reason); the new Thresholds or None."""
        return self._change(True, reason)

    def include_selected(self, reason: str):
        """Include the selected excluded patches again; the new Thresholds or None."""
        return self._change(False, reason)

    def _change(self, excluding: bool, reason: str, *, indices=None):
        from core import calibration_review as review

        before, out_before = self.thresholds, set(review.exclusions(self.metadata))
        change = review.exclude if excluding else review.include
        if indices is not None and excluding:  # a spot: those of its patches not yet excluded
            indices = [i for i in indices if i not in out_before]
        try:
            after = change(self.model_path, self.selected_indices() if indices is None else indices,
                           user=self.user, reason=reason, store=self.store)
        except CHANGE_ERRORS as exc:
            self._say(error_message(exc))
            return None
        self.refresh()
        n = len(out_before ^ set(review.exclusions(self.metadata)))
        done = "excluded" if excluding else "included again"
        text = f"{n} patch{'es' if n != 1 else ''} {done} by {self.user}"
        if before is not None:
            text += "; " + threshold_change(before, after)
        self._say(text)
        self.thresholds_changed.emit(after)
        return after

    def _ask_and_change(self, excluding: bool) -> None:
        n = len(self.selected_indices())
        if not n:
            self._say("Select the patches first.")
            return
        verb = "Exclude" if excluding else "Include again"
        text, ok = QInputDialog.getText(
            self, f"{verb} calibration patches",
            f"{verb} {n} patch{'es' if n != 1 else ''}: why? (recorded in the audit trail)")
        if ok and text.strip():
            self._change(excluding, text.strip())

    def _ask_and_exclude_spot(self) -> None:
        if not (self.shown and self.shown.get("covering")):
            self._say("Select a patch and wait until it is shown: its spot is found on the film.")
            return
        n = len(self.shown["covering"])
        text, ok = QInputDialog.getText(
            self, "Exclude the spot",
            f"Exclude the {n} calibration patch{'es' if n != 1 else ''} over this spot: why? "
            "(recorded in the audit trail)")
        if ok and text.strip():
            self.exclude_spot(text.strip())

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        self._on_selection()  # a load cut short by closing resumes when shown again

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        # Stop here, and let the runner release its thread from the event loop as usual: after
        # JobRunner.shutdown() the old thread's queued finished signal would release the thread of
        # a load started before it arrives (on showing the dialog again).
        self._wanted = None  # nothing new starts when the running load ends
        self.runner.cancel()
        self.runner.wait()
        super().closeEvent(event)
