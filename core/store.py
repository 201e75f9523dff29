"""The review database: users, radiographs, models, scans, regions, verdicts and the audit trail.

One SQLite file through sqlite-utils, in WAL mode with ``synchronous=FULL``. Every write is one
``BEGIN IMMEDIATE`` transaction that also appends its audit event (core/audit.py), committed
before the method returns; a busy database is waited for (busy timeout plus retries with
backoff) rather than reported. Verdicts are never updated or deleted (SQLite triggers refuse
it): a changed mind or an overrule is a new verdict that supersedes the earlier one, with a reason.

Schema changes live in core/migrations.py only; opening a database applies the pending ones.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlite_utils import Database

from core import audit, migrations
from core.errors import StoreError
from core.migrations import ROLES, VERDICT_VALUES, VERDICTS, WITHDRAWN

SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str


@dataclass(frozen=True)
class Agreement:
    """Second-review agreement for one interpreter.

    ``n`` pairs (first verdict, blind second verdict), ``n_agree`` of them equal;
    ``percent`` = 100 * n_agree / n; ``kappa`` is Cohen's kappa over the four verdicts
    (None where it is undefined: both reviewers used one and the same verdict throughout).
    """

    interpreter: str
    n: int
    n_agree: int
    percent: float
    kappa: float | None


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _time_range(column: str, since, until, where: list, params: list) -> None:
    """Append ``column >= since`` and ``column < until`` (a bare date covers its whole day)."""
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(_time_bound(since, end=False))
    if until is not None:
        where.append(f"{column} < ?")
        params.append(_time_bound(until, end=True))


def _time_bound(value, *, end: bool) -> str | None:
    """ISO text for a date/datetime bound; a bare date as ``end`` covers that whole day."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            value = date.fromisoformat(text)
        else:
            return datetime.fromisoformat(text).isoformat(timespec="microseconds")
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    day = value + timedelta(days=1) if end else value
    return day.isoformat() + "T00:00:00"


def _bbox_json(bbox) -> str | None:
    if bbox is None:
        return None
    box = [int(v) for v in bbox]
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(
            f"bbox must be (row0, col0, row1, col1) with row1 > row0 and col1 > col0; got {bbox}"
        )
    return json.dumps(box)


def _field(obj, name, default=None):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


