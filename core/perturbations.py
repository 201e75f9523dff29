"""Perturbation sets of Section 3.3 (Lindgren and Zach 2022): real defects, SNI, synthetic anomalies.

Every source follows one protocol::

    delta, weight = source.sample(rng, n)      # float32, shape (n, 192, 192) each
    x_per = apply_perturbation(x_ok, delta, weight)   # x_ok + W * delta, Equation (2)

``weight`` is the binary W of Equation (2) (1 on pixels that belong to the indication).

Real defects (``RealDefectPerturbations``)
    The defect mask is split into regions by 2-connectivity (8-neighbour) labelling
    (``skimage.measure.label``); from every region the mean grey value over its 1 px border ring
    (the 8-neighbour dilation minus the region, inside the image) is subtracted. Patches are cut
    from these contrast maps with the sampler's geometry (random translation, rotation, 90-degree
    turns, flips) so that defect pixels fall inside the 156 x 156 aperture; W is the region mask.

Synthetic natural image indications (``SNIPerturbations``)
    U{1..4} regions per sample, each of U{10..8000} pixels grown by a random walk from a seed in
    the aperture: each step is -1, 0 or +1 px in both rows and columns; in one randomly chosen
    dimension the 0-step has probability e / (e + 2) with the elongation e ~ U(1, 40) (the other
    steps 1 / (e + 2) each), in the other dimension all three are equally likely. The walk
    reflects at the patch border and stops when the region has its number of distinct pixels.
    The grey values inside the region are those of a random natural image (grey, [0, 1], scaled
    so that its shorter side is 200 px like the paper's ~200 x 200 images) at the same position
    of a random 192 x 192 crop, multiplied by the region's scale s ~ U(0.05, 0.2) (so the
    region's values lie in [0, s]). Each region is then smoothed with, equally likely, a Gaussian
    PSF (sigma ~ U(2, 9) px) or a Lorentzian PSF (scale = half width at half maximum
    ~ U(0.15, 0.4) px; the isotropic 2-D Cauchy PSF, whose line-spread function is the Lorentzian
    of that HWHM, integrated exactly over each pixel). Regions are summed.

Synthetic anomalies (``SyntheticAnomalies``)
    The six types of Section 3.3. ``amplitude`` is the grey value of the shape *before* the
    Gaussian PSF (sigma 9 px), as in the paper; the PSF lowers the peak of small shapes a lot (an
    elongated inclusion of amplitude 0.2 peaks near 0.04 after smoothing). Each is rotated by
    U(0, 360) degrees and placed at a random position with the whole unsmoothed shape inside the
    aperture.

``CachedPerturbations(source)`` serves any source from a refreshed bank (turned and flipped
entries plus a fraction of fresh draws) when drawing fresh samples is too slow for training;
the paper itself drew a fixed SNI set of 112,000 samples.

For SNI and the synthetic anomalies the smoothed indication extends beyond the drawn shape; W is
where ``|delta|`` reaches 1 % of the sample's peak, and ``delta`` is zero outside W, so that
``x_ok + W * delta`` keeps the smooth flanks the PSF produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

from core.model import APERTURE, OFFSET, PATCH
from core.sampler import PatchSampler, extract

SUPPORT_FRACTION = 0.01  # W = |delta| >= 1 % of the peak for smoothed indications
NATURAL_SIDE = 200  # natural images are scaled to this shorter side (the paper's ~200 x 200 px)
LORENTZ_RADIUS = 12  # px; the Lorentzian PSF kernel is truncated here and renormalised

# Photographs and micrographs that ship inside the scikit-image wheel (skimage/data/*.png|jpg);
# read straight from the package folder, so nothing is ever downloaded. Drawings, test charts
# and silhouettes (chessboard, color, logo, horse, phantom) are left out.
BUNDLED_NATURAL = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
    "moon.png", "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)


def apply_perturbation(x_ok, delta, weight):
    """Return ``x_ok + weight * delta`` (Equation 2) as float32; no clipping.

    Parameters
    ----------
    x_ok : ndarray of shape (n, 192, 192) or (192, 192)
    delta, weight : ndarray of the same shape
    """
    x_ok, delta, weight = (np.asarray(a, np.float32) for a in (x_ok, delta, weight))
    if not x_ok.shape == delta.shape == weight.shape:
        raise ValueError(f"shapes differ: x_ok {x_ok.shape}, delta {delta.shape}, weight {weight.shape}")
    return x_ok + weight * delta


def _support(delta):
    """W and the masked delta for smoothed indications (see the module docstring)."""
    peak = np.abs(delta).max()
    weight = (np.abs(delta) >= SUPPORT_FRACTION * peak) if peak > 0 else np.zeros(delta.shape, bool)
    return np.where(weight, delta, 0).astype(np.float32), weight.astype(np.float32)


# -- real defects ------------------------------------------------------------------------------
def label_regions(mask):
    """Label defect regions with 2-connectivity (8 neighbours); 0 = background.

    Returns int16 labels when there are fewer than 32767 regions (memory), else int32.
    """
    from skimage.measure import label

    labels = label(np.asarray(mask, bool), connectivity=2)
    return labels.astype(np.int16 if labels.max() < np.iinfo(np.int16).max else np.int32)


def border_ring_means(image, labels):
    """Mean grey value over each region's 1 px border ring.

    The ring is the 8-neighbour dilation of the region minus the region, clipped to the image.
    Rings of different regions may share pixels (two regions two pixels apart).

    Parameters
    ----------
    image : ndarray of shape (M, N)
    labels : ndarray of int, shape (M, N)
        From :func:`label_regions`.

    Returns
    -------
    means : ndarray of float32, shape (labels.max() + 1,)
        ``means[k]`` for region k; ``means[0] = 0``. A region without ring pixels (it fills the
        image) gets 0.
    """
    means = np.zeros(int(labels.max()) + 1, np.float32)
    square = np.ones((3, 3), bool)
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        region = labels[grown] == k
        ring = ndimage.binary_dilation(region, square) & ~region
        if ring.any():
            means[k] = image[grown][ring].mean()
    return means


class RealDefectPerturbations:
    """Real defect indications cut from radiographs with pixel masks (the paper's set D).

    Build with :meth:`from_images`. ``sample`` returns the ring-mean-subtracted contrast
    ``delta`` (image minus its region's border mean, 0 outside defects) and W = the defect mask,
    in 192 x 192 patches with defect pixels inside the aperture.
    """

    name = "D"

    def __init__(self, sampler: PatchSampler, labels, means):
        self.sampler = sampler
        self.labels = labels
        self.means = means

    @classmethod
    def from_images(cls, images, masks, *, rois=None, rotate=True, order=3):
        """Prepare the defect regions of ``images`` (float32 [0, 1]) with bool ``masks``."""
        sampler = PatchSampler(images, masks, rois=rois, rotate=rotate, order=order)
        labels, means = [], []
        for image, mask in zip(sampler.images, sampler.masks):
            lab = label_regions(mask) if mask is not None else np.zeros(image.shape, np.int16)
            labels.append(lab)
            means.append(border_ring_means(image, lab))
        if sum(int(lab.max()) for lab in labels) == 0:
            raise ValueError("no defect regions: every mask is empty")
        return cls(sampler, labels, means)

    @property
    def n_regions(self) -> int:
        return sum(int(lab.max()) for lab in self.labels)

    def sample(self, rng, n):
        """Return ``(delta, weight)``, float32 arrays of shape (n, 192, 192)."""
        delta = np.empty((n, PATCH, PATCH), np.float32)
        weight = np.empty((n, PATCH, PATCH), np.float32)
        for k in range(n):
            delta[k], weight[k] = self.contrast_patch(self.sampler.defect_geometry(rng))
        return delta, weight

    def contrast_patch(self, geometry):
        """``(delta, weight)`` (192, 192) at a geometry of ``self.sampler`` (e.g. to show its image)."""
        lab = extract(self.labels[geometry.image], geometry, order=0, output=np.int32)
        w = lab > 0
        delta = np.where(w, self.sampler.patch(geometry) - self.means[geometry.image][lab], 0)
        return delta.astype(np.float32), w.astype(np.float32)


# -- point spread functions --------------------------------------------------------------------
def _cauchy_cdf(x, y, gamma):
    """CDF of the isotropic bivariate Cauchy distribution with scale ``gamma``."""
    x, y = x / gamma, y / gamma
    return 0.25 + (np.arctan(x) + np.arctan(y) + np.arctan(x * y / np.sqrt(1 + x * x + y * y))) / (2 * np.pi)


def lorentzian_kernel(hwhm, *, radius=LORENTZ_RADIUS):
    """Lorentzian PSF kernel (2 * radius + 1)^2, summing to 1.

    The isotropic 2-D Cauchy PSF ``gamma / (2 pi (r^2 + gamma^2)^1.5)`` with ``gamma = hwhm``: its
    line-spread function is the Lorentzian with half width at half maximum ``hwhm``. Each pixel
    holds the exact integral over its area, so sub-pixel widths are handled correctly.
    """
    edges = np.arange(-radius, radius + 2) - 0.5
    cdf = _cauchy_cdf(edges[:, None], edges[None, :], float(hwhm))
    kernel = cdf[1:, 1:] - cdf[:-1, 1:] - cdf[1:, :-1] + cdf[:-1, :-1]
    return (kernel / kernel.sum()).astype(np.float32)


def _smooth_into(out, shape_img, r0, c0, psf, param):
    """Smooth ``shape_img`` (placed at r0, c0 of ``out``) with the PSF and add it to ``out``.

    The work is done on a window around the shape; equal to smoothing the whole patch with
    zero padding.
    """
    pad = int(np.ceil(4 * param)) if psf == "gaussian" else LORENTZ_RADIUS
    h, w = shape_img.shape
    R0, C0 = max(r0 - pad, 0), max(c0 - pad, 0)
    R1, C1 = min(r0 + h + pad, PATCH), min(c0 + w + pad, PATCH)
    window = np.zeros((R1 - R0, C1 - C0), np.float32)
    window[r0 - R0:r0 - R0 + h, c0 - C0:c0 - C0 + w] = shape_img
    if psf == "gaussian":
        window = ndimage.gaussian_filter(window, param, mode="constant", truncate=4.0)
    elif psf == "lorentzian":
        window = fftconvolve(window, lorentzian_kernel(param), mode="same").astype(np.float32)
    elif psf is not None:
        raise ValueError(f"unknown PSF {psf!r}")
    out[R0:R1, C0:C1] += window


# -- synthetic natural image indications ---------------------------------------------------------
def walk_steps(rng, m, elongation, *, axis=0):
    """``m`` random-walk steps (m, 2) int32 in {-1, 0, 1}: the SNI step rule of Section 3.3.

    In dimension ``axis`` the 0-step has probability e / (e + 2) and -1, +1 have 1 / (e + 2)
    each; in the other dimension -1, 0, +1 are equally likely.
    """
    p_move = 2.0 / (elongation + 2.0)
    steps = np.empty((m, 2), np.int32)
    u = rng.random(m, dtype=np.float32)
    steps[:, axis] = (u >= 1.0 - p_move / 2).astype(np.int32) - (u < p_move / 2)
    steps[:, 1 - axis] = rng.integers(-1, 2, size=m, dtype=np.int32)
    return steps


def grow_region(rng, n_pixels, elongation, *, axis=0, start=None, shape=(PATCH, PATCH)):
    """Grow one region by a random walk (SNI sampling rule of Section 3.3).

    Parameters
    ----------
    rng : numpy.random.Generator
    n_pixels : int
        Number of distinct pixels of the region.
    elongation : float
        e >= 1: in dimension ``axis`` the 0-step has probability e / (e + 2).
    axis : int
        0 (rows) or 1 (columns): the dimension in which the walk tends to stand still.
    start : (int, int), optional
        Seed pixel; default the centre of ``shape``.
    shape : (int, int)
        The walk reflects at these borders.

    Returns
    -------
    rows, cols : ndarray of int
        The region's distinct pixels in the order the walk first reached them.
    """
    rows_n, cols_n = shape
    if not 1 <= n_pixels <= rows_n * cols_n:
        raise ValueError(f"n_pixels must lie in [1, {rows_n * cols_n}], got {n_pixels}")
    pos = np.array(start if start is not None else (rows_n // 2, cols_n // 2), np.int32)
    visited = np.zeros(rows_n * cols_n, bool)
    order = [np.array([pos[0] * cols_n + pos[1]])]
    visited[order[0]] = True
    count = 1
    periods = (2 * (np.array(shape) - 1)).astype(np.int32)
    while count < n_pixels:
        m = int(min(max(1024, 2 * (n_pixels - count)), 1 << 16))
        steps = walk_steps(rng, m, elongation, axis=axis)
        walk = pos + np.cumsum(steps, axis=0, dtype=np.int32)
        pos = walk[-1]
        folded = np.mod(walk, periods)  # reflect into [0, size - 1]
        folded = np.where(folded > periods // 2, periods - folded, folded)
        idx = folded[:, 0] * cols_n + folded[:, 1]
        idx = idx[~visited[idx]]  # not yet in the region (may repeat within this chunk)
        _, first = np.unique(idx, return_index=True)
        fresh = idx[np.sort(first)[: n_pixels - count]]
        visited[fresh] = True
        order.append(fresh)
        count += fresh.size
    flat = np.concatenate(order)
    return flat // cols_n, flat % cols_n


def _grey_float(raw):
    from skimage.color import rgb2gray, rgba2rgb
    from skimage.util import img_as_float32

    img = img_as_float32(raw)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = rgba2rgb(img)
    if img.ndim == 3:
        img = rgb2gray(img)
    if img.ndim != 2:
        raise ValueError(f"not a 2-D image: shape {raw.shape}")
    return np.clip(img, 0, 1).astype(np.float32)


def _to_natural_side(img):
    """Scale so the shorter side is NATURAL_SIDE px; stored as uint8 (natural images are 8-bit)."""
    from skimage.transform import rescale

    scale = NATURAL_SIDE / min(img.shape)
    if abs(scale - 1) > 1e-3:
        img = rescale(img, scale, anti_aliasing=scale < 1, preserve_range=True)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def bundled_natural_images():
    """Grey natural images bundled in scikit-image's package folder (no download), uint8."""
    import skimage.data
    from skimage import io

    folder = Path(skimage.data.__file__).parent
    return [_to_natural_side(_grey_float(io.imread(folder / name))) for name in BUNDLED_NATURAL
            if (folder / name).is_file()]


def natural_images_from_folder(folder):
    """Grey natural images from every readable image file in ``folder``, uint8."""
    from skimage import io

    folder = Path(folder)
    suffixes = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
    images = []
    for path in files:
        try:
            images.append(_to_natural_side(_grey_float(io.imread(path))))
        except (OSError, ValueError):
            continue
    if not images:
        raise ValueError(f"{folder}: no readable natural images (png, jpg, bmp, tif)")
    return images


@dataclass(frozen=True)
class SNIRegion:
    """Drawn parameters of one SNI region (ranges in :class:`SNIPerturbations`)."""

    n_pixels: int
    elongation: float
    axis: int  # dimension in which the walk tends to stand still
    start: tuple[int, int]  # seed pixel in the patch (inside the aperture)
    image: int  # index of the natural image
    crop: tuple[int, int]  # top-left of the 192 x 192 crop of that image
    scale: float  # grey-value scale s (negative only with signed=True)
    psf: str  # "gaussian" or "lorentzian"
    psf_param: float  # Gaussian sigma or Lorentzian HWHM, px


class SNIPerturbations:
    """Synthetic natural image indications (SNI), sampled by the rules of Section 3.3.

    Parameters
    ----------
    natural_images : None, str, Path or sequence of ndarray
        None: the photographs bundled with scikit-image (see ``BUNDLED_NATURAL``); a folder: its
        images; arrays: grey or RGB images (any size; scaled to a 200 px shorter side).
    signed : bool
        Give each region a random sign (the paper's SNI are all positive, the default).
    regions, pixels, elongation, scale, gaussian_sigma, lorentzian_hwhm : tuple
        The sampling ranges (defaults: the paper's).
    """

    name = "SNI"

    def __init__(self, natural_images=None, *, signed=False, regions=(1, 4), pixels=(10, 8000),
                 elongation=(1.0, 40.0), scale=(0.05, 0.2), gaussian_sigma=(2.0, 9.0),
                 lorentzian_hwhm=(0.15, 0.4)):
        if natural_images is None:
            self.natural = bundled_natural_images()
        elif isinstance(natural_images, (str, Path)):
            self.natural = natural_images_from_folder(natural_images)
        else:
            self.natural = [_to_natural_side(_grey_float(np.asarray(im))) for im in natural_images]
        if not self.natural:
            raise ValueError("SNIPerturbations needs at least one natural image")
        self.signed = signed
        self.regions, self.pixels, self.elongation = regions, pixels, elongation
        self.scale, self.gaussian_sigma, self.lorentzian_hwhm = scale, gaussian_sigma, lorentzian_hwhm

    def draw_parameters(self, rng):
        """Draw the parameters of one sample: a list of :class:`SNIRegion`, one per region."""
        regions = []
        for _ in range(int(rng.integers(self.regions[0], self.regions[1] + 1))):
            image = int(rng.integers(len(self.natural)))
            nat_rows, nat_cols = self.natural[image].shape
            gaussian = bool(rng.integers(2))
            sign = rng.choice((-1.0, 1.0)) if self.signed else 1.0
            regions.append(SNIRegion(
                n_pixels=int(rng.integers(self.pixels[0], self.pixels[1] + 1)),
                elongation=float(rng.uniform(*self.elongation)),
                axis=int(rng.integers(2)),
                start=tuple(int(v) for v in rng.integers(OFFSET, OFFSET + APERTURE, size=2)),
                image=image,
                crop=(int(rng.integers(nat_rows - PATCH + 1)), int(rng.integers(nat_cols - PATCH + 1))),
                scale=float(rng.uniform(*self.scale) * sign),
                psf="gaussian" if gaussian else "lorentzian",
                psf_param=float(rng.uniform(*(self.gaussian_sigma if gaussian else self.lorentzian_hwhm))),
            ))
        return regions

    def render_region(self, rng, region):
        """The region before smoothing: ``(values (h, w) float32, r0, c0)`` in patch coordinates."""
        rows, cols = grow_region(
            rng, region.n_pixels, region.elongation, axis=region.axis, start=region.start
        )
        nat = self.natural[region.image]
        cr, cc = region.crop
        r0, c0 = rows.min(), cols.min()
        values = np.zeros((rows.max() - r0 + 1, cols.max() - c0 + 1), np.float32)
        values[rows - r0, cols - c0] = nat[cr + rows, cc + cols] * np.float32(region.scale / 255.0)
        return values, int(r0), int(c0)

    def sample(self, rng, n):
        """Return ``(delta, weight)``, float32 arrays of shape (n, 192, 192)."""
        delta = np.zeros((n, PATCH, PATCH), np.float32)
        weight = np.empty((n, PATCH, PATCH), np.float32)
        for k in range(n):
            for region in self.draw_parameters(rng):
                values, r0, c0 = self.render_region(rng, region)
                _smooth_into(delta[k], values, r0, c0, region.psf, region.psf_param)
            delta[k], weight[k] = _support(delta[k])
        return delta, weight


# -- the six synthetic anomaly types -----------------------------------------------------------
ANOMALY_KINDS = (
    "circular_hollow", "dogbone", "elongated", "partial_circle", "circular_indication", "raster",
)
AMPLITUDES = {"circular_hollow": 0.2, "dogbone": 0.2, "elongated": 0.2, "partial_circle": 0.1,
              "circular_indication": -0.1, "raster": 0.2}


def _capsule(u, v, half_length, radius):
    """Points within ``radius`` of the segment u in [-half_length, half_length], v = 0."""
    return np.hypot(np.clip(np.abs(u) - half_length, 0, None), v) <= radius


def anomaly_shape(kind, u, v, rng):
    """Indicator (bool) of a synthetic anomaly in its own frame (u along it, v across), in px.

    Sizes (Section 3.3): circular hollow 36 px outer / 18 px inner diameter; dogbone about
    8 x 30 (two 8 px discs joined by a 4 px bar); elongated about 5 x 25 (a capsule); partial
    circle 36 / 18 px with an angular spread U(10, 180) degrees; circular indication diameter
    U(20, 60); raster 50 x 50 (a grid of 4 px bars at a 11.5 px pitch, 5 in each direction).
    """
    r = np.hypot(u, v)
    if kind == "circular_hollow":
        return (r <= 18) & (r >= 9)
    if kind == "partial_circle":
        spread = np.deg2rad(rng.uniform(10, 180))
        return (r <= 18) & (r >= 9) & (np.mod(np.arctan2(v, u), 2 * np.pi) <= spread)
    if kind == "circular_indication":
        return r <= rng.uniform(20, 60) / 2
    if kind == "elongated":
        return _capsule(u, v, 10.0, 2.5)
    if kind == "dogbone":
        ends = (np.hypot(np.abs(u) - 11.0, v) <= 4.0)
        return ends | ((np.abs(u) <= 11.0) & (np.abs(v) <= 2.0))
    if kind == "raster":
        inside = (np.abs(u) <= 25) & (np.abs(v) <= 25)
        # 4 px bars centred at 0, +-11.5 and +-23 px in both directions
        bar = lambda t: np.abs(np.mod(t + 23 + 5.75, 11.5) - 5.75) <= 2  # noqa: E731
        return inside & (bar(u) | bar(v))
    raise ValueError(f"unknown anomaly kind {kind!r}; choose one of {', '.join(ANOMALY_KINDS)}")


_REACH = {"circular_hollow": 18, "partial_circle": 18, "circular_indication": 30, "elongated": 13,
          "dogbone": 15, "raster": 36}  # radius of the circle that holds the unsmoothed shape


class SyntheticAnomalies:
    """One of the six synthetic anomaly types of Section 3.3 (Figure 4).

    Parameters
    ----------
    kind : str
        One of ``ANOMALY_KINDS``.
    amplitude : float, optional
        Grey value of the shape before smoothing (default the paper's: 0.2, 0.1 for the partial
        circle, -0.1 for the circular indication).
    psf_sigma : float
        Gaussian PSF sigma in px (the paper's 9); 0 leaves the shape unsmoothed.
    """

    def __init__(self, kind, *, amplitude=None, psf_sigma=9.0):
        if kind not in ANOMALY_KINDS:
            raise ValueError(f"unknown anomaly kind {kind!r}; choose one of {', '.join(ANOMALY_KINDS)}")
        self.kind = kind
        self.name = f"synthetic:{kind}"
        self.amplitude = AMPLITUDES[kind] if amplitude is None else float(amplitude)
        self.psf_sigma = float(psf_sigma)

    def draw_shape(self, rng):
        """The unsmoothed, rotated shape: (values (h, w) float32, r0, c0) in patch coordinates."""
        reach = _REACH[self.kind]
        centre = rng.uniform(OFFSET + reach, OFFSET + APERTURE - 1 - reach, size=2)
        theta = rng.uniform(0, 2 * np.pi)
        r0, c0 = (np.floor(centre) - reach - 1).astype(int)
        size = 2 * reach + 4
        rr, cc = np.mgrid[r0:r0 + size, c0:c0 + size].astype(np.float64)
        dr, dc = rr - centre[0], cc - centre[1]
        u = np.cos(theta) * dc + np.sin(theta) * dr
        v = -np.sin(theta) * dc + np.cos(theta) * dr
        values = anomaly_shape(self.kind, u, v, rng).astype(np.float32) * np.float32(self.amplitude)
        return values, int(r0), int(c0)

    def sample(self, rng, n, *, regions=None, place_rng=None, centres=False):
        """Return ``(delta, weight)``, float32 arrays of shape (n, 192, 192).

        With ``centres``, ``(delta, weight, centres)``: each shape's centre, (n, 2) int row and
        column in the patch (the pixel that holds it).

        With ``regions`` (n, 192, 192) bool, each shape is moved, whole pixels, so that its centre
        lies in its patch's region (the weld region a scan inspects), at a position drawn
        uniformly from ``place_rng`` among those that keep it in the aperture; a patch whose
        region leaves no such position keeps the first draw. ``rng`` is used exactly as without
        regions, so other draws from it (later patch sets) do not change.
        """
        delta = np.zeros((n, PATCH, PATCH), np.float32)
        weight = np.empty((n, PATCH, PATCH), np.float32)
        if regions is not None and place_rng is None:
            raise ValueError("placing anomalies in regions needs place_rng")
        reach = _REACH[self.kind]
        lo, hi = OFFSET + reach + 1, OFFSET + APERTURE - 1 - reach  # whole-pixel centres, in range
        where = np.empty((n, 2), int)
        for k in range(n):
            values, r0, c0 = self.draw_shape(rng)
            if regions is not None:
                rows, cols = np.nonzero(np.asarray(regions[k])[lo:hi, lo:hi])
                if len(rows):
                    j = place_rng.integers(len(rows))
                    centre = np.array([r0, c0]) + reach + 1  # floor of the drawn centre
                    r0, c0 = (int(v) for v in np.array([rows[j] + lo, cols[j] + lo]) - centre + (r0, c0))
            where[k] = (r0 + reach + 1, c0 + reach + 1)
            psf = "gaussian" if self.psf_sigma > 0 else None
            _smooth_into(delta[k], values, r0, c0, psf, self.psf_sigma)
            delta[k], weight[k] = _support(delta[k])
        return (delta, weight, where) if centres else (delta, weight)


# -- a refreshed cache for any source -----------------------------------------------------------
class CachedPerturbations:
    """Serve samples of ``source`` from a bank that is refreshed as it is used.

    The paper drew SNI once (112,000 samples) and reused them; here a bank of ``size`` samples
    is filled on first use, each served sample gets a random 90-degree turn and flip (the
    sampling rules of every source are symmetric under these), and a fraction ``refresh`` of
    the served samples are fresh draws that replace a random bank entry, so the variety keeps
    growing while the cost per sample drops to about ``refresh`` times the source's.

    Memory: about 184 kB per banked sample (float32 delta, bool W); 512 samples ~ 94 MB.
    """

    def __init__(self, source, *, size=512, refresh=0.25):
        if size < 1 or not 0 < refresh <= 1:
            raise ValueError(f"size must be >= 1 and refresh in (0, 1], got {size}, {refresh}")
        self.source, self.size, self.refresh = source, int(size), float(refresh)
        self.name = getattr(source, "name", type(source).__name__)
        self._delta = np.empty((0, PATCH, PATCH), np.float32)
        self._weight = np.empty((0, PATCH, PATCH), bool)

    def _fill(self, rng):
        missing = self.size - len(self._delta)
        if missing > 0:
            delta, weight = self.source.sample(rng, missing)
            self._delta = np.concatenate([self._delta, delta])
            self._weight = np.concatenate([self._weight, weight > 0])

    def sample(self, rng, n):
        """Return ``(delta, weight)``, float32 arrays of shape (n, 192, 192)."""
        self._fill(rng)
        fresh = rng.random(n) < self.refresh
        delta = np.empty((n, PATCH, PATCH), np.float32)
        weight = np.empty((n, PATCH, PATCH), np.float32)
        if fresh.any():
            new_delta, new_weight = self.source.sample(rng, int(fresh.sum()))
            slots = rng.integers(self.size, size=len(new_delta))
            self._delta[slots], self._weight[slots] = new_delta, new_weight > 0
            delta[fresh], weight[fresh] = new_delta, new_weight
        for k in np.flatnonzero(~fresh):
            j, turns, flip = rng.integers(self.size), int(rng.integers(4)), bool(rng.integers(2))
            d, w = np.rot90(self._delta[j], turns), np.rot90(self._weight[j], turns)
            delta[k], weight[k] = (d[:, ::-1], w[:, ::-1]) if flip else (d, w)
        return delta, weight
