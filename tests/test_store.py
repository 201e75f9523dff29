"""The review database: schema and migrations, verdict rules, queries, and bad input."""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlite_utils import Database

from core import audit, migrations
from core.errors import StoreError
from core.store import Store


def populate(store: Store, n_regions: int = 3):
    """Two interpreters, a supervisor, one radiograph, one active model and one scan."""
    store.add_user("ann", role="interpreter")
    store.add_user("bob", role="interpreter")
    store.add_user("sue", role="supervisor")
    rad = store.add_radiograph(sha256="a" * 64, path="/plant/w1.tif", shape=(400, 2000),
                               bit_depth=16, pixel_size_um=40.0)
    model = store.add_model(sha256="b" * 64, metadata={"patch": 192}, name="plant-v1",
                            thresholds={"mean": 0.02, "std": 0.05, "fpr_target": 0.001})
    store.activate_model(model, user="sue", justification="qualified on 40 welds")
    scan = store.start_scan(radiograph_id=rad, model_id=model, fpr=0.001, user="ann")
    regions = [
        {"id": k + 1, "bbox": (10 * k, 20 * k, 10 * k + 8, 20 * k + 12), "area_px": 50,
         "peak_mean": 0.03, "peak_std": 0.06, "mean_ratio": 1.5, "std_ratio": 1.2,
         "severity": 1.5 + k, "tests": ("both", "std", "mean")[k % 3], "size_mm": (0.3, 0.5)}
        for k in range(n_regions)
    ]
    region_ids = store.finish_scan(scan, regions, timings={"total_s": 1.5}, user="ann")
    return rad, model, scan, region_ids


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "review.sqlite") as s:
        yield s


def test_new_database_is_wal_full_sync_and_current_schema(tmp_path):
    path = tmp_path / "review.sqlite"
    with Store(path) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store.schema_version == migrations.SCHEMA_VERSION
        tables = set(store.db.table_names())
    assert {"users", "radiographs", "models", "activations", "scans", "regions", "verdicts",
            "audit", "_sqlite_migrations"} <= tables
    with Store(path) as again:  # reopening applies nothing
        assert again.schema_version == migrations.SCHEMA_VERSION


def test_default_location_is_the_weldreview_home(weldreview_home):
    with Store() as store:
        assert store.path == weldreview_home / "weldreview.sqlite"
    assert (weldreview_home / "weldreview.sqlite").is_file()


