"""The tamper-evident audit trail and the headless ``weldreview audit`` commands.

Tampering is done the way an attacker holding the file would: with plain sqlite3, after
dropping the append-only triggers.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from app.cli import main
from core.audit import GENESIS, row_hash, verify_chain
from core.store import Store

COLUMNS = "time, user, event, entity, entity_id, details, prev_hash, hash"


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "review.sqlite"
    with Store(path) as store:
        store.add_user("ann", role="interpreter")
        store.add_user("sue", role="supervisor")
        rad = store.add_radiograph(sha256="a" * 64, path="/w1.tif", shape=(50, 80), bit_depth=8)
        model = store.add_model(sha256="b" * 64, metadata={}, name="m1")
        store.activate_model(model, user="sue", justification="initial")
        scan = store.start_scan(radiograph_id=rad, model_id=model, fpr=0.001, user="ann")
        regions = store.finish_scan(scan, [
            {"bbox": (1, 1, 9, 9), "severity": 2.0, "tests": "both"},
            {"bbox": (20, 30, 28, 44), "severity": 1.2, "tests": "std"}], user="ann")
        first = store.add_verdict(user="ann", verdict="defect", region_id=regions[0])
        store.add_verdict(user="ann", verdict="acceptable", region_id=regions[1])
        store.overrule(first, user="sue", verdict="acceptable", reason="within limits")
        assert store.verify().ok
    return path


def attacker(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def test_intact_chain_verifies_and_reports_its_head(db_path):
    report = verify_chain(db_path)
    assert report.ok and report.first_broken_id is None
    assert report.n_rows == report.head_id == 10
    conn = sqlite3.connect(db_path)
    rows = conn.execute("SELECT id, time, user, event, entity, entity_id, details, prev_hash, "
                        "hash FROM audit ORDER BY id").fetchall()
    conn.close()
    names = ("id", "time", "user", "event", "entity", "entity_id", "details")
    assert rows[0][7] == GENESIS
    for prev, row in zip(rows, rows[1:]):  # each row is hashed over its predecessor's hash
        assert row[7] == prev[8]
        assert row[8] == row_hash(prev[8], dict(zip(names, row[:7])))
    assert report.head_hash == rows[-1][8]


def test_edited_row_is_caught(db_path):
    conn = attacker(db_path)
    conn.execute("UPDATE audit SET user = 'bob' WHERE id = 5")
    conn.close()
    report = verify_chain(db_path)
    assert not report.ok and report.first_broken_id == 5
    assert "changed" in report.message


def test_deleted_row_is_caught(db_path):
    conn = attacker(db_path)
    conn.execute("DELETE FROM audit WHERE id = 4")
    conn.close()
    report = verify_chain(db_path)
    assert not report.ok and report.first_broken_id == 5
    assert "missing" in report.message


def test_deleted_row_with_ids_renumbered_is_caught(db_path):
    conn = attacker(db_path)
    conn.execute("DELETE FROM audit WHERE id = 4")
    conn.execute("UPDATE audit SET id = id - 1 WHERE id > 4")
    conn.close()
    report = verify_chain(db_path)
    assert not report.ok and report.first_broken_id == 4


def test_swapped_rows_are_caught(db_path):
    conn = attacker(db_path)
    r6 = conn.execute(f"SELECT {COLUMNS} FROM audit WHERE id = 6").fetchone()
    r7 = conn.execute(f"SELECT {COLUMNS} FROM audit WHERE id = 7").fetchone()
    sets = ", ".join(f"{c} = ?" for c in COLUMNS.split(", "))
    conn.execute(f"UPDATE audit SET {sets} WHERE id = 6", r7)
    conn.execute(f"UPDATE audit SET {sets} WHERE id = 7", r6)
    conn.close()
    report = verify_chain(db_path)
    assert not report.ok and report.first_broken_id == 6


def test_swapped_ids_are_caught(db_path):
    conn = attacker(db_path)
    conn.execute("UPDATE audit SET id = 1000 WHERE id = 8")
    conn.execute("UPDATE audit SET id = 8 WHERE id = 9")
    conn.execute("UPDATE audit SET id = 9 WHERE id = 1000")
    conn.close()
    report = verify_chain(db_path)
    assert not report.ok and report.first_broken_id == 8


def test_edited_or_deleted_verdict_is_caught(db_path):
    conn = attacker(db_path)
    conn.execute("UPDATE verdicts SET verdict = 'acceptable' WHERE id = 1")
    conn.close()
    report = verify_chain(db_path)
    assert not report.ok and "verdict 1 differs" in report.message
    conn = attacker(db_path)
    conn.execute("UPDATE verdicts SET verdict = 'defect' WHERE id = 1")
    assert verify_chain(db_path).ok
    conn.execute("DELETE FROM verdicts WHERE id = 2")
    conn.close()
    report = verify_chain(db_path)
    assert not report.ok and "verdict 2" in report.message and "missing" in report.message


def test_anchor_catches_a_truncated_or_rewritten_chain(db_path):
    with Store(db_path) as store:
        store.record_roi(1, {"rows": [0, 50]}, user="ann")
    head = verify_chain(db_path)
    anchor = (head.head_id, head.head_hash)
    conn = sqlite3.connect(db_path)
    head_hashes = dict(conn.execute("SELECT id, hash FROM audit").fetchall())
    conn.close()
    assert verify_chain(db_path, anchor=anchor).ok
    conn = attacker(db_path)
    conn.execute(f"DELETE FROM audit WHERE id = {head.head_id}")
    conn.close()
    assert verify_chain(db_path).ok  # removing the last row leaves a valid shorter chain...
    report = verify_chain(db_path, anchor=anchor)
    assert not report.ok and report.first_broken_id == head.head_id  # ...the anchor sees it
    # a chain rewritten from row 5 on (every hash recomputed) is caught by an anchor too
    conn = attacker(db_path)
    conn.execute("UPDATE audit SET user = 'bob' WHERE id = 5")
    rows = conn.execute("SELECT id, time, user, event, entity, entity_id, details, prev_hash "
                        "FROM audit ORDER BY id").fetchall()
    names = ("id", "time", "user", "event", "entity", "entity_id", "details")
    prev = conn.execute("SELECT hash FROM audit WHERE id = 4").fetchone()[0]
    for row in rows[4:]:
        digest = row_hash(prev, dict(zip(names, row[:7])))
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?",
                     (prev, digest, row[0]))
        prev = digest
    conn.close()
    assert verify_chain(db_path).ok
    early = verify_chain(db_path, anchor=(7, head_hashes[7]))
    assert not early.ok and early.first_broken_id == 7


def test_cli_verify_prints_result_and_exit_code(db_path, capsys):
    assert main(["audit", "verify", "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK") and "10 rows" in out
    head = out.split("head: ")[1].strip()
    assert main(["audit", "verify", "--db", str(db_path), "--anchor", head]) == 0
    capsys.readouterr()
    conn = attacker(db_path)
    conn.execute("UPDATE audit SET details = '{}' WHERE id = 3")
    conn.close()
    assert main(["audit", "verify", "--db", str(db_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN") and "first broken row: 3" in out


def test_cli_verify_missing_file_is_an_error(tmp_path, capsys):
    assert main(["audit", "verify", "--db", str(tmp_path / "nope.sqlite")]) == 1
    assert "no such database file" in capsys.readouterr().err


def test_cli_log_filters_by_user_and_date(db_path, capsys):
    assert main(["audit", "log", "--db", str(db_path), "--user", "sue"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "2 event(s)"
    assert "model activated" in lines[0] and "overrule" in lines[1]
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).date().isoformat()
    assert main(["audit", "log", "--db", str(db_path), "--since", tomorrow]) == 0
    assert capsys.readouterr().out.strip() == "0 event(s)"


def test_cli_users_add_and_list(tmp_path, capsys, weldreview_home):
    db = str(tmp_path / "team.sqlite")
    assert main(["audit", "users", "add", "Sue Lee", "--role", "supervisor", "--db", db]) == 0
    assert main(["audit", "users", "add", "ann", "--role", "interpreter", "--by", "Sue Lee",
                 "--db", db]) == 0
    assert main(["audit", "users", "add", "ann", "--role", "interpreter", "--db", db]) == 1
    assert "already exists" in capsys.readouterr().out
    assert main(["audit", "users", "list", "--db", db]) == 0
    assert capsys.readouterr().out.splitlines() == ["Sue Lee\tsupervisor", "ann\tinterpreter"]
    with Store(db) as store:
        added = store.audit_log(event="user added")
        assert [(r["user"], r["details"]["name"]) for r in added] == [
            (None, "Sue Lee"), ("Sue Lee", "ann")]
    # without --db the default database in the weldreview home is used
    assert main(["audit", "users", "add", "bob", "--role", "interpreter"]) == 0
    assert (weldreview_home / "weldreview.sqlite").is_file()
