"""Export of all decisions as CSV; every export is recorded in the audit trail.

An export is written to a temporary file next to the target, hashed, recorded (format, path,
row count and sha256 of the file) in the audit trail, and only then moved into place, so a
file that appears at the target is always one the trail knows about.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.errors import StoreError

CSV_COLUMNS = (
    "verdict_id", "time", "user", "role", "verdict", "iso_code", "size_mm", "comment",
    "current", "supersedes", "superseded_by", "reason", "blind", "review_of", "kind",
    "region_id", "row0", "col0", "row1", "col1", "severity", "tests", "scan_id", "fpr",
    "model_id", "model_name", "model_sha256", "radiograph_id", "radiograph_path",
    "radiograph_sha256",
)


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the file, its number of data rows, its sha256, the audit row."""

    path: Path
    rows: int
    sha256: str
    audit_id: int


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_recorded(
    store, path, write: Callable[[Path], int], *, kind: str, user: str | None = None,
    radiograph_id: int | None = None,
) -> ExportResult:
    """Write an export through ``write(tmp_path) -> rows``, record it, then move it in place.

    Raises StoreError (and leaves no file behind) when the file cannot be written or the
    export cannot be recorded.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        rows = write(tmp)
        digest = file_sha256(tmp)
        audit_id = store.record_export(
            kind=kind, path=path.resolve(), rows=rows, sha256=digest, user=user,
            radiograph_id=radiograph_id,
        )
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"{path}: cannot write the export ({exc.strerror or exc})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportResult(path, rows, digest, audit_id)


def export_csv(store, path, *, user: str | None = None, **filters) -> ExportResult:
    """Write every decision (or those matching ``Store.decisions`` filters) as CSV.

    One row per verdict, oldest first, columns :data:`CSV_COLUMNS`; superseded verdicts and
    blind second reviews are included and marked (``current``, ``superseded_by``, ``blind``).
    """
    decisions = store.decisions(**filters)

    def write(tmp: Path) -> int:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(CSV_COLUMNS)
            for d in decisions:
                box = d["bbox"] or (None, None, None, None)
                values = {**d, "verdict_id": d["id"], "row0": box[0], "col0": box[1],
                          "row1": box[2], "col1": box[3], "current": int(d["current"]),
                          "blind": int(d["blind"])}
                out.writerow(["" if values[c] is None else values[c] for c in CSV_COLUMNS])
            fh.flush()
            os.fsync(fh.fileno())
        return len(decisions)

    return write_recorded(store, path, write, kind="csv", user=user)
