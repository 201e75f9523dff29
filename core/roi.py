"""Weld seam region of interest: find the weld bead band on a radiograph.

The scan, the calibration and the benchmark look only at the weld: lead letters, image quality
indicator (IQI) wires, film edges and scratches are unlike accepted weld, and an out-of-distribution
detector flags them every time. :func:`find_weld` returns the bead band (optionally widened by a
heat-affected-zone margin) as a :class:`WeldROI`: a boolean mask on the image grid plus a centre
line and the band width along it.

Method (on a block-mean copy about 400 px along its longer side; the bead is taken to be brighter
than the plate, as on film and in this project's convention, unless ``polarity`` says otherwise):

1. For each candidate weld direction (0-165 degrees in 15-degree steps; the two best are refined
   by 5 and then 2 degrees) the image is resampled in a frame whose first axis runs along it.
2. The frame is cut into sections 24 px long; each gives one profile across the weld, the median
   along the section, so a marker or wire covering part of a section does not count.
3. In every profile a band detector scores each position and width (20 % steps): the band mean
   minus the mean of the weaker of its two flanks, over the image's grey-level spread (5th-95th
   percentile). Flanks outside the image do not count, so a film edge is not a band.
4. Dynamic programming picks one band per section with a limited, penalised sideways step between
   neighbours: the strongest straight or gently curving band along the whole length. Markers
   that win a section on their own are outvoted by the path. The direction with the highest
   path score wins.
5. Per section the band is widened to the widest band around it that keeps 85 % of its contrast
   (a bright root or core inside a fainter rippled cap: the region must cover the whole bead),
   and each edge is put where the profile has risen 35 % of the way from flank to band,
   searched from the outside in, so flaws inside the bead never pull an edge in. Edges are
   cleaned with a running median and a robust low-order polynomial (outliers such as number
   plates on the weld are replaced by the fit); weak sections at the ends are trimmed, and a weld
   that is clear up to where it leaves the image is continued to the border.
6. A weld is reported only when the band is clear against the grey-level spread, present along
   most of the path, well above the profile noise, and the sections' own strongest bands agree
   with the path; otherwise :class:`WeldNotFoundError`. ``angle_deg`` is the principal direction
   of the centre line inside the image.

The geometry (centre line and widths) is kept to 0.1 px so that the compact JSON form rebuilds
exactly the same mask; a region edited by hand (parts added or cut) is stored as a run-length
encoded mask instead.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.errors import WeldreviewError

TARGET_SIDE = 400  # px of the downsampled copy along its longer side
SECTION_PX = 24  # section length along the weld, downsampled px
MIN_WIDTH_PX = 3  # smallest bead width considered, downsampled px
MAX_WIDTH_FRACTION = 0.45  # largest bead width as a fraction of the extent across the weld
MIN_CONTRAST = 0.04  # band contrast / image grey-level spread (5th-95th percentile) to accept
MIN_PRESENT = 0.5  # fraction of the path sections where the band must be clear
MIN_SNR = 10.0  # band contrast over the noise of the section profiles
MIN_AGREE = 0.45  # fraction of sections whose own strongest band is the path's band
MAX_STEP = 0.3  # largest sideways step of the path between sections, fraction of a section
MAX_GAP = 3  # sections without a clear band that a weld may bridge
STEP_PENALTY = 0.02  # path cost per downsampled px of sideways step between sections
END_FRACTION = 0.25  # sections weaker than this fraction of the median band are not weld
LOCAL_FRACTION = 0.15  # ... unless the band is this fraction of the section's own grey range
NEST_FRACTION = 0.85  # a wider band around the core counts as bead if it keeps this contrast
FLANK_INSIDE = 0.8  # fraction of each flank that must lie inside the image
EDGE_LEVEL = 0.35  # an edge is where the profile has risen this fraction from flank to band
SMOOTH_SECTIONS = 7  # running-median window along the weld, sections
HAZ_FRACTION = 0.3  # default heat-affected-zone margin per side, fraction of median bead width
# WeldROI.labels: the region as a label map (a boolean mask reads as bead everywhere)
BEAD = 1
HAZ = 2
JSON_VERSION = 1


class WeldNotFoundError(WeldreviewError, ValueError):
    """No weld seam was found; the user may scan the whole image or draw the region by hand."""


@dataclass
class WeldROI:
    """The weld region of interest on one radiograph.

    Attributes
    ----------
    mask : ndarray of bool, shape (M, N)
        True inside the region (bead band, plus the HAZ margin when asked), on the image grid.
    centreline : ndarray of float64, shape (K, 2)
        Points along the middle of the band, (row, col) in image pixels, ordered along the weld.
    widths : ndarray of float64, shape (K,)
        Width of the masked band across the weld at each centre-line point, image pixels
        (includes ``2 * haz_margin_px``).
    angle_deg : float
        Direction of the weld in [0, 180): 0 runs along the rows (left to right), 90 along the
        columns; positive angles turn counter-clockwise as seen on screen.
    haz_margin_px : float
        Heat-affected-zone margin added on each side of the bead (0 when not included).
    hand_edited : bool
        True when the mask was changed by hand and no longer follows from the geometry alone;
        such a region is stored as a run-length encoded mask.
    score : float
        Detection strength: band contrast over the image's grey-level spread (NaN when not found
        automatically).
    """

    mask: np.ndarray
    centreline: np.ndarray
    widths: np.ndarray
    angle_deg: float
    haz_margin_px: float = 0.0
    hand_edited: bool = False
    score: float = float("nan")

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the image grid the mask lives on."""
        return tuple(self.mask.shape)

    def length_mm(self, pixel_size_um: float) -> float:
        """Length of the weld along its centre line inside the image, in millimetres.

        Parameters
        ----------
        pixel_size_um : float
            Detector or scanner pixel size in micrometres (40.3 for GDXray).
        """
        if not pixel_size_um or not np.isfinite(pixel_size_um) or pixel_size_um <= 0:
            raise ValueError(f"pixel_size_um must be a positive number, got {pixel_size_um!r}")
        total = _polyline_length(self.centreline)
        if total <= 0:
            return 0.0
        pts = _resample(self.centreline, int(total) + 2)  # about 1 px steps
        mid = 0.5 * (pts[1:] + pts[:-1])
        m, n = self.shape
        inside = (mid[:, 0] >= -0.5) & (mid[:, 0] <= m - 0.5) & (mid[:, 1] >= -0.5) & (mid[:, 1] <= n - 0.5)
        steps = np.hypot(*np.diff(pts, axis=0).T)
        return float(steps[inside].sum()) * pixel_size_um / 1000.0

    def area_px(self) -> int:
        """Number of pixels in the region."""
        return int(self.mask.sum())

    def labels(self) -> np.ndarray:
        """The region as a label map: 0 outside, ``BEAD`` (1) on the bead, ``HAZ`` (2) in the
        heat-affected-zone margin.

        The margin is the part of the region within ``haz_margin_px`` (Euclidean) of its edge, so
        a region drawn or changed by hand keeps a margin as wide as the found one. The image's
        border is not an edge (the weld goes on beyond it). The scan and the calibration measure
        the residual tests' edge zones from the bead's edge and give the margin a zone of its own
        (``core.residual.weld_zones``): measured from the region's edge, the bead's toe would lie
        in the interior and set its thresholds (docs/benchmark/notes.md, item 13).

        Returns
        -------
        ndarray of uint8, shape (M, N)
        """
        out = self.mask.astype(np.uint8)
        if self.haz_margin_px > 0 and self.mask.any():
            inside = ndimage.distance_transform_edt(self.mask)  # px to the nearest pixel outside
            out[self.mask & (inside <= self.haz_margin_px)] = HAZ
        return out

    @classmethod
    def from_geometry(
        cls,
        shape: tuple[int, int],
        centreline: np.ndarray,
        widths: np.ndarray,
        *,
        angle_deg: float | None = None,
        haz_margin_px: float = 0.0,
        score: float = float("nan"),
    ) -> WeldROI:
        """Build a region from a centre line and the band width along it.

        Parameters
        ----------
        shape : tuple of int
            ``(M, N)`` of the image.
        centreline : array_like, shape (K, 2)
            (row, col) points ordered along the weld, K >= 2.
        widths : array_like, shape (K,)
            Full band width at each point (image pixels, >= 0).
        angle_deg : float, optional
            Weld direction; computed from the centre line's end points when omitted.
        """
        centreline = np.round(np.asarray(centreline, dtype=np.float64), 1)
        widths = np.round(np.asarray(widths, dtype=np.float64), 1)
        if centreline.ndim != 2 or centreline.shape[1] != 2 or len(centreline) < 2:
            raise ValueError(f"centreline must have shape (K, 2) with K >= 2, got {centreline.shape}")
        if widths.shape != (len(centreline),) or np.any(widths < 0):
            raise ValueError("widths must be non-negative with one value per centre-line point")
        if angle_deg is None:
            angle_deg = _polyline_angle(centreline)
        mask = _band_mask(tuple(shape), centreline, widths)
        return cls(mask, centreline, widths, round(float(angle_deg), 2) % 180.0,
                   float(haz_margin_px), False, float(score))

    @classmethod
    def from_mask(cls, mask: np.ndarray, *, hand_edited: bool = True) -> WeldROI:
        """Describe an arbitrary region (e.g. drawn or adjusted by hand) as a weld region.

        The mask is kept exactly; the centre line and widths are derived from it along its
        principal axis (one point per ~1/50 of its length; width = pixels in that slice divided
        by the slice length), so ``length_mm`` and the per-metre figures still work.

        Parameters
        ----------
        mask : ndarray of bool, shape (M, N)
            The region; must contain at least one pixel.
        hand_edited : bool
            Mark the region as drawn or changed by hand (for the audit trail).
        """
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
        mask = mask.astype(bool, copy=True)
        rows, cols = np.nonzero(mask)
        if len(rows) == 0:
            raise ValueError("mask is empty: a weld region needs at least one pixel")
        pts = np.column_stack([rows, cols]).astype(np.float64)
        centre = pts.mean(axis=0)
        if len(pts) > 1:
            cov = np.cov((pts - centre).T)
            evals, evecs = np.linalg.eigh(cov)
            d = evecs[:, np.argmax(evals)]
        else:
            d = np.array([0.0, 1.0])
        if d[1] < 0 or (d[1] == 0 and d[0] > 0):
            d = -d
        n = np.array([d[1], -d[0]])
        u = (pts - centre) @ d
        v = (pts - centre) @ n
        n_bins = int(np.clip((u.max() - u.min()) // 4, 2, 50))
        edges = np.linspace(u.min(), u.max() + 1e-9, n_bins + 1)
        idx = np.clip(np.digitize(u, edges) - 1, 0, n_bins - 1)
        counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
        vsum = np.bincount(idx, weights=v, minlength=n_bins)
        keep = counts > 0
        bin_len = np.diff(edges)
        ucen = 0.5 * (edges[:-1] + edges[1:])
        vcen = np.where(keep, vsum / np.maximum(counts, 1), 0.0)
        centreline = centre + np.outer(ucen[keep], d) + np.outer(vcen[keep], n)
        widths = counts[keep] / bin_len[keep]
        if len(centreline) == 1:
            centreline = np.vstack([centreline, centreline])
            widths = np.repeat(widths, 2)
        angle = math.degrees(math.atan2(-d[0], d[1])) % 180.0
        return cls(mask, np.round(centreline, 1), np.round(widths, 1), round(angle, 2),
                   0.0, bool(hand_edited))

    @classmethod
    def from_edges(cls, shape: tuple[int, int], edge_a: np.ndarray, edge_b: np.ndarray) -> WeldROI:
        """Region between two edge polylines drawn by hand (e.g. the upper and lower bead edge).

        Parameters
        ----------
        shape : tuple of int
            ``(M, N)`` of the image.
        edge_a, edge_b : array_like, shape (P, 2) and (Q, 2)
            (row, col) points of the two edges, each ordered along the weld in the same
            direction, P, Q >= 2. The region is the polygon between them.
        """
        a = np.asarray(edge_a, dtype=np.float64)
        b = np.asarray(edge_b, dtype=np.float64)
        for name, e in (("edge_a", a), ("edge_b", b)):
            if e.ndim != 2 or e.shape[1] != 2 or len(e) < 2:
                raise ValueError(f"{name} must have shape (P, 2) with P >= 2, got {e.shape}")
        k = max(len(a), len(b), 2)
        a, b = _resample(a, k), _resample(b, k)
        mask = _fill_polygon(tuple(shape), np.vstack([a, b[::-1]]))
        centreline = np.round(0.5 * (a + b), 1)
        widths = np.round(np.hypot(*(a - b).T), 1)
        return cls(mask, centreline, widths, round(_polyline_angle(centreline), 2), 0.0, True)

    def edited(
        self,
        *,
        centreline: np.ndarray | None = None,
        widths: np.ndarray | None = None,
        add: np.ndarray | None = None,
        cut: np.ndarray | None = None,
    ) -> WeldROI:
        """Return the region as adjusted by the user; this region is unchanged.

        Parameters
        ----------
        centreline, widths : array_like, optional
            Moved edges: a new centre line and/or widths (same K as given or as this region).
            The mask is rebuilt from the geometry.
        add, cut : ndarray of bool, shape (M, N), optional
            Pixels added to or removed from the region (e.g. painted by hand). When given the
            result is stored as a mask (``hand_edited`` is True) and its geometry re-derived from it.
        """
        if centreline is not None or widths is not None:
            c = self.centreline if centreline is None else np.asarray(centreline, dtype=np.float64)
            w = self.widths if widths is None else np.asarray(widths, dtype=np.float64)
            base = WeldROI.from_geometry(self.shape, c, w, haz_margin_px=self.haz_margin_px)
        else:
            base = self
        if add is None and cut is None:
            return base
        mask = base.mask.copy()
        for name, part in (("add", add), ("cut", cut)):
            if part is not None and np.shape(part) != mask.shape:
                raise ValueError(f"{name} must have the image shape {mask.shape}, got {np.shape(part)}")
        if add is not None:
            mask |= np.asarray(add, dtype=bool)
        if cut is not None:
            mask &= ~np.asarray(cut, dtype=bool)
        roi = WeldROI.from_mask(mask, hand_edited=True)
        roi.haz_margin_px = base.haz_margin_px
        return roi

    def to_json(self) -> str:
        """Compact JSON: the geometry, plus a run-length encoded mask when the geometry alone
        does not rebuild the mask exactly (regions edited by hand or made from a mask)."""
        doc = {
            "version": JSON_VERSION,
            "shape": list(self.shape),
            "angle_deg": self.angle_deg,
            "haz_margin_px": self.haz_margin_px,
            "score": None if not np.isfinite(self.score) else round(float(self.score), 4),
            "centreline": np.round(self.centreline, 1).tolist(),
            "widths": np.round(self.widths, 1).tolist(),
            "edited": self.hand_edited,
        }
        if self.hand_edited or not np.array_equal(
                _band_mask(self.shape, np.round(self.centreline, 1), np.round(self.widths, 1)), self.mask):
            doc["rle"] = _rle_encode(self.mask)
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WeldROI:
        """Rebuild a region written by :meth:`to_json`."""
        try:
            doc = json.loads(text)
            version = doc["version"]
            shape = tuple(int(s) for s in doc["shape"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a weld region JSON document: {exc}") from exc
        if version != JSON_VERSION:
            raise ValueError(f"weld region JSON version {version} is not supported (expected {JSON_VERSION})")
        centreline = np.asarray(doc["centreline"], dtype=np.float64).reshape(-1, 2)
        widths = np.asarray(doc["widths"], dtype=np.float64)
        score = float("nan") if doc.get("score") is None else float(doc["score"])
        if "rle" in doc:
            mask = _rle_decode(doc["rle"], shape)
            return cls(mask, centreline, widths, float(doc["angle_deg"]),
                       float(doc["haz_margin_px"]), bool(doc.get("edited")), score)
        return cls.from_geometry(shape, centreline, widths, angle_deg=float(doc["angle_deg"]),
                                 haz_margin_px=float(doc["haz_margin_px"]), score=score)


def find_weld(
    image: np.ndarray,
    *,
    include_haz: bool = False,
    haz_margin_px: float | None = None,
    polarity: str = "bright",
) -> WeldROI:
    """Find the weld bead band on a radiograph.

    Parameters
    ----------
    image : ndarray of float32, shape (M, N)
        The radiograph, grey levels in [0, 1] (bright = more material on film; either polarity
        is accepted, see ``polarity``).
    include_haz : bool
        Widen the band on each side by a heat-affected-zone margin.
    haz_margin_px : float, optional
        The margin per side in image pixels; default 0.3 x the median bead width. Ignored unless
        ``include_haz``.
    polarity : {"auto", "bright", "dark"}
        Whether the bead is brighter ("bright") or darker ("dark") than the base plate;
        "auto" tries both and keeps the stronger band.

    Returns
    -------
    WeldROI
        Mask on the image grid, centre line, widths, direction.

    Raises
    ------
    WeldNotFoundError
        When no band along a straight or gently curving line stands out (flat plate, noise, a
        film with no weld): scan the whole image instead, or draw the region by hand.
    """
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must be a float radiograph in [0, 1] (e.g. Radiograph.image), "
                         f"got {image.dtype}")
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D grey radiograph, got shape {image.shape}")
    if min(image.shape) < 16:
        raise ValueError(f"image of shape {image.shape} is too small to find a weld in (< 16 px)")
    if polarity not in ("auto", "bright", "dark"):
        raise ValueError(f"polarity must be 'auto', 'bright' or 'dark', got {polarity!r}")
    small, factor = _downsample(np.asarray(image, dtype=np.float32))
    lo, hi = np.nanpercentile(small, [5, 95])
    spread = float(hi - lo)
    if not np.isfinite(spread) or spread <= 1e-6:
        raise WeldNotFoundError(_not_found_message("the image is uniform"))
    signs = {"auto": (1.0, -1.0), "bright": (1.0,), "dark": (-1.0,)}[polarity]

    cache: dict[float, tuple] = {}

    def fit(angle: float, sign: float) -> dict:
        angle = round(float(angle) % 180.0, 3)
        if angle not in cache:
            cache[angle] = _section_profiles(small, angle)
        return _fit_profiles(cache[angle], angle, sign, spread)

    best = None
    for sign in signs:
        coarse = sorted((fit(a, sign) for a in np.arange(0.0, 180.0, 15.0)),
                        key=lambda r: r["objective"], reverse=True)
        for top in coarse[:2]:  # refine the two best directions: the coarse grid may split a peak
            for step in (5.0, 2.0):
                around = [fit(top["angle"] + o, sign) for o in (-step, step)]
                top = max(around + [top], key=lambda r: r["objective"])
            if best is None or top["objective"] > best["objective"]:
                best = top
    contrast, present = best["contrast"], best["present"]
    if contrast < MIN_CONTRAST or present < MIN_PRESENT or best["n_sections"] < 2:
        raise WeldNotFoundError(_not_found_message(
            f"the strongest band has contrast {contrast:.3f} of the grey-level spread "
            f"(needs {MIN_CONTRAST}), clear along {present:.0%} of its length (needs {MIN_PRESENT:.0%})"))
    if best["snr"] < MIN_SNR or best["agree"] < MIN_AGREE:
        raise WeldNotFoundError(_not_found_message(
            f"the strongest band is {best['snr']:.1f} times the noise (needs {MIN_SNR}) and sections "
            f"agree on it along {best['agree']:.0%} of its length (needs {MIN_AGREE:.0%}); "
            "it looks like texture or noise"))

    geo = _geometry(best)
    # back to image pixels: downsampled pixel i covers image pixels [i*f, (i+1)*f)
    centreline = (geo["centreline"] + 0.5) * factor - 0.5
    widths = geo["widths"] * factor
    margin = 0.0
    if include_haz:
        margin = HAZ_FRACTION * float(np.median(widths)) if haz_margin_px is None else float(haz_margin_px)
        if margin < 0:
            raise ValueError(f"haz_margin_px must be >= 0, got {haz_margin_px}")
        widths = widths + 2.0 * margin
    return WeldROI.from_geometry(image.shape, centreline, widths,
                                 angle_deg=_principal_angle(centreline, image.shape),
                                 haz_margin_px=round(margin, 1), score=contrast)


def region_agreement(found: WeldROI, reference: WeldROI) -> dict[str, float]:
    """How well a found region matches a reference (e.g. hand-drawn) region.

    Returns
    -------
    dict
        ``iou``: intersection over union of the masks; ``centre_mean_px`` and ``centre_max_px``:
        distance from the found centre line (points inside the image and along the reference's
        extent) to the reference centre line; ``width_ratio``: median found width over median
        reference width.
    """
    if found.shape != reference.shape:
        raise ValueError(f"regions are on different grids: {found.shape} and {reference.shape}")
    inter = np.logical_and(found.mask, reference.mask).sum()
    union = np.logical_or(found.mask, reference.mask).sum()
    ref = _resample(reference.centreline, max(2, int(_polyline_length(reference.centreline))))
    pts = found.centreline
    m, n = found.shape
    inside = (pts[:, 0] >= 0) & (pts[:, 0] <= m - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= n - 1)
    axis = ref[-1] - ref[0]
    axis = axis / max(np.hypot(*axis), 1e-9)
    t = (pts - ref[0]) @ axis
    inside &= (t >= 0) & (t <= (ref[-1] - ref[0]) @ axis)
    if inside.any():
        dist = np.sqrt(((pts[inside, None, :] - ref[None, :, :]) ** 2).sum(-1)).min(axis=1)
        c_mean, c_max = float(dist.mean()), float(dist.max())
    else:
        c_mean = c_max = float("nan")
    return {"iou": float(inter / union) if union else 0.0, "centre_mean_px": c_mean,
            "centre_max_px": c_max,
            "width_ratio": float(np.median(found.widths) / max(np.median(reference.widths), 1e-9))}


def _polyline_length(points: np.ndarray) -> float:
    steps = np.diff(points, axis=0)
    return float(np.hypot(steps[:, 0], steps[:, 1]).sum())


def _resample(points: np.ndarray, k: int) -> np.ndarray:
    """k points evenly spaced by arc length along a polyline."""
    steps = np.hypot(*np.diff(points, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(steps)])
    if s[-1] <= 0:
        return np.repeat(points[:1], k, axis=0)
    t = np.linspace(0.0, s[-1], k)
    return np.column_stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])])


