"""Choosing the current user at start: a name from the store's users, remembered in QSettings.

With no user in the store yet, the dialog creates the first one (an interpreter by default).
"""

from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QMessageBox, QVBoxLayout,
)

from core.errors import StoreError
from core.migrations import ROLES

SETTINGS_KEY = "user/name"


def remembered_user(settings: QSettings, store) -> str | None:
    """The remembered user name if the store still knows it, else None."""
    name = settings.value(SETTINGS_KEY, None)
    if name and name in {u.name for u in store.users()}:
        return str(name)
    return None


class UserDialog(QDialog):
    """Pick a user (or create the first one); :attr:`user_name` holds the choice after accept."""

    def __init__(self, store, settings: QSettings, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("weldreview: who is reviewing?")
        self.store = store
        self.settings = settings
        self.user_name: str | None = None
        users = store.users()
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.combo = QComboBox()
        self.new_name = QLineEdit()
        self.role = QComboBox()
        self.role.addItems(ROLES)
        if users:
            layout.addWidget(QLabel("Every verdict is recorded under your name."))
            for u in users:
                self.combo.addItem(f"{u.name} ({u.role})", u.name)
            last = settings.value(SETTINGS_KEY, None)
            idx = self.combo.findData(last)
            if idx >= 0:
                self.combo.setCurrentIndex(idx)
            form.addRow("User", self.combo)
            self.new_name.setPlaceholderText("or a new user's name")
            form.addRow("New user", self.new_name)
        else:
            layout.addWidget(QLabel("No users yet: create the first one. Every verdict is "
                                    "recorded under this name."))
            self.new_name.setPlaceholderText("your name")
            form.addRow("Name", self.new_name)
        form.addRow("Role (new user)", self.role)
        layout.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def accept(self) -> None:
        name = self.new_name.text().strip()
        try:
            if name:
                if name not in {u.name for u in self.store.users()}:
                    self.store.add_user(name, role=self.role.currentText(), by=name)
            else:
                name = self.combo.currentData()
            if not name:
                QMessageBox.warning(self, "weldreview", "Enter a name.")
                return
        except (ValueError, StoreError) as exc:
            QMessageBox.warning(self, "weldreview", str(exc))
            return
        self.user_name = name
        self.settings.setValue(SETTINGS_KEY, name)
        super().accept()


def choose_user(store, settings: QSettings, parent=None) -> str | None:
    """The remembered user, else ask with :class:`UserDialog`; None if the user cancelled."""
    name = remembered_user(settings, store)
    if name:
        return name
    dialog = UserDialog(store, settings, parent)
    return dialog.user_name if dialog.exec() == QDialog.DialogCode.Accepted else None
