"""The calibration review dialog, driven offscreen like a supervisor would.

A tiny untrained model, calibrated for real on 80 okay patches of one generated weld at FPR 0.05,
one pair of thresholds for the whole weld region (the top four set them; with a pair per zone the
joint rule takes each column's largest on so few patches, and none is above its threshold): the dialog lists the tail highest first, loads the selected
patch and its residual in the background, lets only a supervisor exclude patches (with a reason,
audited; the thresholds in the model's sidecar follow) and include them again, and says what is
wrong, without crashing, when the calibration film has gone or no origins were recorded.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PySide6.QtWidgets import QInputDialog

from gui_support import no_thread_leak, qsettings  # noqa: F401

LOAD_TIMEOUT_MS = 60_000
CALIBRATE = ["--fpr", "0.05", "--patches", "80"]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny model calibrated on one synthetic weld (made once; tests use copies)."""
    from app.cli import main
    from core.model import build_autoencoder
    from core.modelfile import save_model

    folder = tmp_path_factory.mktemp("calibrated")
    net = build_autoencoder(seed=3, filters=(4, 6), dropout=0.0)
    path = save_model(net, folder / "m.keras", metadata={"name": "m"})
    assert main(["calibrate", str(path), "--synthetic", "1", "--edge-band", "0", *CALIBRATE]) == 0
    return dict(net=net, path=path)


@pytest.fixture
def model(calibrated, tmp_path):
    """A copy of the calibrated model (file and sidecar) of this test's own."""
    from core.modelfile import sidecar_path

    path = tmp_path / "m.keras"
    shutil.copy(calibrated["path"], path)
    shutil.copy(sidecar_path(calibrated["path"]), sidecar_path(path))
    return path


@pytest.fixture
def store(tmp_path):
    from core.store import Store

    store = Store(tmp_path / "r.db")
    store.add_user("sue", role="supervisor")
    store.add_user("ian", role="interpreter")
    yield store
    store.close()


def open_review(qtbot, store, user, path):
    from app.calibration_review import CalibrationReview

    dialog = CalibrationReview(store, user, path)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def wait_shown(qtbot, dialog, index):
    qtbot.waitUntil(lambda: dialog.shown is not None and dialog.shown["index"] == index
                    and not dialog.runner.is_running(), timeout=LOAD_TIMEOUT_MS)
    return dialog.shown


def column(dialog, name):
    names = [dialog.table.horizontalHeaderItem(j).text() for j in range(dialog.table.columnCount())]
    j = names.index(name)
    return [dialog.table.item(i, j).text() for i in range(dialog.table.rowCount())]


def thresholds_of(path):
    from core.calibration import Thresholds
    from core.modelfile import read_metadata

    return Thresholds.from_dict(read_metadata(path)["thresholds"])


def test_tail_is_listed_highest_first_and_the_patch_loads_in_the_background(qtbot, store, model):
    from core.calibration import describe

    dialog = open_review(qtbot, store, "ian", model)
    thr = thresholds_of(model)
    assert describe(thr) in dialog.header.text()
    assert "target 0.05" in dialog.header.text() and "80 scored, 0 excluded" in dialog.header.text()
    assert "one film only, nothing to leave out" in dialog.films.text()
    assert dialog.table.rowCount() == 24
    ratios = [float(v) for v in column(dialog, "Score / thr")]
    assert ratios == sorted(ratios, reverse=True) and ratios[0] > 1 > ratios[-1]
    assert column(dialog, "Rank") == [str(r) for r in range(1, 25)]
    assert set(column(dialog, "Film")) == {"synthetic:1000"}
    assert all(p.startswith("(") for p in column(dialog, "Position (row, col)"))
    assert column(dialog, "Status") == [""] * 24

    dialog.select_rows([0])
    first = dialog.rows[0].index
    assert "Loading patch" in dialog.message.text()  # the GUI thread did not wait for the model
    shown = wait_shown(qtbot, dialog, first)
    assert shown["patch"].shape == (192, 192) and shown["residual"].shape == (156, 156)
    assert shown["patch"].dtype == np.float32 and np.all(np.isfinite(shown["residual"]))
    assert dialog.stack.currentWidget() is dialog.graphics
    assert dialog.residual_item.getLevels() == pytest.approx([-2 * thr.mean, 2 * thr.mean])

    dialog.select_rows([3])  # another patch, with the model kept from the first load
    shown = wait_shown(qtbot, dialog, dialog.rows[3].index)
    assert "patch" in shown and f"#{dialog.rows[3].index}" in dialog.caption.text()


