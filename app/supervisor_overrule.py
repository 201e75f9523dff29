"""The small form a supervisor overrules a verdict with: the new verdict and the reason."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget

from app.verdicts import VERDICTS


class OverruleBox(QWidget):
    """Verdict, reason and a button; emits ``overrule_requested(verdict, reason)``.

    :meth:`set_target` names the verdict it acts on (None disables the form, with the why).
    """

    overrule_requested = Signal(str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.target = QLabel("Select a decision to overrule it.")
        self.verdict = QComboBox()
        for value, (key, label) in VERDICTS.items():
            self.verdict.addItem(f"{label} [{key}]", value)
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("reason (required, recorded in the audit trail)")
        self.button = QPushButton("Overrule")
        self.button.setToolTip("Store the chosen verdict as a new decision that supersedes the "
                               "selected one; the original stays on record")
        self.button.clicked.connect(self._emit)
        self.reason.returnPressed.connect(self._emit)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.target, 2)
        layout.addWidget(QLabel("New verdict"))
        layout.addWidget(self.verdict)
        layout.addWidget(self.reason, 3)
        layout.addWidget(self.button)
        self.set_target(None)

    def set_target(self, text: str | None, *, verdict: str | None = None,
                   why_not: str = "Select a decision to overrule it.") -> None:
        """Act on the verdict described by ``text`` (preselect ``verdict``), or disable."""
        enabled = text is not None
        self.target.setText(text if enabled else why_not)
        for w in (self.verdict, self.reason, self.button):
            w.setEnabled(enabled)
        if verdict is not None:
            self.verdict.setCurrentIndex(max(self.verdict.findData(verdict), 0))

    def _emit(self) -> None:
        if self.button.isEnabled():
            self.overrule_requested.emit(self.verdict.currentData(), self.reason.text().strip())