def test_v1_database_opens_and_migrates_keeping_its_data(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    db = Database(conn, execute_plugins=False)
    conn.execute("BEGIN IMMEDIATE")
    assert migrations.apply_migrations(db, stop_before="m002_model_activations") == 1
    db["users"].insert({"name": "ann", "role": "interpreter", "created_at": audit.now_iso()})
    db["radiographs"].insert({"sha256": "c" * 64, "path": "/old.tif", "rows": 100,
                              "cols": 300, "bit_depth": 8, "added_at": audit.now_iso()})
    db["models"].insert({"sha256": "d" * 64, "metadata": "{}", "added_at": audit.now_iso()})
    db["scans"].insert({"radiograph_id": 1, "model_id": 1, "user_id": 1, "fpr": 0.01,
                        "started_at": audit.now_iso()})
    db["regions"].insert({"scan_id": 1, "number": 1, "row0": 1, "col0": 2, "row1": 5,
                          "col1": 9, "tests": "std"})
    db["verdicts"].insert({"region_id": 1, "radiograph_id": 1, "scan_id": 1, "user_id": 1,
                           "verdict": "defect", "created_at": audit.now_iso(), "blind": 0,
                           "comment": ""})
    stored = dict(zip([d[0] for d in conn.execute("SELECT * FROM verdicts").description],
                      conn.execute("SELECT * FROM verdicts").fetchone()))
    audit.append_event(conn, event="verdict", user="ann", details={"verdict": stored},
                       entity="verdicts", entity_id=1)
    conn.execute("COMMIT")
    assert "activations" not in db.table_names() and "roi" not in db["scans"].columns_dict
    conn.close()

    with Store(path) as store:
        assert store.schema_version == migrations.SCHEMA_VERSION
        assert "roi" in store.db["scans"].columns_dict
        assert store.active_model() is None
        assert [d["verdict"] for d in store.decisions()] == ["defect"]
        assert store.verify().ok
        store.add_user("sue", role="supervisor")
        store.overrule(1, user="sue", verdict="acceptable", reason="film artefact")
        assert store.regions(1)[0]["verdict"] == "acceptable"
        assert store.verify().ok


def test_verdicts_and_audit_refuse_update_and_delete(store):
    _, _, _, regions = populate(store)
    vid = store.add_verdict(user="ann", verdict="defect", region_id=regions[0])
    for sql in ("UPDATE verdicts SET verdict = 'acceptable'", "DELETE FROM verdicts",
                "UPDATE audit SET user = 'mallory'", "DELETE FROM audit WHERE id = 1",
                "DELETE FROM activations"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.db.execute(sql)
    assert store.verdict(vid)["verdict"] == "defect"
    assert store.verify().ok


def test_changed_mind_and_overrule_are_new_verdicts(store):
    _, _, scan, regions = populate(store)
    first = store.add_verdict(user="ann", verdict="unsure", region_id=regions[0])
    with pytest.raises(ValueError, match="already has verdict"):
        store.add_verdict(user="ann", verdict="defect", region_id=regions[0])
    with pytest.raises(ValueError, match="needs a reason"):
        store.add_verdict(user="ann", verdict="defect", region_id=regions[0], supersedes=first)
    changed = store.add_verdict(user="ann", verdict="defect", region_id=regions[0],
                                iso_code="2011", size_mm=0.4, supersedes=first,
                                reason="looked again at full resolution")
    with pytest.raises(ValueError, match="only a supervisor"):
        store.overrule(changed, user="bob", verdict="acceptable", reason="disagree")
    with pytest.raises(ValueError, match="not current"):
        store.overrule(first, user="sue", verdict="acceptable", reason="stale view")
    over = store.overrule(changed, user="sue", verdict="acceptable", reason="within ISO 5817 B")
    current = store.regions(scan)[0]
    assert (current["verdict_id"], current["verdict"], current["verdict_user"]) == \
        (over, "acceptable", "sue")
    rows = {d["id"]: d for d in store.decisions()}
    assert rows[first]["superseded_by"] == changed and rows[changed]["superseded_by"] == over
    assert [rows[i]["current"] for i in (first, changed, over)] == [False, False, True]
    events = [r["event"] for r in store.audit_log(event=None)][-3:]
    assert events == ["verdict", "verdict changed", "overrule"]
    assert store.audit_log(event="overrule")[0]["details"]["verdict"]["reason"] == \
        "within ISO 5817 B"


def test_missed_indication_and_validation(store):
    rad, _, _, _ = populate(store)
    vid = store.add_verdict(user="bob", verdict="defect", radiograph_id=rad,
                            bbox=(100, 200, 120, 260), iso_code="100", size_mm=2.4,
                            comment="crack at the root, not flagged")
    missed = store.missed_indications(rad)
    assert [(m["id"], m["bbox"], m["kind"]) for m in missed] == \
        [(vid, (100, 200, 120, 260), "missed")]
    with pytest.raises(ValueError, match="verdict must be one of"):
        store.add_verdict(user="bob", verdict="reject", radiograph_id=rad, bbox=(0, 0, 5, 5))
    with pytest.raises(ValueError, match="unknown user"):
        store.add_verdict(user="eve", verdict="defect", radiograph_id=rad, bbox=(0, 0, 5, 5))
    with pytest.raises(ValueError, match="bbox"):
        store.add_verdict(user="bob", verdict="defect", radiograph_id=rad, bbox=(5, 5, 5, 9))
    with pytest.raises(ValueError, match="role must be"):
        store.add_user("zed", role="admin")
    assert len(store.decisions()) == 1  # refused verdicts left nothing behind


def test_models_activation_history_and_rollback(store):
    populate(store)
    v2 = store.add_model(sha256="e" * 64, metadata={"patch": 192, "parent": "b" * 64},
                         name="plant-v2")
    assert store.add_model(sha256="e" * 64, metadata={}, name="again") == v2  # by hash
    with pytest.raises(ValueError, match="only a supervisor"):
        store.activate_model(v2, user="ann", justification="I like it")
    with pytest.raises(ValueError, match="justification"):
        store.activate_model(v2, user="sue", justification=" ")
    store.activate_model(v2, user="sue", justification="qualification run passed")
    assert store.active_model()["name"] == "plant-v2"
    store.activate_model(1, user="sue", justification="rollback: v2 flags porosity too often")
    active = store.active_model()
    assert (active["name"], active["activated_by"]) == ("plant-v1", "sue")
    assert active["justification"].startswith("rollback")
    assert [a["name"] for a in store.activations()] == ["plant-v1", "plant-v2", "plant-v1"]
    assert active["thresholds"]["fpr_target"] == 0.001


def test_decisions_filters(store):
    rad, model, scan, regions = populate(store, n_regions=4)
    a = store.add_verdict(user="ann", verdict="defect", region_id=regions[0])
    store.add_verdict(user="ann", verdict="unsure", region_id=regions[1])
    b = store.add_verdict(user="bob", verdict="false_alarm", region_id=regions[2])
    store.add_verdict(user="sue", verdict="acceptable", region_id=regions[3])
    store.overrule(a, user="sue", verdict="acceptable", reason="within limits")
    other = store.add_radiograph(sha256="f" * 64, path="/plant/w2.tif", shape=(10, 10),
                                 bit_depth=8)
    store.add_verdict(user="bob", verdict="defect", radiograph_id=other, bbox=(1, 1, 4, 4))

    def ids(**filters):
        return [d["verdict"] for d in store.decisions(**filters)]

    assert ids(interpreter="ann") == ["defect", "unsure"]
    assert ids(unsure_only=True) == ["unsure"]
    assert ids(verdict=["false_alarm", "defect"]) == ["defect", "false_alarm", "defect"]
    assert ids(radiograph="/plant/w2.tif") == ["defect"]
    assert ids(radiograph=other) == ["defect"]
    assert len(ids(model=model)) == 5 and len(ids(model="bbbb")) == 5
    assert len(ids(model="plant-v1")) == 5
    assert ids(current_only=True, interpreter="ann") == ["unsure"]
    today = datetime.now(timezone.utc).date()
    assert len(ids(since=today, until=today)) == 6
    assert ids(until=today - timedelta(days=1)) == []
    assert ids(since=(today + timedelta(days=1)).isoformat()) == []
    row = next(d for d in store.decisions() if d["id"] == b)
    assert (row["user"], row["model_name"], row["fpr"], row["radiograph_path"],
            row["scan_id"]) == ("bob", "plant-v1", 0.001, "/plant/w1.tif", scan)


def _review_ten(store):
    """Ten regions judged by ann and re-reviewed blind by sue: 7 agree (kappa 0.4915...)."""
    _, _, _, regions = populate(store, n_regions=10)
    pairs = [("defect", "defect")] * 4 + [("acceptable", "acceptable")] * 3 + [
        ("defect", "acceptable"), ("acceptable", "false_alarm"), ("unsure", "defect")]
    first = {}
    for region, (mine, _) in zip(regions, pairs):
        first[region] = store.add_verdict(user="ann", verdict=mine, region_id=region)
    second = dict(zip(regions, (theirs for _, theirs in pairs)))
    return regions, first, second


def test_blind_sample_hides_the_first_verdict_and_is_reproducible(store):
    regions, first, second = _review_ten(store)
    sample = store.blind_sample(reviewer="sue", interpreter="ann", n=4, seed=7)
    assert sample == store.blind_sample(reviewer="sue", interpreter="ann", n=4, seed=7)
    assert len({s["region_id"] for s in sample}) == 4
    for item in sample:
        assert not {"verdict", "user", "iso_code", "comment"} & set(item)
        assert item["review_of"] == first[item["region_id"]]
    for item in sample:
        store.add_verdict(user="sue", verdict=second[item["region_id"]],
                          region_id=item["region_id"], review_of=item["review_of"])
    rest = store.blind_sample(reviewer="sue", interpreter="ann", n=100, seed=1)
    assert len(rest) == 6 and not {s["region_id"] for s in sample} & {
        s["region_id"] for s in rest}
    with pytest.raises(ValueError, match="someone other"):
        store.blind_sample(reviewer="ann", interpreter="ann", n=1)
    # the blind review did not change any decision
    assert all(r["verdict_user"] == "ann" for r in store.regions(1))


def test_agreement_percent_and_kappa_hand_checked(store):
    regions, first, second = _review_ten(store)
    for item in store.blind_sample(reviewer="sue", interpreter="ann", n=10, seed=3):
        store.add_verdict(user="sue", verdict=second[item["region_id"]],
                          region_id=item["region_id"], review_of=item["review_of"])
    (result,) = store.agreement()
    # po = 7/10; marginals ann (defect 5, acceptable 4, unsure 1), sue (defect 5,
    # acceptable 4, false_alarm 1): pe = (25 + 16) / 100 = 0.41; kappa = 0.29 / 0.59
    assert (result.interpreter, result.n, result.n_agree) == ("ann", 10, 7)
    assert result.percent == pytest.approx(70.0)
    assert result.kappa == pytest.approx(0.29 / 0.59)
    assert store.agreement(reviewer="bob") == []

    open_ = store.disagreements(unresolved_only=True)
    assert sorted((d["first_verdict"], d["second_verdict"]) for d in open_) == [
        ("acceptable", "false_alarm"), ("defect", "acceptable"), ("unsure", "defect")]
    target = next(d for d in open_ if d["first_verdict"] == "unsure")
    store.overrule(target["first_id"], user="sue", verdict="defect", reason="porosity cluster")
    assert len(store.disagreements(unresolved_only=True)) == 2
    resolved = [d for d in store.disagreements() if d["resolved"]]
    assert [(d["region_id"], d["resolution_verdict"]) for d in resolved] == [
        (target["region_id"], "defect")]


def test_perfect_agreement_on_one_category_has_undefined_kappa(store):
    _, _, _, regions = populate(store, n_regions=2)
    for region in regions:
        vid = store.add_verdict(user="bob", verdict="defect", region_id=region)
        store.add_verdict(user="sue", verdict="defect", region_id=region, review_of=vid)
    (result,) = store.agreement()
    assert (result.percent, result.kappa) == (100.0, None)


# ----- bad input --------------------------------------------------------------------------


def test_file_that_is_not_sqlite_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"minutes of the weld review meeting\n" * 50)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not an SQLite file"):
        Store(path)
    fake = tmp_path / "damaged.sqlite"
    fake.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16)
    with pytest.raises(StoreError, match="damaged.sqlite"):
        Store(fake)
    assert path.read_bytes() == before


