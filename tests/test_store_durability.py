"""Durability and concurrency of verdict writes, with real processes.

A writer prints the id of each verdict as soon as ``add_verdict`` returns (the moment the UI
would show it as saved). Killing writers with SIGKILL at random points must never lose an
acknowledged verdict nor damage the file; several writers at once must all succeed.
SIGKILL tests process death, not power loss: the operating system still flushes its cache.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.store import Store

REPO = Path(__file__).resolve().parent.parent

WRITER = """
import sys, time
sys.path.insert(0, {repo!r})
from core.store import Store
path, user, count, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with Store(path) as store:
    if user not in [u.name for u in store.users()]:
        store.add_user(user, role="interpreter")
    rad = store.add_radiograph(sha256="a" * 64, path="/w.tif", shape=(500, 500), bit_depth=16)
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    for k in range(count):
        vid = store.add_verdict(user=user, verdict="defect", radiograph_id=rad,
                                bbox=(k % 400, 5, k % 400 + 9, 30), comment=f"{{user}} #{{k}}")
        print(vid, flush=True)
        time.sleep(pause)  # a reviewer between two verdicts (0: a tight loop)
"""


def start_writer(path, user: str, count: int, pause_s: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER.format(repo=str(REPO)), str(path), user, str(count),
         str(pause_s)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def go(proc: subprocess.Popen) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()


def acknowledged(lines: list[str]) -> list[int]:
    return [int(line) for line in lines if line.strip().isdigit()]


def check_database(path, expected_ids: set[int]) -> None:
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with Store(path) as store:
        stored = set(store.verdict_ids())
        assert expected_ids <= stored, f"acknowledged but lost: {sorted(expected_ids - stored)}"
        report = store.verify()
        assert report.ok, report.message


@pytest.mark.slow
def test_sigkill_at_random_points_loses_no_acknowledged_verdict(tmp_path):
    path = tmp_path / "review.sqlite"
    rng = np.random.default_rng(20261128)
    acked: set[int] = set()
    kills = 0
    for _ in range(20):
        proc = start_writer(path, "ann", 100_000)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        go(proc)
        time.sleep(float(rng.uniform(0.0, 0.15)))  # somewhere in a stream of writes
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        kills += 1
        acked.update(acknowledged(out.splitlines()))
    assert kills == 20 and len(acked) > 20
    check_database(path, acked)
    with Store(path) as store:  # the comments written are the ones acknowledged
        comments = {v: store.verdict(v)["comment"] for v in sorted(acked)[:5]}
    assert all(c.startswith("ann #") for c in comments.values())


@pytest.mark.slow
def test_concurrent_writers_lose_nothing_and_never_report_locked(tmp_path):
    path = tmp_path / "shared.sqlite"  # created and migrated by whichever writer comes first
    # 10 ms between a writer's verdicts: on a fast disk a tight loop can hold the write lock for
    # its whole run, the others waiting (correct, but then nothing concurrent is tested)
    procs = {user: start_writer(path, user, 300, 0.01) for user in ("ann", "bob", "cho")}
    for proc in procs.values():  # all opened (one created the schema), then all write at once
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    for proc in procs.values():
        go(proc)
    results = {user: proc.communicate(timeout=120) for user, proc in procs.items()}
    acked: set[int] = set()
    spans = {}
    for user, (out, err) in results.items():
        assert procs[user].returncode == 0, err
        assert "locked" not in err.lower()
        ids = acknowledged(out.splitlines())
        assert len(ids) == 300
        acked.update(ids)
        spans[user] = (min(ids), max(ids))
    assert len(acked) == 900  # no id handed out twice
    starts = sorted(spans.values())
    assert any(a[1] > b[0] for a, b in zip(starts, starts[1:])), "the writers did not overlap"
    check_database(path, acked)
    with Store(path) as store:
        assert {u.name for u in store.users()} == {"ann", "bob", "cho"}
        assert len(store.radiographs()) == 1
        assert len(store.decisions()) == 900
