"""Calibration review: the okay patches that set a model's thresholds, and their audited exclusion.

Thresholds at a fixed false positive rate are set by the few highest-scoring "okay" patches of the
calibration radiographs (at 0.1 % of 4,000 patches, the top four). When a calibration film carries
an indication its defect mask does not cover (a small pore, a scratch, a processing mark), that
indication sets the operating point and every scan becomes less sensitive. Measured on GDXray
(docs/benchmark/notes.md, item 5): the spots that set the interior threshold of the best model
were unmarked dark marks, a scratch and the bead's flank, not okay weld texture.

So a supervisor can look at those patches (:func:`tail`, :func:`review_patches`: the film as the
model sees it and the residual), and exclude the ones that are not accepted weld (:func:`exclude`),
with a reason. The thresholds are re-derived at once from the stored okay scores without them (no
model run), each exclusion or reinstatement is an audit event in the review database with the
thresholds before and after, and the model's registered thresholds follow. Excluded patches stay
listed, so the exclusion can be reviewed and undone (:func:`include`).

Where each okay patch came from (``okay_origins`` in the model's metadata, written by
:func:`core.calibration.calibrate_model` when the caller passes them): the source radiograph (a
file path, or ``synthetic:SEED``) and the patch geometry, so the patch can be cut again exactly as
it was scored.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import CalibrationError

ORIGINS_KEY = "okay_origins"
REVIEW_KEY = "calibration_review"
DEFAULT_TOP = 24  # patches listed for review: several times the number that sets 0.1 % of 4,000


@dataclass(frozen=True)
class Origin:
    """Where one okay calibration patch came from (``core.sampler.PatchGeometry`` plus the film)."""

    source: str
    centre: tuple[float, float]
    matrix: np.ndarray  # 2 x 2

    @property
    def film(self) -> str:
        """The source for people: the file's stem, or ``synthetic:SEED``."""
        return self.source if self.source.startswith("synthetic:") else Path(self.source).stem


@dataclass(frozen=True)
class TailPatch:
    """One okay calibration patch, ranked by how close it comes to the thresholds.

    ``ratio`` is its largest score over the matching threshold of the thresholds in force
    (``core.calibration.Thresholds.combined``: above 1 it is one of the false positives the FPR
    allows); ``scores`` are the raw columns (interior |mean|, std, then the edge band's).
    """

    index: int
    rank: int
    ratio: float
    scores: tuple[float, ...]
    origin: Origin | None
    excluded: dict | None  # {"reason", "user", "at"} while excluded


def _b64(a: np.ndarray, dtype: str) -> dict:
    a = np.ascontiguousarray(a, dtype=dtype)
    return {"dtype": dtype, "shape": list(a.shape), "base64": base64.b64encode(a.tobytes()).decode()}


def _unb64(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["base64"]), dtype=d["dtype"]).reshape(d["shape"])


def encode_origins(sources, geometries) -> dict:
    """Compact JSON form of where each okay patch came from.

    Parameters
    ----------
    sources : sequence of str
        One per image of the sampler: a radiograph's path, or ``synthetic:SEED``.
    geometries : sequence of core.sampler.PatchGeometry
        One per okay patch, in score order.
    """
    image = np.array([g.image for g in geometries], np.int32)
    if image.size and (image.min() < 0 or image.max() >= len(sources)):
        raise ValueError("a patch geometry names an image that has no source")
    return {
        "sources": [str(s) for s in sources],
        "image": _b64(image, "<i4"),
        "centre": _b64(np.array([g.centre for g in geometries], np.float64).reshape(-1, 2), "<f8"),
        "matrix": _b64(np.array([g.matrix for g in geometries], np.float64).reshape(-1, 2, 2), "<f8"),
    }


def origins(metadata: dict) -> list[Origin] | None:
    """The okay patches' origins, or None when the calibration did not record them."""
    d = metadata.get(ORIGINS_KEY)
    if not d:
        return None
    sources, image = d["sources"], _unb64(d["image"])
    centre, matrix = _unb64(d["centre"]), _unb64(d["matrix"])
    return [Origin(sources[int(i)], (float(c[0]), float(c[1])), np.array(m))
            for i, c, m in zip(image, centre, matrix)]


def exclusions(metadata: dict) -> dict[int, dict]:
    """Patch index -> {"reason", "user", "at"} of the okay patches excluded now."""
    review = metadata.get(REVIEW_KEY) or {}
    return {int(k): v for k, v in (review.get("excluded") or {}).items()}


def kept(metadata: dict, n: int) -> np.ndarray:
    """Which of the ``n`` stored okay patches are not excluded (boolean mask)."""
    keep = np.ones(n, bool)
    keep[[i for i in exclusions(metadata) if 0 <= i < n]] = False
    return keep