def test_database_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    with Store(path) as store:
        populate(store)
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer weldreview.*version 99"):
        Store(path)
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {migrations.SCHEMA_VERSION}")
    raw.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                "VALUES ('weldreview', 'm099_quantum_verdicts', '2030-01-01')")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="m099_quantum_verdicts"):
        Store(path)
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT count(*) FROM users").fetchone()[0] == 3
    raw.close()


def test_database_locked_by_another_program(tmp_path):
    # e.g. a database browser that took an exclusive lock: nobody can even read until it lets go
    path = tmp_path / "shared.sqlite"
    with Store(path) as store:
        populate(store)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA locking_mode = EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("SELECT count(*) FROM users").fetchone()
    with pytest.raises(StoreError, match="shared.sqlite: the database is locked by another"):
        Store(path, timeout_s=0.3)
    other.execute("ROLLBACK")
    other.close()
    with Store(path) as store:
        assert [u.name for u in store.users()] == ["ann", "bob", "sue"]
        assert store.verify().ok


def test_sqlite_database_of_another_program_is_left_alone(tmp_path):
    path = tmp_path / "inventory.sqlite"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE parts (id INTEGER PRIMARY KEY, name TEXT)")
    other.execute("INSERT INTO parts (name) VALUES ('flange')")
    other.commit()
    other.close()
    with pytest.raises(StoreError, match="another program \\(tables parts\\)"):
        Store(path)
    other = sqlite3.connect(path)
    tables = [r[0] for r in other.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    other.close()
    assert tables == ["parts"]


def test_write_waits_for_a_short_lock_and_reports_a_long_one(tmp_path):
    path = tmp_path / "shared.sqlite"
    with Store(path, timeout_s=5) as store:
        rad, _, _, regions = populate(store)
        kept = store.add_verdict(user="ann", verdict="defect", region_id=regions[0])
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN EXCLUSIVE")
        release = threading.Timer(0.4, lambda: other.execute("ROLLBACK"))
        release.start()
        waited = store.add_verdict(user="ann", verdict="unsure", region_id=regions[1])
        release.join()
        store.timeout_s = 0.3
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match="locked by another program.*Nothing stored was"):
            store.add_verdict(user="ann", verdict="defect", region_id=regions[2])
        other.execute("ROLLBACK")
        other.close()
        again = store.add_verdict(user="ann", verdict="defect", region_id=regions[2])
        assert store.verdict_ids() == [kept, waited, again]
        assert store.verify().ok


