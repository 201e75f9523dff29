"""Colour rendering of flagged kernels over a radiograph (numpy only), for ``--overlay``.

Colours of the paper (Figure 5e): both tests = blue, std only = green, mean only = orange. The
strength of the colour follows a fixed scale of the ratio to the threshold (1.0 = at the
threshold, ``SCALE_MAX`` and above = full colour), the same for every image: it is never
normalised per image. The grey radiograph underneath is windowed to its own 0.5-99.5 percentiles
for visibility only. A legend band under the image shows the three colour scales.
"""

from __future__ import annotations

import numpy as np

from core.residual import FLAG_MEAN, FLAG_STD, KERNEL_SIZE

COLOURS = {
    "both": (30, 90, 255),   # blue
    "std": (0, 190, 60),     # green
    "mean": (255, 140, 0),   # orange
}
SCALE_MAX = 3.0  # ratio at which the colour is full
ALPHA_MIN = 0.35  # opacity just above the threshold

_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111",
    "9": "111101111001111", ".": "000000000000010", "+": "000010111010000",
    "a": "000011101101011", "b": "100110101101110", "d": "001011101101011",
    "e": "010101111100011", "h": "100110101101101", "l": "110010010010111",
    "m": "000110111101101", "n": "000110101101101", "o": "000010101101010",
    "r": "000101110100100", "s": "000011110001110", "t": "010111010010011",
    "x": "000000101010101", "i": "010000010010010", "g": "011101011001110",
    "c": "000011100100011", " ": "000000000000000", ":": "000010000010000",
    "u": "000101101101011",
}


def ratio_map(flags: np.ndarray, local_mean: np.ndarray, local_std: np.ndarray,
              mean_threshold: float, std_threshold: float) -> np.ndarray:
    """Largest ratio to its threshold among the tests that fired; 0 where nothing fired."""
    ratio = np.zeros(flags.shape, np.float32)
    fm = (flags & FLAG_MEAN) > 0
    fs = (flags & FLAG_STD) > 0
    ratio[fm] = np.abs(local_mean[fm]) / mean_threshold
    ratio[fs] = np.maximum(ratio[fs], local_std[fs] / std_threshold)
    return ratio


def render_overlay(image: np.ndarray, flags: np.ndarray, local_mean: np.ndarray,
                   local_std: np.ndarray, mean_threshold: float, std_threshold: float, *,
                   kernel_size: int = KERNEL_SIZE, legend: bool = True) -> np.ndarray:
    """RGB uint8 rendering: grey radiograph, flagged kernels coloured by test and ratio.

    Parameters
    ----------
    image : ndarray of shape (M, N), float32 [0, 1]
    flags : ndarray of shape (M, N), uint8 (1 mean, 2 std, 3 both)
    local_mean, local_std : ndarray of shape (M, N)
    mean_threshold, std_threshold : float
    kernel_size : int
        Each flagged kernel is painted over its ``kernel_size`` square (1: centre pixels only);
        where kernels overlap, the colour of the higher bits and the larger ratio is shown.

    Returns
    -------
    rgb : ndarray of shape (M + legend height, N, 3), uint8
    """
    sample = image[::4, ::4]
    lo, hi = np.nanpercentile(sample, [0.5, 99.5]) if sample.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = 0.0, 1.0
    grey = np.clip((image - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if flags.any():
        ratio = ratio_map(flags, local_mean, local_std, mean_threshold, std_threshold)
        if kernel_size > 1:  # paint each flagged kernel's footprint, the strongest on top
            from scipy.ndimage import maximum_filter

            ratio = maximum_filter(ratio, kernel_size, mode="constant")
            flags = maximum_filter(flags, kernel_size, mode="constant")  # both > std > mean
        flagged = flags > 0
        idx = np.nonzero(flagged)
        alpha = strength(ratio[idx])[:, None]
        colour = np.zeros((len(alpha), 3), np.float32)
        bits = flags[idx]
        for name, bit in (("both", 3), ("std", FLAG_STD), ("mean", FLAG_MEAN)):
            colour[bits == bit] = COLOURS[name]
        base = rgb[idx].astype(np.float32)
        rgb[idx] = np.rint(base * (1 - alpha) + colour * alpha).astype(np.uint8)
    if legend:
        rgb = np.concatenate([rgb, legend_band(image.shape[1])], axis=0)
    return rgb


def strength(ratio: np.ndarray) -> np.ndarray:
    """Opacity of a flag colour for a ratio to threshold, on the fixed scale [1, SCALE_MAX]."""
    t = np.clip((np.asarray(ratio, np.float32) - 1.0) / (SCALE_MAX - 1.0), 0.0, 1.0)
    return ALPHA_MIN + (1.0 - ALPHA_MIN) * t


def legend_band(width: int, *, scale: int = 2) -> np.ndarray:
    """The colour scales (ratio to threshold 1.0 .. SCALE_MAX+) for the three tests, as RGB."""
    line = 7 * scale + 4
    band = np.full((5 * line + 4, width, 3), 40, np.uint8)
    _text(band, 3, 4, "colour: ratio to threshold", scale)
    label_w = 6 * 4 * scale
    bar0 = 4 + label_w
    bar1 = max(bar0 + 20, min(width - 4 - 4 * 4 * scale, bar0 + 300))
    ratios = 1.0 + (SCALE_MAX - 1.0) * np.linspace(0, 1, bar1 - bar0)
    alpha = strength(ratios)[:, None]
    for i, name in enumerate(("both", "std", "mean")):
        y = (i + 1) * line + 3
        _text(band, y, 4, name, scale)
        bar = 128 * (1 - alpha) + np.asarray(COLOURS[name], np.float32) * alpha
        band[y:y + 5 * scale, bar0:bar1] = np.rint(bar).astype(np.uint8)[None]
    ticks = 4 * line + 3
    mid = (1.0 + SCALE_MAX) / 2
    _text(band, ticks, bar0, "1.0", scale)
    _text(band, ticks, (bar0 + bar1) // 2 - 6 * scale, f"{mid:.1f}", scale)
    _text(band, ticks, bar1 - 4 * 4 * scale, f"{SCALE_MAX:.1f}+", scale)
    return band


def _text(canvas: np.ndarray, row: int, col: int, text: str, scale: int) -> None:
    """Draw ``text`` in a 3 x 5 pixel font (white), clipped to the canvas."""
    for ch in text:
        glyph = _GLYPHS.get(ch)
        if glyph is not None:
            g = np.array([int(v) for v in glyph], bool).reshape(5, 3)
            g = np.kron(g, np.ones((scale, scale), bool))
            r1 = min(row + g.shape[0], canvas.shape[0])
            c1 = min(col + g.shape[1], canvas.shape[1])
            if r1 > row and c1 > col:
                canvas[row:r1, col:c1][g[:r1 - row, :c1 - col]] = 255
        col += 4 * scale
