"""The supervisor's view driven like a supervisor would, offscreen: filter the decisions, open the
evidence, re-review a blind sample by keys, read agreement and kappa, overrule a disagreement,
verify the audit trail (and catch a tampered row), export CSV and PDF.

The store is real (a temp SQLite file); regions come from a fake scan recorded through
Store.start_scan/finish_scan on two small 16-bit TIFFs written here.
"""

from __future__ import annotations

import csv
import sqlite3
from datetime import date, timedelta

import numpy as np
import pytest
from PySide6.QtCore import QDate, Qt
from PySide6.QtWidgets import QApplication

from gui_support import no_thread_leak, qsettings  # noqa: F401

SHAPE = (200, 256)
# ann's regions on weld_a.tif: (bbox, severity, tests, ann's verdict)
ANN = [((10, 10, 30, 40), 3.0, "both", "defect"),
       ((40, 60, 60, 90), 1.4, "std", "acceptable"),
       ((80, 20, 100, 50), 2.2, "mean", "defect"),
       ((110, 150, 130, 190), 1.1, "std", "false_alarm"),
       ((20, 180, 44, 220), 1.8, "both", "unsure")]
# bob's regions on weld_b.tif (scanned with another model)
BOB = [((30, 30, 50, 70), 1.9, "std", "acceptable"),
       ((90, 100, 120, 140), 1.2, "mean", "unsure")]


def write_tiff(path, seed: int):
    import tifffile

    rng = np.random.default_rng(seed)
    raw = rng.integers(20_000, 40_000, size=SHAPE, dtype=np.uint16)
    tifffile.imwrite(path, raw, photometric="minisblack")
    return path


@pytest.fixture
def setup(tmp_path):
    """A store with two interpreters, a supervisor, two scanned radiographs and verdicts."""
    from core.imageio import load_radiograph
    from core.store import Store

    store = Store(tmp_path / "review.sqlite")
    store.add_user("ann", role="interpreter")
    store.add_user("bob", role="interpreter")
    store.add_user("sue", role="supervisor")
    m1 = store.add_model(sha256="1" * 64, metadata={}, name="m1")
    m2 = store.add_model(sha256="2" * 64, metadata={}, name="m2")
    out = {"store": store, "models": (m1, m2), "regions": {}, "first": {}, "paths": {}}
    for name, seed, model, user, spec in (("weld_a.tif", 1, m1, "ann", ANN),
                                          ("weld_b.tif", 2, m2, "bob", BOB)):
        path = write_tiff(tmp_path / name, seed)
        rid = store.add_radiograph_from(load_radiograph(path), user=user)
        scan = store.start_scan(radiograph_id=rid, model_id=model, fpr=0.001, user=user)
        ids = store.finish_scan(scan, [{"bbox": b, "severity": s, "tests": t}
                                       for b, s, t, _ in spec], user=user)
        for region, (bbox, _, _, verdict) in zip(ids, spec):
            out["first"][region] = store.add_verdict(user=user, verdict=verdict, region_id=region)
            out["regions"][region] = {"bbox": bbox, "scan": scan, "radiograph": rid,
                                      "path": path, "verdict": verdict, "user": user}
        out["paths"][name] = (rid, path)
    # ann changes her mind on her second region: the history has a change with a reason
    region2 = list(out["regions"])[1]
    out["first"][region2] = store.overrule(out["first"][region2], user="ann", verdict="defect",
                                           reason="looked again at full contrast")
    out["regions"][region2]["verdict"] = "defect"
    yield out
    store.close()


@pytest.fixture
def window(qtbot, setup):
    from app.supervisor import SupervisorWindow

    w = SupervisorWindow(setup["store"], "sue")
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.close()


def shown_ids(tab) -> list[int]:
    return [tab.model.row(i)["id"] for i in range(tab.model.rowCount())]


def verdict_count(store) -> int:
    return len(store.verdict_ids())


# ---------------------------------------------------------------------------------- access


def test_only_a_supervisor_opens_the_view(qtbot, qsettings, setup, tmp_path):
    from app.main_window import MainWindow
    from app.supervisor import SupervisorWindow, open_supervisor_window

    store = setup["store"]
    main = MainWindow(store=store, user="ann", settings=qsettings,
                      model_path=tmp_path / "no_model.keras")
    qtbot.addWidget(main)
    assert open_supervisor_window(main, store, "ann") is None
    assert "Only a supervisor" in main.messages[-1] and "ann is interpreter" in main.messages[-1]
    with pytest.raises(PermissionError, match="ann is interpreter"):
        SupervisorWindow(store, "ann")
    assert open_supervisor_window(main, store, "nobody") is None
    assert "unknown user 'nobody'" in main.messages[-1]

    window = open_supervisor_window(main, store, "sue")
    assert isinstance(window, SupervisorWindow) and window.isVisible()
    assert window.user == "sue" and main.supervisor_window is window
    assert open_supervisor_window(main, store, "sue") is window  # raised again, not a second one
    window.close()
    main.close()


