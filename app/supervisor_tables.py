"""Read-only table models for the supervisor's view: rows, and columns that say how to show them.

Sorting is done by the model itself on each column's raw value (numbers as numbers, missing values
last), so a click on a header sorts ids and scores numerically, not as text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from app.verdicts import VERDICTS

Index = QModelIndex | QPersistentModelIndex
GREY = QColor(128, 128, 128)
RED = QColor(200, 0, 0)
UNSURE_BG = QColor(255, 200, 60, 70)


@dataclass(frozen=True)
class Column:
    """One column: its title, the raw value of a row (used to sort) and how to write it."""

    title: str
    value: Callable[[dict], Any]
    text: Callable[[Any], str] | None = None

    def display(self, row: dict) -> str:
        raw = self.value(row)
        if self.text is not None:
            return self.text(raw)
        if raw is None:
            return ""
        if isinstance(raw, float):
            return f"{raw:.3g}"
        return str(raw)


def when(iso: str | None) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM:SS' (the store keeps UTC)."""
    return "" if not iso else iso[:19].replace("T", " ")


def verdict_label(value: str | None) -> str:
    return VERDICTS[value][1] if value in VERDICTS else (value or "")


def file_name(path: str | None) -> str:
    return Path(path).name if path else ""


def decision_status(row: dict) -> str:
    """'current', 'superseded by #n' or 'blind review of #n' for a Store.decisions row."""
    if row.get("blind"):
        return f"blind review of #{row['review_of']}"
    if row.get("superseded_by"):
        return f"superseded by #{row['superseded_by']}"
    if row.get("verdict") == "withdrawn":
        return f"withdrawal of #{row['supersedes']}"
    return "current"


class RowsModel(QAbstractTableModel):
    """A table over ``rows`` (list of dicts) with the given :class:`Column` list.

    ``style(row) -> (foreground QColor | None, background QColor | None)`` colours whole rows.
    """

    def __init__(self, columns: list[Column], *, style=None, parent=None) -> None:
        super().__init__(parent)
        self.columns = list(columns)
        self.rows: list[dict] = []
        self._style = style
        self._sort: tuple[int, Qt.SortOrder] | None = None

    # ----- Qt model API
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.columns[section].title
        return None

    def data(self, index: Index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        column = self.columns[index.column()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return column.display(row)
        if role == Qt.ItemDataRole.UserRole:
            return column.value(row)
        if self._style is not None and role in (Qt.ItemDataRole.ForegroundRole,
                                                 Qt.ItemDataRole.BackgroundRole):
            fg, bg = self._style(row)
            colour = fg if role == Qt.ItemDataRole.ForegroundRole else bg
            return QBrush(colour) if colour is not None else None
        return None

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        self._sort = (column, order)
        key = self.columns[column].value

        def sort_key(row):
            value = key(row)
            return (value is None, value if value is not None else 0)

        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()  # the selection and current row follow their rows
        held = [self.rows[i.row()] if i.isValid() else None for i in old]
        try:
            self.rows.sort(key=sort_key, reverse=order == Qt.SortOrder.DescendingOrder)
        except TypeError:  # mixed types in one column: fall back to their text
            self.rows.sort(key=lambda r: self.columns[column].display(r),
                           reverse=order == Qt.SortOrder.DescendingOrder)
        where = {id(r): n for n, r in enumerate(self.rows)}
        self.changePersistentIndexList(old, [
            self.index(where[id(r)], i.column()) if r is not None else QModelIndex()
            for i, r in zip(old, held)])
        self.layoutChanged.emit()

    # ----- ours
    def set_rows(self, rows: list[dict]) -> None:
        """Replace the rows (keeping the current sort order)."""
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()
        if self._sort is not None:
            self.sort(*self._sort)

    def row(self, index: int) -> dict:
        return self.rows[index]

    def find(self, predicate) -> int | None:
        """The index of the first row for which ``predicate(row)`` is true."""
        return next((i for i, r in enumerate(self.rows) if predicate(r)), None)

    def texts(self, index: int) -> list[str]:
        """The shown text of every cell of row ``index``."""
        return [c.display(self.rows[index]) for c in self.columns]
