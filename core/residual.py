"""Residual image analysis of Section 3.1 (Equations 8 and 9): local 9 x 9 mean and std.

A kernel (stride 1) is flagged when ``|mean|`` exceeds the mean threshold (bit 1) or the
standard deviation exceeds the std threshold (bit 2). Both are box filters
(``scipy.ndimage.uniform_filter``) in float64, the std as ``sqrt(E[x^2] - E[x]^2)`` after
subtracting the array's mean, so float32 residuals of a few 1e-3 keep their precision.
"""

from __future__ import annotations

import numpy as np

KERNEL_SIZE = 9  # k_s of the paper
FLAG_MEAN = 1
FLAG_STD = 2
EDGE_BAND_PX = 32  # width of the weld region's edge band, which gets its own thresholds
# The default edge zones, px from the region's edge: 0-32 where the flank falls to the plate, 32-48
# where it bends (the bead's shoulder); each zone gets its own thresholds (docs/benchmark notes item 8)
EDGE_ZONES_PX = (EDGE_BAND_PX, 48)
# Zones by the raw film's slope instead (docs/benchmark notes item 11): the gradient magnitude of the
# film after a Gaussian of SLOPE_SIGMA_PX, split at these quantiles of the okay calibration
# kernels' slopes, chosen on the calibration films only (synthetic anomalies added to them)
SLOPE_SIGMA_PX = 16.0
SLOPE_QUANTILES = (0.5, 0.8)


def edge_band(roi: np.ndarray, band_px: int = EDGE_BAND_PX) -> np.ndarray:
    """The part of a region of interest within ``band_px`` px (Chebyshev) of its boundary.

    The weld region's edge runs along the bead's flanks, where the grey level falls steeply to
    the plate: residuals there are larger on every radiograph than inside the weld. Calibrated
    with one pair of thresholds, those kernels set them for the whole region; measured on GDXray
    (docs/benchmark/notes.md) a separate pair for a 32 px band lifts mid-contrast defects found
    at 0.1 % FPR from 4 % to 94 % with the same model, while the band is still inspected.

    Parameters
    ----------
    roi : ndarray of bool, shape (..., M, N)
        One region or a stack of them (each 2-D slice on its own). Beyond the array's edge the
        region is taken to continue (a patch cut from a larger region has no boundary there).
    band_px : int
        Band width; 0 gives an empty band.

    Returns
    -------
    ndarray of bool, same shape
    """
    from scipy.ndimage import minimum_filter

    roi = np.asarray(roi, dtype=bool)
    if band_px <= 0:
        return np.zeros_like(roi)
    size = (1,) * (roi.ndim - 2) + (2 * band_px + 1, 2 * band_px + 1)
    inner = minimum_filter(roi, size=size, mode="nearest")
    return roi & ~inner


def edge_zones(roi: np.ndarray, bounds) -> list[np.ndarray]:
    """Disjoint zones of a region by distance from its boundary: ``0-b0``, ``b0-b1``, ... px.

    ``bounds`` are increasing widths (``edge_band(roi, b)`` for each); the region's interior
    beyond the last bound is not among them. ``edge_zones(roi, (32,))`` is ``[edge_band(roi, 32)]``.
    A bead's flank falls to the plate at the region's edge and often bends a little further in
    (its shoulder); each zone gets its own pair of thresholds (core.calibration), so neither sets
    those of the interior.
    """
    bounds = [int(b) for b in bounds]
    if any(b <= 0 for b in bounds) or any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"edge zone bounds must be positive and increasing, got {bounds}")
    out, previous = [], None
    for b in bounds:
        band = edge_band(roi, b)
        out.append(band if previous is None else band & ~previous)
        previous = band
    return out


def weld_zones(region: np.ndarray, bounds, *, haz: bool = False) -> list[np.ndarray]:
    """The zones of a weld region that get their own thresholds, by distance from an edge.

    Parameters
    ----------
    region : ndarray, shape (..., M, N)
        A boolean region, or a label map (``core.roi.WeldROI.labels``: 0 outside, 1 bead,
        2 heat-affected zone) of one radiograph or a stack of patches.
    bounds : sequence of int
        The edge zones' bounds (:func:`edge_zones`), possibly empty.
    haz : bool
        Measure the zones from the bead's edge and make the heat-affected zone around it a zone of
        its own, the first; False measures them from the region's edge (the region taken whole).
        A boolean region is bead throughout, so its zones are the same either way and its
        heat-affected zone is empty.

    Returns
    -------
    list of ndarray of bool
        Outermost first: ``[haz, 0-b0, b0-b1, ...]`` with ``haz``, else ``[0-b0, ...]``.
    """
    from core.roi import HAZ

    region = np.asarray(region)
    whole = region.astype(bool, copy=False)
    if not haz:
        return edge_zones(whole, bounds) if len(bounds) else []
    margin = region == HAZ
    bead = whole & ~margin
    return [margin, *(edge_zones(bead, bounds) if len(bounds) else [])]