def kept_scores(metadata: dict) -> np.ndarray:
    """The stored okay scores without the excluded patches (what the thresholds come from)."""
    from core.calibration import decode_scores

    scores = decode_scores(metadata["okay_scores"])
    return scores[kept(metadata, len(scores))]


def tail(metadata: dict, top: int = DEFAULT_TOP) -> list[TailPatch]:
    """The ``top`` okay patches nearest the thresholds in force, highest first; excluded ones too.

    Excluded patches keep their place in the ranking (they are shown as excluded), so a reviewer
    sees what was taken out next to what now sets the thresholds.
    """
    from core.calibration import Thresholds, decode_scores

    if "okay_scores" not in metadata or not metadata.get("thresholds"):
        raise CalibrationError("the model is not calibrated: there are no okay patches to review")
    scores = decode_scores(metadata["okay_scores"])
    ratio = Thresholds.from_dict(metadata["thresholds"]).combined(scores)
    order = np.argsort(-ratio, kind="stable")[:max(0, int(top))]
    where = origins(metadata)
    out = exclusions(metadata)
    return [TailPatch(int(i), rank + 1, float(ratio[i]), tuple(float(v) for v in scores[i]),
                      None if where is None else where[i], out.get(int(i)))
            for rank, i in enumerate(order)]


def exclude(path, indices, *, user: str, reason: str, store):
    """Exclude okay patches from a model's calibration (a supervisor, with a reason); audited.

    The thresholds are re-derived at the model's calibrated FPR from the remaining okay scores
    and written to the model's sidecar; the review database records who excluded which patches
    (film and position), why, and the thresholds before and after, and the registered model's
    thresholds follow.

    Returns
    -------
    core.calibration.Thresholds
        The thresholds now in force.

    Raises
    ------
    ValueError
        No reason, unknown patch indices, or a user who is not a supervisor.
    CalibrationError
        Too few okay patches would remain for the FPR, or the model is not calibrated.
    """
    return _change(path, indices, user=user, reason=reason, store=store, excluding=True)


def include(path, indices, *, user: str, reason: str, store):
    """Put excluded okay patches back into a model's calibration; audited like :func:`exclude`."""
    return _change(path, indices, user=user, reason=reason, store=store, excluding=False)


def _change(path, indices, *, user, reason, store, excluding: bool):
    from core import audit
    from core.calibration import Thresholds, calibrate, decode_scores
    from core.modelfile import read_metadata, sidecar_path, sidecar_text

    reason = str(reason or "").strip()
    verb = "exclude" if excluding else "include"
    if not reason:
        raise ValueError(f"to {verb} calibration patches, give a reason (it is recorded)")
    metadata = read_metadata(path)
    if "okay_scores" not in metadata or not metadata.get("thresholds"):
        raise CalibrationError(f"{path}: the model is not calibrated: there are no okay patches to review")
    n = len(decode_scores(metadata["okay_scores"]))
    indices = sorted({int(i) for i in indices})
    if not indices:
        raise ValueError(f"select the calibration patches to {verb}")
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise ValueError(f"no okay calibration patch {bad[0]}: the model has {n} (0 to {n - 1})")
    current = exclusions(metadata)
    if excluding:
        indices = [i for i in indices if i not in current]
    else:
        indices = [i for i in indices if i in current]
    if not indices:
        raise ValueError(f"the selected patches are already {'excluded' if excluding else 'included'}")

    before = Thresholds.from_dict(metadata["thresholds"])
    now = audit.now_iso()
    changed = dict(current)
    for i in indices:
        if excluding:
            changed[i] = {"reason": reason, "user": user, "at": now}
        else:
            changed.pop(i)
    metadata[REVIEW_KEY] = {"excluded": {str(k): v for k, v in sorted(changed.items())}}
    after = calibrate(kept_scores(metadata), fpr=before.fpr_target, **before.zoning())  # same zones
    metadata["thresholds"] = after.to_dict()

    where = origins(metadata)
    patches = [{"index": i, **({} if where is None else
                               {"film": where[i].film, "centre": [round(c, 1) for c in where[i].centre]})}
               for i in indices]
    details = {"sha256": metadata.get("sha256"), "model": str(path), "patches": patches,
               "reason": reason, "thresholds_before": before.to_dict(),
               "thresholds_after": after.to_dict(), "excluded_now": len(changed)}

    # The new sidecar is written beside the old one first and swapped in only once the audit event
    # is committed: no unaudited change, and no audited change that did not happen.
    side = sidecar_path(path)
    tmp = side.with_name(f".{side.name}.review")
    tmp.write_text(sidecar_text(metadata), encoding="utf-8")
    try:
        def write():
            who = store.user(user)
            if who.role != "supervisor":
                raise ValueError(f"only a supervisor can {verb} calibration patches; {user} is {who.role}")
            row = store.one("SELECT id FROM models WHERE sha256 = ?", [metadata.get("sha256")])
            if row is not None:
                store.db["models"].update(row["id"], {"thresholds": audit.canonical_json(after.to_dict())})
            event = f"calibration patches {'excluded' if excluding else 'included'}"
            audit.append_event(store.db.conn, event=event, user=user, details=details, entity="models",
                               entity_id=None if row is None else row["id"])

        store.transaction(write, f"{verb} calibration patches of {Path(path).name}")
        os.replace(tmp, side)
    finally:
        tmp.unlink(missing_ok=True)
    return after


