"""A careful reviewer's verdicts on a scan whose true indications are known.

For generated radiographs (core.synthetic, or the test radiographs of tests/retrain_support.py),
where every true indication's box is known. Used by ``weldreview bench retrain``
(core.retrain_bench) and the retraining tests. The records go through the store calls the review
window makes (app.review_session): ``start_scan`` / ``finish_scan`` for a scan, ``add_verdict``
on a flagged region, and ``add_verdict`` with a box for a missed indication.

The reviewer's rule: a flagged region on a true indication is a confirmed defect (with the
indication's ISO 6520 code), any other flagged region a false alarm, and an indication no region
touches is marked as missed with its box.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("defect", "false_alarm", "missed")  # what a verdict teaches (core.training_set)


@dataclass
class Indication:
    """A true indication: its box ``(row0, col0, row1, col1)`` (end exclusive) and ISO code."""

    bbox: tuple[int, int, int, int]
    iso_code: str = "2011"


def overlaps(a, b) -> bool:
    """Whether boxes ``(row0, col0, row1, col1)`` (end exclusive) share a pixel."""
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def record_scan(store, radiograph_id: int, bundle, result, *, user: str,
                fpr: float | None = None) -> tuple[int, list[int]]:
    """Store a finished scan of ``bundle`` (registered) and its regions; (scan id, region ids)."""
    model = store.one("SELECT id FROM models WHERE sha256 = ?", [bundle.sha256])
    if model is None:
        raise ValueError(f"model {bundle.sha256[:12]} is not registered in the store")
    sid = store.start_scan(radiograph_id=radiograph_id, model_id=model["id"], fpr=fpr, user=user)
    return sid, store.finish_scan(sid, result.regions, user=user)


def review(store, *, user: str, radiograph_id: int, scan_id: int, regions, region_ids,
           indications: list[Indication], limits: dict | None = None,
           at_most: int | None = None,
           comment: str = "missed indication") -> tuple[list[bool], dict]:
    """Give the reviewer's verdicts on one scan.

    Parameters
    ----------
    store : core.store.Store
    user : str
        The interpreter.
    radiograph_id, scan_id : int
    regions : list of core.scanning.Region
        The scan's regions, in the order of ``region_ids`` (:func:`record_scan`).
    region_ids : list of int
    indications : list of Indication
        The true indications of the radiograph.
    limits : dict, optional
        At most this many verdicts of each kind in ``KINDS`` (missing kinds: none); None: a
        verdict on every region and every missed indication. Regions past a limit stay
        undecided.
    at_most : int, optional
        At most this many verdicts in all.
    comment : str
        The comment of a missed indication.

    Returns
    -------
    hit : list of bool
        Per indication, whether a region touches it.
    given : dict
        Verdicts given per kind.
    """
    given = dict.fromkeys(KINDS, 0)

    def room(kind: str) -> bool:
        if at_most is not None and sum(given.values()) >= at_most:
            return False
        return limits is None or given[kind] < limits.get(kind, 0)

    hit = [False] * len(indications)
    for rid, region in zip(region_ids, regions):
        on = [i for i, ind in enumerate(indications) if overlaps(region.bbox, ind.bbox)]
        for i in on:
            hit[i] = True
        kind = "defect" if on else "false_alarm"
        if room(kind):
            store.add_verdict(user=user, verdict=kind, region_id=rid,
                              iso_code=indications[on[0]].iso_code if on else None)
            given[kind] += 1
    for i, ind in enumerate(indications):
        if not hit[i] and room("missed"):
            store.add_verdict(user=user, verdict="defect", radiograph_id=radiograph_id,
                              bbox=ind.bbox, scan_id=scan_id, iso_code=ind.iso_code,
                              comment=comment)
            given["missed"] += 1
    return hit, given
