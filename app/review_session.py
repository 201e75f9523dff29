"""What the review window records in the store for one radiograph (no Qt here).

A radiograph scanned earlier with the same model and operating point reuses that scan's stored
regions, so its verdicts show again after the application is reopened; only the maps are computed
again (they are not stored). Verdicts are append-only: a change supersedes the current verdict
with a reason, and undo restores the previous verdict the same way (or, for a first verdict,
withdraws it: the region is undecided again and the record keeps both).

A scan remembers the weld region of interest it was restricted to; a scan is reused only when
its region is the same. A region adjusted by hand is recorded ("roi adjusted") and used again
when the radiograph is reopened. When every flagged region has a decision, the session records
"radiograph completed" with the statement that unflagged weld was accepted by the detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

UNDO_REASON = "undo"
CHANGE_REASON = "changed by the interpreter"


@dataclass
class QueueRegion:
    """A flagged region as stored (``db_id``) with the attributes the views use."""

    db_id: int
    id: int  # the region's number within its scan
    bbox: tuple[int, int, int, int]
    area_px: int
    severity: float
    tests: str
    size_mm: tuple[float, float] | None
    verdict: str | None = None
    verdict_id: int | None = None
    verdict_user: str | None = None


@dataclass
class UndoStep:
    region_db_id: int
    verdict_id: int
    previous_id: int | None
    previous: str | None


@dataclass
class ReviewSession:
    """The store records of the radiograph under review, for user ``user``."""

    store: object
    user: str
    radiograph_id: int | None = None
    scan_id: int | None = None
    model_id: int | None = None
    reused_scan: bool = False
    regions: list[QueueRegion] = field(default_factory=list)
    undo_stack: list[UndoStep] = field(default_factory=list)

    # ----- models, radiographs and scans
    def register_model(self, bundle) -> int:
        thr = bundle.thresholds
        self.model_id = self.store.add_model(
            sha256=bundle.sha256, metadata=_json_safe(bundle.metadata),
            thresholds=None if thr is None else thr.to_dict(), name=bundle.name,
            path=bundle.path, user=self.user,
        )
        return self.model_id

    def open_radiograph(self, radiograph) -> int:
        """Register the radiograph; forget the previous one's scan."""
        self.radiograph_id = self.store.add_radiograph_from(radiograph, user=self.user)
        self.scan_id, self.reused_scan, self.regions, self.undo_stack = None, False, [], []
        return self.radiograph_id

    def previous_scan(self, model_sha256: str, fpr: float, roi: dict | None = None) -> dict | None:
        """The newest finished scan of this radiograph with this model, FPR and weld region."""
        key = roi_key(roi)
        for scan in self.store.scans(self.radiograph_id):
            if scan["finished_at"] and scan["model_sha256"] == model_sha256 and \
                    scan["fpr"] is not None and math.isclose(scan["fpr"], fpr, rel_tol=1e-9) \
                    and roi_key(scan["roi"]) == key:
                return scan
        return None

    def begin_scan(self, model_sha256: str, fpr: float, roi: dict | None = None) -> int | None:
        """Reuse a finished scan (returns its id) or record the start of a new one (None).

        ``roi`` is the :func:`roi_record` of the weld region the scan is restricted to.
        """
        previous = self.previous_scan(model_sha256, fpr, roi)
        if previous is not None:
            self.scan_id, self.reused_scan = previous["id"], True
            return self.scan_id
        self.scan_id = self.store.start_scan(radiograph_id=self.radiograph_id,
                                             model_id=self.model_id, fpr=fpr, user=self.user,
                                             roi=roi)
        self.reused_scan = False
        return None

    def store_regions(self, result) -> None:
        """Store the regions of a new scan (nothing for a reused one).

        Safe to call from the scan's worker thread (the store serialises its connection).
        """
        if self.scan_id is None:
            raise ValueError("no scan was started for this radiograph")
        if not self.reused_scan:
            self.store.finish_scan(self.scan_id, result.regions, timings=_json_safe(result.timings),
                                   user=self.user)

    def finish_scan(self, result) -> list[QueueRegion]:
        """Store the regions of a new scan (not of a reused one) and load the queue."""
        self.store_regions(result)
        return self.reload()

    def reload(self) -> list[QueueRegion]:
        """Regions of the current scan with their current verdicts, from the store."""
        self.regions = [
            QueueRegion(
                db_id=row["id"], id=row["number"], bbox=tuple(row["bbox"]),
                area_px=row["area_px"] or 0, severity=row["severity"] or 0.0,
                tests=row["tests"], size_mm=row["size_mm"], verdict=row["verdict"],
                verdict_id=row["verdict_id"], verdict_user=row["verdict_user"],
            )
            for row in self.store.regions(self.scan_id)
        ] if self.scan_id is not None else []
        return self.regions

    def region(self, number: int) -> QueueRegion | None:
        return next((r for r in self.regions if r.id == number), None)

    # ----- verdicts
    def give(self, number: int, verdict: str, *, iso_code=None, size_mm=None, comment="",
             reason: str = CHANGE_REASON) -> int:
        """Store a verdict on region ``number`` (superseding its current one); return its id."""
        region = self.region(number)
        if region is None:
            raise ValueError(f"no flagged region {number} in this scan")
        vid = self.store.add_verdict(
            user=self.user, verdict=verdict, region_id=region.db_id, iso_code=iso_code,
            size_mm=size_mm, comment=comment, supersedes=region.verdict_id,
            reason=reason if region.verdict_id is not None else None,
        )
        self.undo_stack.append(UndoStep(region.db_id, vid, region.verdict_id, region.verdict))
        region.verdict, region.verdict_id, region.verdict_user = verdict, vid, self.user
        return vid

    def undo(self) -> tuple[QueueRegion, bool] | None:
        """Undo the last verdict of this session.

        Returns (region, restored): ``restored`` is True when the previous verdict was put back
        (as a new verdict superseding the undone one); False when the region had none before:
        the undone verdict is withdrawn (a "withdrawn" verdict supersedes it, reason "undo")
        and the region is undecided again. Nothing is deleted. None when there is nothing to
        undo.
        """
        if not self.undo_stack:
            return None
        step = self.undo_stack.pop()
        region = next((r for r in self.regions if r.db_id == step.region_db_id), None)
        if region is None:
            return None
        if step.previous is None:
            self.store.withdraw(step.verdict_id, user=self.user, reason=UNDO_REASON)
            region.verdict, region.verdict_id, region.verdict_user = None, None, None
            return region, False
        vid = self.store.add_verdict(user=self.user, verdict=step.previous,
                                     region_id=region.db_id, supersedes=step.verdict_id,
                                     reason=UNDO_REASON)
        region.verdict, region.verdict_id = step.previous, vid
        return region, True

    def mark_missed(self, bbox, *, iso_code=None, size_mm=None, comment="") -> int:
        """Store a missed indication (a defect the detector did not flag) at ``bbox``."""
        return self.store.add_verdict(
            user=self.user, verdict="defect", radiograph_id=self.radiograph_id, bbox=bbox,
            scan_id=self.scan_id, iso_code=iso_code, size_mm=size_mm,
            comment=comment or "missed indication",
        )

    def missed(self) -> list[dict]:
        return self.store.missed_indications(self.radiograph_id) if self.radiograph_id else []

    def counts(self) -> tuple[int, int]:
        """(flagged, reviewed) of the current scan."""
        return len(self.regions), sum(1 for r in self.regions if r.verdict)

    # ----- weld region of interest and completion
    def stored_roi(self) -> dict | None:
        """The weld region last set by hand for this radiograph (a :func:`roi_record`), if any."""
        if self.radiograph_id is None:
            return None
        return self.store.latest_roi(self.radiograph_id)

    def record_roi(self, record: dict) -> int:
        """Record a region adjusted, drawn or dropped by hand ("roi adjusted")."""
        return self.store.record_roi(self.radiograph_id, record, user=self.user,
                                     scan_id=self.scan_id)

    def complete(self, *, false_flags_per_m: float | None, weld_length_mm: float | None,
                 roi: bool) -> dict | None:
        """Record "radiograph completed" when every flagged region has a decision; return the
        completion in force (audit row with ``details["statement"]``) or None."""
        if self.scan_id is None:
            return None
        if self.store.complete_radiograph(self.scan_id, user=self.user,
                                          false_flags_per_m=false_flags_per_m,
                                          weld_length_mm=weld_length_mm, roi=roi) is None:
            return None
        return self.store.completion(self.scan_id)


