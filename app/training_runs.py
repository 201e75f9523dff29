"""The Training runs window: long trainings as separate processes, watched, stopped, resumed.

A plant trains overnight, so a training run is not a thread of the application but its own
process (``weldreview train ... --run DIR``, core.training_runs) that goes on when this window or
the whole application is closed. The window lists the run folders of the application's home,
reading their small status files once a second (nothing here waits on a run), and starts new runs
from a form; Stop asks a run to checkpoint and end, Resume starts it again from its checkpoint
(also after the machine was switched off), and "Use this model" hands a finished run's model to
the main window as File > Use model would. A run given a calibration folder (held-out radiographs)
calibrates its model when training ends (state "calibrating..."), so the model can be used at once.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
    QFormLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPlainTextEdit,
    QProgressBar, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout,
)

from core import training_runs as tr

COLUMNS = ("Name", "State", "Progress", "Step", "Elapsed", "Time left", "Loss", "Samples/s",
           "Started by", "Started")
PROGRESS_COLUMN = COLUMNS.index("Progress")
REFRESH_MS = 1000
LOG_LINES = 200
DEFAULT_BUDGET_MIN = 60.0
DEFAULT_PERTURBATIONS = "D,SNI"
DEFAULT_BACKGROUND = 24.0
DEFAULT_BATCH = 32
UNLIMITED_STEPS = 10_000_000  # "as many as the time budget allows"

BACKGROUND_TIP = (
    "Remove the smooth background of every radiograph before patches are cut (image minus a "
    "twice-applied Gaussian estimate of its background, plus 0.5). Real films are brighter over "
    "the weld bead than around it; without this the model learns brightness rather than texture. "
    "Measured on real GDXray films (docs/benchmark/report.md), with sigma 24 px the larger "
    "synthetic anomalies are found (84-86 % at 0.1 % false positives, against at most 15 %) and "
    "the thresholds hold on films they were not calibrated on. The network then works with an "
    "input gain of 8, which keeps its latent alive on the faint normalised texture. "
    "Generated (synthetic) welds have no such background, so it is off when training on "
    "synthetic welds only. The model records the sigma; calibration and scans then do the same.")
CALIBRATION_TIP = (
    "Held-out accepted radiographs to calibrate the model on: never the training ones (thresholds "
    "set on patches the model has learned flag too little). Same layouts as the data folder; marked "
    "defects are kept clear of, radiographs without a mask must be defect-free. The run calibrates "
    "its model at its end (state \"calibrating...\"), so the model can be used at once. Empty: the "
    "model is saved without thresholds and must be calibrated later (weldreview calibrate).")
ACCEPTED_TIP = (
    "A folder of accepted radiographs with no defect, as they are: no masks needed, okay patches "
    "come from their whole weld region. Besides or instead of the data folder.")
DEFAULT_CALIBRATION_FPR = 0.001  # weldreview calibrate's --fpr
VALIDATION_TIP = (
    "Measure the model every N steps and at the end on the radiographs of the calibration folder "
    "(thresholds set on their okay patches at the calibration FPR, then the share of the paper's five "
    "synthetic anomaly types found on their weld) and save the best state so measured, which need not "
    "be the last (the checkpoint keeps the last; Resume trains on from it). Each validation takes "
    "about 25-35 s on 2 cores at the default FPR and counts towards the time budget. Needs a "
    "calibration folder.")
# steps: about 6 minutes of training on 2 cores; a validation (25-35 s) adds about 8 %
DEFAULT_VALIDATE_EVERY = 300
DROPOUT = 0.0  # measured: the paper's 0.12 leaves a gap between training and inference
WARMUP_STEPS = 50
# weight of L_per and L_kern,per with background removal: at 20 minutes on GDXray it ranked the
# synthetic anomaly types better than the paper's 1 (ROC AUC 0.77-0.99 against 0.64-0.98, one
# seed each; docs/benchmark/notes.md, item 5); the paper's 1 without background removal
BACKGROUND_PER_WEIGHT = 0.25


def duration_text(seconds) -> str:
    """``h:mm:ss`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    s = int(round(max(float(seconds), 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def state_text(run: tr.TrainingRun) -> str:
    """The state as the table shows it: a stop asked for but not yet done is "stopping..."."""
    state = run.state
    if state in tr.LIVE and (run.folder / tr.STOP).exists():
        return "stopping..."
    if state in ("starting", "calibrating"):
        return f"{state}..."
    return state


def step_text(run: tr.TrainingRun) -> str:
    step, steps = run.status.get("step"), run.status.get("steps")
    if step is None:
        return "-"
    return str(step) if not steps or steps >= UNLIMITED_STEPS else f"{step}/{steps}"


def validation_text(run: tr.TrainingRun) -> str | None:
    """The latest validation and the best so far (None before the first or without validation)."""
    v = run.status.get("validation")
    if not v:
        return None
    return (f"validation {100 * v['score']:.1f} % at step {v['step']}; "
            f"best step {v['best_step']} ({100 * v['best_score']:.1f} %)")


def row_cells(run: tr.TrainingRun) -> list[str]:
    """The table's text for one run (the progress column holds a bar; its text is here too)."""
    s = run.status
    loss, rate = s.get("loss"), s.get("samples_per_s")
    created = run.request.get("created")
    return [
        run.name,
        state_text(run),
        f"{run.fraction:.0%}",
        step_text(run),
        duration_text(s.get("elapsed_s")) if s.get("elapsed_s") else "-",
        duration_text(run.seconds_left) if run.seconds_left is not None else "-",
        f"{loss:.4g}" if isinstance(loss, (int, float)) else "-",
        f"{rate:.1f}" if isinstance(rate, (int, float)) else "-",
        run.request.get("user") or "-",
        time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "-",
    ]


def runs_folder(main_window) -> Path:
    """The training runs folder of the main window's home: beside its review database."""
    store = getattr(main_window, "store", None)
    home = Path(store.path).parent if store is not None else None
    return tr.runs_dir(home)


def _row(check: QCheckBox, value) -> QHBoxLayout:
    """A form row: a check box and the value it turns on, left-aligned."""
    row = QHBoxLayout()
    row.addWidget(check)
    row.addWidget(value)
    row.addStretch(1)
    return row


def _item(text: str) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    return item


class NewRunDialog(QDialog):
    """The form of a new training run; ``options()`` are ``weldreview train``'s options."""

    def __init__(self, parent=None, *, folder: Path | None = None):
        super().__init__(parent)
        self.setWindowTitle("New training run")
        self.folder = folder
        self._background_touched = False
        self._keep_best_touched = False

        self.name = QLineEdit(time.strftime("run-%Y%m%d-%H%M"))
        self.name.setToolTip("The run's folder name in the training runs folder (made unique)")
        self.data = QLineEdit()
        self.data.setPlaceholderText("none")
        self.data.setToolTip(
            "A folder of radiographs with defect masks (GDXray layout, or <name>.<ext> with "
            "<name>_mask.<ext>). Okay patches are cut from their weld region away from the marked "
            "defects; the defects themselves are perturbation set D. Radiographs without a mask "
            "are not used.")
        self.data.textChanged.connect(self._data_changed)
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data, 1)
        data_row.addWidget(browse)
        self.accepted_films = QLineEdit()
        self.accepted_films.setPlaceholderText("none")
        self.accepted_films.setToolTip(ACCEPTED_TIP)
        self.accepted_films.textChanged.connect(self._data_changed)
        accepted_browse = QPushButton("Browse...")
        accepted_browse.setToolTip(ACCEPTED_TIP)
        accepted_browse.clicked.connect(self._browse_accepted)
        accepted_row = QHBoxLayout()
        accepted_row.addWidget(self.accepted_films, 1)
        accepted_row.addWidget(accepted_browse)
        self.calibration = QLineEdit()
        self.calibration.setPlaceholderText("none: calibrate the model later")
        self.calibration.setToolTip(CALIBRATION_TIP)
        self.calibration.textChanged.connect(self._calibration_changed)
        self.calibration_browse = QPushButton("Browse...")
        self.calibration_browse.setToolTip(CALIBRATION_TIP)
        self.calibration_browse.clicked.connect(self._browse_calibration)
        calibration_row = QHBoxLayout()
        calibration_row.addWidget(self.calibration, 1)
        calibration_row.addWidget(self.calibration_browse)
        self.keep_best = QCheckBox("Keep the best state, validate every")
        self.keep_best.setToolTip(VALIDATION_TIP)
        self.keep_best.toggled.connect(self._update_validation)
        self.keep_best.clicked.connect(self._keep_best_clicked)  # the user's choice stands
        self.validate_every = QSpinBox()
        self.validate_every.setRange(1, 100_000)
        self.validate_every.setSuffix(" steps")
        self.validate_every.setValue(DEFAULT_VALIDATE_EVERY)
        self.validate_every.setToolTip(VALIDATION_TIP)
        self._update_validation()
        self.synthetic = QSpinBox()
        self.synthetic.setRange(0, 10_000)
        self.synthetic.setSpecialValueText("none")
        self.synthetic.setToolTip("Generated weld radiographs (with their defects) to train on, "
                                  "instead of or besides the data folder")
        self.perturbations = QLineEdit(DEFAULT_PERTURBATIONS)
        self.perturbations.setToolTip(
            "Comma-separated perturbation sets: D (the defects of the masked radiographs), SNI "
            "(synthetic natural-image indications), SNI-signed, synthetic (six generated anomaly "
            "kinds) or a single anomaly kind")
        self.budget = QDoubleSpinBox()
        self.budget.setRange(0.1, 7 * 24 * 60.0)
        self.budget.setDecimals(1)
        self.budget.setSuffix(" min")
        self.budget.setValue(DEFAULT_BUDGET_MIN)
        self.budget.setToolTip("Training stops after this much training time and saves the model "
                               "(time before a stop and after Resume counts); overnight: 600-720 min")
        self.background = QCheckBox("Remove the background, sigma")
        self.background.setToolTip(BACKGROUND_TIP)
        self.background.clicked.connect(self._background_clicked)
        self.sigma = QDoubleSpinBox()
        self.sigma.setRange(1.0, 1000.0)
        self.sigma.setDecimals(1)
        self.sigma.setSuffix(" px")
        self.sigma.setValue(DEFAULT_BACKGROUND)
        self.sigma.setToolTip(BACKGROUND_TIP)
        self.background.toggled.connect(self.sigma.setEnabled)
        self.background.setChecked(False)
        self.sigma.setEnabled(False)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Seed of the initial weights and of the patch draws")

        self.steps = QSpinBox()
        self.steps.setRange(0, UNLIMITED_STEPS)
        self.steps.setSpecialValueText("as many as the budget allows")
        self.steps.setToolTip("Optimiser steps at most (the run ends at whichever comes first)")
        self.batch = QSpinBox()
        self.batch.setRange(1, 1024)
        self.batch.setValue(DEFAULT_BATCH)
        self.batch.setToolTip("Okay patches per step, as many perturbed ones")
        self.fpr = QDoubleSpinBox()
        self.fpr.setDecimals(4)
        self.fpr.setRange(0.0001, 0.5)
        self.fpr.setSingleStep(0.001)
        self.fpr.setValue(DEFAULT_CALIBRATION_FPR)
        self.fpr.setToolTip("Target patch-level false-positive rate of the calibration at the end "
                            "(weldreview calibrate --fpr): 4.5 / rate okay patches are scored")

        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Data folder", data_row)
        form.addRow("Accepted films", accepted_row)
        form.addRow("Calibration folder", calibration_row)
        form.addRow("Validation", _row(self.keep_best, self.validate_every))
        form.addRow("Synthetic welds", self.synthetic)
        form.addRow("Perturbations", self.perturbations)
        form.addRow("Time budget", self.budget)
        form.addRow("Background", _row(self.background, self.sigma))
        form.addRow("Seed", self.seed)
        advanced = QGroupBox("Advanced")
        adv = QFormLayout(advanced)
        adv.addRow("Steps at most", self.steps)
        adv.addRow("Batch", self.batch)
        adv.addRow("Calibration FPR", self.fpr)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c0392b")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Start training")
        self.buttons.accepted.connect(self._ok)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(advanced)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self.resize(560, 0)

    def _browse(self) -> None:
        dlg = QFileDialog(self, "Folder of radiographs with defect masks")
        dlg.setFileMode(QFileDialog.FileMode.Directory)
        dlg.fileSelected.connect(self.data.setText)
        dlg.open()

    def _browse_accepted(self) -> None:
        dlg = QFileDialog(self, "Folder of accepted radiographs with no defect")
        dlg.setFileMode(QFileDialog.FileMode.Directory)
        dlg.fileSelected.connect(self.accepted_films.setText)
        dlg.open()

    def _browse_calibration(self) -> None:
        dlg = QFileDialog(self, "Folder of held-out accepted radiographs (not the training ones)")
        dlg.setFileMode(QFileDialog.FileMode.Directory)
        dlg.fileSelected.connect(self.calibration.setText)
        dlg.open()

    def _calibration_changed(self, text: str) -> None:
        """With a calibration folder, keeping the best state is on unless the user said otherwise
        (measured: it kept better states than the last, docs/benchmark/notes.md item 12)."""
        if not self._keep_best_touched:
            self.keep_best.setChecked(bool(text.strip()))
        self._update_validation()

    def _update_validation(self) -> None:
        """Validation needs held-out radiographs: usable only with a calibration folder."""
        calibration = bool(self.calibration.text().strip())
        self.keep_best.setEnabled(calibration)
        self.validate_every.setEnabled(calibration and self.keep_best.isChecked())

    def _keep_best_clicked(self) -> None:
        self._keep_best_touched = True

    def _data_changed(self, _text: str = "") -> None:
        if not self._background_touched:  # real films: background removal on, as measured
            self.background.setChecked(bool(self.data.text().strip() or self.accepted_films.text().strip()))

    def _background_clicked(self) -> None:
        self._background_touched = True

    def run_name(self) -> str:
        return self.name.text().strip()

    def options(self) -> dict:
        """``weldreview train`` options of the form; ValueError says what is wrong with it."""
        if not self.run_name():
            raise ValueError("Give the run a name.")
        data = self.data.text().strip()
        if data and not Path(data).expanduser().is_dir():
            raise ValueError(f"{data}: no such folder.")
        accepted = self.accepted_films.text().strip()
        if accepted and not Path(accepted).expanduser().is_dir():
            raise ValueError(f"{accepted}: no such folder (the accepted films).")
        if not data and not accepted and not self.synthetic.value():
            raise ValueError("Give a data folder of radiographs with defect masks, a folder of "
                             "accepted films and/or a number of synthetic welds.")
        calibration = self.calibration.text().strip()
        if calibration:
            folder = Path(calibration).expanduser()
            if not folder.is_dir():
                raise ValueError(f"{calibration}: no such folder (the calibration folder).")
            for given, what in ((data, "data folder"), (accepted, "folder of accepted films")):
                if given and folder.resolve() == Path(given).expanduser().resolve():
                    raise ValueError(f"The calibration folder is the {what}: calibrate on held-out "
                                     "radiographs the model is not trained on, or leave it empty and "
                                     "calibrate later.")
        spec = ",".join(s.strip() for s in self.perturbations.text().split(",") if s.strip())
        if not spec:
            raise ValueError("Give at least one perturbation set (default D,SNI).")
        if "D" in spec.split(",") and not data and not self.synthetic.value():
            raise ValueError("Perturbation set D cuts the defects of the data folder's masked films or "
                             "of the synthetic welds; accepted films have none: use SNI with them alone.")
        return {
            "data": str(Path(data).expanduser().resolve()) if data else None,
            "accepted": str(Path(accepted).expanduser().resolve()) if accepted else None,
            "synthetic": self.synthetic.value() or None,
            "perturbations": spec,
            "budget_min": round(self.budget.value(), 1),
            "steps": self.steps.value() or UNLIMITED_STEPS,
            "batch": self.batch.value(),
            "background": self.sigma.value() if self.background.isChecked() else None,
            "per_weight": BACKGROUND_PER_WEIGHT if self.background.isChecked() else None,
            "dropout": DROPOUT,
            "warmup": WARMUP_STEPS,
            "seed": self.seed.value(),
            "calibrate_data": str(Path(calibration).expanduser().resolve()) if calibration else None,
            "calibrate_fpr": round(self.fpr.value(), 4) if calibration else None,
            "validate_every": (self.validate_every.value()
                               if calibration and self.keep_best.isChecked() else None),
        }

    def _ok(self) -> None:
        try:
            self.options()
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        self.error.setText("")
        self.accept()


class TrainingRunsDialog(QDialog):
    """Every training run of a runs folder, refreshed once a second; start, stop, resume, use.

    Parameters
    ----------
    folder : Path
        The runs folder (core.training_runs.runs_dir of the application's home).
    user : str, optional
        Recorded as who started a run.
    use_model : callable, optional
        ``use_model(path)``: the main window's way of switching to a model file.
    env : dict, optional
        Environment of the training processes (default: this process's).
    """

    def __init__(self, folder: Path, *, user: str | None = None, use_model=None, parent=None,
                 env: dict | None = None):
        super().__init__(parent)
        self.setWindowTitle("Training runs")
        self.setModal(False)
        self.folder = Path(folder)
        self.user, self.use_model, self.env = user, use_model, env
        self.runs: list[tr.TrainingRun] = []
        self.messages: list[str] = []
        self.form: NewRunDialog | None = None
        self._selected: str | None = None
        self._log_of: str | None = None  # the run whose log the text box shows

        self.note = note = QLabel(
            "Each training run is a process of its own: closing this window or weldreview does not "
            "stop it, and it goes on overnight. Stop saves a checkpoint; Resume continues from it, "
            "also after the computer was switched off. Runs are kept in "
            f"{self.folder}.")
        note.setWordWrap(True)
        note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(PROGRESS_COLUMN, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._selection_changed)

        self.new_button = QPushButton("New training run...")
        self.new_button.clicked.connect(lambda: self.new_run())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Save a checkpoint after the current step and end the run (while "
                                    "calibrating: end the calibration; the model stays uncalibrated)")
        self.stop_button.clicked.connect(self.stop_selected)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue a stopped or interrupted run from its checkpoint")
        self.resume_button.clicked.connect(self.resume_selected)
        self.log_button = QPushButton("Show log")
        self.log_button.clicked.connect(self.show_log)
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("Scan with the finished run's model (as File > Use model); a model "
                                   "that was not calibrated at the end of its run must be calibrated first")
        self.use_button.clicked.connect(self.use_selected_model)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.close)
        row = QHBoxLayout()
        for b in (self.new_button, self.stop_button, self.resume_button, self.log_button,
                  self.use_button):
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(close)

        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("Select a run to see its details; Show log shows its output.")
        self.status = QLabel()
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.table, 3)
        layout.addLayout(row)
        layout.addWidget(self.details, 2)
        layout.addWidget(self.status)
        self.resize(1100, 560)

        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.refresh()

    # ----- reading the runs ---------------------------------------------------------------
    def refresh(self) -> None:
        """Read every run's status (small files; never waits on a run) and update the table."""
        try:
            runs = tr.list_runs(folder=self.folder)
        except OSError as exc:
            self._say(f"Cannot read the training runs in {self.folder}: {exc}")
            return
        self.runs = runs
        self.table.setRowCount(len(runs))
        for i, run in enumerate(runs):
            cells = row_cells(run)
            for j, text in enumerate(cells):
                if j == PROGRESS_COLUMN:
                    self._progress_bar(i).setValue(int(round(run.fraction * 1000)))
                item = self.table.item(i, j)
                if item is None:
                    self.table.setItem(i, j, _item(text))
                elif item.text() != text:
                    item.setText(text)
            self.table.item(i, 0).setToolTip(str(run.folder))
            self.table.item(i, 1).setToolTip(run.status.get("message") or "")
        names = [r.name for r in runs]
        if self._selected in names:
            row = names.index(self._selected)
            current = self.table.selectionModel().selectedRows()
            if not current or current[0].row() != row:
                self.table.selectRow(row)
        self._update_buttons()
        self._update_details()

    def _progress_bar(self, row: int) -> QProgressBar:
        bar = self.table.cellWidget(row, PROGRESS_COLUMN)
        if bar is None:
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setFormat("%p%")
            bar.setTextVisible(True)
            self.table.setCellWidget(row, PROGRESS_COLUMN, bar)
        return bar

    def run_named(self, name: str) -> tr.TrainingRun | None:
        return next((r for r in self.runs if r.name == name), None)

    def select_run(self, name: str) -> None:
        self._selected = name
        self.refresh()

    def selected_run(self) -> tr.TrainingRun | None:
        return self.run_named(self._selected) if self._selected else None

    def _selection_changed(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows and rows[0].row() < len(self.runs):
            name = self.runs[rows[0].row()].name
            if name != self._selected:
                self._selected, self._log_of = name, None
        self._update_buttons()
        self._update_details()

    def _update_buttons(self) -> None:
        run = self.selected_run()
        self.stop_button.setEnabled(run is not None and run.can_stop)
        self.resume_button.setEnabled(run is not None and run.can_resume)
        self.log_button.setEnabled(run is not None)
        self.use_button.setEnabled(run is not None and run.state == "finished" and run.model.is_file()
                                   and self.use_model is not None)

    def _update_details(self) -> None:
        run = self.selected_run()
        if run is None:
            text = ""
        elif self._log_of == run.name:
            text = tr.log_tail(run, LOG_LINES) or "(no output yet)"
        else:
            options = run.request.get("options", {})
            given = ", ".join(f"{k} {'by the budget' if k == 'steps' and v >= UNLIMITED_STEPS else v}"
                              for k, v in options.items() if v not in (None, False))
            validation = validation_text(run)
            text = "\n".join([
                f"{run.name}: {state_text(run)}" + (f": {run.status['message']}"
                                                     if run.status.get("message") else ""),
                *([validation] if validation else []),
                f"options: {given}",
                f"model: {run.model}",
                f"folder: {run.folder}",
            ])
        if self.details.toPlainText() != text:
            self.details.setPlainText(text)
            if self._log_of is not None:
                self.details.verticalScrollBar().setValue(self.details.verticalScrollBar().maximum())

    def _say(self, text: str) -> None:
        self.messages.append(text)
        self.status.setText(text)

    def _warn(self, text: str) -> None:
        from app.messages import show_warning

        self._say(text)
        self.last_message_box = show_warning(self, text, title="Training runs")

    # ----- actions ------------------------------------------------------------------------
    def new_run(self) -> NewRunDialog:
        """Open the form of a new run (window-modal, not blocking); it starts the run on OK."""
        form = NewRunDialog(self, folder=self.folder)
        form.accepted.connect(lambda: self.start_run(form.run_name(), form.options()))
        self.form = form
        form.open()
        return form

    def start_run(self, name: str, options: dict) -> Path | None:
        """Start a run in its own process; returns its folder (None, with a message, on failure)."""
        folder = None
        try:
            folder = tr.new_run_folder(name, folder=self.folder)
            tr.launch(folder, options, user=self.user, env=self.env)
        except (OSError, ValueError) as exc:
            if folder is not None and not (folder / tr.REQUEST).exists():
                import shutil

                shutil.rmtree(folder, ignore_errors=True)
            self._warn(f"Could not start the training run {name!r}: {exc}")
            return None
        self._say(f"Started training run {folder.name}; it goes on when this window is closed.")
        self.select_run(folder.name)
        return folder

    def stop_selected(self) -> None:
        run = self.selected_run()
        if run is None or not run.can_stop:
            return
        try:
            tr.request_stop(run)
        except OSError as exc:
            self._warn(f"Could not ask {run.name} to stop: {exc}")
            return
        if run.state == "calibrating":
            self._say(f"Asked {run.name} to stop calibrating: its model stays saved, not calibrated.")
        else:
            self._say(f"Asked {run.name} to stop: it saves a checkpoint after its current step.")
        self.refresh()

    def resume_selected(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        try:
            tr.resume(run, env=self.env)
        except (OSError, ValueError) as exc:
            self._warn(f"Could not resume {run.name}: {exc}")
            return
        self._say(f"Resumed {run.name} from its checkpoint.")
        self.refresh()

    def show_log(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        self._log_of = run.name
        self._update_details()

    def use_selected_model(self) -> bool:
        """Hand the finished run's model to the main window; True when it was handed over.

        A freshly trained model has no thresholds: it is not handed over (the application could
        not scan with it) and the message says how to calibrate it.
        """
        run = self.selected_run()
        if run is None or run.state != "finished" or self.use_model is None:
            return False
        from core.errors import ModelFileError
        from core.modelfile import read_metadata

        path = run.model
        try:
            meta = read_metadata(path)
        except (ModelFileError, OSError) as exc:
            self._warn(f"Cannot use the model of {run.name}: {exc}")
            return False
        if not meta.get("thresholds"):
            self._warn(
                f"The model of {run.name} is not calibrated yet: it has no thresholds, so weldreview "
                "cannot scan with it. Calibrate it on held-out okay radiographs (not those it was "
                "trained on) first, for example:\n\n"
                f"    weldreview calibrate \"{path}\" --data FOLDER\n\n"
                "(or --synthetic N for generated welds), then choose Use this model again.")
            return False
        self.use_model(path)
        self._say(f"The main window now scans with {path}.")
        return True

    # ----- Qt events ----------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.refresh()
        self.timer.start()
        super().showEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.timer.stop()  # the runs themselves go on
        super().closeEvent(event)

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.timer.stop()
        super().hideEvent(event)


def open_training_runs(main_window) -> TrainingRunsDialog | None:
    """Open the (modeless) Training runs window of the main window's home (one per window)."""
    dialog = getattr(main_window, "_training_runs", None)
    if dialog is None:
        try:
            folder = runs_folder(main_window)
        except OSError as exc:
            main_window.show_error(f"Cannot open the training runs folder: {exc}")
            return None
        dialog = TrainingRunsDialog(folder, user=getattr(main_window, "user", None),
                                    use_model=getattr(main_window, "use_model", None),
                                    parent=main_window)
        main_window._training_runs = dialog
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    return dialog
