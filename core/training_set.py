"""From verdicts to training data: the training set that retraining draws on (issue 9).

Which verdicts teach what (only decisions in force, never blind second reviews):

- ``defect`` on a flagged region -> a *defect* entry: the defect's perturbation delta, extracted
  as in Section 3.3 of the paper. The region comes from the flagged 9 x 9 kernels of the scan
  (kernel centres dilated by the kernel's half-width), refined by a threshold on the residual
  (source ``flagged_kernels+residual``); or from a mask the reviewer painted
  (:func:`add_painted_mask`, source ``painted``). Each connected region then has the mean of its
  1 px border ring subtracted (``core.perturbations.label_regions``/``border_ring_means``):
  ``delta = image - ring mean`` inside the region, 0 outside; W is the region.
- ``defect`` on a missed indication (a box the reviewer drew where nothing was flagged) -> a
  *missed* entry, extracted the same way from the box refined by the residual threshold
  (source ``bbox+residual``; ``bbox`` when the residual shows nothing there).
- ``false_alarm`` on a flagged region -> an *okay* entry: the 192 x 192 patch centred on it.
- ``acceptable`` and ``unsure`` teach nothing (an acceptable imperfection is still not
  accepted-weld appearance).

Residual refinement: the residual is smoothed (Gaussian, sigma ``SMOOTH_SIGMA``); its noise is
the MAD-based std of the smoothed residual outside the candidate area; pixels of the candidate
area whose smoothed residual has the area's dominant sign and exceeds ``REFINE_K`` noise stds
form the region (components under ``MIN_PIXELS`` dropped).

Entries hold arrays of the raw radiograph (the residual that locates a defect is the scan
model's, of the radiograph as that model sees it). A model trained with background removal
(``core.normalise``) takes them again from its normalised whole radiograph at the stored
origin and region (:func:`entry_arrays`, :func:`arrays_for_model`), and :func:`patch_sampler`
draws its okay patches from the normalised radiographs: the normalisation is always of the whole
radiograph, never of a patch.

Image-level split: every radiograph is either ``train`` or ``holdback`` (never both); the
holdback radiographs give the calibration and qualification patches. The split is drawn from the
radiograph's sha256 (``HOLDBACK_FRACTION``) the first time it is seen and may be set by a
supervisor (:func:`set_split`) before retraining.

Tables (sqlite-utils, created idempotently in the review database; prefix ``training_``):
``training_entries``, ``training_masks`` (painted masks), ``training_exclusions`` (append-only
exclude/include actions), ``training_splits``, ``training_models`` (what each model version was
trained on) and ``training_qualifications``. Every change writes an audit event in the same
transaction (``core.audit.append_event``).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import numpy as np

from core import audit
from core.model import APERTURE, OFFSET, PATCH

SMOOTH_SIGMA = 1.5  # px, smoothing of the residual before the refinement threshold
REFINE_K = 3.0  # noise stds of the smoothed residual
MIN_PIXELS = 4  # smaller components of a refined region are dropped
CROP_MARGIN = 3  # px kept around a region in a stored delta
HOLDBACK_FRACTION = 0.25
KINDS = ("defect", "missed", "okay")
SPLITS = ("train", "holdback")
TEACHING = ("defect", "false_alarm")  # verdict values that make training entries

# audit events written by this module and core.retraining (must be listed in core.audit.EVENTS)
EV_ADDED = "training data added"
EV_EXCLUDED = "training entry excluded"
EV_INCLUDED = "training entry included"
EV_SPLIT = "training split set"
EV_MASK = "training mask painted"
EV_TRAINED = "model trained"
EV_QUALIFIED = "model qualified"
EVENTS = (EV_ADDED, EV_EXCLUDED, EV_INCLUDED, EV_SPLIT, EV_MASK, EV_TRAINED, EV_QUALIFIED)


# ---------------------------------------------------------------- tables


def ensure_tables(store) -> None:
    """Create the ``training_*`` tables in ``store``'s database when missing (idempotent)."""
    db = store.db
    if all(db[t].exists() for t in _TABLES):
        return
    if store.readonly:
        return

    def create():
        for name, (columns, kwargs) in _TABLES.items():
            db[name].create(columns, pk="id", if_not_exists=True, **kwargs)
        db["training_entries"].create_index(["verdict_id"], unique=True, if_not_exists=True)
        db["training_splits"].create_index(["radiograph_sha256"], unique=True, if_not_exists=True)
        db["training_masks"].create_index(["verdict_id"], if_not_exists=True)
        db["training_models"].create_index(["model_sha256"], unique=True, if_not_exists=True)

    store.transaction(create, "create the training-set tables")


