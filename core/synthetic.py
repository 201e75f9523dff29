"""Synthetic weld radiographs with exact defect masks (seeded, deterministic).

The generator imitates a digitised film of a butt weld as in GDXray (Mery et al. 2015): bright
means more steel (the weld bead is bright, voids are dark, lead letters are near white). Grey
values are built in [0, 1] and stored as uint16 (``round(v * 65535)``).

How an image is made
--------------------
1. Weld geometry in weld coordinates: ``u`` runs along the weld axis (at ``angle_deg`` to the
   column axis, optionally bent by ``bend_px``), ``d`` is the signed distance across it from the
   centreline, which wanders slowly; the bead half width ``hw(u)`` wanders too.
2. Signal: base plate level with smooth density gradients; the bead's transverse profile (flat
   dome with soft shoulders, zero at ``|d| >= hw``), solidification ripples (chevrons along the
   weld), a faint root line, a slight toe/heat-affected-zone band beside the bead; optional
   ISO 19232-1 wire IQI and lead letters on the base plate, away from the weld.
3. The signal is blurred by the imaging unsharpness (Gaussian, ``BLUR_PX``), a few faint scanner
   streaks are added, then the defects are subtracted (each rendered in its own window and
   blurred with the same PSF).
4. Noise: white Gaussian noise filtered by a Gaussian PSF (``NOISE_PSF_PX``), scaled by a
   signal-dependent standard deviation ``sigma(v) = sigma0 * (0.9 + 0.2 * (1 - v))`` (film
   grain grows with film density; darker = denser).

Defects and their ground truth
------------------------------
A defect's intensity change (after the blur, before noise) is truncated to zero where it is
smaller than ``MASK_LEVEL`` (2 grey levels of 65535, about 1 % of the noise std), so ``mask`` is
exactly the set of pixels where the image differs from the defect-free render of the same seed
(``generate_weld(seed, defects=None, ...)`` uses the same random streams for everything else).

``Defect.contrast`` is the defect's peak intensity change divided by the local noise standard
deviation ``sigma(v)`` at the peak (a pixel-level SNR): about 1-2 is barely visible, 5 is clear
to a careful reader, 20 and more is obvious.

Noise statistics (tuned against GDXray W0001 with docs/scripts/synthetic_vs_real.py; median
[min, max] over 7 real films / 8 generated 800 x 4900 ones; grey in [0, 1]): std of
``image - box9(image)`` on flat bead 0.0038 [0.0031, 0.0048] real, 0.0037 [0.0031, 0.0041]
generated; on flat base plate 0.0037 [0.0023, 0.0050] real, 0.0040 [0.0033, 0.0044] generated;
half-maximum width of that residual's autocorrelation 1.5-1.6 px real, 1.5 px generated.
Generating an 800 x 4900 radiograph takes about 0.8 s of CPU time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

#: ISO 6520-1 types the generator can draw: key -> (reference number, ISO name).
DEFECT_TYPES: dict[str, tuple[str, str]] = {
    "porosity": ("2011", "gas pore"),
    "clustered_porosity": ("2013", "clustered (localized) porosity"),
    "slag_line": ("3011", "linear slag inclusion"),
    "longitudinal_crack": ("1011", "longitudinal crack in the weld metal"),
    "transverse_crack": ("1021", "transverse crack in the weld metal"),
    "lack_of_fusion": ("4011", "lack of side-wall fusion"),
    "lack_of_penetration": ("402", "lack of penetration (incomplete penetration)"),
    "undercut": ("5011", "continuous undercut"),
}
_BY_CODE = {code: key for key, (code, _) in DEFECT_TYPES.items()}
_LINEAR = ("slag_line", "longitudinal_crack", "lack_of_fusion", "lack_of_penetration", "undercut")

FULL_SCALE = 65535
MASK_LEVEL = 2.0 / FULL_SCALE  # a defect changes a pixel when it moves it by >= 2 grey levels
BLUR_PX = 1.2  # imaging unsharpness (Gaussian sigma, pixels)
NOISE_PSF_PX = 1.15  # noise correlation (Gaussian PSF sigma, pixels)
NOISE_SIGMA = 0.0043  # sigma0 of the pixel noise (grey in [0, 1]), times 0.85-1.15 per film
DEFAULT_CONTRAST = (1.5, 50.0)


@dataclass
class Defect:
    """One generated imperfection.

    Attributes
    ----------
    id : int
        Its value in ``SyntheticRadiograph.labels`` (1, 2, ...).
    iso_code : str
        ISO 6520-1 reference number, e.g. ``"2011"``.
    name : str
        ISO 6520-1 name, e.g. ``"gas pore"``.
    bbox : tuple of int
        ``(row0, col0, row1, col1)`` of its mask, end exclusive.
    contrast : float
        Peak intensity change divided by the local noise std (see module docstring).
    kind : str
        The generator's key for the type (``DEFECT_TYPES``), e.g. ``"porosity"``.
    """

    id: int
    iso_code: str
    name: str
    bbox: tuple[int, int, int, int]
    contrast: float
    kind: str = ""


@dataclass
class SyntheticRadiograph:
    """A generated weld radiograph and its ground truth.

    Attributes
    ----------
    image : ndarray of shape (M, N), uint16
        Grey values, full scale 65535, bright = more steel.
    mask : ndarray of shape (M, N), bool
        Defect pixels (where the image differs from the defect-free render).
    labels : ndarray of shape (M, N), int32
        0 = no defect, k = pixel of ``defects[k - 1]``.
    defects : list of Defect
    weld_mask : ndarray of shape (M, N), bool
        The weld bead band (``|d| < hw``); lead letters and the IQI lie outside it.
    pixel_size_um : float
    haz_mask : ndarray of shape (M, N), bool
        The bead band plus the heat-affected zone beside it.
    centreline : ndarray of shape (K, 2), float
        Points (row, col) on the weld centreline, inside the image.
    widths : ndarray of shape (K,), float
        Bead width (pixels) at those points.
    seed : int
    info : dict
        Generator options worth recording (``angle_deg``, ``bend_px``).
    """

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    defects: list[Defect]
    weld_mask: np.ndarray
    pixel_size_um: float
    haz_mask: np.ndarray | None = None
    centreline: np.ndarray | None = None
    widths: np.ndarray | None = None
    seed: int = 0
    info: dict = field(default_factory=dict)

    def region_labels(self) -> np.ndarray:
        """The weld region as a label map, as ``core.roi.WeldROI.labels`` gives it: 0 outside,
        1 on the bead, 2 in the heat-affected zone (uint8; the bead alone without ``haz_mask``)."""
        from core.roi import BEAD, HAZ

        out = np.where(self.weld_mask, np.uint8(BEAD), np.uint8(0))
        if self.haz_mask is not None:
            out[self.haz_mask & ~self.weld_mask] = HAZ
        return out


# --- geometry ----------------------------------------------------------------------------------

@dataclass
class _Geometry:
    shape: tuple[int, int]
    angle: float  # radians
    rc: float
    cc: float
    u_grid: np.ndarray  # 1-D samples of u
    centre: np.ndarray  # centreline offset at u_grid
    half: np.ndarray  # (2, K) bead half width at u_grid on the d < 0 and d >= 0 sides
    u: np.ndarray  # (M, N) float32
    d: np.ndarray  # (M, N) float32, signed distance from the centreline
    hw: np.ndarray  # (M, N) float32

    def to_rc(self, u, d):
        """Weld coordinates to (row, col) (``d`` measured across the straight axis)."""
        w = np.asarray(d, float) + np.interp(u, self.u_grid, self.centre)
        s, c = np.sin(self.angle), np.cos(self.angle)
        return self.rc + w * c - np.asarray(u) * s, self.cc + w * s + np.asarray(u) * c


def _smooth_curve(rng, n, scale):
    """1-D smooth random curve of length n, unit std, correlation length ``scale`` samples."""
    x = ndi.gaussian_filter1d(rng.standard_normal(n + 6 * int(scale) + 2), scale, mode="wrap")
    x = x[3 * int(scale): 3 * int(scale) + n]
    return (x - x.mean()) / (x.std() + 1e-12)


def _geometry(rng, shape, mm, angle_deg, bend_px):
    m, n = shape
    angle = np.deg2rad(angle_deg)
    rc, cc = (m - 1) / 2.0, (n - 1) / 2.0
    reach = 0.5 * np.hypot(m, n) + 8
    u_grid = np.arange(-reach, reach + 1.0, 1.0)
    span = max(u_grid.size, 2)
    width = min(rng.uniform(8.0, 15.0) * mm, 0.45 * m)  # full bead width, pixels
    wander = min(rng.uniform(0.2, 0.8) * mm, 0.03 * m)
    centre = wander * _smooth_curve(rng, span, rng.uniform(25, 60) * mm)
    centre += bend_px * (u_grid / (n / 2.0)) ** 2  # sagitta bend_px at the image ends
    centre -= np.interp(0.0, u_grid, centre)  # the centreline passes through the image centre
    common = rng.uniform(0.03, 0.08) * _smooth_curve(rng, span, rng.uniform(15, 40) * mm)
    half = np.stack([  # the two edges wander a little on their own
        0.5 * width * (1 + common + rng.uniform(0.01, 0.04) * _smooth_curve(rng, span, 4 * mm))
        for _ in range(2)
    ])
    rows, cols = np.mgrid[0:m, 0:n].astype(np.float32)
    s, c = np.float32(np.sin(angle)), np.float32(np.cos(angle))
    dr, dc = rows - np.float32(rc), cols - np.float32(cc)
    u = (-dr * s + dc * c).astype(np.float32)
    w = (dr * c + dc * s).astype(np.float32)
    d = w - np.interp(u, u_grid, centre).astype(np.float32)
    hw = np.where(d < 0, np.interp(u, u_grid, half[0]), np.interp(u, u_grid, half[1]))
    hw = hw.astype(np.float32)
    return _Geometry(shape, angle, rc, cc, u_grid, centre, half, u, d, hw)


# --- the defect-free signal --------------------------------------------------------------------

def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _smooth_field(rng, shape, cells):
    """Smooth random field of about unit std with about ``cells`` blobs along the long side.

    Random values on a coarse grid, interpolated with normalised Gaussian weights (two small
    matrix products, much faster than ``ndi.zoom`` on a full radiograph).
    """
    m, n = shape
    spacing = max(m, n) / max(2.0, float(cells))

    def weights(size):
        k = int(np.ceil(size / spacing)) + 3
        nodes = (np.arange(k) - 1.0) * spacing
        w = np.exp(-0.5 * ((np.arange(size)[:, None] - nodes[None, :]) / (0.6 * spacing)) ** 2)
        return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)

    wr, wc = weights(m), weights(n)
    coarse = rng.standard_normal((wr.shape[1], wc.shape[1])).astype(np.float32)
    out = (wr @ coarse) @ wc.T
    return out / np.float32(out.std() + 1e-12)


def _signal(rng, geo, mm):
    """Defect-free grey values (before blur and noise), the weld and HAZ masks, and levels."""
    m, n = geo.shape
    u, d, hw = geo.u, geo.d, geo.hw
    t = np.abs(d) / hw
    base = rng.uniform(0.14, 0.34)
    bead = rng.uniform(0.28, 0.5)
    v = np.full((m, n), base, np.float32)
    v += np.float32(rng.uniform(0.015, 0.04)) * _smooth_field(rng, (m, n), rng.uniform(3, 7))
    ramp = rng.uniform(-0.05, 0.05)
    v += np.float32(ramp) * (u / max(n, 1)).astype(np.float32)
    # bead: flat dome with soft shoulders, exactly 0 outside |d| < hw
    edge = rng.uniform(0.3, 0.6)
    dome = rng.uniform(0.05, 0.25)
    lam = rng.uniform(1.2, 3.5) * mm  # ripple pitch
    bow = rng.uniform(0.5, 1.5)
    phase = (2 * np.pi / lam) * (u + bow * hw * t * t)
    ripple = (0.5 + 0.5 * np.cos(phase)) ** 3
    ts = t * (1 + rng.uniform(0.0, 0.03) * (ripple - 0.3))  # scalloped bead edges
    profile = _smoothstep((1.0 - ts) / edge) * (1.0 - dome * np.minimum(ts, 1.0) ** 2)
    lumps = _smooth_field(rng, (m, n), n / (rng.uniform(3, 8) * mm))
    profile *= 1 + np.float32(rng.uniform(0.02, 0.08)) * lumps
    along = 1 + rng.uniform(0.03, 0.08) * np.interp(
        u, geo.u_grid, _smooth_curve(rng, geo.u_grid.size, rng.uniform(8, 25) * mm))
    v += (bead * profile * along).astype(np.float32)
    # ripples: chevrons (solidification fronts) along the weld
    amp = rng.uniform(0.003, 0.03)
    jitter = 0.5 + 0.5 * np.interp(u, geo.u_grid, _smooth_curve(rng, geo.u_grid.size, 6 * mm))
    v += (amp * profile * jitter * ripple).astype(np.float32)
    # root line along the centre
    v += np.float32(rng.uniform(-0.02, 0.03)) * np.exp(-((d / (0.12 * hw)) ** 2)) * profile
    # toe / heat-affected zone band beside the bead
    haz_w = rng.uniform(0.25, 0.5)
    haz = _smoothstep((t - 1.0) / 0.08) * _smoothstep((1.0 + haz_w - t) / (0.5 * haz_w))
    v += np.float32(rng.uniform(-0.03, 0.01)) * haz.astype(np.float32)
    weld_mask = profile > 0
    haz_mask = t < 1.0 + haz_w
    return v, weld_mask, haz_mask, base


# --- IQI and lead letters ----------------------------------------------------------------------

_FONT = {  # 5 x 7 bitmaps
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    "F": "11111 10000 10000 11110 10000 10000 10000", "E": "11111 10000 10000 11110 10000 10000 11111",
    "D": "11100 10010 10001 10001 10001 10010 11100", "I": "01110 00100 00100 00100 00100 00100 01110",
    "N": "10001 11001 10101 10011 10001 10001 10001", "W": "10001 10001 10001 10101 10101 10101 01010",
    "R": "11110 10001 10001 11110 10100 10010 10001", "T": "11111 00100 00100 00100 00100 00100 00100",
    " ": "00000 00000 00000 00000 00000 00000 00000",
}


def _text_bitmap(text, cell):
    glyphs = [np.array([[c == "1" for c in row] for row in _FONT[ch].split()]) for ch in text]
    gap = np.zeros((7, 1), bool)
    bits = np.concatenate([x for g in glyphs for x in (g, gap)][:-1], axis=1)
    return np.kron(bits, np.ones((cell, cell), bool))


def _free_box(geo, forbidden, h, w, rng, margin):
    """Top-left corner of an h x w box inside the image that avoids ``forbidden``; or None."""
    m, n = geo.shape
    if h + 2 * margin >= m or w + 2 * margin >= n:
        return None
    for _ in range(60):
        r0 = int(rng.integers(margin, m - h - margin))
        c0 = int(rng.integers(margin, n - w - margin))
        if not forbidden[r0:r0 + h, c0:c0 + w].any():
            return r0, c0
    return None


def _add_markers(v, rng, geo, forbidden, mm, iqi, markers):
    """Add lead letters and a wire IQI on the base plate; return the occupied mask."""
    occupied = np.zeros(geo.shape, bool)
    margin = max(4, int(0.5 * mm))
    if iqi:
        # ISO 19232-1 W10-W16 wires (0.40 ... 0.10 mm), steel, across the free base plate band
        length = int(min(12 * mm, 0.25 * geo.shape[1]))
        diam = np.array([0.40, 0.32, 0.25, 0.20, 0.16, 0.125, 0.10]) * mm
        pitch = max(3.0, 0.6 * mm)
        height = int(7 * pitch + 2)
        box = _free_box(geo, forbidden | occupied, height, length, rng, margin)
        if box is not None:
            r0, c0 = box
            rr = np.arange(height, dtype=np.float32)[:, None]
            gain = rng.uniform(0.6, 1.2)  # grey per mm of steel
            wires = np.zeros((height, 1), np.float32)
            for k, dk in enumerate(diam):
                x = (rr - (k + 0.5) * pitch) / (dk / 2.0)
                wires += (gain * dk / mm * np.sqrt(np.clip(1 - x * x, 0, None))).astype(np.float32)
            v[r0:r0 + height, c0:c0 + length] += wires
            v[r0:r0 + height, c0:c0 + length] += np.float32(0.01)  # the plastic holder
            occupied[r0:r0 + height, c0:c0 + length] = True
    if markers:
        texts = ["10 FE DIN", str(int(rng.integers(1, 99))), "W" + str(int(rng.integers(1, 9)))]
        for text in texts:
            cell = max(2, int(round(rng.uniform(0.45, 0.7) * mm)))
            box = None
            while box is None and cell >= 2:  # smaller letters where the plate band is narrow
                bits = _text_bitmap(text, cell)
                h, w = bits.shape
                box = _free_box(geo, forbidden | occupied, h + 2 * cell, w + 2 * cell, rng, margin)
                cell = cell if box is not None else int(cell * 0.75)
            if box is None:
                continue
            r0, c0 = box
            plate = np.zeros((h + 2 * cell, w + 2 * cell), np.float32)
            plate[cell:cell + h, cell:cell + w] = bits
            plate = ndi.gaussian_filter(plate, 0.3 * cell)  # rounded strokes of a cast letter
            level = rng.uniform(0.86, 0.94)
            window = v[r0:r0 + plate.shape[0], c0:c0 + plate.shape[1]]
            window += (level - window) * plate + np.float32(0.015)  # letter and its tape
            occupied[r0:r0 + plate.shape[0], c0:c0 + plate.shape[1]] = True
    return occupied


# --- defects -----------------------------------------------------------------------------------

def _taper(s, ends):
    """1 in the middle of [0, 1], falling smoothly to 0 over ``ends`` at both ends."""
    return _smoothstep(s / ends) * _smoothstep((1 - s) / ends)


def _path(rng, n, step, smooth):
    walk = np.cumsum(rng.normal(0, step, n))
    if smooth:
        walk = ndi.gaussian_filter1d(walk, smooth, mode="nearest")
    return walk - walk[0]


def _defect_shape(kind, rng, geo, mm, u0):
    """A defect as a function of weld coordinates.

    Returns ``(support, profile)``: ``support`` lists (u, d) points spanning the defect (for its
    window) and ``profile(u, d, hw)`` gives its relative depth (peak about 1, 0 far away).
    """
    hw0 = float(np.interp(u0, geo.u_grid, geo.half.min(axis=0)))
    if kind == "porosity":
        r = (0.15 + (min(1.0, 0.25 * hw0 / mm) - 0.15) * rng.uniform() ** 2) * mm
        el = rng.uniform(1.0, 1.6)
        d0 = rng.uniform(-0.5, 0.5) * hw0

        def profile(u, d, hw):
            rho2 = ((u - u0) / (el * r)) ** 2 + ((d - d0) / r) ** 2
            return np.sqrt(np.clip(1 - rho2, 0, None))

        return [(u0 + a * el * r, d0 + b * r) for a in (-1, 1) for b in (-1, 1)], profile
    if kind == "clustered_porosity":
        k = int(rng.integers(6, 18))
        ext_u, ext_d = rng.uniform(1.5, 4.0) * mm, rng.uniform(0.2, 0.45) * hw0
        d0 = rng.uniform(-0.3, 0.3) * hw0
        pu = u0 + rng.uniform(-1, 1, k) * ext_u
        pd = d0 + rng.uniform(-1, 1, k) * ext_d
        pr = rng.uniform(0.08, 0.3, k) * mm
        depth = rng.uniform(0.5, 1.0, k)

        def profile(u, d, hw):
            out = np.zeros(np.shape(u), np.float32)
            for a, b, r, z in zip(pu, pd, pr, depth):
                rho2 = ((u - a) ** 2 + (d - b) ** 2) / r**2
                out = np.maximum(out, z * np.sqrt(np.clip(1 - rho2, 0, None)))
            return out

        pts = [(a + sa * r, b + sb * r)
               for a, b, r in zip(pu, pd, pr) for sa in (-1, 1) for sb in (-1, 1)]
        return pts, profile
    if kind in _LINEAR:
        length = {"slag_line": (4, 20), "longitudinal_crack": (3, 14), "lack_of_fusion": (5, 25),
                  "lack_of_penetration": (8, 35), "undercut": (8, 35)}[kind]
        length = min(rng.uniform(*length) * mm, 0.6 * (geo.u_grid[-1] - geo.u_grid[0]))
        n = int(length) + 1
        uu = u0 - length / 2 + np.arange(n, dtype=float)
        s = np.linspace(0, 1, n)
        side = rng.choice([-1.0, 1.0])
        if kind == "slag_line":
            half = rng.uniform(0.15, 0.5) * mm
            half = half * (0.6 + 0.4 * np.abs(_smooth_curve(rng, n, 0.8 * mm)))
            dc = rng.uniform(-0.45, 0.45) * hw0 + _path(rng, n, 0.08 * mm, 0.6 * mm)
            amp = _taper(s, 0.12) * (0.6 + 0.4 * np.abs(_smooth_curve(rng, n, 0.5 * mm)))
            sharp = 0.5
        elif kind == "longitudinal_crack":
            half = np.full(n, rng.uniform(0.6, 1.4))
            dc = rng.uniform(-0.4, 0.4) * hw0 + _path(rng, n, 0.35, 1.0)
            amp = _taper(s, 0.3) * (0.5 + 0.5 * np.abs(_smooth_curve(rng, n, 0.3 * mm)))
            sharp = 0.0
        elif kind == "lack_of_fusion":
            half = np.full(n, rng.uniform(1.5, 3.5))
            dc = side * rng.uniform(0.55, 0.8) * hw0 + _path(rng, n, 0.05, 2.0)
            amp = _taper(s, 0.1) * (0.75 + 0.25 * _smooth_curve(rng, n, 1.0 * mm).clip(-1, 1))
            sharp = 0.0
        elif kind == "lack_of_penetration":
            half = np.full(n, rng.uniform(0.1, 0.3) * mm)
            half = half * (1 + 0.1 * _smooth_curve(rng, n, 2 * mm))
            dc = rng.uniform(-0.06, 0.06) * hw0 + _path(rng, n, 0.03, 3.0)
            amp = _taper(s, 0.05) * (0.85 + 0.15 * _smooth_curve(rng, n, 1.5 * mm).clip(-1, 1))
            sharp = 0.8
        else:  # undercut, a groove inside the bead edge
            half = np.full(n, rng.uniform(0.25, 0.5) * mm)
            hw_here = np.interp(uu, geo.u_grid, geo.half[int(side > 0)])
            dc = side * (hw_here - half - 4 * BLUR_PX)
            amp = _taper(s, 0.1) * (0.6 + 0.4 * np.abs(_smooth_curve(rng, n, 3 * mm)))
            sharp = -1.0

        def profile(u, d, hw):
            i = np.clip(u - uu[0], 0, n - 1)
            a = np.interp(i, np.arange(n), amp) * ((u >= uu[0]) & (u <= uu[-1]))
            x = (d - np.interp(i, np.arange(n), dc)) / np.interp(i, np.arange(n), half)
            if kind == "lack_of_fusion":  # sharp outer edge (the side wall), soft inner edge
                x = np.where(x * side > 0, x * 2.5, x)
            if sharp > 0:  # flat top with steep edges
                p = _smoothstep((1 - np.abs(x)) / (1 - sharp + 1e-3))
            elif sharp < 0:  # rounded groove
                p = np.cos(0.5 * np.pi * np.clip(np.abs(x), 0, 1)) ** 2
            else:
                p = np.exp(-(x * x)) * (np.abs(x) < 4)
            return a * p

        reach = 4 * half.max()
        pts = [(a, b) for a, b in zip(uu, dc - reach)] + [(a, b) for a, b in zip(uu, dc + reach)]
        return pts, profile
    if kind == "transverse_crack":
        d_lo, d_hi = sorted(rng.uniform(-0.8, 0.8, 2) * hw0)
        if d_hi - d_lo < 0.4 * hw0:
            d_lo, d_hi = -0.45 * hw0 + d_lo * 0.2, 0.45 * hw0 + d_hi * 0.2
        n = int(d_hi - d_lo) + 1
        dd = d_lo + np.arange(n, dtype=float)
        uc = u0 + _path(rng, n, 0.35, 1.0)
        half = rng.uniform(0.6, 1.3)
        amp = _taper(np.linspace(0, 1, n), 0.3)
        amp = amp * (0.5 + 0.5 * np.abs(_smooth_curve(rng, n, 0.3 * mm)))

        def profile(u, d, hw):
            i = np.clip(d - dd[0], 0, n - 1)
            a = np.interp(i, np.arange(n), amp) * ((d >= dd[0]) & (d <= dd[-1]))
            x = (u - np.interp(i, np.arange(n), uc)) / half
            return a * np.exp(-(x * x)) * (np.abs(x) < 4)

        reach = 4 * half
        pts = [(a - reach, b) for a, b in zip(uc, dd)] + [(a + reach, b) for a, b in zip(uc, dd)]
        return pts, profile
    raise ValueError(f"unknown defect type {kind!r}; use one of {sorted(DEFECT_TYPES)}")


def _resolve_types(defects, rng):
    if defects is None:
        return []
    if isinstance(defects, str):
        if defects != "random":
            raise ValueError(f"defects={defects!r}: use 'random', None or a list of type names")
        keys = sorted(DEFECT_TYPES)
        return list(rng.choice(keys, size=int(rng.integers(1, 6))))
    kinds = []
    for item in defects:
        key = _BY_CODE.get(str(item), str(item))
        if key not in DEFECT_TYPES:
            raise ValueError(f"unknown defect type {item!r}; use one of {sorted(DEFECT_TYPES)} "
                             f"or an ISO code {sorted(_BY_CODE)}")
        kinds.append(key)
    return kinds


def _sigma(v, sigma0=NOISE_SIGMA):
    return sigma0 * (0.9 + 0.2 * (1.0 - v))


def _render_defects(kinds, rng, geo, v_clean, weld_mask, mm, contrast_range, strict, sigma0):
    """Subtract the defects from ``v_clean`` in place; return (labels, defects)."""
    m, n = geo.shape
    labels = np.zeros((m, n), np.int32)
    taken = np.zeros((m, n), bool)
    found = []
    # u range of the weld inside the image, keeping clear of the ends
    inside = np.abs(geo.u[weld_mask]) if weld_mask.any() else np.array([0.0])
    u_lim = max(0.0, float(np.percentile(inside, 99)) - 3 * mm)
    lo, hi = np.log(contrast_range[0]), np.log(contrast_range[1])
    for kind in kinds:
        for _attempt in range(40):
            u0 = rng.uniform(-u_lim, u_lim)
            pts, profile = _defect_shape(kind, rng, geo, mm, u0)
            contrast = float(np.exp(rng.uniform(lo, hi)))
            pu, pd = np.array(pts).T
            r, c = geo.to_rc(pu, pd)
            pad = int(np.ceil(6 * BLUR_PX)) + 6
            r0, r1 = int(np.floor(r.min())) - pad, int(np.ceil(r.max())) + pad + 1
            c0, c1 = int(np.floor(c.min())) - pad, int(np.ceil(c.max())) + pad + 1
            if r0 < 0 or c0 < 0 or r1 > m or c1 > n:
                continue
            win = (slice(r0, r1), slice(c0, c1))
            p = profile(geo.u[win], geo.d[win], geo.hw[win]).astype(np.float32)
            p = ndi.gaussian_filter(p, BLUR_PX, mode="constant", truncate=6.0)
            peak = float(p.max())
            if peak <= 0:
                continue
            ip = np.unravel_index(int(np.argmax(p)), p.shape)
            sig = float(_sigma(v_clean[win][ip], sigma0))
            amp = min(contrast * sig, float(v_clean[win].min()) - 0.03)  # never clip at black
            delta = p * np.float32(amp / peak)
            delta[delta < MASK_LEVEL] = 0
            own = delta > 0
            edge = np.concatenate([own[0], own[-1], own[:, 0], own[:, -1]])
            if edge.any() or not own.any():
                continue
            near = ndi.binary_dilation(taken[win], iterations=6)  # keep defects apart
            if (own & ~weld_mask[win]).any() or (own & near).any():
                continue
            k = len(found) + 1
            v_clean[win] -= delta
            labels[win][own] = k
            taken[win] |= own
            rows, cols = np.nonzero(own)
            bbox = (r0 + int(rows.min()), c0 + int(cols.min()),
                    r0 + int(rows.max()) + 1, c0 + int(cols.max()) + 1)
            code, name = DEFECT_TYPES[kind]
            found.append(Defect(k, code, name, bbox, round(float(delta.max()) / sig, 3), str(kind)))
            break
        else:
            if strict:
                raise ValueError(f"could not place a {kind!r} defect in a {m} x {n} image at "
                                 f"{1000.0 / mm:.1f} um per pixel; use a larger shape")
    return labels, found


# --- public API --------------------------------------------------------------------------------

def generate_weld(
    seed: int,
    *,
    shape: tuple[int, int] = (800, 4900),
    pixel_size_um: float = 40.0,
    defects="random",
    iqi: bool = True,
    markers: bool = True,
    angle_deg: float = 0.0,
    bend_px: float = 0.0,
    contrast_range: tuple[float, float] = DEFAULT_CONTRAST,
) -> SyntheticRadiograph:
    """Generate a weld radiograph with exact defect ground truth.

    Parameters
    ----------
    seed : int
        Everything is drawn from ``np.random.default_rng`` streams spawned from this seed; the
        same arguments give the same bytes. The defect-free parts do not depend on ``defects``.
    shape : tuple of int
        ``(rows, cols)``; the weld runs along the columns by default.
    pixel_size_um : float
        Pixel size; bead width, defect sizes, letters and IQI wires are set in millimetres.
    defects : "random", list of str, or None
        ``"random"``: 1-5 defects of random types; a list: one defect per entry, given as a key of
        ``DEFECT_TYPES`` (e.g. ``"porosity"``) or an ISO 6520 code (e.g. ``"2011"``); None: clean.
    iqi, markers : bool
        Add a wire IQI / lead letters on the base plate (outside ``weld_mask``) where they fit.
    angle_deg : float
        Weld direction, degrees counter-clockwise from the column axis.
    bend_px : float
        Gentle curvature: the centreline's offset at the image ends relative to the middle.
    contrast_range : tuple of float
        Defect contrasts (peak change / local noise std) are drawn log-uniformly in this range.

    Returns
    -------
    SyntheticRadiograph

    Raises
    ------
    ValueError
        For an unknown type, a too small shape, or when a listed defect cannot be placed.
    """
    m, n = (int(x) for x in shape)
    if m < 64 or n < 64:
        raise ValueError(f"shape {shape} is too small; use at least 64 x 64 (e.g. (800, 4900))")
    if not pixel_size_um > 0:
        raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um}")
    lo, hi = contrast_range
    if not 0 < lo <= hi:
        raise ValueError(f"contrast_range {contrast_range} must satisfy 0 < low <= high")
    mm = 1000.0 / pixel_size_um  # pixels per millimetre
    streams = np.random.SeedSequence(int(seed)).spawn(6)
    g_geo, g_sig, g_mark, g_scan, g_noise, g_def = (np.random.default_rng(s) for s in streams)

    geo = _geometry(g_geo, (m, n), mm, angle_deg, bend_px)
    v, weld_mask, haz_mask, _ = _signal(g_sig, geo, mm)
    forbidden = ndi.binary_dilation(haz_mask, iterations=max(2, int(0.5 * mm)))
    _add_markers(v, g_mark, geo, forbidden, mm, iqi, markers)
    v = ndi.gaussian_filter(v, BLUR_PX, mode="nearest")
    # scanner streaks: faint columns (or rows) across the whole film
    for _ in range(int(g_scan.integers(0, 4))):
        col, width = int(g_scan.integers(0, n)), g_scan.uniform(0.8, 2.0)
        cols = np.arange(n, dtype=np.float32)
        streak = np.exp(-(((cols - col) / width) ** 2))[None, :]
        v += np.float32(g_scan.uniform(0.002, 0.008)) * streak
    np.clip(v, 0.05, 0.97, out=v)

    sigma0 = NOISE_SIGMA * g_noise.uniform(0.85, 1.15)
    kinds = _resolve_types(defects, g_def)
    labels, found = _render_defects(kinds, g_def, geo, v, weld_mask, mm, (lo, hi),
                                    strict=not isinstance(defects, str), sigma0=sigma0)

    white = g_noise.standard_normal((m, n), dtype=np.float32)
    grain = ndi.gaussian_filter(white, NOISE_PSF_PX, mode="wrap")
    kernel = _gauss_kernel(NOISE_PSF_PX)
    grain *= np.float32(1.0 / np.sum(kernel**2))  # unit std (2-D separable kernel)
    image = np.clip(v + _sigma(v, sigma0) * grain, 0.0, 1.0)
    image = np.rint(image * FULL_SCALE).astype(np.uint16)

    step = max(1, n // 64)
    uu = np.arange(geo.u_grid[0], geo.u_grid[-1], step)
    rr, cc = geo.to_rc(uu, np.zeros_like(uu))
    keep = (rr >= 0) & (rr <= m - 1) & (cc >= 0) & (cc <= n - 1)
    return SyntheticRadiograph(
        image=image, mask=labels > 0, labels=labels, defects=found, weld_mask=weld_mask,
        pixel_size_um=float(pixel_size_um), haz_mask=haz_mask,
        centreline=np.stack([rr[keep], cc[keep]], axis=1),
        widths=np.interp(uu[keep], geo.u_grid, geo.half.sum(axis=0)), seed=int(seed),
        info={"angle_deg": float(angle_deg), "bend_px": float(bend_px)},
    )


def _gauss_kernel(sigma, truncate=4.0):
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def write_radiograph(path, radiograph: SyntheticRadiograph) -> Path:
    """Write ``path`` (16-bit TIFF, deflate) with ``<stem>_mask.png`` and ``<stem>_defects.json``.

    The TIFF stores the pixel size in its resolution tags (pixels per centimetre) and declares
    ``MaxSampleValue`` 65535, so readers divide by the 16-bit full scale. The mask PNG is 8-bit,
    255 = defect pixel. The JSON lists the defects (ISO code, name, bbox, contrast).

    Returns
    -------
    Path
        The TIFF path.
    """
    import tifffile

    from core.imageio import write_png

    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"{path}: write_radiograph writes TIFF; use a .tif or .tiff name")
    image = np.ascontiguousarray(radiograph.image)
    if image.dtype != np.uint16 or image.ndim != 2:
        raise ValueError("radiograph.image must be a 2-D uint16 array")
    per_cm = 1e4 / radiograph.pixel_size_um
    info = {"generator": "weldreview core.synthetic", "seed": radiograph.seed,
            "pixel_size_um": radiograph.pixel_size_um}
    tifffile.imwrite(
        path, image, compression="zlib", predictor=True, photometric="minisblack",
        resolution=(per_cm, per_cm), resolutionunit="CENTIMETER",
        description=json.dumps(info), metadata=None, software="weldreview",
        extratags=[(281, "H", 1, FULL_SCALE, True)],  # MaxSampleValue
    )
    write_png(path.with_name(path.stem + "_mask.png"), radiograph.mask.astype(np.uint8) * 255)
    path.with_name(path.stem + "_defects.json").write_text(json.dumps(
        {"pixel_size_um": radiograph.pixel_size_um, "seed": radiograph.seed,
         "defects": [{"id": d.id, "iso_code": d.iso_code, "name": d.name, "kind": d.kind,
                      "bbox": list(d.bbox), "contrast": d.contrast} for d in radiograph.defects]},
        indent=1) + "\n")
    return path


# --- measuring noise (to compare with real radiographs) ----------------------------------------

@dataclass
class NoiseStats:
    """Noise measured on flat tiles of a region.

    Attributes
    ----------
    residual_std : float
        Median over tiles of the std of ``image - box(image)`` (grey in [0, 1]).
    acf_width_px : float
        Lag (pixels) at which the residual's autocorrelation falls to one half, mean of the row
        and column directions.
    level : float
        Median grey value of the tiles.
    n_tiles : int
    """

    residual_std: float
    acf_width_px: float
    level: float
    n_tiles: int


def noise_statistics(image, region, *, box=9, tile=32) -> NoiseStats:
    """Measure the noise of ``image`` on the tiles that lie inside ``region``.

    Parameters
    ----------
    image : ndarray of shape (M, N), float
        Grey values in [0, 1].
    region : ndarray of shape (M, N), bool
        Where to measure (e.g. flat base plate, or the bead without defects); it is eroded by
        ``box`` pixels and only whole ``tile`` x ``tile`` tiles inside it are used.

    Returns
    -------
    NoiseStats

    Raises
    ------
    ValueError
        When no tile fits inside the region.
    """
    image = np.asarray(image, np.float32)
    if image.shape != np.shape(region):
        raise ValueError(f"image {image.shape} and region {np.shape(region)} differ in shape")
    residual = image - ndi.uniform_filter(image, box, mode="reflect")
    inner = ndi.binary_erosion(region, iterations=box)
    m, n = image.shape
    stds, levels, acf = [], [], np.zeros((2 * tile, 2 * tile))
    for i in range(0, m - tile + 1, tile):
        for j in range(0, n - tile + 1, tile):
            if not inner[i:i + tile, j:j + tile].all():
                continue
            t = residual[i:i + tile, j:j + tile].astype(np.float64)
            t -= t.mean()
            stds.append(t.std())
            levels.append(float(image[i:i + tile, j:j + tile].mean()))
            power = np.abs(np.fft.fft2(t, s=(2 * tile, 2 * tile))) ** 2
            a = np.fft.ifft2(power).real
            acf += a / a[0, 0]
    if not stds:
        raise ValueError(f"no {tile} x {tile} tile lies inside the region; pass a larger region")
    acf /= len(stds)

    def half_width(profile):
        k = int(np.argmax(profile < 0.5))
        return k - 1 + (profile[k - 1] - 0.5) / (profile[k - 1] - profile[k])

    width = 0.5 * (half_width(acf[:, 0]) + half_width(acf[0, :]))
    return NoiseStats(float(np.median(stds)), float(width), float(np.median(levels)), len(stds))