# ---------------------------------------------------------------------------------- decisions


def test_filters_narrow_the_table(window, setup):
    store, tab = setup["store"], window.decisions
    everyone = shown_ids(tab)
    assert everyone == store.verdict_ids() and len(everyone) == 8  # 5 + 2 + ann's change

    tab.interpreter.setCurrentIndex(tab.interpreter.findData("bob"))
    assert {tab.model.row(i)["user"] for i in range(tab.model.rowCount())} == {"bob"}
    assert len(shown_ids(tab)) == 2
    tab.interpreter.setCurrentIndex(0)

    tab.verdict.setCurrentIndex(tab.verdict.findData("defect"))
    rows = [tab.model.row(i) for i in range(tab.model.rowCount())]
    assert len(rows) == 3 and all(r["verdict"] == "defect" for r in rows)  # 1, 3 and the change
    tab.verdict.setCurrentIndex(0)

    tab.model_choice.setCurrentIndex(tab.model_choice.findData(setup["models"][1]))
    assert len(shown_ids(tab)) == 2  # bob's scan used m2
    tab.model_choice.setCurrentIndex(0)

    rid_a, _ = setup["paths"]["weld_a.tif"]
    tab.radiograph.setCurrentIndex(tab.radiograph.findData(rid_a))
    assert {tab.model.row(i)["radiograph_id"] for i in range(tab.model.rowCount())} == {rid_a}
    assert len(shown_ids(tab)) == 6
    tab.current_only.setChecked(True)
    assert len(shown_ids(tab)) == 5  # ann's superseded first verdict on region 2 left out
    tab.current_only.setChecked(False)
    tab.radiograph.setCurrentIndex(0)

    today = QDate.fromString(date.today().isoformat(), "yyyy-MM-dd")
    tab.since.setDate(today.addDays(-2))
    tab.since_on.setChecked(True)
    tab.until.setDate(today.addDays(2))
    tab.until_on.setChecked(True)
    assert len(shown_ids(tab)) == 8
    tab.until.setDate(today.addDays(-3))
    assert shown_ids(tab) == []
    assert tab.filters()["until"] == date.today() - timedelta(days=3)
    tab.since_on.setChecked(False)
    tab.until_on.setChecked(False)
    assert len(shown_ids(tab)) == 8


def test_unsure_only_and_sorting(window, setup):
    tab = window.decisions
    tab.unsure_only.setChecked(True)
    rows = [tab.model.row(i) for i in range(tab.model.rowCount())]
    assert sorted(r["user"] for r in rows) == ["ann", "bob"]
    assert all(r["verdict"] == "unsure" for r in rows)
    assert "2 unsure in force" in tab.count.text()
    tab.unsure_only.setChecked(False)

    severity = [c.title for c in tab.model.columns].index("Severity")
    assert tab.select_decision(5)
    tab.table.sortByColumn(severity, Qt.SortOrder.DescendingOrder)
    assert tab.selected()["id"] == 5  # the selection follows its row
    values = [tab.model.row(i)["severity"] for i in range(tab.model.rowCount())]
    assert values == sorted(values, reverse=True) and values[0] == 3.0
    assert tab.model.data(tab.model.index(0, severity)) == "3.00"