_TABLES = {
    "training_entries": ({
        "id": int, "verdict_id": int, "kind": str, "radiograph_id": int, "radiograph_sha256": str,
        "radiograph_path": str, "bbox": str, "iso_code": str, "source": str, "origin": str,
        "n_pixels": int, "data": bytes, "data_sha256": str, "created_at": str, "created_by": str,
    }, {"not_null": ["verdict_id", "kind", "radiograph_sha256", "data", "created_at"]}),
    "training_masks": ({
        "id": int, "verdict_id": int, "origin": str, "data": bytes, "created_at": str, "user": str,
    }, {"not_null": ["verdict_id", "origin", "data", "created_at"]}),
    "training_exclusions": ({
        "id": int, "entry_id": int, "excluded": int, "user": str, "reason": str, "created_at": str,
    }, {"not_null": ["entry_id", "excluded", "user", "created_at"]}),
    "training_splits": ({
        "id": int, "radiograph_sha256": str, "split": str, "user": str, "created_at": str,
    }, {"not_null": ["radiograph_sha256", "split", "created_at"]}),
    "training_models": ({
        "id": int, "model_id": int, "model_sha256": str, "parent_sha256": str, "path": str,
        "entry_ids": str, "provenance": str, "user": str, "created_at": str,
    }, {"not_null": ["model_sha256", "entry_ids", "provenance", "created_at"]}),
    "training_qualifications": ({
        "id": int, "candidate_sha256": str, "reference_sha256": str, "passed": int,
        "result": str, "user": str, "created_at": str,
    }, {"not_null": ["candidate_sha256", "passed", "result", "created_at"]}),
}


def _event(store, event, user, details, entity=None, entity_id=None) -> int:
    # never entity "verdicts": core.audit.verify_chain compares those rows with the verdicts table
    if event not in audit.EVENTS:
        raise RuntimeError(
            f"audit event {event!r} is not registered in core.audit.EVENTS; add "
            f"{', '.join(repr(e) for e in EVENTS)} there"
        )
    return audit.append_event(store.db.conn, event=event, user=user, details=details,
                              entity=entity, entity_id=entity_id)


def _require_supervisor(store, user: str) -> None:
    who = store.user(user)
    if who.role != "supervisor":
        raise PermissionError(f"only a supervisor can do this; {user} is {who.role}")


# ---------------------------------------------------------------- arrays in blobs