def _not_found_message(reason: str) -> str:
    return (f"No weld seam found in the radiograph ({reason}). "
            "Scan the whole image instead, or draw the weld region by hand.")


def _downsample(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Block-mean downsample so that the longer side is about TARGET_SIDE px."""
    factor = max(1, int(round(max(image.shape) / TARGET_SIDE)))
    factor = min(factor, max(1, min(image.shape) // 24))
    m, n = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    small = image[:m, :n].reshape(m // factor, factor, n // factor, factor)
    with np.errstate(invalid="ignore"):
        small = np.nanmean(small, axis=(1, 3)).astype(np.float32)
    return small, factor


def _frame(shape: tuple[int, int], angle_deg: float):
    """Unit vectors along (d) and across (n) the weld and the frame's extent, row/col order."""
    t = math.radians(angle_deg)
    d = np.array([-math.sin(t), math.cos(t)])
    n = np.array([math.cos(t), math.sin(t)])
    centre = (np.array(shape, dtype=np.float64) - 1) / 2
    corners = np.array([[0, 0], [0, shape[1] - 1], [shape[0] - 1, 0], [shape[0] - 1, shape[1] - 1]]) - centre
    u = corners @ d
    v = corners @ n
    return d, n, centre, (u.min(), u.max()), (v.min(), v.max())


def _section_profiles(small: np.ndarray, angle: float):
    """Resample along ``angle`` and take one median profile across the weld per section."""
    d, n, centre, (u0, u1), (v0, v1) = _frame(small.shape, angle)
    n_sec = max(2, int(math.ceil((u1 - u0 + 1) / SECTION_PX)))
    length = n_sec * SECTION_PX  # sections of equal length, centred on the image
    us = 0.5 * (u0 + u1) + np.arange(length) - (length - 1) / 2
    vs = np.arange(v0, v1 + 1e-9)
    uu, vv = np.meshgrid(us, vs, indexing="ij")  # frame rows run along the weld
    coords = centre[:, None, None] + d[:, None, None] * uu + n[:, None, None] * vv
    frame = ndimage.map_coordinates(small, coords, order=1, cval=np.nan, prefilter=False)
    stack = frame.reshape(n_sec, SECTION_PX, len(vs))
    profiles = _nan_median(stack)
    counts = np.isfinite(stack).sum(axis=1)  # image samples behind each profile value
    ucen = us.reshape(n_sec, SECTION_PX).mean(axis=1)
    return profiles, counts, ucen, (d, n, centre, (u0, u1), v0)


def _nan_median(stack: np.ndarray) -> np.ndarray:
    """Median over axis 1 ignoring NaN (NaN where all are NaN); faster than np.nanmedian."""
    srt = np.sort(stack, axis=1)  # NaN sort last
    cnt = np.isfinite(stack).sum(axis=1)
    lo = np.clip((cnt - 1) // 2, 0, None)[:, None, :]
    hi = np.clip(cnt // 2, 0, None)[:, None, :]
    med = 0.5 * (np.take_along_axis(srt, lo, axis=1) + np.take_along_axis(srt, hi, axis=1))[:, 0, :]
    return np.where(cnt > 0, med, np.nan)


def _fit_profiles(prep, angle: float, sign: float, spread: float) -> dict:
    """Best band path in the section profiles of one direction; its geometry and scores."""
    profiles, counts, ucen_all, (d, n, centre, (u0, u1), v0) = prep
    profiles = sign * profiles
    n_sec, n_v = profiles.shape
    cube, width_set = _band_scores(profiles, spread)
    k_best = np.argmax(cube, axis=0)
    score = np.take_along_axis(cube, k_best[None], axis=0)[0]
    width = width_set[k_best]
    path, path_value = _best_path(score, max_step=max(2, int(MAX_STEP * SECTION_PX)),
                                  penalty=STEP_PENALTY)
    sec_score = score[np.arange(n_sec), path]
    sec_width = width[np.arange(n_sec), path]
    good = np.isfinite(sec_score) & (sec_score > 0)
    med = float(np.median(sec_score[good])) if good.any() else 0.0
    clear = good & (sec_score > END_FRACTION * med)
    # sections where the path lies (mostly) inside the image: the weld is expected there
    inside = counts[np.arange(n_sec), path] >= 0.5 * SECTION_PX
    present = float((clear & inside).sum() / max(inside.sum(), 1))
    # a band that random texture or noise could produce is not a weld: compare the contrast with
    # the noise of the profiles (from second differences) and ask neighbouring sections to agree
    diff2 = np.diff(profiles, n=2, axis=1)
    diff2 = diff2[np.isfinite(diff2)]
    sigma = 1.4826 * float(np.median(np.abs(diff2))) / math.sqrt(6) if diff2.size else 0.0
    z = sec_score * spread * np.sqrt(sec_width) / (2 * max(sigma, 1e-9))
    own_best = np.argmax(score, axis=1)
    agree = np.abs(own_best - path) <= np.maximum(3, sec_width / 2)
    result = {"angle": float(angle), "objective": path_value, "contrast": med,
              "present": present, "n_sections": int(clear.sum()),
              "snr": float(np.median(z[clear & inside])) if (clear & inside).any() else 0.0,
              "agree": float((agree & inside).sum() / max(inside.sum(), 1))}
    # where the film is much lighter or darker the band fades against the global spread but
    # still dominates its own profile: keep such sections too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        own = sec_score * spread / (np.nanmax(profiles, axis=1) - np.nanmin(profiles, axis=1))
    clear |= good & (sec_score > 0.05 * med) & (own > LOCAL_FRACTION)
    # a weld is one run along the path (short gaps allowed, e.g. a number plate lying on it);
    # clear sections beyond a longer gap are other things the path went through (markers, wires)
    clear = _main_run(clear, np.where(clear, sec_score, 0.0))
    run = np.flatnonzero(clear)
    steps = np.abs(np.diff(path[run[0]:run[-1] + 1])).sum() if len(run) else 0
    result["objective"] = float(np.clip(sec_score[clear], 0, None).sum() - STEP_PENALTY * steps)
    result["present"] = float((clear & inside).sum() / max(inside.sum(), 1))
    if clear.sum() < 2:
        result["objective"] = 0.0
    result["_state"] = (profiles, counts, ucen_all, (d, n, centre, (u0, u1), v0), cube, width_set,
                        path, sec_score, sec_width, clear)
    return result


def _main_run(clear: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Keep only the run of clear sections (gaps up to MAX_GAP allowed) with the largest value."""
    idx = np.flatnonzero(clear)
    if len(idx) == 0:
        return clear
    breaks = np.flatnonzero(np.diff(idx) > MAX_GAP + 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(idx) - 1]])
    sums = [value[idx[a]:idx[b] + 1].sum() for a, b in zip(starts, ends)]
    k = int(np.argmax(sums))
    keep = np.zeros_like(clear)
    keep[idx[starts[k]]:idx[ends[k]] + 1] = True
    return clear & keep


def _geometry(result: dict) -> dict:
    """Edges, centre line and widths of the chosen direction's band path (downsampled px)."""
    (profiles, counts, ucen_all, (d, n, centre, (u0, u1), v0), cube, width_set,
     path, sec_score, sec_width, clear) = result["_state"]
    n_sec, n_v = profiles.shape
    idx = np.flatnonzero(clear)
    first, last = idx[0], idx[-1]
    tops, bots = np.full(n_sec, np.nan), np.full(n_sec, np.nan)
    for s in range(first, last + 1):
        if clear[s]:
            c, w = _widest_nested(cube[:, s, :], width_set, int(path[s]), float(sec_width[s]),
                                  sec_score[s])
            tops[s], bots[s] = _refine_edges(profiles[s], c, w)
    tops = _robust_smooth(tops[first:last + 1])
    bots = _robust_smooth(bots[first:last + 1])
    ucen = ucen_all[first:last + 1].copy()

    def leaves_image(s_end: int, s_next: int) -> bool:
        if s_next < 0 or s_next >= n_sec:
            return True
        reach = int(sec_width[s_end] * (0.5 + 1 / 3)) + 2
        lo, hi = max(0, path[s_end] - reach), min(n_v, path[s_end] + reach + 1)
        return bool(counts[s_next, lo:hi].min() < 0.75 * SECTION_PX)

    vc = v0 + 0.5 * (tops + bots)
    widths = np.clip(bots - tops, 1.0, n_v)
    # a weld that is clear up to where it leaves the image continues to the image border
    if leaves_image(first, first - 1):
        ucen, vc, widths = np.r_[u0 - 1, ucen], np.r_[vc[0], vc], np.r_[widths[0], widths]
    if leaves_image(last, last + 1):
        ucen, vc, widths = np.r_[ucen, u1 + 1], np.r_[vc, vc[-1]], np.r_[widths, widths[-1]]
    line = centre + np.outer(ucen, d) + np.outer(vc, n)
    return {"centreline": line, "widths": widths}


def _band_scores(profiles: np.ndarray, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Band contrast (band mean minus flank means, / spread): (n_widths, n_sections, n_v) and widths."""
    n_sec, n_v = profiles.shape
    valid = np.isfinite(profiles)
    vals = np.where(valid, profiles, 0.0)
    csum = np.concatenate([np.zeros((n_sec, 1)), np.cumsum(vals, axis=1)], axis=1)
    ccnt = np.concatenate([np.zeros((n_sec, 1)), np.cumsum(valid, axis=1)], axis=1)

    def window_mean(a, b):
        a = np.clip(a, 0, n_v)
        b = np.clip(b, 0, n_v)
        cnt = ccnt[:, b] - ccnt[:, a]
        return (csum[:, b] - csum[:, a]) / np.maximum(cnt, 1), cnt

    centres = np.arange(n_v)
    widths, layers = [], []
    w = float(MIN_WIDTH_PX)
    w_max = MAX_WIDTH_FRACTION * n_v
    while w <= w_max:
        half = w / 2
        flank = max(2.0, w / 3)
        a = np.round(centres - half).astype(int)
        b = np.round(centres + half).astype(int)
        fa = np.round(centres - half - flank).astype(int)
        fb = np.round(centres + half + flank).astype(int)
        inner, icnt = window_mean(a, b)
        left, lcnt = window_mean(fa, a)
        right, rcnt = window_mean(b, fb)
        need = FLANK_INSIDE * flank
        ok = (icnt >= 0.8 * (b - a)) & (lcnt >= need) & (rcnt >= need)
        # the band must stand out against both flanks: the weaker side counts
        contrast = np.minimum(inner - left, inner - right) / spread
        layers.append(np.where(ok, contrast, -np.inf))
        widths.append(w)
        w *= 1.2
    if not layers:
        return np.full((1, n_sec, n_v), -np.inf), np.array([float(MIN_WIDTH_PX)])
    return np.stack(layers), np.array(widths)


def _widest_nested(cube: np.ndarray, widths: np.ndarray, c: int, w_core: float,
                   best: float) -> tuple[int, float]:
    """The widest band that contains the core band and keeps NEST_FRACTION of its contrast.

    A bead often shows a bright core (root, thick middle) inside a wider, fainter rippled cap;
    the region must cover the whole bead, not only its brightest part.
    """
    n_v = cube.shape[1]
    for k in np.flatnonzero(widths > w_core)[::-1]:
        slack = int((widths[k] - w_core) / 2)
        lo, hi = max(0, c - slack), min(n_v, c + slack + 1)
        j = lo + int(np.argmax(cube[k, lo:hi]))
        if cube[k, j] >= NEST_FRACTION * best:
            return j, float(widths[k])
    return c, w_core


def _best_path(score: np.ndarray, *, max_step: int, penalty: float) -> tuple[np.ndarray, float]:
    """Viterbi path through (section, centre) maximising score minus penalty * |step|."""
    n_sec, n_v = score.shape
    s = np.where(np.isfinite(score), np.clip(score, 0, None), 0.0)
    acc = s[0].copy()
    back = np.zeros((n_sec, n_v), dtype=int)
    offsets = np.arange(-max_step, max_step + 1)
    for i in range(1, n_sec):
        cand = np.full((len(offsets), n_v), -np.inf)
        for k, o in enumerate(offsets):
            src = np.arange(n_v) - o
            okk = (src >= 0) & (src < n_v)
            cand[k, okk] = acc[src[okk]] - penalty * abs(o)
        k_best = np.argmax(cand, axis=0)
        back[i] = np.arange(n_v) - offsets[k_best]
        acc = cand[k_best, np.arange(n_v)] + s[i]
    path = np.zeros(n_sec, dtype=int)
    path[-1] = int(np.argmax(acc))
    value = float(acc[path[-1]])
    for i in range(n_sec - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path, value


def _refine_edges(profile: np.ndarray, c: int, w: float) -> tuple[float, float]:
    """Edges of the band where the (bright-positive) profile crosses half-way from flank to band.

    Each edge is searched from the outside in, so dark flaws inside the bead (cracks, pores,
    lack of fusion) do not pull the edge inwards: the region must keep the flaws.
    """
    n_v = len(profile)
    p = profile.copy()
    bad = ~np.isfinite(p)
    if bad.all():
        return c - w / 2, c + w / 2
    if bad.any():
        p[bad] = np.interp(np.flatnonzero(bad), np.flatnonzero(~bad), p[~bad])
    p = ndimage.gaussian_filter1d(p, 1.0)
    half = w / 2
    flank = max(2.0, w / 3)
    a, b = int(round(c - half)), int(round(c + half))
    inner = float(np.median(p[max(a, 0):max(min(b, n_v), max(a, 0) + 1)]))
    edges = []
    for side in (-1, 1):
        # search within a quarter band width of the nominal edge (the widths come in 20 % steps)
        start = int(round(c + side * (half + max(2.0, 0.25 * w))))
        start = int(np.clip(start, 0, n_v - 1))
        lo_i, hi_i = sorted((int(round(c + side * half)), int(round(c + side * (half + flank)))))
        flank_vals = p[max(lo_i, 0):min(hi_i, n_v - 1) + 1]
        outer = float(np.mean(flank_vals)) if len(flank_vals) else inner
        level = outer + EDGE_LEVEL * (inner - outer)
        # walk from the outer flank towards the centre; first sample at or above the level
        stop = int(np.clip(round(c + side * (half - max(2.0, 0.25 * w))), 0, n_v - 1))
        if (stop - c) * side < 0:
            stop = c
        walk = np.arange(start, stop - side, -side)
        above = np.flatnonzero(p[walk] >= level)
        if len(above) == 0:
            edges.append(c + side * half)
            continue
        k = walk[above[0]]
        prev = k + side  # the sample just outside, below the level
        if 0 <= prev < n_v and p[prev] < level <= p[k]:
            frac = (level - p[prev]) / (p[k] - p[prev])
            edges.append(prev - side * frac)
        else:
            edges.append(float(k))
    top, bot = edges
    if bot - top < 2:
        top, bot = c - half, c + half
    return float(top), float(bot)


def _robust_smooth(x: np.ndarray) -> np.ndarray:
    """Running median, robust polynomial fit for outliers and gaps, light moving average."""
    x = np.asarray(x, dtype=np.float64)
    t = np.arange(len(x), dtype=np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return np.full_like(x, np.nanmean(x) if ok.any() else 0.0)
    x = np.interp(t, t[ok], x[ok])
    med = ndimage.median_filter(x, size=min(SMOOTH_SECTIONS, len(x)), mode="nearest")
    deg = int(min(3, max(1, len(x) // 6)))
    inl = np.ones(len(x), dtype=bool)
    for _ in range(3):
        coef = np.polyfit(t[inl], med[inl], deg)
        fit = np.polyval(coef, t)
        res = med - fit
        mad = 1.4826 * np.median(np.abs(res[inl])) + 0.5
        new = np.abs(res) <= 3 * mad
        if new.sum() <= deg + 1 or np.array_equal(new, inl):
            break
        inl = new
    out = np.where(inl, med, fit)
    if len(out) >= 3:
        out = ndimage.uniform_filter1d(out, 3, mode="nearest")
    return out


def _principal_angle(centreline: np.ndarray, shape: tuple[int, int]) -> float:
    """Direction of the centre line's principal axis, from its points inside the image."""
    pts = _resample(centreline, 64)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] <= shape[0] - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= shape[1] - 1)
    if inside.sum() >= 2:
        pts = pts[inside]
    evals, evecs = np.linalg.eigh(np.cov((pts - pts.mean(axis=0)).T))
    d = evecs[:, np.argmax(evals)]
    return math.degrees(math.atan2(-d[0], d[1])) % 180.0


def _polyline_angle(centreline: np.ndarray) -> float:
    d = centreline[-1] - centreline[0]
    return math.degrees(math.atan2(-d[0], d[1])) % 180.0


def _band_mask(shape: tuple[int, int], centreline: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Fill the polygon between the two offset curves of the centre line."""
    tang = np.gradient(centreline, axis=0) if len(centreline) > 1 else np.array([[0.0, 1.0]])
    norm = np.hypot(tang[:, 0], tang[:, 1])[:, None]
    tang = tang / np.where(norm > 0, norm, 1.0)
    normal = np.column_stack([tang[:, 1], -tang[:, 0]])
    upper = centreline - normal * (widths[:, None] / 2)
    lower = centreline + normal * (widths[:, None] / 2)
    return _fill_polygon(shape, np.vstack([upper, lower[::-1]]))


def _fill_polygon(shape: tuple[int, int], poly: np.ndarray) -> np.ndarray:
    """Pixels whose centre lies inside the polygon (even-odd rule), by scan lines.

    Same result as ``skimage.draw.polygon`` but fast for large, simple regions on big images.
    """
    m, n = shape
    r0, c0 = poly[:, 0], poly[:, 1]
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    rows = np.arange(m, dtype=np.float64)[:, None]
    crosses = ((r0 <= rows) & (rows < r1)) | ((r1 <= rows) & (rows < r0))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = c0 + (rows - r0) * (c1 - c0) / (r1 - r0)
    x = np.sort(np.where(crosses, x, np.inf), axis=1)
    k = (crosses.sum(axis=1) // 2) * 2
    mask_diff = np.zeros((m, n + 1), dtype=np.int32)
    for j in range(0, int(k.max()) if len(k) else 0, 2):
        has = k > j
        rr = np.flatnonzero(has)
        a = np.clip(np.ceil(x[has, j]), 0, n).astype(int)
        b = np.clip(np.floor(x[has, j + 1]) + 1, 0, n).astype(int)
        keep = b > a
        np.add.at(mask_diff, (rr[keep], a[keep]), 1)
        np.add.at(mask_diff, (rr[keep], b[keep]), -1)
    return np.cumsum(mask_diff, axis=1)[:, :n] > 0


def _rle_encode(mask: np.ndarray) -> list[int]:
    """Run lengths of the C-order flattened mask, starting with a run of False."""
    flat = np.asarray(mask, dtype=np.int8).ravel()
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return [int(r) for r in runs]


def _rle_decode(runs: list[int], shape: tuple[int, int]) -> np.ndarray:
    runs = np.asarray(runs, dtype=np.int64)
    if runs.sum() != shape[0] * shape[1]:
        raise ValueError(f"run-length mask covers {runs.sum()} pixels, "
                         f"the shape {shape} needs {shape[0] * shape[1]}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(shape)