def review_patches(bundle, indices) -> list[dict]:
    """The okay patches ``indices`` of a calibrated model as it scored them, for a reviewer.

    Each patch is cut again from its source radiograph (read from disk, or regenerated for a
    synthetic weld) with the stored geometry, prepared as the model sees the film
    (``core.normalise.model_input``), and run through the model.

    Returns
    -------
    list of dict
        Per index: ``patch`` (192, 192) float32 as the model sees it, ``residual`` (156, 156)
        (patch aperture minus reconstruction), ``origin``, ``spot`` (row, col on the film: the
        centre of the residual's strongest 9 x 9 |mean|, what the patch is flagged for) and
        ``covering`` (every okay patch of that film whose aperture holds the spot,
        :func:`patches_over`: excluding a spot excludes them all); or ``error`` (str) when the
        source cannot be read (moved, deleted), instead of the arrays.
    """
    from core.model import APERTURE, OFFSET
    from core.normalise import model_input
    from core.sampler import PatchGeometry, extract
    from core.scanning import _patch_runner

    where = origins(bundle.metadata)
    if where is None:
        raise CalibrationError(
            "this calibration did not record where its okay patches came from; calibrate the model "
            "again (weldreview calibrate) to review them")
    films: dict[str, np.ndarray | str] = {}
    out, batch = [], []
    for i in indices:
        o = where[int(i)]
        if o.source not in films:
            try:
                films[o.source] = model_input(_load_source(o.source), bundle.metadata)
            except Exception as exc:  # noqa: BLE001 - told to the reviewer, per patch
                films[o.source] = f"cannot read {o.source}: {exc}"
        film = films[o.source]
        if isinstance(film, str):
            out.append({"index": int(i), "origin": o, "error": film})
            continue
        patch = extract(film, PatchGeometry(0, o.centre, o.matrix), order=3).astype(np.float32)
        out.append({"index": int(i), "origin": o, "patch": patch})
        batch.append(patch)
    if batch:
        recon = _patch_runner(bundle.model)(np.stack(batch)[..., None]).numpy()[..., 0]
        it = iter(recon)
        for item in out:
            if "patch" in item:
                ap = item["patch"][OFFSET:OFFSET + APERTURE, OFFSET:OFFSET + APERTURE]
                item["residual"] = (ap - next(it)).astype(np.float32)
                item["spot"] = _strongest_spot(item["residual"], item["origin"])
                item["covering"] = patches_over(where, item["origin"].source, item["spot"])
    return out


def patches_over(where: list[Origin], source: str, spot) -> list[int]:
    """Indices of the okay patches of ``source`` whose 156 x 156 aperture holds the film point ``spot``.

    A scratch or an unmarked pore lies in every calibration patch drawn over it; excluding the
    spot rather than one patch leaves none of them to set the thresholds.
    """
    from core.model import APERTURE, OFFSET, PATCH

    half = (PATCH - 1) / 2.0
    out = []
    for i, o in enumerate(where):
        if o.source != source:
            continue
        p = np.linalg.solve(o.matrix, np.subtract(spot, o.centre)) + half  # film -> patch pixel
        if np.all(p >= OFFSET - 0.5) and np.all(p <= OFFSET + APERTURE - 0.5):
            out.append(i)
    return out


def _strongest_spot(residual: np.ndarray, origin: Origin) -> tuple[float, float]:
    """Film (row, col) of the centre of the residual's largest 9 x 9 |mean| (aperture coordinates in)."""
    from core.model import OFFSET, PATCH
    from core.residual import local_mean_std

    mean, _ = local_mean_std(residual)
    r, c = np.unravel_index(np.nanargmax(np.abs(mean)), mean.shape)
    p = np.array([r + OFFSET, c + OFFSET], float) - (PATCH - 1) / 2.0
    row, col = np.asarray(origin.centre) + origin.matrix @ p
    return float(row), float(col)


def _load_source(source: str) -> np.ndarray:
    if source.startswith("synthetic:"):
        from core.imageio import normalise
        from core.synthetic import generate_weld

        return normalise(generate_weld(int(source.split(":", 1)[1])).image, bits_stored=16)[0]
    from core.imageio import load_radiograph

    return load_radiograph(source).image
