"""The model manager: versions with provenance and qualification, activate/rollback, training set.

Supervisors activate a qualified version (or an unqualified one with a justification) and roll
back; anyone may run a qualification (in the background), look at what each version was trained
on, and review the okay patches that set its thresholds (app/calibration_review.py). The
training-set tab lists the entries made from verdicts; supervisors exclude them (with a reason)
or include them again.
"""

from __future__ import annotations

import json

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QDialog, QHBoxLayout, QInputDialog, QLabel, QPlainTextEdit, QPushButton,
    QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget,
)

from app.worker import JobRunner, error_message

VERSION_COLUMNS = ("", "Id", "Name", "sha256", "Parent", "Entries", "Qualification", "Activated by",
                   "Activated at")
ENTRY_COLUMNS = ("Id", "Kind", "Split", "Verdict", "Radiograph", "Box", "Source", "Pixels", "State")


def _item(text) -> QTableWidgetItem:
    item = QTableWidgetItem("" if text is None else str(text))
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    return item


def _films_left_out(path) -> str:
    """Each calibration film left out, in one clause (core.film_check), from the model's file."""
    from core.film_check import check_model, summary
    from core.modelfile import read_metadata

    try:
        return summary(check_model(read_metadata(path)))
    except (OSError, ValueError) as exc:  # ModelFileError: moved or damaged
        return f"calibration films left out: not known ({error_message(exc)})"


def _qual_text(q) -> str:
    if q is None:
        return "not qualified"
    return ("passed" if q["passed"] else "FAILED") + f" (#{q['id']})"