def test_evidence_goes_to_the_callback_by_enter_and_double_click(window, setup, qtbot):
    calls = []
    window.open_evidence = lambda *args: calls.append(args)
    tab = window.decisions
    bob_unsure = next(r for r, v in setup["regions"].items() if v["user"] == "bob"
                      and v["verdict"] == "unsure")
    assert tab.select_decision(setup["first"][bob_unsure])
    tab.table.setFocus()
    qtbot.keyClick(tab.table, Qt.Key.Key_Return)
    info = setup["regions"][bob_unsure]
    assert calls == [(info["path"], info["bbox"], info["scan"], bob_unsure)]

    region1 = list(setup["regions"])[0]
    row = tab.model.find(lambda r: r["region_id"] == region1)
    rect = tab.table.visualRect(tab.model.index(row, 1))
    qtbot.mouseClick(tab.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(tab.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    info = setup["regions"][region1]
    assert calls[1:] == [(info["path"], info["bbox"], info["scan"], region1)]


def test_evidence_dialog_shows_the_crop_and_the_history(window, setup):
    from core.imageio import load_radiograph

    store = setup["store"]
    region2 = list(setup["regions"])[1]
    info = setup["regions"][region2]
    overrule = window.overrule(setup["first"][region2], "acceptable", "within ISO 5817 B limits")
    assert overrule is not None
    tab = window.decisions
    assert tab.select_decision(overrule)
    tab.open_evidence()
    dialog = window.evidence_dialogs[-1]
    assert dialog.isVisible() and not dialog.isModal()
    image = load_radiograph(info["path"]).image
    r0, c0, r1, c1 = info["bbox"]
    crop = dialog.region_view.crop
    assert crop is not None and crop.shape[0] >= r1 - r0 and crop.shape[1] >= c1 - c0
    # the crop is cut from the radiograph file around the region
    hits = [(i, j) for i in range(image.shape[0] - crop.shape[0] + 1)
            for j in range(image.shape[1] - crop.shape[1] + 1)
            if i <= r0 and j <= c0 and i + crop.shape[0] >= r1 and j + crop.shape[1] >= c1
            and np.array_equal(image[i:i + crop.shape[0], j:j + crop.shape[1]], crop)]
    assert hits
    history = [dialog.history.row(i) for i in range(dialog.history.rowCount())]
    assert [h["event"] for h in history] == ["first verdict", "changed by its author",
                                             "overrule"]
    assert [h["user"] for h in history] == ["ann", "ann", "sue"]
    assert history[2]["reason"] == "within ISO 5817 B limits" and history[2]["current"]
    assert not history[0]["current"] and not history[1]["current"]
    assert store.decisions(current_only=True, interpreter="sue")[0]["id"] == overrule

    # a radiograph file that no longer holds the reviewed content: said, history still listed
    bob_region = next(r for r, v in setup["regions"].items() if v["user"] == "bob")
    write_tiff(setup["regions"][bob_region]["path"], seed=99)
    assert tab.select_decision(setup["first"][bob_region])
    tab.open_evidence()
    dialog = window.evidence_dialogs[-1]
    assert "no longer holds the reviewed radiograph" in dialog.region_view.note.text()
    assert dialog.region_view.crop is None and dialog.history.rowCount() == 1


# ---------------------------------------------------------------------------------- second review


def review_all(window, setup, qtbot, answer):
    """Re-review all of ann's regions blind, giving ``answer(first_verdict)`` by its key."""
    from app.verdicts import VERDICTS

    review = window.review
    window.activateWindow()  # the keys are the window's shortcuts: it must be the active one
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    n = review.start_review("ann", 10, seed=3)
    assert n == len([r for r in setup["regions"].values() if r["user"] == "ann"])
    assert not window.tabs.isTabEnabled(window.tabs.indexOf(window.decisions))
    assert not window.tabs.isTabEnabled(window.tabs.indexOf(window.audit))
    labels = [label.lower() for _, label in VERDICTS.values()]
    given = {}
    while review.reviewing:
        item = review.current_item()
        assert "verdict" not in {k for k in item if k != "review_of"}
        shown = " ".join(review.shown_texts()).lower()
        assert all(label not in shown for label in labels)  # the first verdict is never shown
        assert review.region_view.bbox == tuple(item["bbox"])
        first = setup["regions"][item["region_id"]]["verdict"]
        key = VERDICTS[answer(first)][0]
        before = len(review.given)
        qtbot.keyClick(QApplication.focusWidget(), key)
        assert len(review.given) == before + 1
        given[item["review_of"]] = review.given[-1]
    assert window.tabs.isTabEnabled(window.tabs.indexOf(window.decisions))
    return given


def test_blind_second_review_by_keys_and_agreement(window, setup, qtbot):
    store = setup["store"]
    # agree on everything except ann's false alarm, which the supervisor calls a defect
    given = review_all(window, setup, qtbot,
                       lambda first: "defect" if first == "false_alarm" else first)
    for first_id, second_id in given.items():
        second = store.verdict(second_id)
        assert second["user"] == "sue" and second["review_of"] == first_id and second["blind"]
    # a blind review does not change the decisions: ann's verdicts are all still in force
    in_force = {d["id"] for d in store.decisions(current_only=True)}
    assert set(given) <= in_force and not set(given.values()) & in_force
    (ann,) = [a for a in store.agreement() if a.interpreter == "ann"]
    model = window.review.agreement
    row = model.find(lambda a: a.interpreter == "ann")
    cells = dict(zip([c.title for c in model.columns], model.texts(row)))
    assert cells["Pairs"] == "5" and cells["Agree"] == "4"
    assert cells["Agreement (%)"] == f"{ann.percent:.1f}" == "80.0"
    assert ann.kappa is not None and cells["Cohen's kappa"] == f"{ann.kappa:.3f}"
    # a second sample finds nothing left to re-review
    assert window.review.start_review("ann", 10) == 0
    assert "not re-reviewed" in window.messages[-1]
    # another supervisor's blind review stays blind although sue's disagreement is on record
    from app.supervisor import SupervisorWindow

    store.add_user("tom", role="supervisor", by="sue")
    assert store.disagreements()
    tom = SupervisorWindow(store, "tom")
    qtbot.addWidget(tom)
    tom.show()
    tom.review.open_only.setChecked(False)
    assert tom.review.disagreements.rowCount() == 1  # shown before the review starts
    review_all(tom, setup, qtbot, lambda first: first)
    tom.close()


def test_disagreement_resolved_by_overrule(window, setup, qtbot):
    store = setup["store"]
    review_all(window, setup, qtbot, lambda first: "defect" if first == "false_alarm" else first)
    review = window.review
    dis = [review.disagreements.row(i) for i in range(review.disagreements.rowCount())]
    assert len(dis) == 1 and dis[0]["first_verdict"] == "false_alarm"
    first_id = dis[0]["first_id"]
    assert review.select_disagreement(first_id)
    box = review.overrule_box
    assert box.button.isEnabled() and box.verdict.currentData() == "defect"

    before = verdict_count(store)
    box.button.click()  # no reason yet: refused with a message, nothing stored
    assert verdict_count(store) == before and "needs a reason" in window.messages[-1]

    box.reason.setText("porosity visible at 1:1")
    box.button.click()
    new = store.decisions(current_only=True, interpreter="sue")
    assert len(new) == 1 and new[0]["supersedes"] == first_id and new[0]["verdict"] == "defect"
    assert new[0]["reason"] == "porosity visible at 1:1"
    assert store.audit_log(event="overrule")[-1]["entity_id"] == new[0]["id"]
    status = [c.title for c in review.disagreements.columns].index("Status")
    row = review.disagreements.find(lambda r: r["first_id"] == first_id)
    assert review.disagreements.data(review.disagreements.index(row, status)).startswith(
        "resolved: Defect")
    # overruling it again is refused by the store: a message, not a traceback
    assert window.overrule(first_id, "acceptable", "second thoughts") is None
    assert "Overrule not saved" in window.messages[-1] and "not current" in window.messages[-1]
    assert window.last_message_box is not None and not window.last_message_box.isModal()


# ---------------------------------------------------------------------------------- audit


def test_audit_tab_verifies_and_finds_a_tampered_row(window, setup):
    store, tab = setup["store"], window.audit
    assert tab.model.rowCount() == len(store.audit_log())
    report = tab.verify()
    head = store.verify()
    assert report.ok and tab.state.text().startswith("OK")
    assert tab.head.text() == f"Head anchor: {head.head_id}:{head.head_hash}"
    assert tab.verify(anchor=(head.head_id, head.head_hash)).ok

    conn = sqlite3.connect(store.path, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("UPDATE audit SET user = 'mallory' WHERE id = 7")
    conn.close()
    report = tab.verify()
    assert not report.ok and report.first_broken_id == 7
    assert "first broken row 7" in tab.state.text() and "changed" in tab.state.text()
    selected = tab.table.selectionModel().selectedRows()
    assert [tab.model.row(i.row())["id"] for i in selected] == [7]
    red = tab.model.data(tab.model.index(selected[0].row(), 0), Qt.ItemDataRole.ForegroundRole)
    assert red is not None and red.color().red() == 200


# ---------------------------------------------------------------------------------- exports


def test_csv_of_the_filtered_decisions_and_pdf_report(window, setup, tmp_path):
    store, tab = setup["store"], window.decisions
    tab.interpreter.setCurrentIndex(tab.interpreter.findData("ann"))
    result = tab.export_csv_to(tmp_path / "ann.csv")
    with open(tmp_path / "ann.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert result.rows == len(rows) == tab.model.rowCount() == 6
    assert {r["user"] for r in rows} == {"ann"}
    assert store.audit_log(event="export")[-1]["details"]["format"] == "csv"
    assert "Wrote 6 decisions" in window.messages[-1]

    rid_b, _ = setup["paths"]["weld_b.tif"]
    tab.interpreter.setCurrentIndex(0)
    tab.radiograph.setCurrentIndex(tab.radiograph.findData(rid_b))
    tab.table.clearSelection()
    tab.table.setCurrentIndex(tab.model.index(-1, -1))
    pdf = tab.export_pdf_to(tmp_path / "weld_b.pdf")
    assert pdf is not None and (tmp_path / "weld_b.pdf").read_bytes()[:5] == b"%PDF-"
    assert store.audit_log(event="export")[-1]["details"]["radiograph_id"] == rid_b

    failed = tab.export_csv_to(tmp_path / "no_such_folder" / "x.csv")
    assert failed is None and "CSV export failed" in window.messages[-1]
