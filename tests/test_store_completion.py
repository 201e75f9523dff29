"""Withdrawn verdicts (undo of a first verdict) and the "radiograph completed" record."""

from __future__ import annotations

import sqlite3

import pytest
from sqlite_utils import Database

from core import audit, migrations
from core.store import Store


def populate(store: Store, n_regions: int = 2, pixel_size_um: float | None = 40.0):
    """An interpreter (ann), a second one (bob), a supervisor (sue), one scan with regions."""
    for name, role in (("ann", "interpreter"), ("bob", "interpreter"), ("sue", "supervisor")):
        store.add_user(name, role=role)
    rad = store.add_radiograph(sha256="a" * 64, path="/plant/w1.tif", shape=(400, 2000),
                               bit_depth=16, pixel_size_um=pixel_size_um)
    model = store.add_model(sha256="b" * 64, metadata={"patch": 192}, name="plant-v1")
    scan = store.start_scan(radiograph_id=rad, model_id=model, fpr=0.001, user="ann")
    regions = [{"id": k + 1, "bbox": (10 * k, 20 * k, 10 * k + 8, 20 * k + 12), "area_px": 50,
                "severity": 2.0 - k, "tests": "both"} for k in range(n_regions)]
    return rad, scan, store.finish_scan(scan, regions, user="ann")


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "review.sqlite") as s:
        yield s


def test_withdrawing_a_first_verdict_makes_the_region_unreviewed_and_keeps_both(store):
    rad, scan, (r1, r2) = populate(store)
    first = store.add_verdict(user="ann", verdict="defect", region_id=r1)
    undo = store.withdraw(first, user="ann")  # reason "undo"
    assert [r["verdict"] for r in store.regions(scan)] == [None, None]
    rows = store.decisions(radiograph=rad)
    assert [(r["verdict"], r["supersedes"], r["reason"], r["current"]) for r in rows] == [
        ("defect", None, None, False), ("withdrawn", first, "undo", False)]
    assert store.decisions(current_only=True) == []
    assert [e["event"] for e in store.audit_log()][-2:] == ["verdict", "verdict withdrawn"]
    # undecided again: anyone gives the next verdict, which supersedes the withdrawal
    again = store.add_verdict(user="bob", verdict="false_alarm", region_id=r1)
    assert store.verdict(again)["supersedes"] == undo
    assert store.regions(scan)[0]["verdict"] == "false_alarm"
    assert store.audit_log()[-1]["event"] == "verdict"
    # a withdrawal is refused when there is nothing to withdraw or it is someone else's
    with pytest.raises(ValueError, match="not current"):
        store.withdraw(undo, user="ann")
    with pytest.raises(ValueError, match="only a supervisor"):
        store.withdraw(again, user="ann")
    with pytest.raises(ValueError, match="names the verdict it withdraws"):
        store.add_verdict(user="ann", verdict="withdrawn", region_id=r2)
    # a withdrawn verdict is not offered for a blind second review
    assert store.blind_sample(reviewer="sue", interpreter="ann", n=5, seed=0) == []
    assert store.verify().ok


def test_the_database_refuses_a_withdrawal_that_supersedes_nothing(store):
    rad, scan, (r1, _) = populate(store)
    with pytest.raises(sqlite3.IntegrityError, match="must supersede"):
        store.db.execute(
            "INSERT INTO verdicts (region_id, radiograph_id, scan_id, user_id, verdict, "
            "created_at, blind, comment) VALUES (?, ?, ?, 1, 'withdrawn', 'x', 0, '')",
            [r1, rad, scan])


def test_a_v3_database_migrates_and_accepts_withdrawals(tmp_path):
    path = tmp_path / "v3.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    db = Database(conn, execute_plugins=False)
    conn.execute("BEGIN IMMEDIATE")
    assert migrations.apply_migrations(db, stop_before="m004_withdrawn_verdicts") == 3
    conn.execute("COMMIT")
    conn.close()
    with Store(path) as store:
        assert store.schema_version == migrations.SCHEMA_VERSION == 4
        _, scan, (r1, _) = populate(store)
        vid = store.add_verdict(user="ann", verdict="unsure", region_id=r1)
        store.withdraw(vid, user="ann")
        assert store.regions(scan)[0]["verdict"] is None
        assert store.verify().ok


def test_radiograph_completed_is_recorded_once_with_the_statement(store):
    rad, scan, (r1, r2) = populate(store)
    figures = dict(false_flags_per_m=0.042, weld_length_mm=180.0, roi=True)
    v1 = store.add_verdict(user="ann", verdict="defect", region_id=r1)
    assert store.complete_radiograph(scan, user="ann", **figures) is None  # r2 undecided
    assert store.completion(scan) is None
    v2 = store.add_verdict(user="ann", verdict="false_alarm", region_id=r2)
    row_id = store.complete_radiograph(scan, user="ann", **figures)
    assert store.complete_radiograph(scan, user="ann", **figures) == row_id  # not twice
    record = store.completion(scan)
    assert record["id"] == row_id and record["event"] == "radiograph completed"
    d = record["details"]
    assert (d["scan_id"], d["model_sha256"], d["fpr"], d["n_regions"]) == (scan, "b" * 64,
                                                                          0.001, 2)
    assert d["verdicts"] == {"defect": 1, "false_alarm": 1}
    text = d["statement"]
    assert "All 2 flagged regions" in text and "plant-v1" in text and "FPR 0.100%" in text
    assert "Unflagged areas inside the weld region of interest were accepted by the detector" \
        in text
    assert "about 0.042 expected false flags per metre of weld" in text
    assert "0.0076 expected over the 180 mm of weld inside the region" in text
    # a withdrawal reopens it; deciding again records a new completion
    store.withdraw(v2, user="ann")
    assert store.completion(scan) is None
    store.add_verdict(user="ann", verdict="acceptable", region_id=r2)
    second = store.complete_radiograph(scan, user="ann", **figures)
    assert second > row_id
    # changing a verdict (not a withdrawal) leaves the completion in force
    store.add_verdict(user="ann", verdict="unsure", region_id=r1, supersedes=v1,
                      reason="second look")
    assert store.complete_radiograph(scan, user="ann", **figures) == second
    assert [c["details"]["scan_id"] for c in store.completions(rad)] == [scan, scan]
    assert store.verify().ok


def test_a_scan_without_flags_is_done_and_an_unknown_pixel_size_is_said(store):
    rad, scan, _ = populate(store, n_regions=0, pixel_size_um=None)
    row_id = store.complete_radiograph(scan, user="ann")
    text = store.completion(scan)["details"]["statement"]
    assert row_id is not None and f"Scan {scan} flagged nothing" in text
    assert "pixel size unknown: expected false flags per metre not stated" in text
    assert "Unflagged areas were accepted" in text  # no region of interest


def test_the_pdf_report_states_that_the_radiograph_is_done(store, qapp):
    from app.report import report_content

    rad, scan, (r1, r2) = populate(store)
    for rid in (r1, r2):
        store.add_verdict(user="ann", verdict="false_alarm", region_id=rid)
    store.complete_radiograph(scan, user="ann", false_flags_per_m=0.5, weld_length_mm=None)
    lines = " ".join(" ".join(report_content(store, rad).sections["Radiograph done"]).split())
    assert "accepted by the detector" in lines and "0.5 expected false flags per metre" in lines
    assert "no longer in force" not in lines