def pack(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def unpack(data: bytes) -> dict:
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# ---------------------------------------------------------------- splits


def default_split(sha256: str, *, holdback_fraction: float = HOLDBACK_FRACTION) -> str:
    """``holdback`` for a fixed pseudo-random fraction of radiographs (by their sha256)."""
    return "holdback" if int(sha256[:8], 16) / 0xFFFFFFFF < holdback_fraction else "train"


def split_of(store, sha256: str) -> str:
    """The split of a radiograph: the one set (or first drawn) for it, else the default."""
    ensure_tables(store)
    row = store.one("SELECT split FROM training_splits WHERE radiograph_sha256 = ?", [sha256])
    return row["split"] if row else default_split(sha256)


def set_split(store, radiograph, split: str, *, user: str) -> None:
    """Put a radiograph (id, sha256 or path) in ``train`` or ``holdback`` (supervisors).

    Refused once the radiograph has given data to a trained model in the other split's role.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    ensure_tables(store)
    rad = store.radiograph(radiograph)

    def write():
        _require_supervisor(store, user)
        used = [m for m in models_trained(store) if rad["sha256"] in m["provenance"].get("radiographs", [])]
        if used and split == "holdback":
            raise ValueError(
                f"radiograph {rad['path']} already trained model {used[0]['model_sha256'][:12]}; "
                "it cannot be held back any more"
            )
        store.db.execute("DELETE FROM training_splits WHERE radiograph_sha256 = ?", [rad["sha256"]])
        store.db["training_splits"].insert({
            "radiograph_sha256": rad["sha256"], "split": split, "user": user,
            "created_at": audit.now_iso(),
        })
        _event(store, EV_SPLIT, user, {"radiograph_id": rad["id"], "sha256": rad["sha256"],
                                       "split": split}, "radiographs", rad["id"])

    store.transaction(write, f"set the split of radiograph {rad['id']}")


def _fix_split(store, sha256: str) -> str:
    """Record the default split of a radiograph the first time it gives data (inside a write)."""
    row = store.one("SELECT split FROM training_splits WHERE radiograph_sha256 = ?", [sha256])
    if row:
        return row["split"]
    split = default_split(sha256)
    store.db["training_splits"].insert({
        "radiograph_sha256": sha256, "split": split, "user": None, "created_at": audit.now_iso(),
    })
    return split


# ---------------------------------------------------------------- extraction (Section 3.3)


def _robust_std(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("inf")
    med = np.median(values)
    return float(1.4826 * np.median(np.abs(values - med))) or float(np.std(values)) or 1e-6


def refine_region(residual: np.ndarray, candidate: np.ndarray, *, k: float = REFINE_K) -> np.ndarray:
    """Pixels of ``candidate`` where the smoothed residual stands out from the noise.

    Parameters
    ----------
    residual : ndarray (M, N) float32, NaN where undefined
    candidate : ndarray (M, N) bool
        Where the region may lie (flagged kernels, a drawn box).

    Returns
    -------
    ndarray (M, N) bool, possibly empty.
    """
    from scipy import ndimage

    valid = np.isfinite(residual)
    smooth = ndimage.gaussian_filter(np.where(valid, residual, 0.0).astype(np.float32), SMOOTH_SIGMA)
    weight = ndimage.gaussian_filter(valid.astype(np.float32), SMOOTH_SIGMA)
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.where(weight > 0.5, smooth / np.maximum(weight, 1e-6), np.nan)
    inside = candidate & np.isfinite(smooth)
    if not inside.any():
        return np.zeros_like(candidate)
    outside = ~ndimage.binary_dilation(candidate, iterations=4) & np.isfinite(smooth)
    noise = _robust_std(smooth[outside]) if outside.sum() > 50 else _robust_std(smooth[inside])
    sign = 1.0 if np.nansum(smooth[inside]) >= 0 else -1.0
    region = inside & (sign * np.nan_to_num(smooth) > k * noise)
    labels, n = ndimage.label(region, structure=np.ones((3, 3), bool))
    if n:
        sizes = np.bincount(labels.ravel())
        keep = np.flatnonzero(sizes >= MIN_PIXELS)
        region = np.isin(labels, keep[keep > 0])
    return region


def flagged_support(flags: np.ndarray, bbox) -> np.ndarray:
    """Pixels covered by the flagged 9 x 9 kernels whose centres lie in ``bbox``."""
    from scipy import ndimage

    r0, c0, r1, c1 = bbox
    centres = np.zeros(flags.shape, bool)
    centres[r0:r1, c0:c1] = flags[r0:r1, c0:c1] > 0
    return ndimage.binary_dilation(centres, np.ones((9, 9), bool))


def delta_from_region(image: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Section 3.3: per connected region, image minus its 1 px border-ring mean; W = the region."""
    from core.perturbations import border_ring_means, label_regions

    labels = label_regions(region)
    means = border_ring_means(image, labels)
    delta = np.where(labels > 0, image - means[labels], 0.0).astype(np.float32)
    return delta, (labels > 0)


@dataclass
class Extracted:
    """A perturbation extracted from a radiograph: crop-sized ``delta`` and ``weight``."""

    delta: np.ndarray
    weight: np.ndarray
    origin: tuple[int, int]  # (row, col) of the crop in the radiograph
    source: str


def _window(shape, bbox, pad: int):
    """A window (r0, c0, r1, c1) around ``bbox`` with ``pad``, at least PATCH a side, in the image."""
    rows, cols = shape
    out = []
    for lo, hi, n in ((bbox[0], bbox[2], rows), (bbox[1], bbox[3], cols)):
        a, b = lo - pad, hi + pad
        if b - a < PATCH:
            grow = PATCH - (b - a)
            a, b = a - grow // 2, b + grow - grow // 2
        a, b = max(a, 0), min(b, n)
        if b - a < PATCH:
            a, b = (0, min(PATCH, n)) if a == 0 else (max(n - PATCH, 0), n)
        out.append((a, b))
    (r0, r1), (c0, c1) = out
    return r0, c0, r1, c1


def _plain_input(bundle):
    """``bundle`` with no input normalisation in its metadata (for an already normalised image)."""
    import copy

    plain = copy.copy(bundle)
    plain.metadata = {k: v for k, v in (getattr(bundle, "metadata", None) or {}).items() if k != "input"}
    return plain


def extract_defect(image: np.ndarray, bbox, bundle, thresholds, *, painted=None,
                   missed: bool = False, model_image: np.ndarray | None = None) -> Extracted:
    """Extract the perturbation of a confirmed defect (or missed indication) at ``bbox``.

    Parameters
    ----------
    image : ndarray (M, N) float32 [0, 1]
        The radiograph.
    bbox : (row0, col0, row1, col1)
        The flagged region's kernel-centre box, or the box the reviewer drew.
    bundle : core.modelfile.ModelBundle
        The model whose residual locates the defect (the scan's).
    thresholds : core.calibration.Thresholds
        The scan's operating point (which kernels are flagged).
    painted : ndarray (M, N) bool, optional
        The reviewer's painted mask: used as the region as it is.
    missed : bool
        A box drawn on a missed indication: no flagged kernels, the box is the candidate area.
    model_image : ndarray (M, N), optional
        The whole radiograph as ``bundle``'s model sees it (``core.normalise.model_input``);
        computed from ``image`` when not given. The residual that locates the defect is that
        of a window cut from it, so a model with background removal sees the window as the
        scan saw it (the background of the whole radiograph removed, not of the window alone).

    Returns
    -------
    Extracted
        The delta is always taken from ``image`` (the raw radiograph); a model with background
        removal gets it again from its normalised radiograph (:func:`entry_arrays`).
    """
    from core.normalise import model_input
    from core.scanning import HALO, scan_image

    bbox = tuple(int(v) for v in bbox)
    if painted is not None:
        region, source = np.asarray(painted, bool), "painted"
        if not region.any():
            raise ValueError("the painted mask is empty")
        r_off = c_off = 0
        crop_image = image
    else:
        r0, c0, r1, c1 = _window(image.shape, bbox, HALO + 16)
        win = np.ascontiguousarray(image[r0:r1, c0:c1])
        if model_image is None:
            model_image = model_input(image, getattr(bundle, "metadata", None))
        if model_image is image:
            result = scan_image(win, bundle, thresholds=thresholds)
        else:
            seen = np.ascontiguousarray(model_image[r0:r1, c0:c1], dtype=np.float32)
            result = scan_image(seen, _plain_input(bundle), thresholds=thresholds)
        local = (bbox[0] - r0, bbox[1] - c0, bbox[2] - r0, bbox[3] - c0)
        if missed:
            candidate = np.zeros(win.shape, bool)
            candidate[max(local[0], 0):local[2], max(local[1], 0):local[3]] = True
            fallback, source = candidate, "bbox+residual"
        else:
            candidate = flagged_support(result.flags, local)
            if not candidate.any():  # the flags moved (other model or operating point): use the box
                candidate = np.zeros(win.shape, bool)
                candidate[max(local[0], 0):local[2], max(local[1], 0):local[3]] = True
            fallback, source = candidate, "flagged_kernels+residual"
        region = refine_region(result.residual, candidate)
        if not region.any():
            region, source = fallback, source.split("+")[0]
        r_off, c_off = r0, c0
        crop_image = win
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    a0, a1 = max(rows[0] - CROP_MARGIN, 0), min(rows[-1] + 1 + CROP_MARGIN, region.shape[0])
    b0, b1 = max(cols[0] - CROP_MARGIN, 0), min(cols[-1] + 1 + CROP_MARGIN, region.shape[1])
    # the ring needs one pixel beyond the region: take it from the image around the crop
    delta, weight = delta_from_region(crop_image[a0:a1, b0:b1], region[a0:a1, b0:b1])
    return Extracted(delta, weight, (int(a0 + r_off), int(b0 + c_off)), source)


def okay_patch(image: np.ndarray, bbox) -> tuple[np.ndarray, tuple[int, int]]:
    """The 192 x 192 patch centred on ``bbox`` (clamped inside the image) and its origin."""
    rows, cols = image.shape
    cr, cc = (bbox[0] + bbox[2]) // 2, (bbox[1] + bbox[3]) // 2
    r0 = int(np.clip(cr - PATCH // 2, 0, rows - PATCH))
    c0 = int(np.clip(cc - PATCH // 2, 0, cols - PATCH))
    return np.ascontiguousarray(image[r0:r0 + PATCH, c0:c0 + PATCH], dtype=np.float32), (r0, c0)


# ---------------------------------------------------------------- from verdicts to entries


@dataclass
class Entry:
    """One training-set entry (``data`` decoded lazily with :meth:`arrays`)."""

    id: int
    verdict_id: int
    kind: str
    radiograph_id: int
    radiograph_sha256: str
    radiograph_path: str
    bbox: tuple
    iso_code: str | None
    source: str
    origin: tuple
    n_pixels: int
    created_at: str
    created_by: str | None
    split: str
    excluded: bool
    exclusion_reason: str | None = None
    data: bytes = field(default=b"", repr=False)

    def arrays(self) -> dict:
        return unpack(self.data)


@dataclass
class AddReport:
    """What :func:`add_from_verdicts` did."""

    added: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (verdict id, why)

    @property
    def summary(self) -> str:
        return f"{len(self.added)} entries added, {len(self.skipped)} verdicts skipped"


class _Models:
    """Model bundles by sha256 (loaded once) and the thresholds of a scan."""

    def __init__(self, store):
        self.store = store
        self.cache: dict = {}

    def bundle(self, sha256: str | None):
        from core.errors import ModelFileError
        from core.modelfile import load_model

        if sha256 is None:
            active = self.store.active_model()
            if active is None:
                raise ModelFileError("no active model to locate the missed indication with")
            sha256 = active["sha256"]
        if sha256 not in self.cache:
            row = self.store.one("SELECT path FROM models WHERE sha256 = ?", [sha256])
            if row is None or not row["path"]:
                raise ModelFileError(f"model {sha256[:12]}: not registered with a file path")
            self.cache[sha256] = load_model(row["path"])
        return self.cache[sha256]


def _load_image(path: str, sha256: str):
    from core.errors import ImageLoadError
    from core.imageio import load_radiograph

    rad = load_radiograph(path)
    if rad.sha256 != sha256:
        raise ImageLoadError(f"{path}: the file changed since it was reviewed (sha256 differs)")
    return rad.image


def add_from_verdicts(store, *, user: str | None = None, images: dict | None = None,
                      progress=None, cancel=None) -> AddReport:
    """Turn every teaching verdict in force that has no entry yet into a training entry.

    Parameters
    ----------
    store : core.store.Store
    user : str, optional
        Recorded as the creator and in the audit trail.
    images : dict, optional
        ``{radiograph sha256: float32 image}`` already in memory (else read from the stored path).
    progress : callable, optional
        ``progress(done, total)``.
    cancel : callable, optional
        Checked between verdicts; entries added so far are kept.

    Returns
    -------
    AddReport
    """
    from core.calibration import thresholds_from_metadata

    ensure_tables(store)
    done_ids = {r[0] for r in store.db.execute("SELECT verdict_id FROM training_entries")}
    todo = [d for d in store.decisions(verdict=list(TEACHING), current_only=True)
            if d["id"] not in done_ids]
    from core.normalise import model_input

    report = AddReport()
    models = _Models(store)
    images = dict(images or {})
    seen: dict = {}  # (sha256, model sha256) -> the radiograph as that model sees it

    def model_image(image, sha256, bundle):
        key = (sha256, bundle.sha256)
        if key not in seen:
            if len(seen) >= 4:  # verdicts mostly come radiograph by radiograph: keep a few
                seen.pop(next(iter(seen)))
            seen[key] = model_input(image, bundle.metadata)
        return seen[key]

    for i, d in enumerate(todo):
        if cancel is not None and cancel():
            break
        try:
            image = images.get(d["radiograph_sha256"])
            if image is None:
                image = images[d["radiograph_sha256"]] = _load_image(d["radiograph_path"], d["radiograph_sha256"])
            bbox = tuple(int(v) for v in d["bbox"])
            if d["verdict"] == "false_alarm":
                patch, origin = okay_patch(image, bbox)
                kind, source, data, n_px = "okay", "region", pack(patch=patch), int(patch.size)
            else:
                kind = "missed" if d["kind"] == "missed" else "defect"
                painted = painted_mask(store, d["id"], image.shape)
                bundle = None if painted is not None else models.bundle(d["model_sha256"])
                thr = None
                if bundle is not None:
                    thr = thresholds_from_metadata(bundle.metadata, fpr=d["fpr"])
                    if thr is None:
                        raise ValueError(f"model {bundle.name} is not calibrated")
                ex = extract_defect(image, bbox, bundle, thr, painted=painted, missed=kind == "missed",
                                    model_image=None if bundle is None else
                                    model_image(image, d["radiograph_sha256"], bundle))
                origin, source, n_px = ex.origin, ex.source, int(ex.weight.sum())
                data = pack(delta=ex.delta, weight=ex.weight)
        except Exception as exc:  # noqa: BLE001 - one unusable verdict must not stop the others
            report.skipped.append((d["id"], f"{type(exc).__name__}: {exc}"))
            continue
        record = {
            "verdict_id": d["id"], "kind": kind, "radiograph_id": d["radiograph_id"],
            "radiograph_sha256": d["radiograph_sha256"], "radiograph_path": d["radiograph_path"],
            "bbox": json.dumps(list(bbox)), "iso_code": d.get("iso_code"), "source": source,
            "origin": json.dumps(list(origin)), "n_pixels": n_px, "data": data,
            "data_sha256": hashlib.sha256(data).hexdigest(), "created_at": audit.now_iso(),
            "created_by": user,
        }

        def write(record=record):
            split = _fix_split(store, record["radiograph_sha256"])
            eid = store.db["training_entries"].insert(record).last_pk
            details = {k: v for k, v in record.items() if k != "data"}
            details["split"] = split
            _event(store, EV_ADDED, user, details, "training_entries", eid)
            return eid

        report.added.append(store.transaction(write, f"add the training entry of verdict {d['id']}"))
        if progress is not None:
            progress(i + 1, len(todo))
    return report


def add_painted_mask(store, verdict_id: int, mask: np.ndarray, *, origin=(0, 0), user: str) -> int:
    """Store the defect mask a reviewer painted for verdict ``verdict_id`` (bool, at ``origin``).

    The newest painted mask is used when the entry is extracted; an entry already extracted
    from that verdict is replaced by excluding it and extracting again
    (:func:`reextract`).
    """
    ensure_tables(store)
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("the painted mask is empty")
    store.verdict(verdict_id)

    def write():
        store.user(user)
        mid = store.db["training_masks"].insert({
            "verdict_id": int(verdict_id), "origin": json.dumps([int(v) for v in origin]),
            "data": pack(mask=mask), "created_at": audit.now_iso(), "user": user,
        }).last_pk
        _event(store, EV_MASK, user, {"verdict_id": int(verdict_id), "origin": list(origin),
                                      "pixels": int(mask.sum()), "mask_id": mid}, "training_masks", mid)
        return mid

    return store.transaction(write, f"store the painted mask of verdict {verdict_id}")


def painted_mask(store, verdict_id: int, shape) -> np.ndarray | None:
    """The newest painted mask of a verdict on the full image grid, or None."""
    ensure_tables(store)
    row = store.one("SELECT origin, data FROM training_masks WHERE verdict_id = ? "
                     "ORDER BY id DESC LIMIT 1", [int(verdict_id)])
    if row is None:
        return None
    small = unpack(row["data"])["mask"]
    r0, c0 = json.loads(row["origin"])
    full = np.zeros(shape, bool)
    h = min(small.shape[0], shape[0] - r0)
    w = min(small.shape[1], shape[1] - c0)
    full[r0:r0 + h, c0:c0 + w] = small[:h, :w]
    return full


# ---------------------------------------------------------------- reading, excluding


def entries(store, *, split: str | None = None, kinds=None, include_excluded: bool = True,
            with_data: bool = False) -> list[Entry]:
    """Training entries, oldest first, with their split and exclusion state."""
    ensure_tables(store)
    if not store.db["training_entries"].exists():
        return []
    cols = "e.*" if with_data else ", ".join(
        f"e.{c}" for c in _TABLES["training_entries"][0] if c != "data")
    rows = store.db.query(
        f"SELECT {cols}, s.split AS split, x.excluded AS excluded, x.reason AS reason "
        "FROM training_entries e LEFT JOIN training_splits s ON s.radiograph_sha256 = "
        "e.radiograph_sha256 LEFT JOIN training_exclusions x ON x.id = (SELECT max(id) FROM "
        "training_exclusions WHERE entry_id = e.id) ORDER BY e.id")
    out = []
    for r in rows:
        e = Entry(
            id=r["id"], verdict_id=r["verdict_id"], kind=r["kind"], radiograph_id=r["radiograph_id"],
            radiograph_sha256=r["radiograph_sha256"], radiograph_path=r["radiograph_path"],
            bbox=tuple(json.loads(r["bbox"])), iso_code=r["iso_code"], source=r["source"],
            origin=tuple(json.loads(r["origin"])), n_pixels=r["n_pixels"],
            created_at=r["created_at"], created_by=r["created_by"],
            split=r["split"] or default_split(r["radiograph_sha256"]),
            excluded=bool(r["excluded"]), exclusion_reason=r["reason"] if r["excluded"] else None,
            data=r.get("data", b""),
        )
        if split is not None and e.split != split:
            continue
        if kinds is not None and e.kind not in kinds:
            continue
        if e.excluded and not include_excluded:
            continue
        out.append(e)
    return out


def set_excluded(store, entry_id: int, excluded: bool, *, user: str, reason: str = "") -> int:
    """Exclude an entry from future training (or include it again); supervisors only."""
    ensure_tables(store)
    if excluded and not str(reason).strip():
        raise ValueError("excluding a training entry needs a reason")

    def write():
        _require_supervisor(store, user)
        if store.one("SELECT id FROM training_entries WHERE id = ?", [int(entry_id)]) is None:
            raise ValueError(f"no training entry {entry_id}")
        xid = store.db["training_exclusions"].insert({
            "entry_id": int(entry_id), "excluded": int(bool(excluded)), "user": user,
            "reason": reason, "created_at": audit.now_iso(),
        }).last_pk
        _event(store, EV_EXCLUDED if excluded else EV_INCLUDED, user,
               {"entry_id": int(entry_id), "reason": reason}, "training_entries", int(entry_id))
        return xid

    return store.transaction(write, f"{'exclude' if excluded else 'include'} training entry {entry_id}")


def summary(store) -> dict:
    """Counts per kind and split, excluded entries apart (for the retrain dialog and CLI)."""
    out = {"train": {k: 0 for k in KINDS}, "holdback": {k: 0 for k in KINDS}, "excluded": 0,
           "radiographs": {"train": 0, "holdback": 0}}
    rads = {"train": set(), "holdback": set()}
    for e in entries(store):
        if e.excluded:
            out["excluded"] += 1
            continue
        out[e.split][e.kind] += 1
        rads[e.split].add(e.radiograph_sha256)
    out["radiographs"] = {k: len(v) for k, v in rads.items()}
    out["pending_verdicts"] = pending_verdicts(store)
    return out


def pending_verdicts(store) -> int:
    """Teaching verdicts in force that have no training entry yet."""
    ensure_tables(store)
    done = {r[0] for r in store.db.execute("SELECT verdict_id FROM training_entries")}
    return sum(1 for d in store.decisions(verdict=list(TEACHING), current_only=True) if d["id"] not in done)


def models_trained(store) -> list[dict]:
    """What each retrained model version was trained on (oldest first)."""
    ensure_tables(store)
    rows = list(store.db.query("SELECT * FROM training_models ORDER BY id"))
    for r in rows:
        r["entry_ids"] = json.loads(r["entry_ids"])
        r["provenance"] = json.loads(r["provenance"])
    return rows


# ---------------------------------------------------------------- training data from entries


def entry_arrays(entry: Entry, image: np.ndarray) -> dict:
    """An entry's arrays cut again from ``image``, the whole radiograph as a model sees it.

    Entries are stored as extracted from the raw radiograph. A model with background removal
    (``core.normalise``) trains on the normalised radiograph instead, and its normalisation is
    of the whole radiograph, so the arrays are cut again from ``model_input(radiograph)``:

    - ``okay``: the 192 x 192 patch at the entry's origin;
    - ``defect``/``missed``: the stored region (``weight``) at the entry's origin, ``delta`` =
      image minus the region's border-ring mean (Section 3.3, ``delta_from_region``) inside it.

    With the raw radiograph as ``image`` this gives the stored arrays again.

    Parameters
    ----------
    entry : Entry
        With its data (``entries(..., with_data=True)``).
    image : ndarray (M, N) float32
        The whole radiograph the entry was taken from, normalised as the model expects it.

    Returns
    -------
    dict
        ``{"patch": ...}`` or ``{"delta": ..., "weight": ...}`` as ``Entry.arrays``.
    """
    stored = entry.arrays()
    r0, c0 = (int(v) for v in entry.origin)
    if entry.kind == "okay":
        h, w = stored["patch"].shape
        return {"patch": np.ascontiguousarray(image[r0:r0 + h, c0:c0 + w], dtype=np.float32)}
    weight = stored["weight"]
    h, w = weight.shape
    crop = np.asarray(image[r0:r0 + h, c0:c0 + w], dtype=np.float32)
    if crop.shape != weight.shape:
        raise ValueError(f"training entry {entry.id}: its region lies outside the radiograph "
                         f"{entry.radiograph_path} ({image.shape})")
    delta, _ = delta_from_region(crop, np.asarray(weight, bool))
    return {"delta": delta, "weight": weight}


def arrays_for_model(entries_: list[Entry], metadata: dict | None, *, images: dict | None = None,
                     inputs: dict | None = None) -> list[dict]:
    """The arrays of ``entries_`` (with data) as the model described by ``metadata`` sees them.

    For a model without background removal the stored arrays (``Entry.arrays``). For one with
    it, :func:`entry_arrays` on ``core.normalise.model_input`` of each entry's whole radiograph.

    Parameters
    ----------
    entries_ : list of Entry
    metadata : dict or None
        The model's metadata (its ``input`` normalisation).
    images : dict, optional
        ``{sha256: raw image}`` already in memory (else read from the entry's path).
    inputs : dict, optional
        ``{sha256: normalised image}`` already computed (e.g. ``PatchSampler.images`` of
        :func:`patch_sampler` with the same ``metadata``); filled with the ones computed here.
    """
    from core.normalise import background_sigma, model_input

    if background_sigma(metadata) is None:
        return [e.arrays() for e in entries_]
    inputs = {} if inputs is None else inputs
    images = images or {}
    out = []
    for e in entries_:
        seen = inputs.get(e.radiograph_sha256)
        if seen is None:
            raw = images.get(e.radiograph_sha256)
            if raw is None:
                raw = _load_image(e.radiograph_path, e.radiograph_sha256)
            seen = inputs[e.radiograph_sha256] = model_input(raw, metadata)
        out.append(entry_arrays(e, seen))
    return out


class VerdictPerturbations:
    """Perturbation source from defect/missed entries (protocol of core.perturbations).

    Each sample takes one entry's delta crop, turns it by a random multiple of 90 degrees, flips
    it at random and places it at a random position with its region inside the aperture (a
    crop larger than the aperture is cut around its region's centre).
    """

    name = "verdicts"

    def __init__(self, crops: list[tuple[np.ndarray, np.ndarray]]):
        if not crops:
            raise ValueError("no defect entries: confirm defects or mark missed indications first")
        self.crops = []
        for delta, weight in crops:
            w = np.asarray(weight, bool)
            rows, cols = np.flatnonzero(w.any(axis=1)), np.flatnonzero(w.any(axis=0))
            d = np.asarray(delta, np.float32)[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            w = w[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            if d.shape[0] > APERTURE or d.shape[1] > APERTURE:
                r0 = max((d.shape[0] - APERTURE) // 2, 0)
                c0 = max((d.shape[1] - APERTURE) // 2, 0)
                d, w = d[r0:r0 + APERTURE, c0:c0 + APERTURE], w[r0:r0 + APERTURE, c0:c0 + APERTURE]
            self.crops.append((np.where(w, d, 0).astype(np.float32), w))

    @classmethod
    def from_entries(cls, items) -> VerdictPerturbations:
        crops = []
        for e in items:
            a = e.arrays()
            crops.append((a["delta"], a["weight"]))
        return cls(crops)

    def sample(self, rng, n):
        delta = np.zeros((n, PATCH, PATCH), np.float32)
        weight = np.zeros((n, PATCH, PATCH), np.float32)
        for k in range(n):
            d, w = self.crops[int(rng.integers(len(self.crops)))]
            turns = int(rng.integers(4))
            d, w = np.rot90(d, turns), np.rot90(w, turns)
            if rng.integers(2):
                d, w = d[:, ::-1], w[:, ::-1]
            h, wd = d.shape
            r0 = OFFSET + int(rng.integers(APERTURE - h + 1))
            c0 = OFFSET + int(rng.integers(APERTURE - wd + 1))
            delta[k, r0:r0 + h, c0:c0 + wd] = d
            weight[k, r0:r0 + h, c0:c0 + wd] = w
        return delta, weight


class MixedOkay:
    """Okay patches: from a PatchSampler, a fraction replaced by false-alarm patches (turned/flipped)."""

    def __init__(self, sampler, extra: np.ndarray | None, *, fraction: float = 0.25):
        self.sampler = sampler
        self.extra = None if extra is None or len(extra) == 0 else np.asarray(extra, np.float32)
        self.fraction = fraction if self.extra is not None else 0.0

    def __call__(self, rng, n):
        out = self.sampler.okay(n, rng=rng)
        if self.fraction > 0:
            for k in np.flatnonzero(rng.random(n) < self.fraction):
                p = np.rot90(self.extra[int(rng.integers(len(self.extra)))], int(rng.integers(4)))
                out[k] = p[:, ::-1] if rng.integers(2) else p
        return out


def not_okay_mask(store, radiograph_id: int, shape, *, pad: int = 8) -> np.ndarray:
    """Pixels of a radiograph okay patches must avoid: every flagged region not called a false
    alarm, and every box of a defect, acceptable, unsure or missed verdict (grown by ``pad``)."""
    mask = np.zeros(shape, bool)

    def mark(bbox):
        r0, c0, r1, c1 = (int(v) for v in bbox)
        mask[max(r0 - pad, 0):r1 + pad, max(c0 - pad, 0):c1 + pad] = True

    for scan in store.scans(radiograph_id):
        for region in store.regions(scan["id"]):
            if region["verdict"] != "false_alarm":
                mark(region["bbox"])
    for d in store.decisions(radiograph=radiograph_id, current_only=True):
        if d["verdict"] != "false_alarm" and d["bbox"] is not None:
            mark(d["bbox"])
    return mask


def radiographs_of(store, split: str) -> list[dict]:
    """Reviewed radiographs (those with a finished scan) in ``split``."""
    ensure_tables(store)
    seen = {s["radiograph_id"] for s in store.scans() if s.get("finished_at")}
    return [r for r in store.radiographs() if r["id"] in seen and split_of(store, r["sha256"]) == split]


def patch_sampler(store, split: str, *, images: dict | None = None, seed: int = 0,
                  metadata: dict | None = None):
    """A PatchSampler over the reviewed radiographs of ``split`` that avoids their indications.

    ``metadata``: the metadata of the model the patches are for. The sampler's images are the
    whole radiographs as that model sees them (``core.normalise.model_input``: background
    removed for a model trained with it, the radiograph as it is otherwise), so every patch is
    cut from a radiograph normalised as a whole.

    Returns ``(sampler, radiograph rows)``; ValueError when the split has no radiograph.
    """
    from core.normalise import model_input
    from core.sampler import PatchSampler

    rads = radiographs_of(store, split)
    if not rads:
        raise ValueError(
            f"no reviewed radiograph in the {split} split; review more radiographs"
            + (" or hold one back (set_split)" if split == "holdback" else "")
        )
    images = dict(images or {})
    ims, masks = [], []
    for r in rads:
        im = images.get(r["sha256"])
        if im is None:
            im = _load_image(r["path"], r["sha256"])
        ims.append(model_input(im, metadata))
        masks.append(not_okay_mask(store, r["id"], im.shape))
    return PatchSampler(ims, masks, seed=seed), rads
