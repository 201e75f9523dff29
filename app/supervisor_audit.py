"""The audit trail: every recorded event in a table, and the check of its hash chain.

Verify checks the whole chain (``Store.verify``): intact, or the first broken row (selected and
shown in red). The head (row id and hash) is shown to be noted down; pasted back later as the
anchor ("id:hash"), it also catches a chain rewritten from some row on or cut at the end.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton, QTableView, QVBoxLayout, QWidget,
)

from app.supervisor_tables import RED, Column, RowsModel, when
from core.audit import canonical_json

AUDIT_COLUMNS = [
    Column("#", lambda r: r["id"]),
    Column("Time (UTC)", lambda r: r["time"], when),
    Column("User", lambda r: r["user"]),
    Column("Event", lambda r: r["event"]),
    Column("Entity", lambda r: r["entity"]),
    Column("Entity id", lambda r: r["entity_id"]),
    Column("Hash", lambda r: r["hash"], lambda v: (v or "")[:16]),
    Column("Details", lambda r: canonical_json(r["details"]),
           lambda v: v if len(v) <= 240 else v[:237] + "..."),
]


def parse_anchor(text: str) -> tuple[int, str] | None:
    """'id:hash' as (id, hash); None for an empty text; ValueError saying the form otherwise."""
    text = text.strip()
    if not text:
        return None
    rid, sep, digest = text.partition(":")
    if not sep or not rid.strip().isdigit() or len(digest.strip()) != 64:
        raise ValueError("the anchor is 'row id:hash' as printed by a verification, e.g. "
                         "'42:3fa9...' with the 64-character hash")
    return int(rid), digest.strip()


class AuditTab(QWidget):
    """The audit log (``Store.audit_log``) and the chain check (``Store.verify``)."""

    def __init__(self, host, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.store = host.store
        self.report = None
        self.model = RowsModel(AUDIT_COLUMNS, parent=self, style=self._style)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # chain order
        self.table.setWordWrap(False)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.verify_button = QPushButton("Verify the chain")
        self.verify_button.clicked.connect(lambda: self.verify())
        self.anchor = QLineEdit()
        self.anchor.setPlaceholderText("anchor noted earlier, 'row id:hash' (optional)")
        self.copy_button = QPushButton("Copy head")
        self.copy_button.setToolTip("Copy the head 'row id:hash' to note it down as an anchor")
        self.copy_button.clicked.connect(self.copy_head)
        self.state = QLabel("Not verified yet.")
        self.state.setWordWrap(True)
        self.head = QLabel("")
        self.head.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row = QHBoxLayout()
        row.addWidget(self.verify_button)
        row.addWidget(self.anchor, 1)
        row.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.state)
        layout.addWidget(self.head)
        layout.addWidget(self.table, 1)
        self.refresh()
        self.table.resizeColumnsToContents()
        header.resizeSection(len(AUDIT_COLUMNS) - 1, 600)

    def _style(self, row: dict):
        if self.report is not None and not self.report.ok and \
                row["id"] == self.report.first_broken_id:
            return RED, None
        return None, None

    def refresh(self) -> None:
        try:
            rows = self.store.audit_log()
        except Exception as exc:  # noqa: BLE001 - an unreadable row is a message, not a crash
            self.host.message(f"Cannot read the audit log: {exc}", error=True)
            rows = []
        self.model.set_rows(rows)

    def verify(self, anchor: tuple[int, str] | None = None):
        """Check the chain (against ``anchor`` or the one typed in); show and return the report."""
        try:
            anchor = anchor if anchor is not None else parse_anchor(self.anchor.text())
            report = self.store.verify(anchor=anchor)
        except Exception as exc:  # noqa: BLE001
            self.state.setText(f"Cannot verify: {exc}")
            self.host.message(self.state.text(), error=True)
            return None
        self.report = report
        self.refresh()
        if report.ok:
            self.state.setText(f"OK: {report.message}.")
            self.state.setStyleSheet("color: #008000;")
        else:
            where = f" (first broken row {report.first_broken_id})" \
                if report.first_broken_id is not None else ""
            self.state.setText(f"BROKEN{where}: {report.message}.")
            self.state.setStyleSheet("color: #c80000; font-weight: bold;")
            self.select_row(report.first_broken_id)
        self.head.setText(f"Head anchor: {report.head_id}:{report.head_hash}"
                          if report.head_id is not None else "Head anchor: (empty log)")
        self.host.message(self.state.text(), error=not report.ok)
        return report

    def select_row(self, audit_id: int | None) -> bool:
        row = self.model.find(lambda r: r["id"] == audit_id) if audit_id is not None else None
        if row is None:
            return False
        self.table.selectRow(row)
        self.table.scrollTo(self.model.index(row, 0))
        return True

    def head_anchor(self) -> str | None:
        report = self.report
        if report is None or report.head_id is None:
            return None
        return f"{report.head_id}:{report.head_hash}"

    def copy_head(self) -> None:
        text = self.head_anchor()
        if text:
            QGuiApplication.clipboard().setText(text)
            self.host.message(f"Copied the head anchor {text[:24]}...")
