"""The tamper-evident audit trail: an append-only chain of hashed events.

Each row of the ``audit`` table carries ``prev_hash`` (the hash of the row before it; 64 zeros
for the first) and ``hash = sha256(prev_hash + canonical JSON of the row's content)``, where the
content is the row's id, time, user, event, entity, entity_id and details. Editing, deleting or
reordering any row breaks the chain at that row; :func:`verify_chain` finds the first break.
Verdict rows are also checked against the copy their audit row holds, so editing a verdict in
the file (with the append-only triggers dropped) is caught too.

A chain can be rewritten from the edited row onwards by whoever holds the file. To catch that,
note the head (row id and hash) that ``weldreview audit verify`` prints, or that every export
records, and pass it back later as an ``anchor``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

GENESIS = "0" * 64
CONTENT = ("id", "time", "user", "event", "entity", "entity_id", "details")
EVENTS = (
    "user added",
    "radiograph added",
    "model added",
    "model activated",
    "scan started",
    "scan finished",
    "roi adjusted",
    "verdict",
    "verdict changed",
    "verdict withdrawn",
    "overrule",
    "second review",
    "export",
    "radiograph completed",
    # retraining from verdicts (core.training_set, core.retraining)
    "training data added",
    "training entry excluded",
    "training entry included",
    "training split set",
    "training mask painted",
    "model trained",
    "model qualified",
    # the okay patches that set a model's thresholds (core.calibration_review)
    "calibration patches excluded",
    "calibration patches included",
)


def now_iso() -> str:
    """The current UTC time as ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def canonical_json(value) -> str:
    """JSON with sorted keys and no whitespace: the same content always gives the same text.

    numpy scalars and arrays become numbers and lists, paths become text.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_plain)


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    raise TypeError(f"{type(value).__name__} cannot be stored as JSON")


def row_hash(prev_hash: str, content: dict) -> str:
    """sha256 hex of ``prev_hash`` followed by the canonical JSON of ``content``."""
    text = prev_hash + canonical_json({k: content[k] for k in CONTENT})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def append_event(
    conn: sqlite3.Connection,
    *,
    event: str,
    user: str | None,
    details: dict,
    entity: str | None = None,
    entity_id: int | None = None,
) -> int:
    """Append one event to the chain and return its id.

    Must run inside the caller's write transaction (``BEGIN IMMEDIATE``), so that reading the
    last hash and appending cannot interleave with another writer.
    """
    if not conn.in_transaction:
        raise RuntimeError("append_event must run inside a write transaction")
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}; expected one of {', '.join(EVENTS)}")
    last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev_id, prev_hash = last if last else (0, GENESIS)
    content = {
        "id": prev_id + 1,
        "time": now_iso(),
        "user": user,
        "event": event,
        "entity": entity,
        "entity_id": entity_id,
        "details": canonical_json(details),
    }
    digest = row_hash(prev_hash, content)
    conn.execute(
        "INSERT INTO audit (id, time, user, event, entity, entity_id, details, prev_hash, hash) "
        "VALUES (:id, :time, :user, :event, :entity, :entity_id, :details, :prev_hash, :hash)",
        {**content, "prev_hash": prev_hash, "hash": digest},
    )
    return content["id"]


@dataclass(frozen=True)
class AuditReport:
    """The result of :func:`verify_chain`.

    ``first_broken_id`` is the id of the first audit row that fails (None when ``ok``);
    ``head_id``/``head_hash`` identify the last row, to be noted down as a future anchor.
    """

    ok: bool
    n_rows: int
    first_broken_id: int | None
    message: str
    head_id: int | None = None
    head_hash: str | None = None

    @property
    def first_broken_row(self) -> int | None:
        return self.first_broken_id


def _connect_readonly(path: Path) -> sqlite3.Connection:
    from core.errors import StoreError

    if not path.is_file():
        raise StoreError(f"{path}: no such database file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot read the database ({exc})") from exc
    return conn


def verify_chain(db, *, anchor: tuple[int, str] | None = None) -> AuditReport:
    """Check the whole audit chain and the verdicts against it.

    Parameters
    ----------
    db : Store, sqlite_utils.Database, sqlite3.Connection, str or Path
        The database; a path is opened read-only.
    anchor : (int, str), optional
        A (row id, hash) pair noted earlier (from a previous verification or an export): the
        row must still exist with that hash, which catches a chain rewritten from that row on
        and the removal of rows from the end.

    Returns
    -------
    AuditReport
    """
    own = isinstance(db, (str, Path))
    conn = _connect_readonly(Path(db)) if own else _as_connection(db)
    try:
        return _verify(conn, anchor)
    finally:
        if own:
            conn.close()


def _as_connection(db) -> sqlite3.Connection:
    if isinstance(db, sqlite3.Connection):
        return db
    inner = getattr(db, "db", db)  # a Store holds a sqlite_utils.Database
    return getattr(inner, "conn", inner)


def _verify(conn: sqlite3.Connection, anchor: tuple[int, str] | None) -> AuditReport:
    total = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
    cursor = conn.execute(f"SELECT {', '.join(CONTENT)}, prev_hash, hash FROM audit ORDER BY id")
    names = [d[0] for d in cursor.description]
    prev_id, prev_hash, n = 0, GENESIS, 0
    hashes: dict[int, str] = {}
    verdict_audit: dict[int, tuple[int, dict]] = {}
    for values in cursor:
        row = dict(zip(names, values))
        n += 1
        rid = row["id"]
        if rid != prev_id + 1:
            return _broken(
                total, rid, f"audit row {rid}: rows {prev_id + 1}..{rid - 1} are missing"
            )
        if row["prev_hash"] != prev_hash:
            return _broken(
                total, rid, f"audit row {rid}: does not follow row {prev_id} (row deleted, "
                "inserted or moved)"
            )
        if row_hash(prev_hash, row) != row["hash"]:
            return _broken(
                total, rid, f"audit row {rid}: its content was changed after it was written"
            )
        if row["entity"] == "verdicts" and row["entity_id"] is not None:
            verdict_audit[row["entity_id"]] = (rid, json.loads(row["details"]).get("verdict"))
        hashes[rid] = row["hash"]
        prev_id, prev_hash = rid, row["hash"]
    head_id, head_hash = (prev_id, prev_hash) if n else (None, None)
    if anchor is not None:
        aid, ahash = int(anchor[0]), str(anchor[1])
        if hashes.get(aid) != ahash:
            return AuditReport(
                False, n, aid,
                f"audit row {aid}: does not match the anchor noted earlier (rows removed from "
                "the end, or the chain was rewritten)", head_id, head_hash,
            )
    vcur = conn.execute("SELECT * FROM verdicts ORDER BY id")
    vnames = [d[0] for d in vcur.description]
    seen = set()
    for values in vcur:
        verdict = dict(zip(vnames, values))
        seen.add(verdict["id"])
        entry = verdict_audit.get(verdict["id"])
        if entry is None:
            return AuditReport(
                False, n, None, f"verdict {verdict['id']} has no audit row (inserted behind "
                "the application's back)", head_id, head_hash,
            )
        if entry[1] != verdict:
            return AuditReport(
                False, n, entry[0], f"verdict {verdict['id']} differs from what audit row "
                f"{entry[0]} recorded (the verdict was edited)", head_id, head_hash,
            )
    for vid, (rid, _) in sorted(verdict_audit.items()):
        if vid not in seen:
            return AuditReport(
                False, n, rid, f"verdict {vid} recorded in audit row {rid} is missing (deleted)",
                head_id, head_hash,
            )
    return AuditReport(True, n, None, f"audit chain intact: {n} rows", head_id, head_hash)


def _broken(n: int, rid: int, message: str) -> AuditReport:
    return AuditReport(False, n, rid, message)