def test_read_only_database(tmp_path):
    path = tmp_path / "archive.sqlite"
    with Store(path) as store:
        _, _, _, regions = populate(store)
        store.add_verdict(user="ann", verdict="defect", region_id=regions[0])
    with Store(path, readonly=True) as store:
        assert len(store.decisions()) == 1 and store.verify().ok
        with pytest.raises(StoreError, match="read-only"):
            store.add_user("zed", role="interpreter")
        with pytest.raises(StoreError, match="read-only"):
            store.add_verdict(user="ann", verdict="defect", region_id=regions[1])
    with Store(path) as store:
        assert len(store.decisions()) == 1 and store.verify().ok


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="file permissions do not stop root")
def test_file_without_write_permission_opens_read_only(tmp_path):
    path = tmp_path / "archive.sqlite"
    with Store(path) as store:
        populate(store)
    os.chmod(path, 0o444)
    try:
        with Store(path) as store:
            assert store.readonly and "not writable" in store.readonly_reason
            with pytest.raises(StoreError, match="read-only"):
                store.add_user("zed", role="interpreter")
    finally:
        os.chmod(path, 0o644)


def test_full_disk_loses_nothing_already_stored(tmp_path):
    path = tmp_path / "full.sqlite"
    with Store(path) as store:
        rad, _, _, _ = populate(store)
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages + 2}")
        saved = []
        with pytest.raises(StoreError, match="disk is full.*intact"):
            for k in range(500):
                saved.append(store.add_verdict(
                    user="ann", verdict="defect", radiograph_id=rad, bbox=(k, k, k + 9, k + 9),
                    comment="long comment " * 40))
        assert saved and store.verdict_ids() == saved
    with Store(path) as store:
        assert store.verdict_ids() == saved
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.verify().ok
        store.add_verdict(user="ann", verdict="defect", radiograph_id=rad, bbox=(1, 1, 2, 2))


