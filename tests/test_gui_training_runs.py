"""The Training runs window (Models > Training runs), driven offscreen like a user would, with
real training processes: a tiny run started from the form, its model used once calibrated (by hand,
or at the end of a run given a calibration folder); a long
run stopped, shown stopped with Resume enabled, resumed; the window closed while a run goes on.

Every training process a test starts is killed at its end (fixture ``window``).
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from gui_support import no_thread_leak, qsettings  # noqa: F401

RUN_TIMEOUT_MS = 180_000
LONG = {"synthetic": 1, "steps": 100_000, "batch": 2, "seed": 0}


@pytest.fixture
def window(qtbot, qsettings, tmp_path):  # noqa: F811
    from app.main_window import MainWindow
    from core import training_runs as tr
    from core.store import Store

    store = Store(tmp_path / "review.sqlite")
    store.add_user("ina", role="interpreter")
    before = set(tr._children)
    w = MainWindow(store=store, user="ina", settings=qsettings, model_path=tmp_path / "none.keras")
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    for pid in set(tr._children) - before:  # no training process outlives its test
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        tr._children.pop(pid).wait(timeout=30)
    w.close()
    store.close()


def click(qtbot, button) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def row_text(dialog, name: str, column: str) -> str:
    from app.training_runs import COLUMNS

    names = [r.name for r in dialog.runs]
    return dialog.table.item(names.index(name), COLUMNS.index(column)).text()


def state_of(dialog, name: str) -> str | None:
    run = dialog.run_named(name)
    return None if run is None else run.state


def open_from_menu(w):
    menu = next(a.menu() for a in w.menuBar().actions() if a.text() == "&Models")
    action = next(a for a in menu.actions() if a.text() == "&Training runs...")
    assert action is w.actions["models.training_runs"] and action.shortcut().toString() == "Ctrl+Shift+T"
    action.trigger()
    return w._training_runs


def test_a_run_from_the_form_finishes_and_its_calibrated_model_is_used(qtbot, window, tmp_path):
    from core.calibration import calibrate_model

    w = window
    dialog = open_from_menu(w)
    assert dialog.isVisible() and not dialog.isModal()
    assert dialog.folder == tmp_path / "training"  # beside the review database
    assert "does not stop it" in dialog.note.text()
    click(qtbot, dialog.new_button)
    form = dialog.form
    assert form.isVisible()
    assert form.perturbations.text() == "D,SNI" and form.budget.value() == 60.0
    assert not form.background.isChecked()  # synthetic welds have no background to remove
    form.name.setText("tiny run")
    form.data.setText(str(tmp_path / "no such folder"))
    assert form.background.isChecked() and form.sigma.value() == 24.0  # real films: on
    ok = form.buttons.button(QDialogButtonBox.StandardButton.Ok)
    click(qtbot, ok)
    assert form.isVisible() and "no such folder" in form.error.text()
    form.data.setText("")
    assert not form.background.isChecked()
    click(qtbot, ok)
    assert form.isVisible() and "synthetic welds" in form.error.text()
    form.synthetic.setValue(1)
    form.steps.setValue(4)
    form.batch.setValue(2)
    form.background.setChecked(True)  # with background removal: the measured loss weight too
    assert form.options()["background"] == 24.0 and form.options()["per_weight"] == 0.25
    form.background.setChecked(False)
    assert form.options()["per_weight"] is None
    click(qtbot, ok)
    assert not form.isVisible()

    qtbot.waitUntil(lambda: dialog.runs and dialog.runs[0].name == "tiny-run", timeout=5000)
    assert row_text(dialog, "tiny-run", "Started by") == "ina"
    qtbot.waitUntil(lambda: state_of(dialog, "tiny-run") in ("finished", "failed", "interrupted"),
                    timeout=RUN_TIMEOUT_MS)
    run = dialog.run_named("tiny-run")
    assert run.state == "finished", run.status
    assert run.request["options"]["background"] is None
    assert row_text(dialog, "tiny-run", "State") == "finished"
    assert row_text(dialog, "tiny-run", "Step") == "4/4"
    assert dialog.table.cellWidget(0, 2).value() == 1000
    assert dialog.selected_run().name == "tiny-run"  # selected when started
    assert not dialog.stop_button.isEnabled() and not dialog.resume_button.isEnabled()
    click(qtbot, dialog.log_button)
    assert "wrote " in dialog.details.toPlainText()  # the run's own output

    # a fresh model has no thresholds: not handed over, the user is told to calibrate it
    click(qtbot, dialog.use_button)
    assert w.model_path == tmp_path / "none.keras"
    assert "not calibrated" in dialog.messages[-1] and "weldreview calibrate" in dialog.messages[-1]
    assert dialog.last_message_box.isVisible()
    dialog.last_message_box.close()
    # calibrated (as `weldreview calibrate` does), it is used like File > Use model
    rng = np.random.default_rng(0)
    calibrate_model(run.model, (0.5 + 0.02 * rng.standard_normal((30, 192, 192))).astype(np.float32),
                    fpr=0.1)
    click(qtbot, dialog.use_button)
    assert w.model_path == run.model
    qtbot.waitUntil(lambda: w.bundle is not None or w.model_error is not None, timeout=60_000)
    assert w.model_error is None and w.bundle.path == run.model
    assert w.bundle.sha256 in {m["sha256"] for m in w.store.models()}  # registered as opened


def held_out_folder(folder):
    """One generated weld (seed 1000, never a training weld here) as radiograph + mask PNGs."""
    from skimage import io

    from core.synthetic import generate_weld

    folder.mkdir()
    weld = generate_weld(1000, shape=(400, 1200))
    io.imsave(folder / "held-out.png", weld.image.astype(np.uint16), check_contrast=False)
    io.imsave(folder / "held-out_mask.png", weld.mask.astype(np.uint8) * 255, check_contrast=False)
    return folder


def test_a_run_from_the_form_with_a_calibration_folder_ends_calibrated_and_is_used_at_once(
        qtbot, window, tmp_path):
    from app.training_runs import CALIBRATION_TIP

    w = window
    held_out = held_out_folder(tmp_path / "held out")
    dialog = open_from_menu(w)
    click(qtbot, dialog.new_button)
    form = dialog.form
    assert form.calibration.text() == "" and "never the training ones" in form.calibration.toolTip()
    assert form.calibration.toolTip() == CALIBRATION_TIP and "used at once" in CALIBRATION_TIP
    assert form.fpr.value() == 0.001  # weldreview calibrate's default
    form.name.setText("calibrated")
    ok = form.buttons.button(QDialogButtonBox.StandardButton.Ok)
    form.data.setText(str(held_out))
    form.calibration.setText(str(held_out) + "/")
    click(qtbot, ok)  # the calibration folder must not be the training one
    assert form.isVisible() and "calibration folder is the data folder" in form.error.text()
    form.calibration.setText(str(tmp_path / "no such folder"))
    click(qtbot, ok)
    assert form.isVisible() and "no such folder (the calibration folder)" in form.error.text()
    form.data.setText("")
    form.calibration.setText(str(held_out))
    form.synthetic.setValue(1)
    form.steps.setValue(4)
    form.batch.setValue(2)
    form.fpr.setValue(0.05)  # 80 okay patches: seconds
    click(qtbot, ok)
    assert not form.isVisible()

    def state():
        dialog.refresh()
        return state_of(dialog, "calibrated")

    qtbot.waitUntil(lambda: state() in ("calibrating", "finished", "failed", "interrupted"),
                    timeout=RUN_TIMEOUT_MS)
    run = dialog.run_named("calibrated")
    assert run.state == "calibrating", run.status  # the model is saved; calibration takes seconds
    assert row_text(dialog, "calibrated", "State") == "calibrating..."
    assert row_text(dialog, "calibrated", "Progress") == "100%" and dialog.table.cellWidget(0, 2).value() == 1000
    assert row_text(dialog, "calibrated", "Step") == "4/4"
    assert not dialog.use_button.isEnabled()  # not before it is calibrated
    assert "calibrating..." in dialog.details.toPlainText()
    qtbot.waitUntil(lambda: state() in ("finished", "failed", "interrupted"), timeout=RUN_TIMEOUT_MS)
    run = dialog.run_named("calibrated")
    assert run.state == "finished", run.status
    assert run.request["options"]["calibrate_data"] == str(held_out)
    assert run.request["options"]["calibrate_fpr"] == 0.05
    assert "calibrated on the radiographs of" in run.status["message"]
    assert "no calibration film to leave out" in run.status["message"]  # one held-out film: nothing to check it on
    # keeping the best state is on with a calibration folder: validated once, at the end
    assert run.request["options"]["validate_every"] == 300
    assert run.status["validation"]["step"] == run.status["validation"]["best_step"] == 4
    assert "validation " in dialog.details.toPlainText() and "at step 4; best step 4" in dialog.details.toPlainText()
    assert "thresholds |mean| > " in dialog.details.toPlainText()

    n = len(dialog.messages)
    click(qtbot, dialog.use_button)  # calibrated: used at once, no calibrate message
    assert w.model_path == run.model
    assert not any("not calibrated" in m for m in dialog.messages[n:])
    assert dialog.messages[-1] == f"The main window now scans with {run.model}."
    qtbot.waitUntil(lambda: w.bundle is not None or w.model_error is not None, timeout=60_000)
    assert w.model_error is None and w.bundle.path == run.model
    assert w.bundle.thresholds.fpr_target == 0.05 and w.bundle.thresholds.n_okay == 90  # 4.5 / fpr


def test_keep_the_best_state_needs_a_calibration_folder_and_gives_validate_every(
        qtbot, window, tmp_path):
    from app.training_runs import VALIDATION_TIP

    dialog = open_from_menu(window)
    click(qtbot, dialog.new_button)
    form = dialog.form
    assert form.keep_best.toolTip() == VALIDATION_TIP and form.validate_every.toolTip() == VALIDATION_TIP
    assert "every N steps" in VALIDATION_TIP and "25-35 s" in VALIDATION_TIP and "time budget" in VALIDATION_TIP
    assert form.keep_best.text() == "Keep the best state, validate every"
    assert form.validate_every.value() == 300 and form.validate_every.suffix() == " steps"
    assert (form.validate_every.minimum(), form.validate_every.maximum()) == (1, 100_000)
    form.synthetic.setValue(1)
    # no calibration folder: nothing to validate on
    assert not form.keep_best.isEnabled() and not form.validate_every.isEnabled()
    assert not form.keep_best.isChecked() and form.options()["validate_every"] is None
    form.calibration.setText(str(tmp_path))  # a calibration folder: on by default
    assert form.keep_best.isChecked() and form.keep_best.isEnabled() and form.validate_every.isEnabled()
    assert form.options()["validate_every"] == 300
    form.validate_every.setValue(250)
    options = form.options()
    assert options["validate_every"] == 250 and options["calibrate_data"] == str(tmp_path.resolve())
    from core.training_runs import train_arguments

    args = train_arguments(tmp_path / "run", options)
    assert args[args.index("--validate-every") + 1] == "250"
    click(qtbot, form.keep_best)  # the user turns it off: it stays off
    assert not form.validate_every.isEnabled() and form.options()["validate_every"] is None
    form.calibration.setText("")
    form.calibration.setText(str(tmp_path))
    assert not form.keep_best.isChecked() and form.options()["validate_every"] is None
    click(qtbot, form.keep_best)
    form.calibration.setText("  ")  # the folder taken away: checked, but not usable
    assert not form.keep_best.isEnabled() and not form.validate_every.isEnabled()
    assert form.options()["validate_every"] is None
    assert "--validate-every" not in train_arguments(tmp_path / "run", form.options())
    form.reject()


def test_a_validated_run_shows_its_latest_and_best_validation(qtbot, window):
    import json

    from app.training_runs import validation_text
    from core import training_runs as tr

    dialog = open_from_menu(window)
    folder = dialog.folder / "validated"
    folder.mkdir()
    options = {"synthetic": 1, "calibrate_data": "/held/out", "validate_every": 100}
    (folder / tr.REQUEST).write_text(json.dumps({"created": 1.0, "options": options}))
    message = ("trained 300 steps; saved the state of step 200 (validation 61.2 %), not the last, "
               "step 300 (52.0 %)")
    status = {"state": "finished", "step": 300, "steps": 300, "elapsed_s": 300.0, "budget_s": 300.0,
              "message": message,
              "validation": {"step": 300, "score": 0.52, "best_step": 200, "best_score": 0.612}}
    (folder / tr.STATUS).write_text(json.dumps(status))
    dialog.select_run("validated")
    lines = dialog.details.toPlainText().splitlines()
    assert lines[0] == f"validated: finished: {message}"
    assert lines[1] == "validation 52.0 % at step 300; best step 200 (61.2 %)"
    assert "validate_every 100" in lines[2]
    # before the first validation (or without validation): no such line
    assert validation_text(tr.TrainingRun(folder, "x", {}, {"state": "running", "step": 3})) is None
    status.pop("validation")
    (folder / tr.STATUS).write_text(json.dumps(status))
    dialog.refresh()
    assert "validation 52.0 %" not in dialog.details.toPlainText()


def test_a_calibrating_run_reads_calibrating_in_the_table(tmp_path):
    from app.training_runs import row_cells, state_text
    from core import training_runs as tr

    status = {"state": "calibrating", "step": 30, "steps": 100, "elapsed_s": 600.0, "budget_s": 600.0,
              "loss": 0.1, "samples_per_s": 20.0}
    run = tr.TrainingRun(tmp_path, "night", {"created": 1.0}, status)
    cells = row_cells(run)
    assert cells[1] == "calibrating..." and cells[2] == "100%" and cells[3] == "30/100" and cells[5] == "-"
    (tmp_path / tr.STOP).touch()
    assert state_text(run) == "stopping..."


def test_stop_shows_stopped_with_resume_and_closing_the_window_never_stops_a_run(qtbot, window):
    w = window
    dialog = open_from_menu(w)
    folder = dialog.start_run("overnight", LONG)
    assert folder is not None and dialog.selected_run().name == "overnight"
    qtbot.waitUntil(lambda: state_of(dialog, "overnight") not in ("starting", "running") or
                    dialog.run_named("overnight").status.get("step", 0) >= 1, timeout=RUN_TIMEOUT_MS)
    assert state_of(dialog, "overnight") == "running"
    # closing the window leaves the run going; opening it again shows it
    dialog.close()
    assert not dialog.timer.isActive()
    step = dialog.run_named("overnight").status["step"]
    qtbot.wait(2500)  # the status is written every 2 s
    again = open_from_menu(w)
    assert again is dialog and dialog.timer.isActive()
    assert state_of(dialog, "overnight") == "running" and dialog.runs[0].status["step"] > step
    assert row_text(dialog, "overnight", "Time left") != "-"

    click(qtbot, dialog.stop_button)
    assert row_text(dialog, "overnight", "State") == "stopping..."
    assert not dialog.stop_button.isEnabled()
    qtbot.waitUntil(lambda: state_of(dialog, "overnight") != "running", timeout=RUN_TIMEOUT_MS)
    assert state_of(dialog, "overnight") == "stopped", dialog.run_named("overnight").status
    assert row_text(dialog, "overnight", "State") == "stopped"
    assert dialog.resume_button.isEnabled() and not dialog.use_button.isEnabled()
    assert "stopped at step" in dialog.details.toPlainText()

    click(qtbot, dialog.resume_button)
    assert row_text(dialog, "overnight", "State") == "starting..."
    assert dialog.stop_button.isEnabled() and not dialog.resume_button.isEnabled()


def test_failures_are_messages_not_tracebacks(qtbot, window, monkeypatch):
    from core import training_runs as tr

    dialog = open_from_menu(window)

    def broken(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "log.txt")

    monkeypatch.setattr(tr, "launch", broken)
    assert dialog.start_run("cannot", {"synthetic": 1}) is None
    assert dialog.messages[-1].startswith("Could not start the training run 'cannot': ")
    assert "Permission denied" in dialog.messages[-1]
    assert not (dialog.folder / "cannot").exists() and dialog.runs == []
    dialog.last_message_box.close()

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(dialog.folder))

    monkeypatch.setattr(tr, "list_runs", unreadable)
    dialog.refresh()
    assert dialog.status.text().startswith("Cannot read the training runs in ")


def test_the_form_takes_a_folder_of_accepted_films(qtbot, window, tmp_path):
    """Accepted films without masks are enough to train on; the form passes them as --accepted."""
    from app.training_runs import ACCEPTED_TIP
    from core.training_runs import train_arguments

    dialog = open_from_menu(window)
    click(qtbot, dialog.new_button)
    form = dialog.form
    assert form.accepted_films.toolTip() == ACCEPTED_TIP and "no masks needed" in ACCEPTED_TIP
    ok = form.buttons.button(QDialogButtonBox.StandardButton.Ok)
    form.accepted_films.setText(str(tmp_path / "no such folder"))
    assert form.background.isChecked()  # real films: background removal on, as for the data folder
    click(qtbot, ok)
    assert form.isVisible() and "no such folder (the accepted films)" in form.error.text()
    films = tmp_path / "accepted"
    films.mkdir()
    form.accepted_films.setText(str(films))
    form.calibration.setText(str(films) + "/")
    click(qtbot, ok)
    assert form.isVisible() and "calibration folder is the folder of accepted films" in form.error.text()
    form.calibration.setText("")
    click(qtbot, ok)  # the default perturbations D,SNI: no defects to cut from accepted films
    assert form.isVisible() and "use SNI with them alone" in form.error.text()
    form.perturbations.setText("SNI")
    options = form.options()  # no data folder and no synthetic welds: the accepted films suffice
    assert options["accepted"] == str(films.resolve()) and options["data"] is None
    args = train_arguments(tmp_path / "run", options)
    assert args[args.index("--accepted") + 1] == str(films.resolve()) and "--data" not in args
    form.accepted_films.setText("")
    assert not form.background.isChecked()
    with pytest.raises(ValueError, match="folder of accepted films"):
        form.options()
