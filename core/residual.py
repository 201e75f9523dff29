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


def aperture_scores(residuals: np.ndarray, ks: int = KERNEL_SIZE, *, regions=None) -> np.ndarray:
    """Per-patch scores from aperture residuals: ``(max |local mean|, max local std)``.

    Parameters
    ----------
    residuals : ndarray of shape (B, A, A)
        Residual over each patch's aperture (input aperture minus reconstruction).
    regions : ndarray of bool, shape (B, A, A), optional
        Region of interest over each aperture: only kernels centred inside it count, as in a scan
        with a weld region (``core.scanning.scan_image(roi=...)`` raises no flag outside it).

    Returns
    -------
    scores : ndarray of shape (B, 2), float64
        Over every kernel that lies fully inside the aperture (and, with ``regions``, is centred in
        the region; 0 where no kernel is).
    """
    residuals = np.asarray(residuals)
    if residuals.ndim == 2:
        residuals = residuals[None]
    out = np.zeros((residuals.shape[0], 2), np.float64)
    for i, r in enumerate(residuals):
        m, s = local_mean_std(r, ks)
        m = np.abs(m)
        if regions is not None:
            outside = ~np.asarray(regions[i], bool)
            m[outside] = np.nan
            s[outside] = np.nan
        if np.isfinite(m).any():
            out[i, 0] = np.nanmax(m)
            out[i, 1] = np.nanmax(s)
    return out
