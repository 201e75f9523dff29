"""Verdicts: one key each, the optional details of a defect, and the panel that shows them.

Keys: D defect, A acceptable indication, F false alarm (okay weld), U unsure (escalate to a
supervisor). Undo never deletes: it stores a new verdict that supersedes the last one (the store is
append-only). A defect may carry an ISO 6520-1 type from the short list below, a size in mm (filled
from the region) and a comment. A missed indication is a box the interpreter draws; it is stored
as a defect verdict without a region.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QLabel, QLineEdit, QPushButton,
    QVBoxLayout, QWidget,
)

# verdict value stored -> (key, label)
VERDICTS: dict[str, tuple[str, str]] = {
    "defect": ("D", "Defect"),
    "acceptable": ("A", "Acceptable indication"),
    "false_alarm": ("F", "False alarm (okay weld)"),
    "unsure": ("U", "Unsure (escalate)"),
}
# ISO 6520-1 reference numbers found in weld radiograph flaw tables (the short list).
ISO6520_SHORT = (
    ("1011", "longitudinal crack in the weld metal"),
    ("1021", "transverse crack in the weld metal"),
    ("1051", "crater crack"),
    ("2011", "gas pore"),
    ("2013", "clustered (localized) porosity"),
    ("2014", "linear porosity"),
    ("2015", "elongated cavity"),
    ("2016", "worm-hole"),
    ("3011", "linear slag inclusion"),
    ("3012", "isolated slag inclusion"),
    ("3013", "clustered slag inclusion"),
    ("3041", "tungsten inclusion (metallic inclusion)"),
    ("4011", "lack of side-wall fusion"),
    ("4012", "lack of inter-run fusion"),
    ("4013", "lack of root fusion"),
    ("402", "lack of penetration (incomplete penetration)"),
    ("5011", "continuous undercut"),
    ("5012", "intermittent undercut"),
    ("5013", "root undercut (shrinkage groove)"),
    ("504", "excessive penetration"),
    ("515", "root concavity"),
)


@dataclass
class VerdictDetails:
    """What goes with a verdict besides its value (only kept for defects, except the comment)."""

    iso_code: str | None = None
    size_mm: float | None = None
    comment: str = ""


def region_size_mm(region) -> float | None:
    """The size filled in for a region: its longer side in mm, None without a pixel size."""
    if region is None or region.size_mm is None:
        return None
    return float(max(region.size_mm))


class VerdictPanel(QWidget):
    """Buttons for the four verdicts and the optional details (emits ``verdict_requested``)."""

    verdict_requested = Signal(str)
    undo_requested = Signal()
    missed_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        for i, (value, (key, label)) in enumerate(VERDICTS.items()):
            b = QPushButton(f"{label}  [{key}]")
            b.setToolTip(f"Give the verdict '{label}' to the selected region (key {key})")
            b.clicked.connect(lambda _=False, v=value: self.verdict_requested.emit(v))
            grid.addWidget(b, i // 2, i % 2)
            self.buttons[value] = b
        self.undo_button = QPushButton("Undo last verdict  [Ctrl+Z]")
        self.undo_button.clicked.connect(self.undo_requested)
        self.missed_button = QPushButton("Mark missed indication  [M]")
        self.missed_button.setToolTip("Draw a box around a defect the detector did not flag")
        self.missed_button.clicked.connect(self.missed_requested)
        grid.addWidget(self.undo_button, 2, 0)
        grid.addWidget(self.missed_button, 2, 1)

        self.iso = QComboBox()
        self.iso.addItem("(no type)", None)
        for code, name in ISO6520_SHORT:
            self.iso.addItem(f"{code}  {name}", code)
        self.size = QDoubleSpinBox()
        self.size.setRange(0.0, 10_000.0)
        self.size.setDecimals(2)
        self.size.setSuffix(" mm")
        self.size.setSpecialValueText("(unknown)")
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment (optional)")
        form = QFormLayout()
        form.addRow("ISO 6520 type", self.iso)
        form.addRow("Size", self.size)
        form.addRow("Comment", self.comment)
        self.current = QLabel("No region selected.")
        self.current.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.current)
        layout.addLayout(grid)
        layout.addLayout(form)
        layout.addStretch(1)

    def show_region(self, region, verdict: str | None) -> None:
        """Reset the details for ``region`` (size filled from it) and show its current verdict."""
        self.iso.setCurrentIndex(0)
        self.comment.clear()
        size = region_size_mm(region)
        self.size.setValue(size or 0.0)
        if region is None:
            self.current.setText("No region selected.")
            return
        state = VERDICTS[verdict][1] if verdict in VERDICTS else "no verdict yet"
        self.current.setText(f"Region {region.id}: {state}")

    def details(self, verdict: str) -> VerdictDetails:
        """The details to store with ``verdict`` (type and size only for a defect)."""
        comment = self.comment.text().strip()
        if verdict != "defect":
            return VerdictDetails(comment=comment)
        size = self.size.value() or None
        return VerdictDetails(iso_code=self.iso.currentData(), size_mm=size, comment=comment)
