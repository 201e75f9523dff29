"""Second review: a blind random sample of an interpreter's regions, agreement, disagreements.

The sample (``Store.blind_sample``) never carries the first verdict, and while a sample is being
reviewed this tab shows no verdicts at all (the disagreement list is emptied and the supervisor
window disables its other tabs), so the second verdict is given blind. Verdicts are given by the
keys of the main window (D, A, F, U) and stored with ``review_of``; they do not change the
decision, they are compared with it (percent agreement and Cohen's kappa per interpreter).
A disagreement is resolved by an overrule with a reason.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QGridLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
    QPushButton, QSpinBox, QSplitter, QTableView, QVBoxLayout, QWidget,
)

from app.supervisor_evidence import RegionView, load_checked
from app.supervisor_overrule import OverruleBox
from app.supervisor_tables import GREY, Column, RowsModel, file_name, verdict_label, when
from app.verdicts import VERDICTS

AGREEMENT_COLUMNS = [
    Column("Interpreter", lambda a: a.interpreter),
    Column("Pairs", lambda a: a.n),
    Column("Agree", lambda a: a.n_agree),
    Column("Agreement (%)", lambda a: a.percent, lambda v: f"{v:.1f}"),
    Column("Cohen's kappa", lambda a: a.kappa, lambda v: "undefined" if v is None else f"{v:.3f}"),
]


def _resolution(row: dict) -> str:
    if not row["resolved"]:
        return "open"
    return f"resolved: {verdict_label(row['resolution_verdict'])} (#{row['resolution_id']})"


DISAGREEMENT_COLUMNS = [
    Column("First #", lambda r: r["first_id"]),
    Column("Interpreter", lambda r: r["first_user"]),
    Column("First verdict", lambda r: r["first_verdict"], verdict_label),
    Column("Review #", lambda r: r["second_id"]),
    Column("Reviewer", lambda r: r["second_user"]),
    Column("Second verdict", lambda r: r["second_verdict"], verdict_label),
    Column("Reviewed (UTC)", lambda r: r["second_time"], when),
    Column("Region", lambda r: r["region_id"]),
    Column("Radiograph", lambda r: r["radiograph_path"], file_name),
    Column("Status", _resolution),
]


def _table(model) -> QTableView:
    table = QTableView()
    table.setModel(model)
    table.setSortingEnabled(True)
    table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    table.setWordWrap(False)
    table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QTableView.SelectionMode.SingleSelection)
    table.setEditTriggers(QTableView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    return table


class SecondReviewTab(QWidget):
    """Blind re-review of a sample, agreement per interpreter, disagreements and their overrule.

    Signals
    -------
    blind_changed(bool)
        True while a blind sample is being reviewed (the window hides the other tabs).
    """

    blind_changed = Signal(bool)

    def __init__(self, host, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.store = host.store
        self.sample: list[dict] = []
        self.position = 0
        self.given: list[int] = []
        self._images: dict[str, tuple[object, str]] = {}
        self._build()
        self.reload_choices()
        self.refresh()

    # ----- construction
    def _build(self) -> None:
        self.interpreter = QComboBox()
        self.sample_size = QSpinBox()
        self.sample_size.setRange(1, 1000)
        self.sample_size.setValue(20)
        self.start_button = QPushButton("Start blind review")
        self.start_button.clicked.connect(lambda: self.start_review())
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop_review)
        setup = QHBoxLayout()
        for w in (QLabel("Interpreter"), self.interpreter, QLabel("Sample size"),
                  self.sample_size, self.start_button, self.stop_button):
            setup.addWidget(w)
        setup.addStretch(1)

        self.progress = QLabel("Choose an interpreter and a sample size, then start.")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.region_view = RegionView(self)
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment (optional)")
        self.verdict_buttons: dict[str, QPushButton] = {}
        self.verdict_actions: dict[str, QAction] = {}
        grid = QGridLayout()
        for i, (value, (key, label)) in enumerate(VERDICTS.items()):
            button = QPushButton(f"{label}  [{key}]")
            button.clicked.connect(lambda _=False, v=value: self.give(v))
            grid.addWidget(button, 0, i)
            self.verdict_buttons[value] = button
            action = QAction(f"Second review: {label}", self)
            action.setShortcut(QKeySequence(key))
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            action.triggered.connect(lambda _=False, v=value: self.give(v))
            self.addAction(action)
            self.verdict_actions[value] = action
        self.skip_button = QPushButton("Skip  [S]")
        self.skip_button.setToolTip("Leave this region out of the sample (no verdict stored)")
        self.skip_button.clicked.connect(self.skip)
        skip = QAction("Second review: skip", self)
        skip.setShortcut(QKeySequence("S"))
        skip.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        skip.triggered.connect(self.skip)
        self.addAction(skip)
        self.verdict_actions["skip"] = skip
        grid.addWidget(self.skip_button, 0, len(VERDICTS))
        review_box = QGroupBox("Blind review (the first verdict is hidden)")
        rv = QVBoxLayout(review_box)
        rv.addWidget(self.progress)
        rv.addWidget(self.info)
        rv.addWidget(self.region_view, 1)
        rv.addWidget(self.comment)
        rv.addLayout(grid)
        self.review_box = review_box

        self.agreement = RowsModel(AGREEMENT_COLUMNS, parent=self)  # rows: Agreement objects
        self.agreement_table = _table(self.agreement)
        agree_box = QGroupBox("Agreement per interpreter (with blind second reviews)")
        QVBoxLayout(agree_box).addWidget(self.agreement_table)

        self.disagreements = RowsModel(
            DISAGREEMENT_COLUMNS, parent=self,
            style=lambda r: (GREY if r["resolved"] else None, None))
        self.disagreement_table = _table(self.disagreements)
        self.disagreement_table.selectionModel().currentRowChanged.connect(
            lambda *_: self._on_disagreement())
        self.disagreement_table.activated.connect(lambda i: self.open_evidence(i.row()))
        self.open_only = QCheckBox("Open only")
        self.open_only.toggled.connect(self.refresh)
        self.evidence_button = QPushButton("Show evidence  [Enter]")
        self.evidence_button.clicked.connect(lambda: self.open_evidence())
        self.overrule_box = OverruleBox(self)
        self.overrule_box.overrule_requested.connect(self._overrule_selected)
        self.dis_box = QGroupBox("Disagreements (resolve by overruling the first verdict)")
        dv = QVBoxLayout(self.dis_box)
        row = QHBoxLayout()
        row.addWidget(self.open_only)
        row.addStretch(1)
        row.addWidget(self.evidence_button)
        dv.addLayout(row)
        dv.addWidget(self.disagreement_table, 1)
        dv.addWidget(self.overrule_box)

        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(review_box)
        top.addWidget(agree_box)
        top.setSizes([700, 400])
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(self.dis_box)
        split.setSizes([520, 300])
        layout = QVBoxLayout(self)
        layout.addLayout(setup)
        layout.addWidget(split, 1)
        self._set_reviewing(False)

    # ----- data
    def reload_choices(self) -> None:
        keep = self.interpreter.currentData()
        self.interpreter.clear()
        for user in self.store.users():
            if user.name != self.host.user:
                self.interpreter.addItem(f"{user.name} ({user.role})", user.name)
        if keep is not None and self.interpreter.findData(keep) >= 0:
            self.interpreter.setCurrentIndex(self.interpreter.findData(keep))

    def refresh(self) -> None:
        """Reload agreement and disagreements (no verdicts are shown during a blind review)."""
        try:
            self.agreement.set_rows(self.store.agreement())
            rows = [] if self.reviewing else self.store.disagreements(
                unresolved_only=self.open_only.isChecked())
        except Exception as exc:  # noqa: BLE001
            self.host.message(f"Cannot read the second reviews: {exc}", error=True)
            rows = []
        self.disagreements.set_rows(rows)
        self._on_disagreement()

    @property
    def reviewing(self) -> bool:
        """True while a blind sample is being reviewed."""
        return self.position < len(self.sample)

    def current_item(self) -> dict | None:
        return self.sample[self.position] if self.reviewing else None

    def shown_texts(self) -> list[str]:
        """Every text this tab shows now (labels and table cells), to check what is visible."""
        texts = [w.text() for w in self.findChildren(QLabel) if w.isVisibleTo(self)]
        for model in (self.agreement, self.disagreements):
            for i in range(model.rowCount()):
                texts.extend(model.texts(i))
        return texts

    # ----- blind review
    def start_review(self, interpreter: str | None = None, n: int | None = None, *,
                     seed: int | None = None) -> int:
        """Draw a blind sample of ``interpreter``'s regions and show the first; returns its size."""
        interpreter = interpreter or self.interpreter.currentData()
        n = int(n if n is not None else self.sample_size.value())
        if not interpreter:
            self.host.message("Choose an interpreter to re-review.")
            return 0
        try:
            sample = self.store.blind_sample(reviewer=self.host.user, interpreter=interpreter,
                                             n=n, seed=seed)
        except Exception as exc:  # noqa: BLE001 - the store's reason (ValueError), as a message
            self.host.message(f"Cannot draw a sample: {exc}", error=True)
            return 0
        if not sample:
            self.host.message(f"{interpreter} has no region verdicts you have not re-reviewed.")
            return 0
        self.sample, self.position, self.given = sample, 0, []
        self._images.clear()  # files may have changed since the last sample
        self.interpreter_name = interpreter
        self._set_reviewing(True)
        self.refresh()
        self._show_current()
        self.verdict_buttons["defect"].setFocus()
        self.host.message(f"Blind review of {len(sample)} of {interpreter}'s regions: give "
                          "your verdict with D, A, F or U.")
        return len(sample)

    def _set_reviewing(self, on: bool) -> None:
        for button in (*self.verdict_buttons.values(), self.skip_button, self.stop_button,
                       self.comment):
            button.setEnabled(on)
        for action in self.verdict_actions.values():
            action.setEnabled(on)
        for w in (self.start_button, self.interpreter, self.sample_size, self.dis_box):
            w.setEnabled(not on)
        self.blind_changed.emit(on)

    def _image(self, item: dict):
        path = item["radiograph_path"]
        if path not in self._images:
            try:
                sha = self.store.radiograph(int(item["radiograph_id"]))["sha256"]
            except ValueError:
                sha = None
            self._images[path] = load_checked(path, sha)
        return self._images[path]

    def _show_current(self) -> None:
        item = self.current_item()
        if item is None:
            return
        self.progress.setText(f"Region {self.position + 1} of {len(self.sample)} "
                              f"(interpreter {self.interpreter_name})")
        severity = "" if item["severity"] is None else f", severity {item['severity']:.2f} x " \
            "threshold"
        self.info.setText(
            f"{file_name(item['radiograph_path'])}, region {item['region_id']} of scan "
            f"{item['scan_id']}, box {tuple(item['bbox'])}, flagged by "
            f"{item['tests'] or '-'} test{severity}. Your verdict?")
        radiograph, why = self._image(item)
        self.region_view.show_region(radiograph, item["bbox"], note=why)
        self.comment.clear()

    def give(self, verdict: str) -> int | None:
        """Store ``verdict`` as the blind second review of the current region and move on."""
        item = self.current_item()
        if item is None:
            return None
        try:
            vid = self.store.add_verdict(
                user=self.host.user, verdict=verdict, region_id=item["region_id"],
                review_of=item["review_of"], comment=self.comment.text().strip())
        except Exception as exc:  # noqa: BLE001 - e.g. the region was re-decided meanwhile
            self.host.message(f"Second review of region {item['region_id']} not saved: {exc}",
                              error=True)
            return None
        self.given.append(vid)
        self.host.message(f"Saved: {verdict_label(verdict)} for region {item['region_id']} "
                          f"(verdict #{vid}).")
        self._advance()
        return vid

    def skip(self) -> None:
        if self.reviewing:
            self._advance()

    def stop_review(self) -> None:
        """End the blind review now (what was given stays stored)."""
        if self.reviewing:
            self.position = len(self.sample)
            self._finish()

    def _advance(self) -> None:
        self.position += 1
        if self.reviewing:
            self._show_current()
        else:
            self._finish()

    def _finish(self) -> None:
        n = len(self.given)
        self.sample, self.position = [], 0
        self.progress.setText(f"Blind review finished: {n} second verdict{'s' if n != 1 else ''} "
                              "stored.")
        self.info.setText("")
        self.region_view.show_region(None, None)
        self._set_reviewing(False)
        self.refresh()
        self.host.refresh_decisions()
        self.host.message(self.progress.text())

    # ----- disagreements
    def selected_disagreement(self) -> dict | None:
        index = self.disagreement_table.currentIndex()
        return self.disagreements.row(index.row()) if index.isValid() else None

    def select_disagreement(self, first_id: int) -> bool:
        row = self.disagreements.find(lambda r: r["first_id"] == first_id)
        if row is None:
            return False
        self.disagreement_table.selectRow(row)
        self.disagreement_table.setCurrentIndex(self.disagreements.index(row, 0))
        return True

    def _on_disagreement(self) -> None:
        row = self.selected_disagreement()
        self.evidence_button.setEnabled(row is not None)
        if row is None:
            self.overrule_box.set_target(None, why_not="Select a disagreement to resolve it.")
        elif row["resolved"]:
            self.overrule_box.set_target(None, why_not=f"#{row['first_id']} is already "
                                         f"{_resolution(row)}.")
        else:
            self.overrule_box.set_target(
                f"#{row['first_id']}: {row['first_user']} said "
                f"{verdict_label(row['first_verdict'])}, {row['second_user']} "
                f"{verdict_label(row['second_verdict'])}", verdict=row["second_verdict"])

    def _overrule_selected(self, verdict: str, reason: str) -> None:
        row = self.selected_disagreement()
        if row is not None and self.host.overrule(row["first_id"], verdict, reason) is not None:
            self.overrule_box.reason.clear()

    def open_evidence(self, row: int | None = None) -> None:
        item = self.disagreements.row(row) if row is not None else self.selected_disagreement()
        if item is None:
            self.host.message("Select a disagreement first.")
            return
        decision = next((d for d in self.store.decisions(radiograph=item["radiograph_id"])
                         if d["id"] == item["first_id"]), None)
        if decision is not None:
            self.host.open_evidence_for(decision)
