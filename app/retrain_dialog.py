"""The retraining dialog: data summary, budget, live loss plot and samples/s, Cancel.

Retraining runs in a background thread (app.worker.JobRunner) with its own database connection,
so the review application stays usable; the dialog is modeless. The job pushes core.training's
progress dicts into a queue that a timer on the GUI thread drains into the plots.
"""

from __future__ import annotations

import collections
import threading

import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QCheckBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel,
    QPushButton, QSpinBox, QVBoxLayout,
)

from app.worker import JobRunner

TERMS = ("ok", "per", "kern_ok", "kern_per", "reg", "total")
COLOURS = {"ok": "#1f77b4", "per": "#ff7f0e", "kern_ok": "#2ca02c", "kern_per": "#d62728",
           "reg": "#9467bd", "total": "#444444"}
POLL_MS = 200


def summary_text(summary: dict) -> str:
    """The training-set summary in words."""
    t, h = summary["train"], summary["holdback"]
    return (
        f"Training: {t['defect']} confirmed defects, {t['missed']} missed indications, "
        f"{t['okay']} false alarms from {summary['radiographs']['train']} radiographs.\n"
        f"Held back for calibration and qualification: {h['defect'] + h['missed']} defects, "
        f"{h['okay']} false alarms from {summary['radiographs']['holdback']} radiographs.\n"
        f"Excluded by a supervisor: {summary['excluded']}. Verdicts not yet turned into "
        f"training data: {summary['pending_verdicts']} (done when training starts)."
    )