def has_haz(regions) -> bool:
    """Whether label maps (``core.roi.WeldROI.labels``) hold any heat-affected zone."""
    from core.roi import HAZ

    return regions is not None and any(np.any(np.asarray(r) == HAZ) for r in regions)


def zone_spans(bounds) -> list[tuple[int, int]]:
    """Each edge zone as ``(from, to)`` px from the region's edge: ``(32, 48)`` -> ``[(0, 32), (32, 48)]``."""
    bounds = tuple(int(b) for b in bounds)
    return list(zip((0, *bounds), bounds))


def slope_field(image: np.ndarray, sigma: float = SLOPE_SIGMA_PX) -> tuple[np.ndarray, np.ndarray]:
    """``(d/drow, d/dcol)`` of the film after a Gaussian of ``sigma`` px, float32 (M, N) each.

    float32 throughout (a scan holds the slope beside its own maps): slopes of 1e-4 to 1e-2 grey
    levels per px keep 6 significant digits.
    """
    from scipy.ndimage import gaussian_filter

    if sigma <= 0:
        raise ValueError(f"the slope's sigma must be positive, got {sigma}")
    smooth = gaussian_filter(np.asarray(image, dtype=np.float32), sigma, mode="reflect")
    return tuple(np.gradient(smooth))


def slope_map(image: np.ndarray, sigma: float = SLOPE_SIGMA_PX) -> np.ndarray:
    """The film's slope: gradient magnitude (grey levels per px) after a Gaussian of ``sigma`` px.

    Computed on the radiograph as loaded (before any background removal), so a bead's flank is
    steep wherever it lies and however wide the bead is; a 9 x 9 kernel's zone is the slope at its
    centre (:func:`slope_zones`). ``image`` (M, N); returns float32 (M, N).
    """
    gy, gx = slope_field(image, sigma)
    return np.hypot(gy, gx, out=gy)


def slope_zones(roi: np.ndarray, slope: np.ndarray, bounds) -> list[np.ndarray]:
    """Disjoint zones of a region by the film's slope: ``b0-b1``, ..., ``>= b_last``.

    The flattest part of the region, below ``b0``, is its interior and not among them, as the
    interior is not among :func:`edge_zones`. ``roi`` and ``slope`` have the same shape (a stack
    of patches or one radiograph); ``bounds`` are increasing slopes (grey levels per px).
    """
    bounds = [float(b) for b in bounds]
    if not bounds or any(b <= 0 for b in bounds) or any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"slope zone bounds must be positive and increasing, got {bounds}")
    roi = np.asarray(roi, dtype=bool)
    slope = np.asarray(slope)
    if slope.shape != roi.shape:
        raise ValueError(f"slope shape {slope.shape} differs from the region's {roi.shape}")
    edges = [*bounds, np.inf]
    return [roi & (slope >= lo) & (slope < hi) for lo, hi in zip(edges, edges[1:])]


def slope_bounds(slopes, regions, quantiles=SLOPE_QUANTILES) -> tuple[float, ...]:
    """Slope bounds at ``quantiles`` of the slopes of every kernel centre in the regions.

    ``slopes`` and ``regions`` (N, M, M) over the okay calibration patches' apertures (or whole
    films). Raises ValueError when the regions hold no pixel or the bounds do not increase (a
    film with no slope, e.g. a flat synthetic image).
    """
    values = np.asarray(slopes)[np.asarray(regions, dtype=bool)]
    if values.size == 0:
        raise ValueError("no weld region pixels to set slope zones from")
    bounds = tuple(float(v) for v in np.quantile(values, quantiles))
    if any(b <= 0 for b in bounds) or any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"the okay patches' slopes give no distinct zones (bounds {bounds})")
    return bounds


def slope_spans(bounds) -> list[str]:
    """Each slope zone as people read it: ``(0.002, 0.005)`` -> ``["slope 0.0020-0.0050", "slope >= 0.0050"]``."""
    bounds = [float(b) for b in bounds]
    return [f"slope {a:.4f}-{b:.4f}" for a, b in zip(bounds, bounds[1:])] + [f"slope >= {bounds[-1]:.4f}"]