class Store:
    """The review database at ``path`` (default: ``core.paths.database_path()``).

    Parameters
    ----------
    path : str or Path, optional
        The SQLite file; created (with its folder) when missing.
    readonly : bool
        Open for reading only; every write raises StoreError. A file the user cannot write is
        opened read-only by itself (``readonly_reason`` says why).
    timeout_s : float
        How long a write waits for another process's write to finish before giving up with
        StoreError (the database is locked by another program).

    Raises
    ------
    StoreError
        The file is not an SQLite database, was written by a newer weldreview, is locked by
        another program for longer than ``timeout_s``, or cannot be created.
    """

    def __init__(self, path=None, *, readonly: bool = False, timeout_s: float = 30.0):
        from core.paths import database_path

        self.path = Path(path) if path is not None else database_path()
        self.timeout_s = float(timeout_s)
        self.readonly = bool(readonly)
        self.readonly_reason = "opened read-only" if readonly else None
        self._lock = threading.RLock()
        self._jitter = random.Random()
        self.db: Database | None = None
        self._open()

    # ----- opening, closing, transactions -------------------------------------------------

    def _open(self) -> None:
        path = self.path
        if path.exists():
            if not path.is_file():
                raise StoreError(f"{path}: is not a file")
            with open(path, "rb") as fh:
                head = fh.read(16)
            if head and head != SQLITE_MAGIC:
                raise StoreError(f"{path}: is not a weldreview database (not an SQLite file)")
            if not self.readonly and not os.access(path, os.W_OK):
                self.readonly, self.readonly_reason = True, "the file is not writable"
        elif self.readonly:
            raise StoreError(f"{path}: no such database file")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{path}: cannot create the database folder ({exc})") from exc
        if not self.readonly and not os.access(path.parent, os.W_OK):
            self.readonly, self.readonly_reason = True, "its folder is not writable"
        target = f"{path.resolve().as_uri()}?mode=ro" if self.readonly else str(path)
        try:
            conn = sqlite3.connect(
                target,
                uri=self.readonly,
                timeout=min(self.timeout_s, 0.25),  # each wait; _retry keeps trying to timeout_s
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._error(exc, "open the database") from exc
        try:
            self.db = Database(conn, execute_plugins=False)
            conn.execute("PRAGMA foreign_keys = ON")
            self._retry(lambda: conn.execute("SELECT count(*) FROM sqlite_master").fetchone())
            migrations.check_not_newer(self.db, str(path))
            migrations.check_ours(self.db, str(path))
            if not self.readonly:
                self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
                conn.execute("PRAGMA synchronous = FULL")
            if migrations.schema_version(self.db) < migrations.SCHEMA_VERSION:
                if self.readonly:
                    raise StoreError(
                        f"{path}: the database needs upgrading (schema version "
                        f"{migrations.schema_version(self.db)} of {migrations.SCHEMA_VERSION}) "
                        f"but was {self.readonly_reason}; open it writable once"
                    )
                self.transaction(self._migrate, "upgrade the database")
        except BaseException as exc:
            conn.close()
            self.db = None
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc, "open the database") from exc
            raise

    def _migrate(self) -> None:
        migrations.check_not_newer(self.db, str(self.path))
        migrations.apply_migrations(self.db)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return migrations.schema_version(self.db)

    def _error(self, exc: sqlite3.Error, doing: str) -> StoreError:
        text = str(exc)
        low = text.lower()
        if _is_busy(exc):
            reason = (
                f"the database is locked by another program (waited {self.timeout_s:g} s to "
                f"{doing}); close the other program or try again. Nothing stored was lost"
            )
        elif "full" in low:
            reason = (
                f"the disk is full: could not {doing}, that change was not saved and everything "
                "saved before is intact; free some space and try again"
            )
        elif "readonly" in low or "read-only" in low:
            reason = f"the database is read-only, cannot {doing}"
        elif "not a database" in low or "malformed" in low:
            reason = f"is not a usable weldreview database ({text})"
        elif "unable to open" in low:
            reason = f"cannot open the file ({text})"
        else:
            reason = f"could not {doing} ({text})"
        return StoreError(f"{self.path}: {reason}")

    def _retry(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` until it does not meet a busy database, with backoff, up to timeout_s."""
        deadline = time.monotonic() + self.timeout_s
        delay = 0.002
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(delay * (1.0 + self._jitter.random()))
                delay = min(delay * 2.0, 0.2)

    def transaction(self, fn: Callable[[], Any], doing: str) -> Any:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction, committed before returning.

        For modules that keep their own tables in the review database (``core.training_set``,
        ``core.qualification``, ``core.retraining``): ``fn`` writes through :attr:`db` and
        appends its audit event (``core.audit.append_event``) in the same transaction.

        Parameters
        ----------
        fn : callable
            Called without arguments inside the transaction; may be called again when the
            database was busy (so it must not have effects outside the database).
        doing : str
            What ``fn`` does, for the error message ("store the painted mask of verdict 3").

        Returns
        -------
        object
            What ``fn`` returned.

        Raises
        ------
        StoreError
            The database is closed, read-only, stayed busy for ``timeout_s`` or the write
            failed; the whole transaction was rolled back. A busy database is retried with
            backoff until ``timeout_s``. Other exceptions from ``fn`` (e.g. ValueError) roll
            back and pass through unchanged.
        """
        if self.db is None:
            raise StoreError(f"{self.path}: the database is closed")
        if self.readonly:
            raise StoreError(
                f"{self.path}: cannot {doing}: the database is read-only ({self.readonly_reason})"
            )
        conn = self.db.conn

        def attempt():
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn()
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        with self._lock:
            try:
                return self._retry(attempt)
            except sqlite3.Error as exc:
                raise self._error(exc, doing) from exc

    def _event(self, event: str, user: str | None, details: dict, entity=None, entity_id=None):
        return audit.append_event(
            self.db.conn, event=event, user=user, details=details, entity=entity,
            entity_id=entity_id,
        )

    def one(self, sql: str, params=()) -> dict | None:
        """The first row of the query ``sql`` with ``params``, as a dict; None when no row.

        Parameters
        ----------
        sql : str
            One SELECT with ``?`` placeholders.
        params : sequence, optional
            The placeholders' values.
        """
        rows = list(self.db.query(sql, params))
        return rows[0] if rows else None

    # the names these had before they were public
    _transaction = transaction
    _one = one

    # ----- users ----------------------------------------------------------------------------

    def add_user(self, name: str, *, role: str, by: str | None = None) -> User:
        """Add a user (role ``interpreter`` or ``supervisor``); ``by`` names who added them."""
        name = str(name).strip()
        if not name:
            raise ValueError("a user needs a name")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")

        def write():
            if self.one("SELECT id FROM users WHERE name = ?", [name]):
                raise ValueError(f"user {name!r} already exists")
            uid = self.db["users"].insert(
                {"name": name, "role": role, "created_at": audit.now_iso()}
            ).last_pk
            self._event("user added", by, {"name": name, "role": role}, "users", uid)
            return User(uid, name, role)

        return self.transaction(write, f"add user {name}")

    def users(self) -> list[User]:
        return [User(r["id"], r["name"], r["role"]) for r in self.db.query(
            "SELECT id, name, role FROM users ORDER BY name")]

    def is_supervisor(self, name: str | None) -> bool:
        """Whether ``name`` is a known user with the supervisor role (False for None or unknown)."""
        if not name:
            return False
        row = self.one("SELECT role FROM users WHERE name = ?", [name])
        return row is not None and row["role"] == "supervisor"

    def user(self, name: str) -> User:
        """The user called ``name``; ValueError naming the command that adds one if unknown."""
        row = self.one("SELECT id, name, role FROM users WHERE name = ?", [name])
        if row is None:
            raise ValueError(
                f"unknown user {name!r}; add it with `weldreview audit users add {name} "
                "--role interpreter` (or supervisor)"
            )
        return User(row["id"], row["name"], row["role"])

    # ----- radiographs and models -----------------------------------------------------------

    def add_radiograph(
        self, *, sha256: str, path, shape: tuple[int, int], bit_depth: int,
        pixel_size_um: float | None = None, user: str | None = None,
    ) -> int:
        """Register a radiograph by its content hash; return its id (existing one if known)."""

        def write():
            row = self.one("SELECT id FROM radiographs WHERE sha256 = ?", [sha256])
            if row:
                return row["id"]
            record = {
                "sha256": sha256, "path": str(path), "rows": int(shape[0]),
                "cols": int(shape[1]), "bit_depth": int(bit_depth),
                "pixel_size_um": None if pixel_size_um is None else float(pixel_size_um),
                "added_at": audit.now_iso(),
            }
            rid = self.db["radiographs"].insert(record).last_pk
            self._event("radiograph added", user, record, "radiographs", rid)
            return rid

        return self.transaction(write, f"register radiograph {path}")

    def add_radiograph_from(self, radiograph, *, user: str | None = None) -> int:
        """Register a ``core.imageio.Radiograph`` (anything with its attributes)."""
        return self.add_radiograph(
            sha256=radiograph.sha256, path=radiograph.path, shape=radiograph.image.shape[:2],
            bit_depth=radiograph.bit_depth, pixel_size_um=radiograph.pixel_size_um, user=user,
        )

    def radiograph(self, key) -> dict:
        """A radiograph by id (int), sha256 or path (str); ValueError if unknown."""
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            row = self.one("SELECT * FROM radiographs WHERE id = ?", [int(key)])
        else:
            text = str(key)
            row = self.one(
                "SELECT * FROM radiographs WHERE sha256 = ? OR path = ? OR path = ? "
                "ORDER BY id DESC LIMIT 1", [text, text, str(Path(text).resolve())])
        if row is None:
            raise ValueError(f"no radiograph {key!r} in {self.path}")
        return row

    def radiographs(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM radiographs ORDER BY id"))

    def add_model(
        self, *, sha256: str, metadata: dict, thresholds: dict | None = None,
        name: str | None = None, path=None, user: str | None = None,
    ) -> int:
        """Register a model by the sha256 of its file; return its id (existing one if known)."""

        def write():
            row = self.one("SELECT id FROM models WHERE sha256 = ?", [sha256])
            if row:
                return row["id"]
            record = {
                "sha256": sha256, "name": name, "path": None if path is None else str(path),
                "metadata": audit.canonical_json(metadata),
                "thresholds": None if thresholds is None else audit.canonical_json(thresholds),
                "added_at": audit.now_iso(),
            }
            mid = self.db["models"].insert(record).last_pk
            self._event(
                "model added", user,
                {"sha256": sha256, "name": name, "path": record["path"], "thresholds": thresholds},
                "models", mid,
            )
            return mid

        return self.transaction(write, f"register model {name or sha256[:12]}")

    def activate_model(self, model_id: int, *, user: str, justification: str) -> int:
        """Make ``model_id`` the active model (a supervisor, with a justification).

        Activating an earlier model is the rollback. Returns the activation id.
        """
        if not str(justification or "").strip():
            raise ValueError("activating a model needs a justification")

        def write():
            who = self.user(user)
            if who.role != "supervisor":
                raise ValueError(f"only a supervisor can activate a model; {user} is {who.role}")
            model = self.one("SELECT id, sha256 FROM models WHERE id = ?", [int(model_id)])
            if model is None:
                raise ValueError(f"no model {model_id} in {self.path}")
            previous = self.active_model()
            aid = self.db["activations"].insert({
                "model_id": model["id"], "user_id": who.id, "activated_at": audit.now_iso(),
                "justification": justification,
            }).last_pk
            self._event("model activated", user, {
                "model_id": model["id"], "sha256": model["sha256"],
                "justification": justification,
                "previous_model_id": previous["id"] if previous else None,
            }, "models", model["id"])
            return aid

        return self.transaction(write, f"activate model {model_id}")

    _MODELS_SQL = (
        "SELECT m.*, a.activated_at, u.name AS activated_by, a.justification "
        "FROM models m LEFT JOIN activations a ON a.id = (SELECT max(id) FROM activations "
        "WHERE model_id = m.id) LEFT JOIN users u ON u.id = a.user_id"
    )

    def models(self) -> list[dict]:
        """Every model with its latest activation (activated_at, activated_by, justification)."""
        return [self._model_row(r) for r in self.db.query(self._MODELS_SQL + " ORDER BY m.id")]

    def active_model(self) -> dict | None:
        """The model of the latest activation, or None before any activation."""
        row = self.one(
            self._MODELS_SQL + " WHERE m.id = (SELECT model_id FROM activations "
            "ORDER BY id DESC LIMIT 1)"
        )
        return self._model_row(row) if row else None

    def activations(self) -> list[dict]:
        return list(self.db.query(
            "SELECT a.*, u.name AS user, m.sha256, m.name FROM activations a "
            "JOIN users u ON u.id = a.user_id JOIN models m ON m.id = a.model_id ORDER BY a.id"))

    @staticmethod
    def _model_row(row: dict) -> dict:
        row = dict(row)
        row["metadata"] = json.loads(row["metadata"])
        row["thresholds"] = json.loads(row["thresholds"]) if row["thresholds"] else None
        return row

    # ----- scans and regions ----------------------------------------------------------------

    def start_scan(
        self, *, radiograph_id: int, model_id: int, fpr: float | None, user: str | None,
        roi: dict | None = None,
    ) -> int:
        """Record that a scan started; return the scan id."""

        def write():
            uid = self.user(user).id if user else None
            record = {
                "radiograph_id": int(radiograph_id), "model_id": int(model_id), "user_id": uid,
                "fpr": None if fpr is None else float(fpr), "started_at": audit.now_iso(),
                "roi": None if roi is None else audit.canonical_json(roi),
            }
            sid = self.db["scans"].insert(record).last_pk
            self._event("scan started", user, {
                "radiograph_id": record["radiograph_id"], "model_id": record["model_id"],
                "fpr": record["fpr"], "roi": roi,
            }, "scans", sid)
            return sid

        return self.transaction(write, "record the scan start")

    def finish_scan(
        self, scan_id: int, regions: Iterable, *, timings: dict | None = None,
        user: str | None = None,
    ) -> list[int]:
        """Store the flagged regions of a scan (``core.scanning.Region`` objects or dicts).

        Returns the region ids, in the order given.
        """
        regions = list(regions)

        def write():
            scan = self.one("SELECT id, finished_at FROM scans WHERE id = ?", [int(scan_id)])
            if scan is None:
                raise ValueError(f"no scan {scan_id} in {self.path}")
            if scan["finished_at"]:
                raise ValueError(f"scan {scan_id} is already finished")
            ids, summary = [], []
            for number, region in enumerate(regions, start=1):
                r0, c0, r1, c1 = (int(v) for v in _field(region, "bbox"))
                size = _field(region, "size_mm")
                record = {
                    "scan_id": int(scan_id), "number": int(_field(region, "id", number)),
                    "row0": r0, "col0": c0, "row1": r1, "col1": c1,
                    "area_px": _field(region, "area_px"),
                    "peak_mean": _float(_field(region, "peak_mean")),
                    "peak_std": _float(_field(region, "peak_std")),
                    "mean_ratio": _float(_field(region, "mean_ratio")),
                    "std_ratio": _float(_field(region, "std_ratio")),
                    "severity": _float(_field(region, "severity")),
                    "tests": str(_field(region, "tests")),
                    "height_mm": _float(size[0]) if size is not None else None,
                    "width_mm": _float(size[1]) if size is not None else None,
                }
                if record["area_px"] is not None:
                    record["area_px"] = int(record["area_px"])
                ids.append(self.db["regions"].insert(record).last_pk)
                summary.append([ids[-1], r0, c0, r1, c1, record["severity"], record["tests"]])
            self.db.execute(
                "UPDATE scans SET finished_at = ?, timings = ? WHERE id = ?",
                [audit.now_iso(), audit.canonical_json(timings or {}), int(scan_id)],
            )
            self._event("scan finished", user, {"regions": summary, "timings": timings or {}},
                        "scans", int(scan_id))
            return ids

        return self.transaction(write, f"store the regions of scan {scan_id}")

    def record_roi(
        self, radiograph_id: int, roi: dict, *, user: str, scan_id: int | None = None
    ) -> int:
        """Record that a user adjusted the weld region of interest; returns the audit row id."""

        def write():
            self.user(user)
            return self._event("roi adjusted", user, {
                "radiograph_id": int(radiograph_id), "scan_id": scan_id, "roi": roi,
            }, "radiographs", int(radiograph_id))

        return self.transaction(write, "record the region of interest")

    def complete_radiograph(
        self, scan_id: int, *, user: str | None, false_flags_per_m: float | None = None,
        weld_length_mm: float | None = None, roi: bool = False,
    ) -> int | None:
        """Record that every flagged region of scan ``scan_id`` has a decision ("radiograph
        completed": scan, model, operating point and the statement that the unflagged areas
        were accepted by the detector there, with the expected false flags per metre).

        Idempotent: a completion still valid (no verdict withdrawn on the scan since) is not
        recorded twice. Returns the audit row id of the completion in force, or None while a
        region is undecided.

        Parameters
        ----------
        false_flags_per_m : float, optional
            Expected false flags per metre of weld at the scan's operating point (None when
            the pixel size is unknown).
        weld_length_mm : float, optional
            Length of weld inside the scanned region (with ``roi``), for the expected count.
        roi : bool
            The scan was restricted to a weld region of interest.
        """

        def write():
            scan = self.one(
                "SELECT s.id, s.radiograph_id, s.fpr, s.finished_at, m.sha256 AS model_sha256, "
                "m.name AS model_name FROM scans s JOIN models m ON m.id = s.model_id "
                "WHERE s.id = ?", [int(scan_id)])
            if scan is None:
                raise ValueError(f"no scan {scan_id} in {self.path}")
            if not scan["finished_at"]:
                return None
            regions = self.regions(scan["id"])
            if any(r["verdict"] is None for r in regions):
                return None
            last = self.one(
                "SELECT max(v.id) AS id FROM verdicts v JOIN regions g ON g.id = v.region_id "
                "WHERE g.scan_id = ? AND v.blind = 0", [scan["id"]])["id"]
            previous = self._completion_row(scan["id"])
            if previous is not None:
                withdrawn = self.one(
                    "SELECT max(v.id) AS id FROM verdicts v JOIN regions g ON g.id = "
                    "v.region_id WHERE g.scan_id = ? AND v.verdict = ?",
                    [scan["id"], WITHDRAWN])["id"]
                since = previous["details"].get("last_verdict_id") or 0
                if withdrawn is None or withdrawn <= since:
                    return previous["id"]
            counts: dict[str, int] = {}
            for r in regions:
                counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
            details = {
                "scan_id": scan["id"], "radiograph_id": scan["radiograph_id"],
                "model_sha256": scan["model_sha256"], "model_name": scan["model_name"],
                "fpr": scan["fpr"], "n_regions": len(regions), "verdicts": counts,
                "last_verdict_id": last, "roi": bool(roi),
                "false_flags_per_m": _float(false_flags_per_m),
                "weld_length_mm": _float(weld_length_mm),
            }
            details["statement"] = completion_statement(details)
            return self._event("radiograph completed", user, details, "scans", scan["id"])

        return self.transaction(write, f"record the completion of scan {scan_id}")

    def _completion_row(self, scan_id: int) -> dict | None:
        row = self.one(
            "SELECT * FROM audit WHERE event = 'radiograph completed' AND entity = 'scans' "
            "AND entity_id = ? ORDER BY id DESC LIMIT 1", [int(scan_id)])
        if row is not None:
            row["details"] = json.loads(row["details"])
        return row

    def completion(self, scan_id: int) -> dict | None:
        """The completion record in force for scan ``scan_id`` (an audit row with decoded
        ``details``, whose ``statement`` says what was accepted), or None: never completed,
        or a verdict was withdrawn since and a region is undecided."""
        row = self._completion_row(scan_id)
        if row is None or any(r["verdict"] is None for r in self.regions(scan_id)):
            return None
        return row

    def completions(self, radiograph_id: int) -> list[dict]:
        """Every "radiograph completed" record of a radiograph's scans, oldest first."""
        rows = self.audit_log(event="radiograph completed")
        return [r for r in rows if r["details"].get("radiograph_id") == int(radiograph_id)]

    def latest_roi(self, radiograph_id: int) -> dict | None:
        """The region of interest of the newest "roi adjusted" event of a radiograph, or None."""
        row = self.one(
            "SELECT details FROM audit WHERE event = 'roi adjusted' AND entity = 'radiographs' "
            "AND entity_id = ? ORDER BY id DESC LIMIT 1", [int(radiograph_id)])
        return None if row is None else json.loads(row["details"]).get("roi")

    def scans(self, radiograph_id: int | None = None) -> list[dict]:
        """Scans (of one radiograph), newest first, with model sha256 and user name."""
        where, params = ("WHERE s.radiograph_id = ?", [int(radiograph_id)]) if radiograph_id \
            else ("", [])
        rows = self.db.query(
            "SELECT s.*, m.sha256 AS model_sha256, m.name AS model_name, u.name AS user "
            "FROM scans s JOIN models m ON m.id = s.model_id LEFT JOIN users u ON u.id = "
            f"s.user_id {where} ORDER BY s.id DESC", params)
        out = []
        for row in rows:
            row["roi"] = json.loads(row["roi"]) if row["roi"] else None
            row["timings"] = json.loads(row["timings"]) if row["timings"] else None
            out.append(row)
        return out

    # ----- verdicts -------------------------------------------------------------------------

    # the newest verdict of a chain (a withdrawal included)
    _CURRENT = (
        "v.blind = 0 AND NOT EXISTS (SELECT 1 FROM verdicts s WHERE s.supersedes = v.id)"
    )
    # the decision in force: the newest verdict of a chain unless it was withdrawn
    _IN_FORCE = _CURRENT + f" AND v.verdict != '{WITHDRAWN}'"
    AFTER_WITHDRAWAL = "given after the earlier verdict was withdrawn"

    def add_verdict(
        self, *, user: str, verdict: str, region_id: int | None = None,
        radiograph_id: int | None = None, bbox=None, scan_id: int | None = None,
        iso_code: str | None = None, size_mm: float | None = None, comment: str = "",
        supersedes: int | None = None, reason: str | None = None,
        review_of: int | None = None,
    ) -> int:
        """Record a verdict and its audit row in one durable transaction; return its id.

        Either ``region_id`` (a flagged region) or ``radiograph_id`` + ``bbox`` (a missed
        indication the model did not flag). A region that already has a current verdict takes
        a new one only as a change: ``supersedes`` (that verdict's id) and ``reason``; changing
        another user's verdict is an overrule, allowed to supervisors only. ``review_of`` makes
        this a blind second review of that verdict (by a different user): it does not change
        the decision, it is compared with it (:meth:`agreement`).

        ``verdict="withdrawn"`` (with ``supersedes`` and a ``reason``, e.g. "undo") takes the
        superseded verdict back: the region counts as undecided again and nothing is deleted
        (audit event "verdict withdrawn"). The next verdict on that region supersedes the
        withdrawal by itself (anyone may give it; ``supersedes`` may be left out).
        """
        if verdict not in VERDICT_VALUES:
            raise ValueError(
                f"verdict must be one of {', '.join(VERDICT_VALUES)}; got {verdict!r}")
        if verdict == WITHDRAWN and (supersedes is None or review_of is not None):
            raise ValueError("a withdrawal names the verdict it withdraws (supersedes) and "
                             "cannot be a blind second review")
        if region_id is None and (radiograph_id is None or bbox is None):
            raise ValueError("give region_id, or radiograph_id and bbox for a missed indication")
        if supersedes is not None and not str(reason or "").strip():
            raise ValueError("a verdict that supersedes another needs a reason")
        if supersedes is not None and review_of is not None:
            raise ValueError("a blind second review cannot supersede a verdict")
        bbox_text = _bbox_json(bbox)

        def write():
            who = self.user(user)
            rad_id, scn_id = radiograph_id, scan_id
            sup, why = supersedes, reason
            if region_id is not None:
                region = self.one(
                    "SELECT g.id, g.scan_id, s.radiograph_id FROM regions g JOIN scans s "
                    "ON s.id = g.scan_id WHERE g.id = ?", [int(region_id)])
                if region is None:
                    raise ValueError(f"no region {region_id} in {self.path}")
                rad_id, scn_id = region["radiograph_id"], region["scan_id"]
                current = self.one(
                    f"SELECT v.id, v.verdict, u.name AS user FROM verdicts v JOIN users u ON "
                    f"u.id = v.user_id WHERE v.region_id = ? AND {self._CURRENT}",
                    [int(region_id)])
                if current is not None and current["verdict"] == WITHDRAWN and sup is None \
                        and review_of is None:
                    sup, why = current["id"], why or self.AFTER_WITHDRAWAL
            else:
                current = None
            event = "verdict"
            if review_of is not None:
                event = "second review"
                first = self.one(
                    f"SELECT v.id, v.region_id, v.user_id FROM verdicts v WHERE v.id = ? "
                    f"AND {self._IN_FORCE}", [int(review_of)])
                if first is None or first["region_id"] != region_id:
                    raise ValueError(
                        f"verdict {review_of} is not the current verdict of region {region_id}"
                    )
                if first["user_id"] == who.id:
                    raise ValueError("a second review must be by someone other than the first")
            elif sup is not None:
                old = self.one(
                    "SELECT v.*, u.name AS user FROM verdicts v JOIN users u "
                    "ON u.id = v.user_id WHERE v.id = ?", [int(sup)])
                if old is None:
                    raise ValueError(f"no verdict {sup} in {self.path}")
                later = self.one(
                    "SELECT id FROM verdicts WHERE supersedes = ?", [int(sup)])
                if later is not None or old["blind"]:
                    raise ValueError(
                        f"verdict {sup} is not current (superseded by {later['id']}); "
                        "reload and change the current one" if later else
                        f"verdict {sup} is a blind second review, not a decision"
                    )
                if old["region_id"] != region_id or old["radiograph_id"] != rad_id:
                    what = f"region {region_id}" if region_id else f"radiograph {rad_id}"
                    raise ValueError(f"verdict {sup} is not about {what}")
                if old["verdict"] == WITHDRAWN:
                    if verdict == WITHDRAWN:
                        raise ValueError(f"verdict {sup} is already a withdrawal: nothing "
                                         "to withdraw")
                    # the region is undecided: anyone may decide it, as a first verdict
                elif old["user_id"] != who.id:
                    if who.role != "supervisor":
                        raise ValueError(
                            f"only a supervisor can overrule {old['user']}'s verdict; "
                            f"{who.name} is {who.role}"
                        )
                    event = "overrule"
                else:
                    event = "verdict changed"
                if verdict == WITHDRAWN:
                    event = "verdict withdrawn"
            elif current is not None:
                raise ValueError(
                    f"region {region_id} already has verdict {current['id']} by "
                    f"{current['user']}; pass supersedes={current['id']} with a reason"
                )
            record = {
                "region_id": region_id, "radiograph_id": int(rad_id), "scan_id": scn_id,
                "bbox": bbox_text, "user_id": who.id, "verdict": verdict,
                "iso_code": iso_code or None,
                "size_mm": None if size_mm is None else float(size_mm),
                "comment": comment or "", "created_at": audit.now_iso(),
                "supersedes": sup, "reason": why or None,
                "blind": int(review_of is not None), "review_of": review_of,
            }
            vid = self.db["verdicts"].insert(record).last_pk
            stored = self.one("SELECT * FROM verdicts WHERE id = ?", [vid])
            self._event(event, who.name, {"verdict": stored}, "verdicts", vid)
            return vid

        return self.transaction(write, "save the verdict")

    def overrule(
        self, verdict_id: int, *, user: str, verdict: str, reason: str,
        iso_code: str | None = None, size_mm: float | None = None, comment: str = "",
    ) -> int:
        """A new verdict that supersedes ``verdict_id`` (same region or missed indication)."""
        old = self.verdict(verdict_id)
        return self.add_verdict(
            user=user, verdict=verdict, region_id=old["region_id"],
            radiograph_id=old["radiograph_id"], bbox=old["bbox"], scan_id=old["scan_id"],
            iso_code=iso_code, size_mm=size_mm, comment=comment, supersedes=verdict_id,
            reason=reason,
        )

    def withdraw(self, verdict_id: int, *, user: str, reason: str = "undo") -> int:
        """Withdraw verdict ``verdict_id`` (e.g. undo of a first verdict): a new verdict
        "withdrawn" supersedes it; the region is undecided again. Returns the new id."""
        old = self.verdict(verdict_id)
        return self.add_verdict(
            user=user, verdict=WITHDRAWN, region_id=old["region_id"],
            radiograph_id=old["radiograph_id"], bbox=old["bbox"], scan_id=old["scan_id"],
            supersedes=int(verdict_id), reason=reason,
        )

    def verdict(self, verdict_id: int) -> dict:
        row = self.one(
            "SELECT v.*, u.name AS user FROM verdicts v JOIN users u ON u.id = v.user_id "
            "WHERE v.id = ?", [int(verdict_id)])
        if row is None:
            raise ValueError(f"no verdict {verdict_id} in {self.path}")
        row["bbox"] = tuple(json.loads(row["bbox"])) if row["bbox"] else None
        return row

    def verdict_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM verdicts ORDER BY id")]

    # ----- queries for the review and supervisor views --------------------------------------

    def regions(self, scan_id: int) -> list[dict]:
        """The regions of a scan, each with its current verdict (None where undecided).

        Keys: the ``regions`` columns, ``bbox`` (row0, col0, row1, col1), ``size_mm``
        (h, w) or None, and ``verdict_id``, ``verdict``, ``verdict_user``, ``verdict_time``,
        ``iso_code``, ``verdict_size_mm``, ``comment``.
        """
        rows = self.db.query(
            "SELECT g.*, v.id AS verdict_id, v.verdict, u.name AS verdict_user, "
            "v.created_at AS verdict_time, v.iso_code, v.size_mm AS verdict_size_mm, v.comment "
            f"FROM regions g LEFT JOIN verdicts v ON v.region_id = g.id AND {self._IN_FORCE} "
            "LEFT JOIN users u ON u.id = v.user_id WHERE g.scan_id = ? ORDER BY g.number",
            [int(scan_id)])
        out = []
        for row in rows:
            row["bbox"] = (row["row0"], row["col0"], row["row1"], row["col1"])
            row["size_mm"] = (row["height_mm"], row["width_mm"]) \
                if row["height_mm"] is not None else None
            out.append(row)
        return out

    def missed_indications(self, radiograph_id: int) -> list[dict]:
        """Current verdicts on indications the model missed, on one radiograph."""
        return [self._decision(r) for r in self.db.query(
            self._DECISIONS_SQL + f" WHERE v.region_id IS NULL AND v.radiograph_id = ? AND "
            f"{self._IN_FORCE} ORDER BY v.id", [int(radiograph_id)])]

    _DECISIONS_SQL = (
        "SELECT v.id, v.created_at AS time, u.name AS user, u.role, v.verdict, v.iso_code, "
        "v.size_mm, v.comment, v.supersedes, v.reason, v.blind, v.review_of, "
        "CASE WHEN v.region_id IS NULL THEN 'missed' ELSE 'region' END AS kind, v.region_id, "
        "coalesce(v.bbox, json_array(g.row0, g.col0, g.row1, g.col1)) AS bbox, g.severity, "
        "g.tests, coalesce(v.scan_id, g.scan_id) AS scan_id, s.fpr, m.id AS model_id, "
        "m.sha256 AS model_sha256, m.name AS model_name, r.id AS radiograph_id, "
        "r.path AS radiograph_path, r.sha256 AS radiograph_sha256, "
        "(SELECT min(x.id) FROM verdicts x WHERE x.supersedes = v.id) AS superseded_by "
        "FROM verdicts v JOIN users u ON u.id = v.user_id "
        "JOIN radiographs r ON r.id = v.radiograph_id "
        "LEFT JOIN regions g ON g.id = v.region_id "
        "LEFT JOIN scans s ON s.id = coalesce(v.scan_id, g.scan_id) "
        "LEFT JOIN models m ON m.id = s.model_id"
    )

    @staticmethod
    def _decision(row: dict) -> dict:
        row["bbox"] = tuple(json.loads(row["bbox"])) if row["bbox"] else None
        row["blind"] = bool(row["blind"])
        row["current"] = not row["blind"] and row["superseded_by"] is None and \
            row["verdict"] != WITHDRAWN
        return row

    def decisions(
        self, *, interpreter: str | None = None, since=None, until=None,
        verdict: str | Iterable[str] | None = None, model=None, radiograph=None,
        unsure_only: bool = False, current_only: bool = False,
    ) -> list[dict]:
        """Every verdict (oldest first) with who, when, region, scan, model and radiograph.

        Filters: ``interpreter`` (user name), ``since``/``until`` (date or datetime, or ISO
        text; a bare date as ``until`` includes that day), ``verdict`` (one or several),
        ``model`` (id, sha256 or its prefix, or name), ``radiograph`` (id, sha256 or path),
        ``unsure_only``, ``current_only`` (leave out superseded verdicts and blind reviews).
        Each row has ``current`` (the decision in force) and ``superseded_by``.
        """
        where, params = [], []
        if interpreter:
            where.append("u.name = ?")
            params.append(interpreter)
        _time_range("v.created_at", since, until, where, params)
        verdicts = [verdict] if isinstance(verdict, str) else list(verdict or [])
        if unsure_only:
            verdicts = ["unsure"]
        if verdicts:
            where.append(f"v.verdict IN ({', '.join('?' * len(verdicts))})")
            params.extend(verdicts)
        if model is not None:
            if isinstance(model, int):
                where.append("m.id = ?")
                params.append(model)
            else:
                where.append("(m.sha256 LIKE ? OR m.name = ?)")
                params.extend([f"{model}%", str(model)])
        if radiograph is not None:
            where.append("r.id = ?")
            params.append(self.radiograph(radiograph)["id"])
        if current_only:
            where.append(self._IN_FORCE)
        sql = self._DECISIONS_SQL + (" WHERE " + " AND ".join(where) if where else "")
        return [self._decision(r) for r in self.db.query(sql + " ORDER BY v.id", params)]

    def blind_sample(
        self, *, reviewer: str, interpreter: str, n: int, seed: int | None = None
    ) -> list[dict]:
        """A random sample of ``interpreter``'s current region verdicts for blind re-review.

        Regions ``reviewer`` has already re-reviewed are left out. Each item carries the
        region (``region_id``, ``bbox``, ``scan_id``, ``radiograph_id``, ``radiograph_path``,
        scores) and ``review_of`` (the id to pass to :meth:`add_verdict`), never the first
        verdict itself: the view must not show it.
        """
        if reviewer == interpreter:
            raise ValueError("a second review must be by someone other than the interpreter")
        rev = self.user(reviewer)
        rows = list(self.db.query(
            "SELECT v.id AS review_of, g.id AS region_id, g.scan_id, g.row0, g.col0, g.row1, "
            "g.col1, g.severity, g.tests, g.mean_ratio, g.std_ratio, s.radiograph_id, "
            "r.path AS radiograph_path FROM verdicts v JOIN users u ON u.id = v.user_id "
            "JOIN regions g ON g.id = v.region_id JOIN scans s ON s.id = g.scan_id "
            f"JOIN radiographs r ON r.id = s.radiograph_id WHERE u.name = ? AND {self._IN_FORCE} "
            "AND NOT EXISTS (SELECT 1 FROM verdicts b WHERE b.region_id = g.id AND b.blind = 1 "
            "AND b.user_id = ?) ORDER BY v.id", [interpreter, rev.id]))
        picked = random.Random(seed).sample(rows, min(int(n), len(rows)))
        for row in picked:
            row["bbox"] = (row.pop("row0"), row.pop("col0"), row.pop("row1"), row.pop("col1"))
        return picked

    _PAIRS_SQL = (
        "SELECT f.id AS first_id, fu.name AS first_user, f.verdict AS first_verdict, "
        "f.created_at AS first_time, b.id AS second_id, bu.name AS second_user, "
        "b.verdict AS second_verdict, b.created_at AS second_time, b.region_id, "
        "f.radiograph_id, r.path AS radiograph_path, "
        "(SELECT min(x.id) FROM verdicts x WHERE x.supersedes = f.id) AS resolution_id "
        "FROM verdicts b JOIN verdicts f ON f.id = b.review_of "
        "JOIN users fu ON fu.id = f.user_id JOIN users bu ON bu.id = b.user_id "
        "JOIN radiographs r ON r.id = f.radiograph_id WHERE b.blind = 1"
    )

    def agreement(
        self, *, reviewer: str | None = None, interpreter: str | None = None
    ) -> list[Agreement]:
        """Per interpreter: agreement of their verdicts with blind second reviews."""
        pairs: dict[str, list[tuple[str, str]]] = {}
        for row in self.db.query(self._PAIRS_SQL + " ORDER BY b.id"):
            if reviewer and row["second_user"] != reviewer:
                continue
            if interpreter and row["first_user"] != interpreter:
                continue
            pairs.setdefault(row["first_user"], []).append(
                (row["first_verdict"], row["second_verdict"]))
        return [_agreement(name, items) for name, items in sorted(pairs.items())]

    def disagreements(self, *, unresolved_only: bool = False) -> list[dict]:
        """Second reviews that differ from the first verdict, oldest first.

        ``resolved`` is True once someone superseded the first verdict (an overrule or a
        confirmation with a reason); ``resolution_id``/``resolution_verdict`` say how.
        """
        out = []
        for row in self.db.query(self._PAIRS_SQL + " AND b.verdict != f.verdict ORDER BY b.id"):
            row["resolved"] = row["resolution_id"] is not None
            row["resolution_verdict"] = (
                self.verdict(row["resolution_id"])["verdict"] if row["resolved"] else None
            )
            if not (unresolved_only and row["resolved"]):
                out.append(row)
        return out

    # ----- audit ----------------------------------------------------------------------------

    def audit_log(
        self, *, user: str | None = None, since=None, until=None, event: str | None = None
    ) -> list[dict]:
        """Audit rows (oldest first), ``details`` decoded."""
        where, params = [], []
        if user:
            where.append("user = ?")
            params.append(user)
        _time_range("time", since, until, where, params)
        if event:
            where.append("event = ?")
            params.append(event)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        rows = list(self.db.query(sql + " ORDER BY id", params))
        for row in rows:
            row["details"] = json.loads(row["details"])
        return rows

    def record_export(
        self, *, kind: str, path, rows: int, sha256: str, user: str | None = None,
        radiograph_id: int | None = None,
    ) -> int:
        """Record an export (CSV or PDF) in the audit trail; returns the audit row id."""

        def write():
            return self._event("export", user, {
                "format": kind, "path": str(path), "rows": int(rows), "sha256": sha256,
                "radiograph_id": radiograph_id,
            }, "radiographs" if radiograph_id else None, radiograph_id)

        return self.transaction(write, f"record the export to {path}")

    def verify(self, *, anchor: tuple[int, str] | None = None) -> audit.AuditReport:
        """Check the audit chain (see :func:`core.audit.verify_chain`)."""
        return audit.verify_chain(self, anchor=anchor)


def _float(value) -> float | None:
    return None if value is None else float(value)


def completion_statement(details: dict) -> str:
    """The words of a "radiograph completed" record (see :meth:`Store.complete_radiograph`)."""
    n = details["n_regions"]
    done = (f"All {n} flagged region{'' if n == 1 else 's'} of scan {details['scan_id']} have a "
            "verdict." if n else f"Scan {details['scan_id']} flagged nothing.")
    where = "inside the weld region of interest " if details.get("roi") else ""
    fpr = details.get("fpr")
    point = f"FPR {fpr:.3%} per okay 156 px patch" if fpr is not None else "its calibrated FPR"
    model = details.get("model_name") or "model"
    text = (f"{done} Unflagged areas {where}were accepted by the detector at the stated "
            f"operating point: {model} (sha256 {details['model_sha256'][:12]}), {point}")
    per_m = details.get("false_flags_per_m")
    if per_m is not None:
        text += f", about {per_m:.2g} expected false flags per metre of weld"
        length = details.get("weld_length_mm")
        if length:
            text += (f" ({per_m * length / 1000.0:.2g} expected over the {length:.0f} mm of weld "
                     f"{'inside the region' if details.get('roi') else 'scanned'})")
    else:
        text += " (pixel size unknown: expected false flags per metre not stated)"
    return text + "."


def _agreement(name: str, pairs: list[tuple[str, str]]) -> Agreement:
    """Percent agreement and Cohen's kappa over the verdict categories."""
    n = len(pairs)
    agree = sum(a == b for a, b in pairs)
    po = agree / n
    pe = sum(
        (sum(a == k for a, _ in pairs) / n) * (sum(b == k for _, b in pairs) / n)
        for k in VERDICTS
    )
    kappa = None if pe >= 1.0 else (po - pe) / (1.0 - pe)
    return Agreement(name, n, agree, 100.0 * po, kappa)