class RetrainDialog(QDialog):
    """Start, watch and cancel a retraining run.

    Parameters
    ----------
    store : core.store.Store
        The review database (the job opens its own connection to the same file).
    user : str or None
    parent : QWidget, optional
    images : dict, optional
        ``{sha256: image}`` already in memory (tests).
    """

    def __init__(self, store, user, parent=None, *, images=None):
        super().__init__(parent)
        self.setWindowTitle("Retrain from verdicts")
        self.setModal(False)
        self.store, self.user, self.images = store, user, images
        self.result = None
        self.error: str | None = None
        self.history: dict[str, list[float]] = {k: [] for k in (*TERMS, "samples_per_s", "step")}
        self._queue: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self.runner = JobRunner(self)
        self.runner.succeeded.connect(self._on_done)
        self.runner.failed.connect(self._on_failed)
        self.runner.cancelled.connect(self._on_cancelled)
        self.runner.finished.connect(self._on_finished)

        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.budget = QDoubleSpinBox()
        self.budget.setRange(0.5, 600.0)
        self.budget.setSuffix(" min")
        self.steps = QSpinBox()
        self.steps.setRange(1, 1_000_000)
        self.from_scratch = QCheckBox("Train from scratch (instead of fine-tuning the active model)")
        from core.retraining import DEFAULT_BUDGET_MIN, DEFAULT_STEPS

        self.budget.setValue(DEFAULT_BUDGET_MIN)
        self.steps.setValue(DEFAULT_STEPS)
        form = QFormLayout()
        form.addRow("Budget", self.budget)
        form.addRow("Steps at most", self.steps)
        form.addRow(self.from_scratch)

        self.loss_plot = pg.PlotWidget(title="Loss terms")
        self.loss_plot.setLogMode(y=True)
        self.loss_plot.addLegend()
        self.loss_plot.setLabel("bottom", "step")
        self.curves = {k: self.loss_plot.plot([], [], name=k, pen=pg.mkPen(COLOURS[k], width=2 if k == "total" else 1))
                       for k in TERMS}
        self.speed_plot = pg.PlotWidget(title="Samples per second")
        self.speed_plot.setLabel("bottom", "step")
        self.speed_curve = self.speed_plot.plot([], [], pen=pg.mkPen("#1f77b4"))
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)

        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.cancel_button)
        row.addStretch(1)
        row.addWidget(buttons)

        layout = QVBoxLayout(self)
        layout.addWidget(self.summary_label)
        layout.addLayout(form)
        layout.addWidget(self.loss_plot, 3)
        layout.addWidget(self.speed_plot, 1)
        layout.addWidget(self.status)
        layout.addLayout(row)
        self.resize(760, 720)

        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.drain)
        self.refresh_summary()

    # ----- data ---------------------------------------------------------------------------
    def refresh_summary(self) -> None:
        from core import training_set as ts

        try:
            self.summary_label.setText(summary_text(ts.summary(self.store)))
        except Exception as exc:  # noqa: BLE001 - shown, not raised
            self.summary_label.setText(f"Cannot read the training set: {exc}")

    # ----- the job ------------------------------------------------------------------------
    def start(self, *, steps: int | None = None, budget_min: float | None = None, batch: int | None = None,
              filters=None, n_calibration: int | None = None) -> None:
        """Start retraining in the background (options override the form, for tests)."""
        if self.runner.is_running():
            return
        from core.retraining import DEFAULT_BATCH, retrain
        from core.store import Store
        from core.training import TrainingCancelled

        path = self.store.path
        options = dict(
            user=self.user, budget_min=budget_min if budget_min is not None else self.budget.value(),
            from_scratch=self.from_scratch.isChecked(), steps=steps or self.steps.value(),
            batch=batch or DEFAULT_BATCH, images=self.images, filters=filters, n_calibration=n_calibration,
        )
        queue = self._queue

        def job(progress, cancel):
            def on_progress(p: dict) -> None:
                queue.append(dict(p))
                if "step" in p:
                    progress(p["step"] / p["steps"], f"step {p['step']}/{p['steps']}")

            with Store(path) as store:
                return retrain(store, progress=on_progress, cancel=cancel, **options)

        for k in self.history:
            self.history[k].clear()
        self.result, self.error = None, None
        self.status.setText("Preparing the training data...")
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.timer.start()
        self.runner.start(job, name="retrain", cancel_types=(TrainingCancelled,))

    def cancel(self) -> None:
        self.status.setText("Cancelling after the current step...")
        self.runner.cancel()

    def drain(self) -> None:
        """Move queued progress into the plots (GUI thread)."""
        changed = False
        while self._queue:
            p = self._queue.popleft()
            if "phase" in p:
                self.status.setText(f"{p['phase'].capitalize()}...")
                continue
            self.history["step"].append(p["step"])
            for k in TERMS:
                self.history[k].append(max(float(p.get(k, 0.0)), 1e-12))
            self.history["samples_per_s"].append(float(p.get("samples_per_s", 0.0)))
            self.status.setText(
                f"Step {p['step']}/{p['steps']}, loss {p['total']:.4g}, "
                f"{p.get('samples_per_s', 0.0):.1f} samples/s, {p.get('elapsed_s', 0.0) / 60:.1f} min")
            changed = True
        if changed:
            steps = self.history["step"]
            for k, curve in self.curves.items():
                curve.setData(steps, self.history[k])
            self.speed_curve.setData(steps, self.history["samples_per_s"])

    def _on_done(self, result) -> None:
        self.drain()
        self.result = result
        thr = result.thresholds
        self.status.setText(
            f"New model version {result.model_id} ({result.path.name}, sha256 {result.sha256[:12]}): "
            f"{len(result.entry_ids)} training entries, calibrated FPR {thr.fpr_achieved:.4f} "
            f"(target {thr.fpr_target:g}). Qualify it in the model manager before activation.")
        self.refresh_summary()

    def _on_failed(self, message: str) -> None:
        self.drain()
        self.error = message
        self.status.setText(f"Retraining failed: {message}")

    def _on_cancelled(self) -> None:
        self.drain()
        self.status.setText("Retraining cancelled; no model version was made.")

    def _on_finished(self) -> None:
        self.timer.stop()
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        if self.runner.is_running():
            self.runner.shutdown()
        super().closeEvent(event)


def open_retrain_dialog(main_window) -> RetrainDialog | None:
    """Open the (modeless) retraining dialog for the main window's database and user."""
    if getattr(main_window, "store", None) is None:
        main_window.show_error("Retraining needs the review database (open the application with a user).")
        return None
    dialog = getattr(main_window, "_retrain_dialog", None)
    if dialog is None:
        dialog = RetrainDialog(main_window.store, main_window.user, main_window)
        main_window._retrain_dialog = dialog
    dialog.refresh_summary()
    dialog.show()
    dialog.raise_()
    return dialog