def local_mean_std(residual: np.ndarray, ks: int = KERNEL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and standard deviation over ``ks x ks`` kernels, stride 1 (Equations 8, 9).

    Parameters
    ----------
    residual : ndarray of shape (M, N)
        Residual image (input minus reconstruction); NaN marks undefined pixels.
    ks : int
        Odd kernel size.

    Returns
    -------
    mean, std : ndarray of shape (M, N), float32
        Value of the kernel centred on each pixel (population std, divisor ``ks**2``); NaN where
        the kernel does not fit inside the array or covers a NaN.
    """
    if ks < 1 or ks % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {ks}")
    residual = np.asarray(residual)
    if residual.ndim != 2:
        raise ValueError(f"residual must be 2-D, got shape {residual.shape}")
    rows, cols = residual.shape
    mean = np.full((rows, cols), np.nan, np.float32)
    std = np.full((rows, cols), np.nan, np.float32)
    if rows < ks or cols < ks:
        return mean, std
    # one float64 working copy, updated in place (a scan calls this once per tile)
    r = np.array(residual, dtype=np.float64)
    bad = np.isnan(r)
    has_nan = bool(bad.any())
    if has_nan:
        r[bad] = 0.0
    shift = float(r.mean())
    r -= shift
    h = ks // 2
    inner = (slice(h, rows - h), slice(h, cols - h))
    m = _box_mean(r, ks)[inner]
    np.multiply(r, r, out=r)
    var = _box_mean(r, ks)[inner]
    var -= m * m
    np.maximum(var, 0.0, out=var)
    m += shift
    mean[inner] = m
    std[inner] = np.sqrt(var, out=var)
    if has_nan:
        touched = _box_mean(bad.astype(np.float64), ks)[inner] > 0.5 / (ks * ks)
        mean[inner][touched] = np.nan
        std[inner][touched] = np.nan
    return mean, std


def _box_mean(a: np.ndarray, ks: int) -> np.ndarray:
    """Mean over the ``ks x ks`` window centred on each pixel (valid only ``ks // 2`` inside)."""
    from scipy.ndimage import uniform_filter

    return uniform_filter(a, ks, mode="constant")


def flag_kernels(mean: np.ndarray, std: np.ndarray, mean_threshold: float,
                 std_threshold: float) -> np.ndarray:
    """Flag bits per kernel centre: 1 = ``|mean| > mean_threshold``, 2 = ``std > std_threshold``.

    NaN (undefined) kernels are never flagged. Returns uint8 of the maps' shape.
    """
    with np.errstate(invalid="ignore"):
        flags = (np.abs(mean) > mean_threshold).astype(np.uint8)
        flags |= (std > std_threshold).astype(np.uint8) << 1
    return flags


def aperture_scores(residuals: np.ndarray, ks: int = KERNEL_SIZE, *, regions=None,
                    edges=None) -> np.ndarray:
    """Per-patch scores from aperture residuals: ``(max |local mean|, max local std)``.

    Parameters
    ----------
    residuals : ndarray of shape (B, A, A)
        Residual over each patch's aperture (input aperture minus reconstruction).
    regions : ndarray of bool, shape (B, A, A), optional
        Region of interest over each aperture: only kernels centred inside it count, as in a scan
        with a weld region (``core.scanning.scan_image(roi=...)`` raises no flag outside it).
    edges : ndarray of bool, shape (B, A, A), or a list of them, optional
        The region's edge band (:func:`edge_band`, computed on the whole region), or its zones by
        distance from the edge (:func:`edge_zones`, outermost first): the scores then have the pair
        over the region's interior, then one pair per zone.

    Returns
    -------
    scores : ndarray of shape (B, 2 + 2 * zones), float64
        Over every kernel that lies fully inside the aperture (and, with ``regions``, is centred in
        the region or its part; 0 where no kernel is).
    """
    residuals = np.asarray(residuals)
    if residuals.ndim == 2:
        residuals = residuals[None]
    if edges is not None and not isinstance(edges, (list, tuple)):
        edges = [edges]
    zones = [] if edges is None else [np.asarray(z, bool) for z in edges]
    out = np.zeros((residuals.shape[0], 2 + 2 * len(zones)), np.float64)
    for i, r in enumerate(residuals):
        m, s = local_mean_std(r, ks)
        m = np.abs(m)
        defined = np.isfinite(m)
        inside = defined if regions is None else defined & np.asarray(regions[i], bool)
        near = np.zeros_like(inside)
        for z in zones:
            near |= z[i]
        parts = [inside & ~near] + [inside & z[i] for z in zones]
        for z, part in enumerate(parts):
            if part.any():
                out[i, 2 * z] = m[part].max()
                out[i, 2 * z + 1] = s[part].max()
    return out
