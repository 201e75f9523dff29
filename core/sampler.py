"""Random 192 x 192 patches from large radiographs (Lindgren and Zach 2022, Section 3.3).

Patches are taken "by random translation and rotation (0-360 degrees)" and augmented by the
90-degree rotations and the up/down and left/right flips. Here every patch gets all of it at once:
a random centre, a random angle in [0, 360), a random multiple of 90 degrees and a random flip,
composed into one affine map that is sampled with :func:`scipy.ndimage.affine_transform` on a small
window around the centre (fast: no coordinate arrays, no work on the whole radiograph).

Interpolation. A rotated grid falls between pixels, and interpolation changes the noise texture
(linear interpolation halves the noise variance at half-pixel offsets). The default is cubic
splines (``order=3``), which keep the noise closest to that of the unrotated radiograph the scanner
sees; ``order=1`` is faster. With ``rotate=False`` only the exact 90-degree rotations and flips are
used and pixel values are copied unchanged.

Okay patches contain no defect pixel anywhere in the 192 x 192 patch, counting every source pixel
the interpolation kernel touches (defect masks are dilated by 1 px for linear, 2 px for cubic
interpolation; the cubic spline prefilter still lets a defect 3 px away leak below 1 % of its
contrast). Defect patches have at least one defect pixel in the central
156 x 156 aperture (the part the autoencoder reconstructs); their mask is returned too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.model import APERTURE, OFFSET, PATCH

_HALF = (PATCH - 1) / 2.0  # 95.5: patch centre in patch pixel coordinates
_BLOCK = 16  # block size of the okay draws' quick look for forbidden pixels (PatchSampler._clear)
_MAX_TRIES = 2000  # rejection-sampling attempts per patch before giving up with a clear error


@dataclass(frozen=True)
class PatchGeometry:
    """Where one patch comes from: image index, centre (row, col) and the 2 x 2 map.

    Patch pixel ``p`` (row, col) samples the image at ``centre + matrix @ (p - 95.5)``.
    """

    image: int
    centre: tuple[float, float]
    matrix: np.ndarray


def _as_image(image, i):
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.float32:
        raise ValueError(
            f"image {i}: expected a 2-D float32 array in [0, 1] (load it with core.imageio), "
            f"got shape {image.shape} dtype {image.dtype}"
        )
    if min(image.shape) < PATCH:
        raise ValueError(f"image {i}: shape {image.shape} is smaller than a {PATCH} px patch")
    return image


def _as_mask(mask, shape, what, i):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{what} {i}: shape {mask.shape} differs from its image {shape}")
    return mask.astype(bool, copy=False)


def _as_region(roi, shape, i):
    """A region of interest as given: a label map (``core.roi.WeldROI.labels``) stays uint8, any
    other array becomes bool."""
    if roi is not None and np.issubdtype(np.asarray(roi).dtype, np.integer):
        roi = np.asarray(roi)
        if roi.shape != shape:
            raise ValueError(f"roi {i}: shape {roi.shape} differs from its image {shape}")
        return roi.astype(np.uint8, copy=False)
    return _as_mask(roi, shape, "roi", i)


def _block_counts(mask):
    """Summed-area table of ``mask``'s _BLOCK x _BLOCK blocks that hold any True pixel:
    ``t[r1, c1] - t[r0, c1] - t[r1, c0] + t[r0, c0]`` counts those in block rows r0:r1, cols c0:c1."""
    rows, cols = -(-mask.shape[0] // _BLOCK), -(-mask.shape[1] // _BLOCK)
    padded = np.zeros((rows * _BLOCK, cols * _BLOCK), bool)
    padded[:mask.shape[0], :mask.shape[1]] = mask
    hit = padded.reshape(rows, _BLOCK, cols, _BLOCK).any(axis=(1, 3))
    table = np.zeros((rows + 1, cols + 1), np.int32)
    table[1:, 1:] = hit.cumsum(0).cumsum(1)
    return table


def random_matrix(rng, *, rotate=True):
    """Return a random 2 x 2 map: rotation U(0, 360) (if ``rotate``), k * 90 degrees, flip."""
    theta = rng.uniform(0.0, 2.0 * np.pi) if rotate else 0.0
    theta += rng.integers(4) * (np.pi / 2)
    c, s = np.cos(theta), np.sin(theta)
    if not rotate:  # exact multiples of 90 degrees
        c, s = np.round(c), np.round(s)
    rot = np.array([[c, -s], [s, c]])
    if rng.integers(2):  # left/right flip; with the 90-degree turns this also gives up/down
        rot = rot @ np.diag([1.0, -1.0])
    return rot


def _half_extent(matrix):
    """Half-size (rows, cols) of the source footprint of a patch under ``matrix``."""
    return np.abs(matrix).sum(axis=1) * _HALF


def extract(array, geometry, *, order=3, cval=0.0, output=np.float32, step=1):
    """Sample one patch of ``array`` (2-D) at ``geometry``.

    Parameters
    ----------
    array : ndarray of shape (M, N)
        The full radiograph, mask or label image the geometry refers to.
    geometry : PatchGeometry
    order : int
        Spline order (0 nearest, 1 linear, 3 cubic).
    step : int
        Every ``step``-th patch pixel only: exactly ``extract(...)[::step, ::step]`` (the same
        source coordinates), ``step**2`` times fewer samples.

    Returns
    -------
    patch : ndarray of shape (192, 192), or (ceil(192 / step),) * 2
    """
    matrix = geometry.matrix
    centre = np.asarray(geometry.centre)
    margin = 2 if order <= 1 else 8  # spline prefilter needs context beyond the footprint
    ext = _half_extent(matrix) + margin
    lo = np.maximum(np.floor(centre - ext).astype(int), 0)
    hi = np.minimum(np.ceil(centre + ext).astype(int) + 1, array.shape)
    window = array[lo[0]:hi[0], lo[1]:hi[1]]
    offset = centre - lo - matrix @ np.array([_HALF, _HALF])
    size = len(range(0, PATCH, step))
    return ndimage.affine_transform(
        window, matrix * step, offset=offset, output_shape=(size, size), order=order,
        mode="nearest", cval=cval, output=output, prefilter=order > 1,
    )


class PatchSampler:
    """Random okay and defect patches from a list of large radiographs.

    Parameters
    ----------
    images : sequence of ndarray of shape (M_i, N_i), float32 in [0, 1]
        The radiographs (not copied: float32 arrays are used in place).
    masks : sequence of (ndarray of bool or None), optional
        Defect masks on each image's grid. ``None`` (or a ``None`` entry) means the image has no
        defect pixels: pass unmasked radiographs only when they are known to be defect-free.
    rois : sequence of (ndarray of bool or uint8, or None), optional
        Regions of interest (e.g. ``core.roi.find_weld(image).mask``): patch centres are drawn
        only from ROI pixels. ``None`` entries allow the whole image. Label maps
        (``core.roi.WeldROI.labels``: bead and heat-affected zone) are cut as they are, so the
        ROI patches tell the two apart.
    seed : int
        Seed of the sampler's own generator (used when a call passes no ``rng``).
    rotate : bool
        Random rotation U(0, 360) degrees on top of the 90-degree turns and flips (the paper's).
    order : int
        Interpolation order for image pixels (3 cubic, 1 linear).
    """

    def __init__(self, images, masks=None, *, rois=None, seed=0, rotate=True, order=3):
        self.images = [_as_image(im, i) for i, im in enumerate(images)]
        if not self.images:
            raise ValueError("PatchSampler needs at least one image")
        n = len(self.images)
        masks = [None] * n if masks is None else list(masks)
        rois = [None] * n if rois is None else list(rois)
        if len(masks) != n or len(rois) != n:
            raise ValueError(f"got {n} images, {len(masks)} masks and {len(rois)} rois")
        self.masks = [_as_mask(m, im.shape, "mask", i) for i, (m, im) in enumerate(zip(masks, self.images))]
        self.rois = [_as_region(r, im.shape, i) for i, (r, im) in enumerate(zip(rois, self.images))]
        self.rotate = bool(rotate)
        self.order = int(order)
        self.rng = np.random.default_rng(seed)
        # Source pixels touched by interpolation: dilate masks so okay patches stay clear of them.
        reach = 1 if self.order <= 1 else 2
        struct = np.ones((2 * reach + 1,) * 2, bool)
        self._forbidden = [
            None if m is None or not m.any() else ndimage.binary_dilation(m, struct) for m in self.masks
        ]
        self._forbidden_blocks = [None if f is None else _block_counts(f) for f in self._forbidden]
        self._boxes = [self._centre_box(i) for i in range(n)]
        okay_w = np.array([self._okay_area(i) for i in range(n)], float)
        if okay_w.sum() == 0:
            raise ValueError("no patch centre is possible: every ROI is empty or too close to the edge")
        self._okay_p = okay_w / okay_w.sum()
        self._defect_px = [None if m is None else np.flatnonzero(m) for m in self.masks]
        defect_w = np.array([0 if d is None else d.size for d in self._defect_px], float)
        self._defect_p = defect_w / defect_w.sum() if defect_w.sum() else None

    # -- geometry ------------------------------------------------------------------------------
    def _centre_box(self, i):
        """Centre range (row0, row1, col0, col1) of an unrotated patch inside image i and its ROI."""
        rows, cols = self.images[i].shape
        box = [_HALF, rows - 1 - _HALF, _HALF, cols - 1 - _HALF]
        roi = self.rois[i]
        if roi is not None and roi.any():
            r = np.flatnonzero(roi.any(axis=1))
            c = np.flatnonzero(roi.any(axis=0))
            box = [max(box[0], r[0]), min(box[1], r[-1]), max(box[2], c[0]), min(box[3], c[-1])]
        return box

    def _okay_area(self, i):
        r0, r1, c0, c1 = self._boxes[i]
        if r1 < r0 or c1 < c0:
            return 0.0
        roi = self.rois[i]
        if roi is None:
            return (r1 - r0 + 1) * (c1 - c0 + 1)
        return float(np.count_nonzero(roi[int(np.ceil(r0)):int(r1) + 1, int(np.ceil(c0)):int(c1) + 1]))

    def _fits(self, i, centre, matrix):
        ext = _half_extent(matrix)
        shape = np.array(self.images[i].shape) - 1
        if np.any(centre - ext < 0) or np.any(centre + ext > shape):
            return False
        roi = self.rois[i]
        return roi is None or bool(roi[int(round(centre[0])), int(round(centre[1]))])

    def _clear(self, geo) -> bool:
        """True when no forbidden (dilated defect) pixel lies under the patch at ``geo``.

        The same answer as ``not extract(forbidden, geo, order=0).any()``, mostly without it: a
        patch whose bounding box covers no forbidden block is clear, and one whose every fourth
        pixel already hits a forbidden one is not (those are some of the patch's own samples).
        Where defects crowd the images, most draws are rejected, and the full 192 x 192 check of
        each made drawing calibration patches the slowest part of a retraining.
        """
        forbidden = self._forbidden[geo.image]
        if forbidden is None:
            return True
        blocks = self._forbidden_blocks[geo.image]
        ext = _half_extent(geo.matrix) + 2  # extract's window for order 0
        centre = np.asarray(geo.centre)
        lo = np.maximum(np.floor(centre - ext).astype(int), 0) // _BLOCK
        hi = np.minimum(np.ceil(centre + ext).astype(int), np.array(forbidden.shape) - 1) // _BLOCK + 1
        if blocks[hi[0], hi[1]] - blocks[lo[0], hi[1]] - blocks[hi[0], lo[1]] + blocks[lo[0], lo[1]] == 0:
            return True
        if extract(forbidden, geo, order=0, output=bool, step=4).any():
            return False
        return not extract(forbidden, geo, order=0, output=bool).any()

    def _random_centre(self, rng, i):
        r0, r1, c0, c1 = self._boxes[i]
        if self.rotate:
            return np.array([rng.uniform(r0, r1), rng.uniform(c0, c1)])
        # integer pixel grid: centre at a half-pixel so that patch pixels hit image pixels exactly
        return np.array([rng.integers(np.ceil(r0 - _HALF), np.floor(r1 - _HALF) + 1) + _HALF,
                         rng.integers(np.ceil(c0 - _HALF), np.floor(c1 - _HALF) + 1) + _HALF])

    def okay_geometry(self, rng=None):
        """Draw the geometry of one defect-free patch (rejection sampling)."""
        rng = self.rng if rng is None else rng
        for _ in range(_MAX_TRIES):
            i = int(rng.choice(len(self.images), p=self._okay_p))
            matrix = random_matrix(rng, rotate=self.rotate)
            centre = self._random_centre(rng, i)
            if not self._fits(i, centre, matrix):
                continue
            geo = PatchGeometry(i, (float(centre[0]), float(centre[1])), matrix)
            if self._clear(geo):
                return geo
        raise ValueError(
            f"no defect-free {PATCH} px patch found in {_MAX_TRIES} tries: the images are too "
            "small or their defect masks (within the ROIs) leave no room"
        )

    def defect_geometry(self, rng=None):
        """Draw the geometry of one patch with a defect pixel inside the 156 x 156 aperture."""
        rng = self.rng if rng is None else rng
        if self._defect_p is None:
            raise ValueError("no defect pixels: defect patches need images with non-empty masks")
        lo, hi = OFFSET + 0.5, OFFSET + APERTURE - 1.5  # stays inside the aperture after rounding
        for _ in range(_MAX_TRIES):
            i = int(rng.choice(len(self.images), p=self._defect_p))
            px = self._defect_px[i][rng.integers(self._defect_px[i].size)]
            pixel = np.array(divmod(int(px), self.images[i].shape[1]), float)
            matrix = random_matrix(rng, rotate=self.rotate)
            if self.rotate:
                target = rng.uniform(lo, hi, size=2)
            else:
                target = rng.integers(OFFSET, OFFSET + APERTURE, size=2).astype(float)
            centre = pixel - matrix @ (target - _HALF)
            if self._fits(i, centre, matrix):
                return PatchGeometry(i, (float(centre[0]), float(centre[1])), matrix)
        raise ValueError(f"no defect patch fits inside the images (and ROIs) in {_MAX_TRIES} tries")

    # -- patches -------------------------------------------------------------------------------
    def patch(self, geometry):
        """The image patch (192, 192) float32 at ``geometry``."""
        return extract(self.images[geometry.image], geometry, order=self.order)

    def roi_patch(self, geometry):
        """The region-of-interest patch (192, 192) at ``geometry``: bool, or uint8 for a label
        map; all True without a ROI."""
        roi = self.rois[geometry.image]
        if roi is None:
            return np.ones((PATCH, PATCH), bool)
        return extract(roi, geometry, order=0, output=roi.dtype)

    def cut(self, arrays, geometries, *, order: int = 1) -> np.ndarray:
        """The same patches of other per-image arrays (e.g. ``core.residual.slope_map`` of each
        radiograph): (n, 192, 192) float32, ``arrays[g.image]`` sampled at each geometry."""
        if len(arrays) != len(self.images):
            raise ValueError(f"{len(arrays)} arrays for {len(self.images)} images")
        return np.stack([extract(arrays[g.image], g, order=order) for g in geometries])

    def okay_with_roi(self, n, *, rng=None, geometries: bool = False):
        """``n`` okay patches and their ROI patches: (n, 192, 192) float32 and bool.

        With ``geometries`` their PatchGeometry list comes third (where each patch was cut).
        """
        rng = self.rng if rng is None else rng
        geos = [self.okay_geometry(rng) for _ in range(n)]
        out = (np.stack([self.patch(g) for g in geos]).astype(np.float32),
               np.stack([self.roi_patch(g) for g in geos]))
        return (*out, geos) if geometries else out

    def mask_patch(self, geometry):
        """The defect mask patch (192, 192) bool at ``geometry`` (nearest neighbour)."""
        mask = self.masks[geometry.image]
        if mask is None:
            return np.zeros((PATCH, PATCH), bool)
        return extract(mask, geometry, order=0, output=bool)

    def okay(self, n, *, rng=None):
        """Return ``n`` defect-free patches, float32 array of shape (n, 192, 192)."""
        out = np.empty((n, PATCH, PATCH), np.float32)
        for k in range(n):
            out[k] = self.patch(self.okay_geometry(rng))
        return out

    def defect(self, n, *, rng=None, with_roi=False, geometries: bool = False):
        """Return ``(patches, masks)``: (n, 192, 192) float32 and bool, defect pixels in the aperture.

        With ``with_roi=True`` also the ROI patches: ``(patches, masks, rois)``; with
        ``geometries`` their PatchGeometry list comes last (where each patch was cut).
        """
        patches = np.empty((n, PATCH, PATCH), np.float32)
        masks = np.empty((n, PATCH, PATCH), bool)
        labelled = any(r is not None and r.dtype == np.uint8 for r in self.rois)
        rois = np.empty((n, PATCH, PATCH), np.uint8 if labelled else bool) if with_roi else None
        geos = []
        for k in range(n):
            geo = self.defect_geometry(rng)
            geos.append(geo)
            patches[k] = self.patch(geo)
            masks[k] = self.mask_patch(geo)
            if with_roi:
                rois[k] = self.roi_patch(geo)
        out = (patches, masks, rois) if with_roi else (patches, masks)
        return (*out, geos) if geometries else out


def aperture(array):
    """The central 156 x 156 of a (..., 192, 192) array (what the autoencoder reconstructs)."""
    return array[..., OFFSET:OFFSET + APERTURE, OFFSET:OFFSET + APERTURE]
