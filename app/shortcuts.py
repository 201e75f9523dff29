"""The shortcuts help dialog: every registered action with its key, grouped by menu."""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QHeaderView, QTableWidget, QTableWidgetItem, QVBoxLayout,
)

GROUP_LABELS = {
    "file": "File", "view": "View", "overlay": "Overlays", "tools": "Tools", "scan": "Scan",
    "review": "Review", "verdict": "Verdict", "roi": "Weld region", "models": "Models", "help": "Help",
}


def shortcut_rows(actions: dict[str, QAction]) -> list[tuple[str, str, str]]:
    """(group, action text, key) for every action that has a shortcut, in registration order."""
    rows = []
    for action_id, action in actions.items():
        keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()]
        if not keys:
            continue
        group = GROUP_LABELS.get(action_id.split(".", 1)[0], action_id.split(".", 1)[0])
        rows.append((group, action.text().replace("&", ""), ", ".join(keys)))
    return rows


class ShortcutsDialog(QDialog):
    """A non-modal table of all shortcuts (opened with F1)."""

    def __init__(self, actions: dict[str, QAction], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = shortcut_rows(actions)
        self.table = QTableWidget(len(rows), 3, self)
        self.table.setHorizontalHeaderLabels(["Menu", "Action", "Shortcut"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, parent=self)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(520, 560)