def test_closing_while_a_patch_loads_stops_cleanly_and_showing_again_resumes(qtbot, store, model):
    from app.worker import live_threads

    dialog = open_review(qtbot, store, "ian", model)
    dialog.select_rows([2])
    assert dialog.runner.is_running()
    dialog.close()
    assert not any(t.isRunning() for t in live_threads()) and dialog.shown is None
    dialog.show()
    shown = wait_shown(qtbot, dialog, dialog.rows[2].index)
    assert "patch" in shown and dialog.stack.currentWidget() is dialog.graphics


def test_an_interpreter_cannot_exclude(qtbot, store, model):
    dialog = open_review(qtbot, store, "ian", model)
    assert not dialog.exclude_button.isEnabled() and not dialog.include_button.isEnabled()
    before = thresholds_of(model)
    dialog.select_rows([0, 1])
    assert dialog.exclude_selected("looks like a pore") is None
    assert "only a supervisor" in dialog.status.text()
    assert thresholds_of(model) == before
    assert store.audit_log(event="calibration patches excluded") == []
    wait_shown(qtbot, dialog, dialog.rows[0].index)

    stranger = open_review(qtbot, store, "nobody", model)
    assert not stranger.exclude_button.isEnabled()


def test_a_supervisor_excludes_and_includes_with_a_reason(qtbot, store, model, monkeypatch):
    from core.calibration import Thresholds
    from core.modelfile import read_metadata

    dialog = open_review(qtbot, store, "sue", model)
    assert dialog.exclude_button.isEnabled() and dialog.include_button.isEnabled()
    before = thresholds_of(model)
    top_two = [dialog.rows[0].index, dialog.rows[1].index]
    dialog.select_rows([0, 1])

    # the button asks for a reason; an empty one changes nothing
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("  ", True)))
    dialog.exclude_button.click()
    assert thresholds_of(model) == before and dialog.status.text() == ""

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("pore the mask misses", True)))
    dialog.exclude_button.click()
    after = thresholds_of(model)
    assert after != before and after.n_okay == 78
    assert read_metadata(model)["calibration_review"]["excluded"].keys() == {str(i) for i in top_two}
    assert dialog.status.text().startswith(
        f"2 patches excluded by sue; |mean| threshold {before.mean:.4g} -> {after.mean:.4g}")
    status = dict(zip(column(dialog, "#"), column(dialog, "Status")))
    for i in top_two:
        assert status[str(i)] == "excluded by sue: pore the mask misses"
    assert "2 excluded" in dialog.header.text() and f"{after.mean:.5f}" in dialog.header.text()
    assert dialog.selected_indices() == top_two  # the selection follows the patches
    (event,) = store.audit_log(event="calibration patches excluded")
    assert event["user"] == "sue" and event["details"]["reason"] == "pore the mask misses"
    assert sorted(p["index"] for p in event["details"]["patches"]) == top_two
    assert Thresholds.from_dict(event["details"]["thresholds_after"]) == after

    assert dialog.exclude_selected("again") is None  # nothing left to exclude: said, not raised
    assert "already excluded" in dialog.status.text()

    assert dialog.include_selected("second look: weld texture") == before
    assert thresholds_of(model) == before
    assert dialog.status.text().startswith("2 patches included again by sue")
    assert column(dialog, "Status") == [""] * 24
    assert len(store.audit_log(event="calibration patches included")) == 1
    assert store.verify().ok
    wait_shown(qtbot, dialog, top_two[0])


def test_a_moved_calibration_film_shows_why_instead_of_crashing(qtbot, store, calibrated, tmp_path):
    from app.cli import main
    from core.imageio import write_png
    from core.modelfile import save_model
    from core.synthetic import generate_weld

    data = tmp_path / "films"
    data.mkdir()
    weld = generate_weld(7, shape=(500, 1200), defects=None, iqi=False, markers=False)
    write_png(data / "film.png", weld.image.astype(np.uint16))
    write_png(data / "film_mask.png", np.zeros(weld.image.shape, np.uint8))
    path = save_model(calibrated["net"], tmp_path / "d.keras", metadata={"name": "d"})
    assert main(["calibrate", str(path), "--data", str(data), *CALIBRATE]) == 0
    (data / "film.png").unlink()

    dialog = open_review(qtbot, store, "sue", path)
    assert set(column(dialog, "Film")) == {"film"}
    dialog.select_rows([0])
    shown = wait_shown(qtbot, dialog, dialog.rows[0].index)
    assert "patch" not in shown and "film.png" in shown["error"]
    assert dialog.stack.currentWidget() is dialog.message
    assert "cannot be shown" in dialog.message.text() and "film.png" in dialog.message.text()
    # the scores are still there to decide on
    assert dialog.exclude_selected("processing mark") is not None


