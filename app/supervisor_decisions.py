"""The supervisor's table of all decisions: filters, sorting, evidence, overrule and exports."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QDate, Qt
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDateEdit, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QPushButton,
    QTableView, QVBoxLayout, QWidget,
)

from app.supervisor_overrule import OverruleBox
from app.supervisor_tables import (
    GREY, UNSURE_BG, Column, RowsModel, decision_status, file_name, verdict_label, when,
)
from app.verdicts import VERDICTS


def _region_text(row: dict) -> str:
    return f"region {row['region_id']}" if row["region_id"] else "missed"


def _model_text(row: dict) -> str | None:
    if row["model_sha256"] is None:
        return None
    return row["model_name"] or row["model_sha256"][:8]


DECISION_COLUMNS = [
    Column("#", lambda r: r["id"]),
    Column("Time (UTC)", lambda r: r["time"], when),
    Column("User", lambda r: r["user"]),
    Column("Verdict", lambda r: r["verdict"], verdict_label),
    Column("Status", decision_status),
    Column("ISO 6520", lambda r: r["iso_code"]),
    Column("Size (mm)", lambda r: r["size_mm"], lambda v: "" if v is None else f"{v:.2f}"),
    Column("Region", _region_text),
    Column("Severity", lambda r: r["severity"], lambda v: "" if v is None else f"{v:.2f}"),
    Column("Tests", lambda r: r["tests"]),
    Column("Radiograph", lambda r: r["radiograph_path"], file_name),
    Column("Model", _model_text),
    Column("FPR", lambda r: r["fpr"], lambda v: "" if v is None else f"{v:g}"),
    Column("Reason", lambda r: r["reason"]),
    Column("Comment", lambda r: r["comment"]),
]


def _decision_style(row: dict):
    fg = None if row["current"] else GREY
    bg = UNSURE_BG if row["verdict"] == "unsure" and row["current"] else None
    return fg, bg


class DecisionsTab(QWidget):
    """Filters over ``Store.decisions``, the table, and what can be done with a selected row.

    ``host`` is the :class:`app.supervisor.SupervisorWindow` (store, user, messages, evidence,
    overrule).
    """

    def __init__(self, host, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.store = host.store
        self._build()
        self.reload_choices()
        self.refresh()
        self.table.resizeColumnsToContents()

    # ----- construction
    def _build(self) -> None:
        self.interpreter = QComboBox()
        self.verdict = QComboBox()
        self.verdict.addItem("(any verdict)", None)
        for value, (_, label) in VERDICTS.items():
            self.verdict.addItem(label, value)
        self.model_choice = QComboBox()
        self.radiograph = QComboBox()
        self.radiograph.setMinimumContentsLength(18)
        today = QDate.currentDate()
        self.since_on, self.since = QCheckBox("From"), QDateEdit(today.addDays(-30))
        self.until_on, self.until = QCheckBox("to"), QDateEdit(today)
        for edit in (self.since, self.until):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
            edit.setToolTip("Dates in UTC, as the verdict times are stored; 'to' includes "
                            "that whole day")
        self.unsure_only = QCheckBox("Unsure only")
        self.unsure_only.setToolTip("Only the regions interpreters escalated as unsure")
        self.current_only = QCheckBox("In force only")
        self.current_only.setToolTip("Leave out superseded verdicts and blind second reviews")
        for combo in (self.interpreter, self.verdict, self.model_choice, self.radiograph):
            combo.currentIndexChanged.connect(self.refresh)
        for box in (self.since_on, self.until_on, self.unsure_only, self.current_only):
            box.toggled.connect(self.refresh)
        for edit in (self.since, self.until):
            edit.dateChanged.connect(self.refresh)
        self.unsure_only.toggled.connect(lambda on: self.verdict.setEnabled(not on))

        filters = QHBoxLayout()
        for label, w in (("User", self.interpreter), (None, self.since_on), (None, self.since),
                         (None, self.until_on), (None, self.until), ("Verdict", self.verdict),
                         ("Model", self.model_choice), ("Radiograph", self.radiograph),
                         (None, self.unsure_only), (None, self.current_only)):
            if label:
                filters.addWidget(QLabel(label))
            filters.addWidget(w)
        filters.addStretch(1)

        self.model = RowsModel(DECISION_COLUMNS, style=_decision_style, parent=self)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setWordWrap(False)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.table.activated.connect(lambda index: self.open_evidence(index.row()))
        self.table.selectionModel().currentRowChanged.connect(lambda *_: self._on_selection())

        self.count = QLabel("")
        self.evidence_button = QPushButton("Show evidence  [Enter]")
        self.evidence_button.clicked.connect(lambda: self.open_evidence())
        self.csv_button = QPushButton("Export CSV (filtered)...")
        self.csv_button.clicked.connect(self.export_csv_dialog)
        self.pdf_button = QPushButton("PDF report of the radiograph...")
        self.pdf_button.setToolTip("The report of the selected decision's radiograph (or of the "
                                   "radiograph chosen in the filter)")
        self.pdf_button.clicked.connect(self.export_pdf_dialog)
        actions = QHBoxLayout()
        for w in (self.count, self.evidence_button, self.csv_button, self.pdf_button):
            actions.addWidget(w)
        actions.insertStretch(1, 1)
        self.overrule_box = OverruleBox(self)
        self.overrule_box.overrule_requested.connect(self._overrule_selected)

        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)
        layout.addLayout(actions)
        layout.addWidget(self.overrule_box)

    # ----- data
    def reload_choices(self) -> None:
        """Fill the user, model and radiograph choices from the store, keeping the selection."""

        def refill(combo: QComboBox, empty: str, items: list[tuple[str, object]]) -> None:
            keep = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(empty, None)
            for text, data in items:
                combo.addItem(text, data)
            combo.setCurrentIndex(max(combo.findData(keep), 0) if keep is not None else 0)
            combo.blockSignals(False)

        refill(self.interpreter, "(everyone)",
               [(f"{u.name} ({u.role})", u.name) for u in self.store.users()])
        refill(self.model_choice, "(any model)",
               [(f"{m['name'] or 'model'} {m['sha256'][:8]}", m["id"])
                for m in self.store.models()])
        refill(self.radiograph, "(any radiograph)",
               [(f"{file_name(r['path'])} (#{r['id']})", r["id"])
                for r in self.store.radiographs()])

    def filters(self) -> dict:
        """The chosen filters as keyword arguments of ``Store.decisions``."""
        out: dict = {}
        if self.interpreter.currentData():
            out["interpreter"] = self.interpreter.currentData()
        if self.since_on.isChecked():
            out["since"] = self.since.date().toPython()
        if self.until_on.isChecked():
            out["until"] = self.until.date().toPython()
        if self.unsure_only.isChecked():
            out["unsure_only"] = True
        elif self.verdict.currentData():
            out["verdict"] = self.verdict.currentData()
        if self.model_choice.currentData() is not None:
            out["model"] = int(self.model_choice.currentData())
        if self.radiograph.currentData() is not None:
            out["radiograph"] = int(self.radiograph.currentData())
        if self.current_only.isChecked():
            out["current_only"] = True
        return out

    def refresh(self) -> None:
        """Query the store with the filters and show the rows."""
        selected = self.selected()
        try:
            rows = self.store.decisions(**self.filters())
        except Exception as exc:  # noqa: BLE001 - a store failure is a message, not a crash
            self.host.message(f"Cannot read the decisions: {exc}", error=True)
            rows = []
        self.model.set_rows(rows)
        total = len(rows)
        unsure = sum(1 for r in rows if r["current"] and r["verdict"] == "unsure")
        self.count.setText(f"{total} decision{'s' if total != 1 else ''} shown, {unsure} "
                           "unsure in force")
        if selected is not None:
            self.select_decision(selected["id"])
        self._on_selection()

    def selected(self) -> dict | None:
        index = self.table.currentIndex()
        return self.model.row(index.row()) if index.isValid() else None

    def select_decision(self, verdict_id: int) -> bool:
        """Make the row of verdict ``verdict_id`` current; False if it is not shown."""
        row = self.model.find(lambda r: r["id"] == verdict_id)
        if row is None:
            return False
        self.table.selectRow(row)
        self.table.setCurrentIndex(self.model.index(row, 0))
        return True

    def _on_selection(self) -> None:
        row = self.selected()
        if row is None:
            self.overrule_box.set_target(None)
        elif not row["current"]:
            self.overrule_box.set_target(None, why_not=f"#{row['id']} is not the decision in "
                                         f"force ({decision_status(row)}).")
        else:
            self.overrule_box.set_target(
                f"#{row['id']}: {row['user']} said {verdict_label(row['verdict'])} "
                f"({_region_text(row)}, {file_name(row['radiograph_path'])})",
                verdict=row["verdict"])
        self.evidence_button.setEnabled(row is not None)

    # ----- actions
    def open_evidence(self, row: int | None = None) -> None:
        """Show the evidence of table row ``row`` (default: the selected one)."""
        decision = self.model.row(row) if row is not None else self.selected()
        if decision is None:
            self.host.message("Select a decision first.")
            return
        self.host.open_evidence_for(decision)

    def _overrule_selected(self, verdict: str, reason: str) -> None:
        row = self.selected()
        if row is not None and self.host.overrule(row["id"], verdict, reason) is not None:
            self.overrule_box.reason.clear()

    def export_csv_dialog(self) -> None:
        """Ask where to write the CSV (non-blocking dialog), then :meth:`export_csv_to`."""
        dialog = QFileDialog(self, "Export the shown decisions as CSV", str(Path.home()),
                             "CSV files (*.csv)")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix("csv")
        dialog.selectFile("decisions.csv")
        dialog.fileSelected.connect(self.export_csv_to)
        dialog.open()
        self.file_dialog = dialog

    def export_csv_to(self, path):
        """Write the decisions the filters select to ``path`` (recorded in the audit trail)."""
        from core.export import export_csv

        try:
            result = export_csv(self.store, path, user=self.host.user, **self.filters())
        except Exception as exc:  # noqa: BLE001
            self.host.message(f"CSV export failed: {exc}", error=True)
            return None
        self.host.message(f"Wrote {result.rows} decisions to {result.path} (sha256 "
                          f"{result.sha256[:12]}..., audit row {result.audit_id}).")
        self.host.refresh_audit()
        return result

    def report_radiograph(self) -> int | None:
        """The radiograph a PDF report is for: the selected row's, else the filter's."""
        row = self.selected()
        if row is not None:
            return row["radiograph_id"]
        return self.radiograph.currentData()

    def export_pdf_dialog(self) -> None:
        rid = self.report_radiograph()
        if rid is None:
            self.host.message("Select a decision (or a radiograph in the filter) first.")
            return
        dialog = QFileDialog(self, "PDF report of the radiograph", str(Path.home()),
                             "PDF files (*.pdf)")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix("pdf")
        dialog.selectFile(f"report_radiograph_{rid}.pdf")
        dialog.fileSelected.connect(lambda p: self.export_pdf_to(p, radiograph_id=rid))
        dialog.open()
        self.file_dialog = dialog

    def export_pdf_to(self, path, *, radiograph_id: int | None = None):
        """Write the PDF report of ``radiograph_id`` (default :meth:`report_radiograph`)."""
        from app.report import write_report

        rid = radiograph_id if radiograph_id is not None else self.report_radiograph()
        if rid is None:
            self.host.message("Select a decision (or a radiograph in the filter) first.")
            return None
        try:
            result = write_report(self.store, rid, path, user=self.host.user)
        except Exception as exc:  # noqa: BLE001
            self.host.message(f"PDF report failed: {exc}", error=True)
            return None
        self.host.message(f"Wrote the report of radiograph {rid} to {result.path}.")
        self.host.refresh_audit()
        return result