def test_date_bounds_accept_dates_datetimes_and_text(store):
    populate(store)
    now = datetime.now(timezone.utc)
    assert store.audit_log(since=now - timedelta(minutes=5))
    assert store.audit_log(since=now.date().isoformat(), until=now.date())
    assert store.audit_log(until=date(2000, 1, 1)) == []


def test_scan_regions_from_the_scanner_with_numpy_values(store):
    import numpy as np

    from core.scanning import Region

    store.add_user("ann", role="interpreter")
    rad = store.add_radiograph(sha256="a" * 64, path="/w.tif", shape=(50, 50), bit_depth=16)
    model = store.add_model(sha256="b" * 64, metadata={"kernel_size": np.int64(9)})
    scan = store.start_scan(radiograph_id=rad, model_id=model, fpr=np.float64(0.001), user="ann")
    region = Region(id=np.int64(3), bbox=tuple(np.array([4, 5, 12, 20])), area_px=np.int64(30),
                    peak_mean=np.float32(-0.25), peak_std=np.float32(0.5),
                    mean_ratio=np.float32(1.25), std_ratio=np.float32(0.75),
                    severity=np.float32(1.25), tests="mean", size_mm=(0.32, 0.6))
    store.finish_scan(scan, [region], timings={"total_s": np.float64(2.5)}, user="ann")
    (row,) = store.regions(scan)
    assert (row["number"], row["bbox"], row["area_px"], row["severity"], row["size_mm"]) == \
        (3, (4, 5, 12, 20), 30, 1.25, (0.32, 0.6))
    assert store.scans(rad)[0]["timings"] == {"total_s": 2.5}
    assert store.models()[0]["metadata"] == {"kernel_size": 9}
    with pytest.raises(ValueError, match="already finished"):
        store.finish_scan(scan, [region])
    assert store.verify().ok


def test_public_transaction_commits_with_its_audit_event_or_rolls_back_whole(store):
    """Store.transaction and Store.one, as modules with their own tables use them."""
    store.db.conn.execute("CREATE TABLE extra (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")

    def write(note):
        eid = store.db["extra"].insert({"note": note}).last_pk
        audit.append_event(store.db.conn, event="export", user=None, details={"note": note},
                           entity="extra", entity_id=eid)
        return eid

    n_audit = len(store.audit_log())
    eid = store.transaction(lambda: write("kept"), "write a note")
    assert store.one("SELECT note FROM extra WHERE id = ?", [eid]) == {"note": "kept"}
    assert len(store.audit_log()) == n_audit + 1

    def fails():
        write("lost")
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):  # passes through, after the rollback
        store.transaction(fails, "write a note")
    with pytest.raises(StoreError, match="could not write a null note"):  # an sqlite error
        store.transaction(lambda: write(None), "write a null note")
    assert [r["note"] for r in store.db.query("SELECT note FROM extra")] == ["kept"]
    assert len(store.audit_log()) == n_audit + 1 and store.verify().ok
    assert store.one("SELECT note FROM extra WHERE id = 99") is None
    assert Store._transaction is Store.transaction and Store._one is Store.one
