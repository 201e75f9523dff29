"""Every change to the database schema, in order, as one sqlite-utils ``Migrations`` set.

A database records which migrations it has had in sqlite-utils' ``_sqlite_migrations`` table and
its schema version (the number of migrations applied) in ``PRAGMA user_version``.
:func:`apply_migrations` brings an older database up to date; a database that names a migration
this version of weldreview does not know was written by a newer weldreview and is refused.

Never edit or reorder a migration that has shipped: append a new one.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from core.errors import StoreError

MIGRATIONS = Migrations("weldreview")

VERDICTS = ("defect", "acceptable", "false_alarm", "unsure")  # the decisions
WITHDRAWN = "withdrawn"  # not a decision: takes back the verdict it supersedes (undo)
VERDICT_VALUES = VERDICTS + (WITHDRAWN,)
ROLES = ("interpreter", "supervisor")
APPEND_ONLY = ("verdicts", "audit", "activations")


def _append_only(db: Database, table: str) -> None:
    for action in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} are append-only: {action} is not allowed'); END"
        )


@MIGRATIONS()
def m001_core_tables(db: Database) -> None:
    """Users, radiographs, models, scans, regions, verdicts and the audit trail."""
    db["users"].create(
        {"id": int, "name": str, "role": str, "created_at": str},
        pk="id",
        not_null=["name", "role", "created_at"],
    )
    db["users"].create_index(["name"], unique=True)
    db.execute(
        "CREATE TRIGGER users_role_check BEFORE INSERT ON users "
        "WHEN NEW.role NOT IN ('interpreter', 'supervisor') "
        "BEGIN SELECT RAISE(ABORT, 'role must be interpreter or supervisor'); END"
    )
    db["radiographs"].create(
        {
            "id": int,
            "sha256": str,
            "path": str,
            "rows": int,
            "cols": int,
            "bit_depth": int,
            "pixel_size_um": float,
            "added_at": str,
        },
        pk="id",
        not_null=["sha256", "path", "rows", "cols", "bit_depth", "added_at"],
    )
    db["radiographs"].create_index(["sha256"], unique=True)
    db["models"].create(
        {
            "id": int,
            "sha256": str,
            "name": str,
            "path": str,
            "metadata": str,
            "thresholds": str,
            "added_at": str,
        },
        pk="id",
        not_null=["sha256", "metadata", "added_at"],
    )
    db["models"].create_index(["sha256"], unique=True)
    db["scans"].create(
        {
            "id": int,
            "radiograph_id": int,
            "model_id": int,
            "user_id": int,
            "fpr": float,
            "started_at": str,
            "finished_at": str,
            "timings": str,
        },
        pk="id",
        foreign_keys=[
            ("radiograph_id", "radiographs", "id"),
            ("model_id", "models", "id"),
            ("user_id", "users", "id"),
        ],
        not_null=["radiograph_id", "model_id", "started_at"],
    )
    db["regions"].create(
        {
            "id": int,
            "scan_id": int,
            "number": int,
            "row0": int,
            "col0": int,
            "row1": int,
            "col1": int,
            "area_px": int,
            "peak_mean": float,
            "peak_std": float,
            "mean_ratio": float,
            "std_ratio": float,
            "severity": float,
            "tests": str,
            "height_mm": float,
            "width_mm": float,
        },
        pk="id",
        foreign_keys=[("scan_id", "scans", "id")],
        not_null=["scan_id", "number", "row0", "col0", "row1", "col1", "tests"],
    )
    db["regions"].create_index(["scan_id"])
    db["verdicts"].create(
        {
            "id": int,
            "region_id": int,
            "radiograph_id": int,
            "scan_id": int,
            "bbox": str,
            "user_id": int,
            "verdict": str,
            "iso_code": str,
            "size_mm": float,
            "comment": str,
            "created_at": str,
            "supersedes": int,
            "reason": str,
            "blind": int,
            "review_of": int,
        },
        pk="id",
        foreign_keys=[
            ("region_id", "regions", "id"),
            ("radiograph_id", "radiographs", "id"),
            ("scan_id", "scans", "id"),
            ("user_id", "users", "id"),
            ("supersedes", "verdicts", "id"),
            ("review_of", "verdicts", "id"),
        ],
        not_null=["radiograph_id", "user_id", "verdict", "created_at", "blind"],
        defaults={"blind": 0, "comment": ""},
    )
    db["verdicts"].create_index(["region_id"])
    db["verdicts"].create_index(["user_id", "created_at"])
    db["verdicts"].create_index(["supersedes"])
    db["verdicts"].create_index(["review_of"])
    allowed = ", ".join(f"'{v}'" for v in VERDICTS)
    db.execute(
        "CREATE TRIGGER verdicts_check BEFORE INSERT ON verdicts BEGIN "
        f"SELECT RAISE(ABORT, 'verdict must be one of {allowed.replace(chr(39), '')}') "
        f"WHERE NEW.verdict NOT IN ({allowed}); "
        "SELECT RAISE(ABORT, 'a verdict needs a region or the bbox of a missed indication') "
        "WHERE NEW.region_id IS NULL AND NEW.bbox IS NULL; "
        "SELECT RAISE(ABORT, 'a verdict that supersedes another needs a reason') "
        "WHERE NEW.supersedes IS NOT NULL AND coalesce(trim(NEW.reason), '') = ''; "
        "END"
    )
    db["audit"].create(
        {
            "id": int,
            "time": str,
            "user": str,
            "event": str,
            "entity": str,
            "entity_id": int,
            "details": str,
            "prev_hash": str,
            "hash": str,
        },
        pk="id",
        not_null=["time", "event", "details", "prev_hash", "hash"],
    )
    _append_only(db, "verdicts")
    _append_only(db, "audit")


@MIGRATIONS()
def m002_model_activations(db: Database) -> None:
    """Model activation history: activating an earlier model is the rollback."""
    db["activations"].create(
        {
            "id": int,
            "model_id": int,
            "user_id": int,
            "activated_at": str,
            "justification": str,
        },
        pk="id",
        foreign_keys=[("model_id", "models", "id"), ("user_id", "users", "id")],
        not_null=["model_id", "user_id", "activated_at", "justification"],
    )
    _append_only(db, "activations")


@MIGRATIONS()
def m003_scan_roi(db: Database) -> None:
    """The weld region of interest a scan was restricted to (JSON)."""
    db["scans"].add_column("roi", str)


@MIGRATIONS()
def m004_withdrawn_verdicts(db: Database) -> None:
    """A verdict can be withdrawn: value 'withdrawn', always superseding the verdict it takes
    back, with a reason, never blind. The region is undecided again; nothing is deleted."""
    db.execute("DROP TRIGGER IF EXISTS verdicts_check")
    allowed = ", ".join(f"'{v}'" for v in VERDICTS + ("withdrawn",))
    db.execute(
        "CREATE TRIGGER verdicts_check BEFORE INSERT ON verdicts BEGIN "
        f"SELECT RAISE(ABORT, 'verdict must be one of {allowed.replace(chr(39), '')}') "
        f"WHERE NEW.verdict NOT IN ({allowed}); "
        "SELECT RAISE(ABORT, 'a verdict needs a region or the bbox of a missed indication') "
        "WHERE NEW.region_id IS NULL AND NEW.bbox IS NULL; "
        "SELECT RAISE(ABORT, 'a verdict that supersedes another needs a reason') "
        "WHERE NEW.supersedes IS NOT NULL AND coalesce(trim(NEW.reason), '') = ''; "
        "SELECT RAISE(ABORT, 'a withdrawal must supersede the verdict it withdraws') "
        "WHERE NEW.verdict = 'withdrawn' AND (NEW.supersedes IS NULL OR NEW.blind != 0); "
        "END"
    )


SCHEMA_VERSION = len(MIGRATIONS._migrations)


def known_names() -> list[str]:
    """Names of the migrations this version knows, in the order they are applied."""
    return [m.name for m in MIGRATIONS._migrations]


def schema_version(db: Database) -> int:
    """The schema version recorded in the database (0 for a new, empty file)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def check_not_newer(db: Database, path: str) -> None:
    """Raise StoreError if ``db`` was written by a newer weldreview than this one."""
    version = schema_version(db)
    applied = [m.name for m in MIGRATIONS.applied(db)]
    unknown = [name for name in applied if name not in known_names()]
    if version > SCHEMA_VERSION or unknown:
        raise StoreError(
            f"{path}: the database was written by a newer weldreview (schema version {version}"
            f"{', migrations ' + ', '.join(unknown) if unknown else ''}; this version knows up "
            f"to {SCHEMA_VERSION}); update weldreview to open it. Nothing was changed."
        )


def check_ours(db: Database, path: str) -> None:
    """Raise StoreError if ``db`` holds tables but none of weldreview's migrations.

    A database another program made is left alone rather than filled with our tables.
    """
    if MIGRATIONS.applied(db):
        return
    tables = [t for t in db.table_names() if not t.startswith("sqlite_")]
    if tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(
            f"{path}: is an SQLite database of another program (tables {shown}), not a "
            "weldreview database; choose another file. Nothing was changed."
        )


def apply_migrations(db: Database, *, stop_before: str | None = None) -> int:
    """Apply the pending migrations inside the caller's transaction; return the new version.

    ``stop_before`` (a migration name) leaves that one and later ones pending: tests use it to
    build a database as an older weldreview wrote it.
    """
    MIGRATIONS.apply(db, stop_before=stop_before)
    version = len(MIGRATIONS.applied(db))
    db.execute(f"PRAGMA user_version = {version}")
    return version
