"""The retraining dialog and the model manager, driven offscreen like a user would.

A tiny, barely trained model is enough here: these tests check the application (background job,
live plots, Cancel, versions, qualification, activation rules, rollback, exclusions), not what
the model learns (tests/test_retraining.py does that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from gui_support import no_thread_leak, qsettings  # noqa: F401
from retrain_support import make_welds

JOB_TIMEOUT_MS = 180_000
FPR = 0.1  # 30 calibration patches suffice


@pytest.fixture
def db(tmp_path):
    """Two reviewed generated radiographs (one held back), a tiny calibrated active model."""
    from core import training_set as ts
    from core.calibration import calibrate_model
    from core.retraining import calibration_patches
    from core.store import Store
    from core.training import TrainConfig, train

    welds = make_welds(tmp_path, (11, 12), blobs=2, sigma=6.0, amplitude=0.08)
    store = Store(tmp_path / "review.sqlite")
    store.add_user("ina", role="interpreter")
    store.add_user("sam", role="supervisor")
    for w, split in zip(welds, ("train", "holdback")):
        w.id = store.add_radiograph_from(w.radiograph, user="ina")
        ts.set_split(store, w.id, split, user="sam")
    images = {w.radiograph.sha256: w.image for w in welds}
    config = TrainConfig(steps=2, batch=2, filters=(4, 6), dropout=0.0, seed=0, checkpoint_every=0,
                         out=tmp_path / "old.keras")
    old = train(config, lambda rng, n: np.full((n, 192, 192), 0.5, np.float32), [])
    mid = store.add_model(sha256=old.sha256, metadata=old.metadata, name="old", path=old.path, user="sam")
    for w in welds:  # reviewed by hand: a scan without regions but one false alarm, blobs missed
        sid = store.start_scan(radiograph_id=w.id, model_id=mid, fpr=FPR, user="ina")
        (rid,) = store.finish_scan(sid, [{"bbox": (40, 60, 52, 70), "tests": "std", "severity": 1.2}],
                                   user="ina")
        store.add_verdict(user="ina", verdict="false_alarm", region_id=rid)
        for b in w.boxes:
            store.add_verdict(user="ina", verdict="defect", radiograph_id=w.id, bbox=b, scan_id=sid)
    calibrate_model(old.path, calibration_patches(store, 30, images=images, seed=1), fpr=FPR)
    store.activate_model(mid, user="sam", justification="first model")
    yield dict(store=store, images=images, old_id=mid, path=old.path)
    store.close()


def test_retrain_dialog_plots_every_loss_term_while_the_app_stays_responsive(qtbot, db):
    from app.retrain_dialog import TERMS, RetrainDialog

    store = db["store"]
    dialog = RetrainDialog(store, "ina", images=db["images"])
    qtbot.addWidget(dialog)
    dialog.show()
    text = dialog.summary_label.text()
    assert "Verdicts not yet turned into training data: 6" in text
    n_models = len(store.models())
    dialog.start(steps=3, batch=2, n_calibration=30)
    # the GUI thread keeps running while the job trains: the plot fills step by step
    qtbot.waitUntil(lambda: len(dialog.history["step"]) >= 1, timeout=JOB_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not dialog.runner.is_running(), timeout=JOB_TIMEOUT_MS)
    assert dialog.error is None, dialog.error
    assert dialog.result is not None
    assert dialog.history["step"] == [1, 2, 3]  # a fine-tune counts its own steps from 1
    for k in TERMS:
        x, y = dialog.curves[k].getData()
        assert len(x) == len(dialog.history["step"]) and np.all(np.isfinite(y))
    assert len(dialog.speed_curve.getData()[0]) == len(dialog.history["step"])
    assert f"New model version {dialog.result.model_id}" in dialog.status.text()
    # a new version, not active, trained on the verdicts: 2 blobs + 1 false alarm of the train weld
    assert len(store.models()) == n_models + 1
    assert store.active_model()["id"] == db["old_id"]
    assert "Training: 0 confirmed defects, 2 missed indications, 1 false alarms" in dialog.summary_label.text()
    dialog.close()


def test_cancel_stops_training_and_makes_no_version(qtbot, db):
    from app.retrain_dialog import RetrainDialog

    store = db["store"]
    dialog = RetrainDialog(store, "ina", images=db["images"])
    qtbot.addWidget(dialog)
    n_models = len(store.models())
    dialog.start(steps=100_000, batch=2, n_calibration=30)
    qtbot.waitUntil(lambda: len(dialog.history["step"]) >= 1, timeout=JOB_TIMEOUT_MS)
    assert dialog.cancel_button.isEnabled()
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dialog.runner.is_running(), timeout=JOB_TIMEOUT_MS)
    assert "cancelled" in dialog.status.text()
    assert dialog.result is None and len(store.models()) == n_models
    assert dialog.start_button.isEnabled() and not dialog.cancel_button.isEnabled()


def test_model_manager_activation_rules_rollback_and_exclusion(qtbot, db):
    from app.model_manager import ModelManager
    from core import training_set as ts
    from core.retraining import retrain

    store = db["store"]
    new = retrain(store, user="ina", steps=2, batch=2, budget_min=None, images=db["images"], n_calibration=30)

    interp = ModelManager(store, "ina", images=db["images"])
    qtbot.addWidget(interp)
    assert not interp.activate_button.isEnabled() and not interp.exclude_button.isEnabled()
    interp.select_model(new.model_id)
    assert not interp.activate_selected(justification="I like it")
    assert "only a supervisor" in interp.messages[-1]

    sup = ModelManager(store, "sam", images=db["images"])
    qtbot.addWidget(sup)
    activated = []
    sup.activated.connect(activated.append)
    sup.select_model(new.model_id)
    assert "parent" in sup.details.toPlainText() and new.sha256 in sup.details.toPlainText()
    # calibrated on held-back patches of the training set: no film to leave out is recorded
    assert "calibration films left out: not known" in sup.details.toPlainText()
    assert not sup.activate_selected()  # neither qualified nor justified
    assert "no qualification" in sup.messages[-1]
    sup.qualify_selected(n_okay=30, n_synthetic=5)
    qtbot.waitUntil(lambda: not sup.runner.is_running(), timeout=JOB_TIMEOUT_MS)
    q = sup.last_qualification
    assert q is not None and q.candidate["okay"]["n"] == 30 and q.candidate["defects"]["n"] == 2
    assert len([k for k in q.candidate if k.startswith("synthetic:")]) == 6
    sup.select_model(new.model_id)
    assert ("passed" if q.passed else "FAILED") in sup.versions.item(
        sup.versions.currentRow(), 6).text()
    assert sup.activate_selected(None if q.passed else "line trial approved by QA")
    assert store.active_model()["id"] == new.model_id and activated == [str(new.path)]
    assert sup.rollback()
    assert store.active_model()["id"] == db["old_id"] and activated[-1] == str(db["path"])
    events = [r for r in store.audit_log(event="model activated")]
    assert events[-1]["details"]["justification"].startswith("rollback from model")

    # the training-set tab: a supervisor excludes an entry
    sup.entries.selectRow(0)
    assert sup.set_selected_excluded(True, reason="film scratched") == 1
    assert ts.entries(store)[0].excluded
    assert "excluded: film scratched" in sup.entries.item(0, 8).text()
    assert store.verify().ok


def test_menu_helpers_open_modeless_windows(qtbot, qsettings, db):  # noqa: F811
    from app.main_window import MainWindow
    from app.model_manager import open_model_manager
    from app.retrain_dialog import open_retrain_dialog

    w = MainWindow(store=db["store"], user="sam", settings=qsettings, model_path=Path(db["path"]))
    qtbot.addWidget(w)
    dialog = open_retrain_dialog(w)
    manager = open_model_manager(w)
    assert dialog.isVisible() and not dialog.isModal()
    assert manager.isVisible() and not manager.isModal()
    assert open_retrain_dialog(w) is dialog  # one of each
    assert [v["id"] for v in manager.version_rows] == [db["old_id"]]
    dialog.close()
    manager.close()
    w.close()
