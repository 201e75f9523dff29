"""Non-blocking message boxes: the application never waits on a modal dialog to report a problem."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget


def show_warning(parent: QWidget | None, text: str, *, title: str = "weldreview") -> QMessageBox:
    """Show ``text`` in a non-modal warning box that deletes itself when closed; returns the box."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setWindowModality(Qt.WindowModality.NonModal)
    box.show()
    return box