def test_each_calibration_film_left_out_is_shown_and_follows_an_exclusion(qtbot, store, calibrated, tmp_path):
    from app.cli import main
    from core.calibration import decode_scores
    from core.calibration_review import origins
    from core.film_check import leave_one_film_out
    from core.modelfile import read_metadata, save_model

    path = save_model(calibrated["net"], tmp_path / "two.keras", metadata={"name": "two"})
    assert main(["calibrate", str(path), "--synthetic", "2", "--edge-band", "0", *CALIBRATE]) == 0
    dialog = open_review(qtbot, store, "sue", path)
    meta = read_metadata(path)
    films = np.array([o.source for o in origins(meta)])
    assert set(films) == {"synthetic:1000", "synthetic:1001"}
    before = leave_one_film_out(decode_scores(meta["okay_scores"]), films, fpr=0.05)
    text = dialog.films.text()
    assert "Each film left out" in text
    for c in before:  # each weld with the share the other's thresholds flag, as computed here
        assert f"{c.name}: {100 * c.fpr:.2f} % ({c.flagged} of {c.n};" in text
    dialog.select_rows([0])
    [excluded] = dialog.selected_indices()
    dialog.exclude_selected("unmarked pore")
    gone = films[excluded]  # the excluded patch's weld has one patch fewer to be checked on
    assert f"{gone}: " in dialog.films.text()
    assert f"of {int((films == gone).sum()) - 1};" in dialog.films.text().split(f"{gone}: ")[1].splitlines()[0]

    # the model versions window shows the same, from the model's file, beside its thresholds
    from app.model_manager import ModelManager
    from core.film_check import check_model
    from core.modelfile import file_sha256

    meta = read_metadata(path)
    mid = store.add_model(sha256=file_sha256(path), metadata=meta, thresholds=meta["thresholds"],
                          name="two", path=path, user="sue")
    manager = ModelManager(store, "sue")
    qtbot.addWidget(manager)
    manager.select_model(mid)
    details = manager.details.toPlainText()
    assert "each calibration film left out: " in details
    for c in check_model(meta):
        assert f"{c.name} {100 * c.fpr:.2f} %" in details


def test_slope_zones_are_named_in_the_table_and_kept_by_an_exclusion(qtbot, store, calibrated, tmp_path):
    from dataclasses import replace

    from app.calibration_review import threshold_change
    from app.cli import main
    from core.calibration import describe
    from core.modelfile import save_model

    path = save_model(calibrated["net"], tmp_path / "s.keras", metadata={"name": "s"})
    assert main(["calibrate", str(path), "--synthetic", "1", "--zones", "slope", *CALIBRATE]) == 0
    thr = thresholds_of(path)
    dialog = open_review(qtbot, store, "sue", path)
    assert describe(thr) in dialog.header.text() and "slope" in dialog.header.text()
    names = [dialog.table.horizontalHeaderItem(j).text() for j in range(dialog.table.columnCount())]
    low, high = thr.zone_labels()
    assert names[3:9] == ["|mean|", "std", f"{low} |mean|", f"{low} std", f"{high} |mean|", f"{high} std"]
    dialog.select_rows([0])
    after = dialog.exclude_selected("unmarked pore")
    assert after.slope_bounds == thr.slope_bounds and thresholds_of(path) == after
    assert "1 patch excluded by sue" in dialog.status.text()
    steeper = replace(thr, slope_zones=(thr.slope_zones[0], (thr.slope_bounds[1], 0.5, 0.25)))
    assert f"{high} zone |mean| " in threshold_change(thr, steeper) and " px" not in threshold_change(thr, steeper)


def test_a_calibration_without_origins_lists_scores_and_says_why_no_patch(qtbot, store, model):
    from core.modelfile import sidecar_path

    side = sidecar_path(model)
    meta = json.loads(side.read_text())
    del meta["okay_origins"]
    side.write_text(json.dumps(meta))

    dialog = open_review(qtbot, store, "sue", model)
    assert dialog.table.rowCount() == 24
    assert set(column(dialog, "Film")) == {"(origin not recorded)"}
    dialog.select_rows([0])
    assert not dialog.runner.is_running()  # nothing to run the model on
    assert "did not record where" in dialog.message.text()
    assert dialog.stack.currentWidget() is dialog.message
    assert dialog.exclude_selected("a scratch") is not None