class ModelManager(QDialog):
    """Model versions and the training set of one database.

    Signals
    -------
    activated(str)
        The path of the model made active (the main window switches to it).
    """

    activated = Signal(str)
    thresholds_changed = Signal(str)  # the path of a model whose calibration review changed them

    def __init__(self, store, user, parent=None, *, images=None):
        super().__init__(parent)
        self.setWindowTitle("Model versions")
        self.setModal(False)
        self.store, self.user, self.images = store, user, images
        self.messages: list[str] = []
        self.last_qualification = None
        self.runner = JobRunner(self)
        self.runner.succeeded.connect(self._on_qualified)
        self.runner.failed.connect(self._say)
        self.runner.finished.connect(lambda: self.qualify_button.setEnabled(True))

        tabs = QTabWidget()
        tabs.addTab(self._versions_tab(), "Versions")
        tabs.addTab(self._entries_tab(), "Training set")
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(tabs)
        layout.addWidget(self.status)
        self.resize(1000, 640)
        self.refresh()

    # ----- layout -------------------------------------------------------------------------
    def _versions_tab(self) -> QWidget:
        w = QWidget()
        self.versions = QTableWidget(0, len(VERSION_COLUMNS))
        self.versions.setHorizontalHeaderLabels(VERSION_COLUMNS)
        self.versions.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.versions.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.versions.itemSelectionChanged.connect(self._show_details)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.qualify_button = QPushButton("Qualify against active")
        self.qualify_button.clicked.connect(lambda: self.qualify_selected())
        self.activate_button = QPushButton("Activate...")
        self.activate_button.clicked.connect(self._activate_clicked)
        self.rollback_button = QPushButton("Roll back")
        self.rollback_button.clicked.connect(self._rollback_clicked)
        self.review_button = QPushButton("Review calibration...")
        self.review_button.clicked.connect(lambda: self.open_calibration_review())
        row = QHBoxLayout()
        for b in (self.qualify_button, self.activate_button, self.rollback_button, self.review_button):
            row.addWidget(b)
        row.addStretch(1)
        lay = QVBoxLayout(w)
        lay.addWidget(self.versions, 3)
        lay.addLayout(row)
        lay.addWidget(self.details, 2)
        return w

    def _entries_tab(self) -> QWidget:
        w = QWidget()
        self.entries = QTableWidget(0, len(ENTRY_COLUMNS))
        self.entries.setHorizontalHeaderLabels(ENTRY_COLUMNS)
        self.entries.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.exclude_button = QPushButton("Exclude...")
        self.exclude_button.clicked.connect(self._exclude_clicked)
        self.include_button = QPushButton("Include again")
        self.include_button.clicked.connect(lambda: self.set_selected_excluded(False, reason="included again"))
        row = QHBoxLayout()
        row.addWidget(self.exclude_button)
        row.addWidget(self.include_button)
        row.addStretch(1)
        lay = QVBoxLayout(w)
        lay.addWidget(self.entries)
        lay.addLayout(row)
        return w

    # ----- state --------------------------------------------------------------------------
    def is_supervisor(self) -> bool:
        return self.store.is_supervisor(self.user)

    def refresh(self) -> None:
        from core import training_set as ts
        from core.retraining import versions

        self.version_rows = versions(self.store)
        self.versions.setRowCount(len(self.version_rows))
        for i, v in enumerate(self.version_rows):
            cells = ("active" if v["active"] else "", v["id"], v["name"], v["sha256"][:12],
                     (v["parent"] or "")[:12], len(v["entry_ids"]), _qual_text(v["qualification"]),
                     v["activated_by"], v["activated_at"])
            for j, text in enumerate(cells):
                self.versions.setItem(i, j, _item(text))
        self.entry_rows = ts.entries(self.store)
        self.entries.setRowCount(len(self.entry_rows))
        for i, e in enumerate(self.entry_rows):
            state = f"excluded: {e.exclusion_reason}" if e.excluded else "in use"
            cells = (e.id, e.kind, e.split, e.verdict_id, e.radiograph_path, list(e.bbox), e.source,
                     e.n_pixels, state)
            for j, text in enumerate(cells):
                self.entries.setItem(i, j, _item(text))
        supervisor = self.is_supervisor()
        for b in (self.activate_button, self.rollback_button, self.exclude_button, self.include_button):
            b.setEnabled(supervisor)
            b.setToolTip("" if supervisor else "supervisors only")

    def select_model(self, model_id: int) -> None:
        for i, v in enumerate(self.version_rows):
            if v["id"] == model_id:
                self.versions.selectRow(i)
                return
        raise ValueError(f"no model {model_id} in the list")

    def selected_model(self) -> dict | None:
        rows = self.versions.selectionModel().selectedRows()
        return self.version_rows[rows[0].row()] if rows else None

    def _show_details(self) -> None:
        v = self.selected_model()
        if v is None:
            self.details.setPlainText("")
            return
        lines = [f"Model {v['id']}: {v['name']}", f"sha256 {v['sha256']}", f"file {v['path']}",
                 f"parent {v['parent'] or '-'}"]
        if v["provenance"]:
            lines.append("provenance: " + json.dumps(v["provenance"], indent=1, default=str))
        if v["thresholds"]:
            from core.calibration import Thresholds, describe

            try:  # with its zones: a supervisor picks a model on them
                t = Thresholds.from_dict(v["thresholds"])
                lines.append(f"thresholds: {describe(t)}; FPR target {t.fpr_target:g}, achieved "
                             f"{t.fpr_achieved:.4g} on {t.n_okay} patches")
            except (KeyError, TypeError, ValueError):  # a record written by another version
                lines.append("thresholds: " + json.dumps(v["thresholds"], default=str))
            lines.append(_films_left_out(v["path"]))
        q = v["qualification"]
        if q is not None:
            lines.append(f"qualification #{q['id']}: {'passed' if q['passed'] else 'FAILED'}: "
                         f"{q['result']['reason']}")
            for name, c in q["result"]["candidate"].items():
                r = q["result"]["reference"].get(name)
                ref = "" if r is None else f"  active {r['rate']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
                lines.append(f"  {name:<30} n={c['n']:<5} candidate {c['rate']:.3f} "
                             f"[{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]{ref}")
        self.details.setPlainText("\n".join(lines))

    def _say(self, text: str) -> None:
        self.messages.append(text)
        self.status.setText(text)

    # ----- actions ------------------------------------------------------------------------
    def qualify_selected(self, *, n_okay: int | None = None, n_synthetic: int | None = None) -> None:
        """Qualify the selected version against the active one, in the background."""
        v = self.selected_model()
        if v is None:
            self._say("Select a model version to qualify.")
            return
        from core.qualification import DEFAULT_N_OKAY, DEFAULT_N_SYNTHETIC, qualify
        from core.store import Store

        path, user, images = self.store.path, self.user, self.images
        options = dict(n_okay=n_okay or DEFAULT_N_OKAY, n_synthetic=n_synthetic or DEFAULT_N_SYNTHETIC)

        def job(progress, cancel):
            with Store(path) as store:
                return qualify(store, v["id"], user=user, images=images, cancel=cancel, **options)

        self.qualify_button.setEnabled(False)
        self._say(f"Qualifying model {v['id']} against the active model...")
        self.runner.start(job, name="qualify")

    def _on_qualified(self, q) -> None:
        self.last_qualification = q
        self._say(f"Qualification #{q.id}: {'passed' if q.passed else 'FAILED'}: {q.reason}")
        self.refresh()

    def activate_selected(self, justification: str | None = None) -> bool:
        """Activate the selected version (supervisor); True when it became active."""
        from core.retraining import activate

        v = self.selected_model()
        if v is None:
            self._say("Select a model version to activate.")
            return False
        try:
            activate(self.store, v["id"], user=self.user, justification=justification)
        except (ValueError, PermissionError) as exc:
            self._say(error_message(exc))
            return False
        self._say(f"Model {v['id']} is active.")
        self.refresh()
        self.activated.emit(str(v["path"]))
        return True

    def _activate_clicked(self) -> None:
        v = self.selected_model()
        if v is None:
            self._say("Select a model version to activate.")
            return
        q = v["qualification"]
        justification = None
        if q is None or not q["passed"]:
            text, ok = QInputDialog.getMultiLineText(
                self, "Activate without a passed qualification",
                f"Model {v['id']} has {'no passed' if q else 'no'} qualification against the active "
                "model. Why activate it anyway? (recorded in the audit trail)")
            if not ok or not text.strip():
                return
            justification = text
        self.activate_selected(justification)

    def rollback(self, *, to: int | None = None, justification: str | None = None) -> bool:
        """Activate the previously active version (supervisor)."""
        from core.retraining import rollback

        try:
            rollback(self.store, user=self.user, to=to, justification=justification)
        except (ValueError, PermissionError) as exc:
            self._say(error_message(exc))
            return False
        active = self.store.active_model()
        self._say(f"Rolled back: model {active['id']} is active.")
        self.refresh()
        self.activated.emit(str(active["path"]))
        return True

    def _rollback_clicked(self) -> None:
        self.rollback()

    def set_selected_excluded(self, excluded: bool, *, reason: str) -> int:
        """Exclude (or include) the selected training entries; returns how many changed."""
        from core import training_set as ts

        rows = sorted({i.row() for i in self.entries.selectionModel().selectedRows()})
        done = 0
        for r in rows:
            try:
                ts.set_excluded(self.store, self.entry_rows[r].id, excluded, user=self.user, reason=reason)
                done += 1
            except (ValueError, PermissionError) as exc:
                self._say(error_message(exc))
                break
        self.refresh()
        return done

    def _exclude_clicked(self) -> None:
        text, ok = QInputDialog.getText(self, "Exclude from training", "Reason (recorded):")
        if ok and text.strip():
            n = self.set_selected_excluded(True, reason=text.strip())
            self._say(f"{n} training entries excluded.")

    def open_calibration_review(self):
        """Open the calibration review of the selected version's file (non-modal); it or None."""
        from pathlib import Path

        from app.calibration_review import CalibrationReview

        v = self.selected_model()
        if v is None:
            self._say("Select a model version to review its calibration.")
            return None
        if not v["path"] or not Path(v["path"]).is_file():
            self._say(f"Model {v['id']}'s file is missing ({v['path'] or 'no path recorded'}): its "
                      "calibration cannot be reviewed.")
            return None
        dialog = CalibrationReview(self.store, self.user, v["path"], self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.thresholds_changed.connect(lambda _: (self.refresh(), self._show_details(),
                                                     self.thresholds_changed.emit(str(v["path"]))))
        dialog.show()
        return dialog

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        if self.runner.is_running():
            self.runner.shutdown()
        from app.calibration_review import CalibrationReview

        for review in self.findChildren(CalibrationReview):  # their background loads stop
            review.close()
        super().closeEvent(event)


def open_model_manager(main_window) -> ModelManager | None:
    """Open the (modeless) model manager; an activation switches the main window's model."""
    if getattr(main_window, "store", None) is None:
        main_window.show_error("The model manager needs the review database (open the application with a user).")
        return None
    manager = getattr(main_window, "_model_manager", None)
    if manager is None:
        manager = ModelManager(main_window.store, main_window.user, main_window)
        if hasattr(main_window, "use_model"):
            from pathlib import Path

            manager.activated.connect(lambda path: main_window.use_model(Path(path)))
            manager.thresholds_changed.connect(lambda path: main_window.thresholds_changed_on_disk(Path(path)))
        main_window._model_manager = manager
    manager.refresh()
    manager.show()
    manager.raise_()
    return manager