def roi_record(weld_roi, kind: str) -> dict:
    """What the store keeps of a weld region: ``kind`` ("found", "adjusted", "drawn" or
    "whole image") and the region (``core.roi.WeldROI.to_json`` as a dict; None for the whole
    image)."""
    import json

    if weld_roi is None:
        return {"kind": "whole image", "region": None}
    return {"kind": kind, "region": json.loads(weld_roi.to_json()),
            "area_px": int(weld_roi.area_px())}


def roi_from_record(record: dict | None):
    """The WeldROI of a :func:`roi_record` (None for the whole image or no record)."""
    import json

    if not record or record.get("region") is None:
        return None
    from core.roi import WeldROI

    return WeldROI.from_json(json.dumps(record["region"]))


def roi_key(record: dict | None) -> str | None:
    """What makes two scans' regions the same (the region itself, not how it was made)."""
    import json

    if not record or record.get("region") is None:
        return None
    return json.dumps(record["region"], sort_keys=True)


def worklist_counts(store, path) -> tuple[int, int] | None:
    """(flagged, reviewed) of the newest finished scan of the radiograph at ``path``, or None."""
    try:
        rad = store.radiograph(str(path))
    except ValueError:
        return None
    for scan in store.scans(rad["id"]):
        if scan["finished_at"]:
            rows = store.regions(scan["id"])
            return len(rows), sum(1 for r in rows if r["verdict"])
    return None


def _json_safe(value):
    """Plain JSON types (numpy scalars, tuples and Paths converted)."""
    import numpy as np
    from pathlib import Path

    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def worklist_regions(store, paths) -> list[dict]:
    """Flagged regions of the newest finished scan of each radiograph in ``paths`` (those the
    store knows), each a dict with path, number, severity, tests, size_mm and verdict."""
    from pathlib import Path

    rows = []
    for path in paths:
        try:
            rad = store.radiograph(str(path))
        except ValueError:
            continue
        scan = next((s for s in store.scans(rad["id"]) if s["finished_at"]), None)
        if scan is None:
            continue
        for r in store.regions(scan["id"]):
            rows.append({"path": Path(path), "number": r["number"], "severity": r["severity"],
                         "tests": r["tests"], "size_mm": r["size_mm"], "verdict": r["verdict"]})
    return rows