def test_an_uncalibrated_model_says_so(qtbot, store, calibrated, tmp_path):
    from core.modelfile import save_model

    path = save_model(calibrated["net"], tmp_path / "raw.keras", metadata={"name": "raw"})
    dialog = open_review(qtbot, store, "sue", path)
    assert "not calibrated" in dialog.header.text()
    assert dialog.table.rowCount() == 0 and not dialog.exclude_button.isEnabled()


def test_the_model_manager_opens_the_review_of_the_selected_version(qtbot, store, model, tmp_path):
    from app.model_manager import ModelManager
    from core.calibration import Thresholds, describe
    from core.modelfile import file_sha256, read_metadata

    meta = read_metadata(model)
    mid = store.add_model(sha256=file_sha256(model), metadata=meta, thresholds=meta["thresholds"],
                          name="m", path=model, user="sue")
    gone = store.add_model(sha256="0" * 64, metadata={}, name="gone", path=tmp_path / "gone.keras")
    manager = ModelManager(store, "sue")
    qtbot.addWidget(manager)
    assert manager.review_button.text() == "Review calibration..."

    manager.select_model(gone)
    assert manager.open_calibration_review() is None
    assert "file is missing" in manager.status.text() and "gone.keras" in manager.status.text()

    manager.select_model(mid)
    assert "no calibration film to leave out (one film)" in manager.details.toPlainText()  # one weld
    dialog = manager.open_calibration_review()
    assert dialog.isVisible() and not dialog.isModal() and dialog.model_path == model
    dialog.select_rows([0])
    after = dialog.exclude_selected("unmarked dark spot")
    assert after is not None
    registered = next(m for m in store.models() if m["id"] == mid)
    assert Thresholds.from_dict(registered["thresholds"]) == after
    assert f"thresholds: {describe(after)}; FPR target" in manager.details.toPlainText()
    (event,) = store.audit_log(event="calibration patches excluded")
    assert (event["entity"], event["entity_id"]) == ("models", mid)
    wait_shown(qtbot, dialog, dialog.rows[0].index)
    dialog.close()


def test_the_main_window_scans_with_the_reviewed_thresholds(qtbot, qsettings, store, model):  # noqa: F811
    """A review of the model in use reaches the main window: the next scan uses the new thresholds."""
    from app.main_window import MainWindow
    from app.model_manager import open_model_manager
    from core.modelfile import file_sha256, read_metadata

    meta = read_metadata(model)
    mid = store.add_model(sha256=file_sha256(model), metadata=meta, thresholds=meta["thresholds"],
                          name="m", path=model, user="sue")
    w = MainWindow(store=store, user="sue", settings=qsettings, model_path=model)
    qtbot.addWidget(w)
    w.preload_model()
    qtbot.waitUntil(lambda: w.bundle is not None, timeout=30_000)
    before = w.bundle.thresholds
    manager = open_model_manager(w)
    manager.select_model(mid)
    dialog = manager.open_calibration_review()
    dialog.select_rows([0, 1])
    after = dialog.exclude_selected("unmarked pore")
    assert after is not None and after != before
    qtbot.waitUntil(lambda: w.bundle is not None and w.bundle.thresholds == after, timeout=30_000)
    assert "apply from the next scan" in w.statusBar().currentMessage()
    dialog.close()
    manager.close()
    w.close()


def test_a_supervisor_excludes_every_patch_over_a_spot(qtbot, store, model, monkeypatch):
    """One click takes out every calibration patch that holds the shown patch's strongest residual."""
    from core.calibration_review import exclusions
    from core.modelfile import read_metadata

    dialog = open_review(qtbot, store, "sue", model)
    assert not dialog.spot_button.isEnabled()  # nothing shown yet
    dialog.select_rows([0])
    shown = wait_shown(qtbot, dialog, dialog.rows[0].index)
    assert dialog.spot_button.isEnabled() and shown["index"] in shown["covering"]
    assert f"inside {len(shown['covering'])} calibration patch" in dialog.caption.text()
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("scratch", True)))
    dialog.spot_button.click()
    assert set(exclusions(read_metadata(model))) == set(shown["covering"])
    (event,) = store.audit_log(event="calibration patches excluded")
    assert sorted(p["index"] for p in event["details"]["patches"]) == sorted(shown["covering"])
    assert event["details"]["reason"] == "scratch"

    interpreter = open_review(qtbot, store, "ian", model)
    interpreter.select_rows([1])
    wait_shown(qtbot, interpreter, interpreter.rows[1].index)
    assert not interpreter.spot_button.isEnabled()
    interpreter.close()
    dialog.close()
