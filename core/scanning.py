"""Whole-radiograph scan: the autoencoder over tiles, residual analysis, flagged regions.

Tiling. The network is fully convolutional with total stride 4; output pixel (i, j) of an input
tile reconstructs tile pixel (i + 18, j + 18), and only positions ``EDGE_MARGIN`` (4) px inside a
tile's aperture equal a pass over the whole image. The local 9 x 9 statistics need 4 px more. So
tiles (origins multiples of 4, one fixed shape per image) overlap by ``2 * HALO`` (HALO = 18 + 4 + 4
= 26 px) and each keeps only its centre, except at the image's own borders. The result equals one
pass of the whole-image model over the image padded (edge values) on the bottom and right to a
multiple of 4, while memory stays bounded by the tile size. Maps are on the input pixel grid;
the reconstruction and residual are NaN on the 18 px border, the local statistics on the 22 px
border (the kernel's half-width more); flags are 0 there.

Speed (800 x 4900 radiograph, 2 CPU cores). The network is about 90 % of a scan; in float32 it
runs at roughly three quarters of the CPU's matrix-multiply rate (oneDNN brgemm convolutions),
so what is left to gain is small: the network runs as plain TensorFlow ops with two layers in
faster forms (``_plain_network``), and a tile's local statistics are computed in a worker
thread while the model runs on the next tile (``overlap``). Both keep the results: flags and
regions equal, maps within float rounding. Inference in bfloat16 is about 1.8 times as fast but
moves the residual by up to 2e-3 and changed flags and region counts on the demo radiographs at
the float32-calibrated thresholds, so it is not used.
"""

from __future__ import annotations

import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from core.calibration import Thresholds, band_bounds, thresholds_from_metadata
from core.errors import CalibrationError
from core.metrics import threshold_ratio
from core.model import APERTURE, EDGE_MARGIN, OFFSET, PATCH, STRIDE
from core.normalise import model_input
from core.residual import (FLAG_MEAN, FLAG_STD, KERNEL_SIZE, aperture_scores, local_mean_std, weld_zones,
                           slope_map, slope_zones)

TILE = 1024  # default tile side (input px, multiple of STRIDE)
HALO = OFFSET + EDGE_MARGIN + KERNEL_SIZE // 2  # 26: px discarded at each interior tile side
VALID_BORDER = OFFSET + KERNEL_SIZE // 2  # 22: where the local statistics start


class ScanCancelled(Exception):
    """Raised by ``scan_image`` and ``patch_scores`` when ``cancel()`` returned True."""


@dataclass
class Region:
    """A connected group (8-connectivity) of flagged kernel centres.

    ``bbox`` is ``(row0, col0, row1, col1)`` of the kernel centres, end-exclusive, on the input
    grid; ``area_px`` counts flagged kernel centres; ``peak_mean`` is the signed local mean of
    largest magnitude (negative: darker than reconstructed); ratios are to the thresholds and
    ``severity`` is the larger; ``tests`` says which tests fired anywhere in the region;
    ``size_mm`` is the bbox's (height, width) in mm when the pixel size is known.
    """

    id: int
    bbox: tuple[int, int, int, int]
    area_px: int
    peak_mean: float
    peak_std: float
    mean_ratio: float
    std_ratio: float
    severity: float
    tests: str
    size_mm: tuple[float, float] | None

    def to_dict(self) -> dict:
        return {
            "id": self.id, "bbox": list(self.bbox), "area_px": self.area_px,
            "peak_mean": self.peak_mean, "peak_std": self.peak_std,
            "mean_ratio": self.mean_ratio, "std_ratio": self.std_ratio,
            "severity": self.severity, "tests": self.tests,
            "size_mm": None if self.size_mm is None else list(self.size_mm),
        }


@dataclass
class ScanResult:
    """Maps on the input pixel grid (float32, NaN where undefined) and flagged regions.

    ``image`` is the scanned image itself (the caller's array, not a copy); ``reconstruction`` is
    computed from it on access (``image - residual``) so that a 30000 x 3000 scan holds one
    full-size float32 map fewer. ``flags`` is uint8: bit 1 = mean test, bit 2 = std test
    (3 = both), 0 outside ``roi``. ``regions`` are sorted by decreasing severity; ``outside_roi``
    holds those the ROI excluded.
    """

    image: np.ndarray
    residual: np.ndarray
    local_mean: np.ndarray
    local_std: np.ndarray
    flags: np.ndarray
    regions: list[Region]
    thresholds: Thresholds
    model_sha256: str | None
    pixel_size_um: float | None
    timings: dict = field(default_factory=dict)
    outside_roi: list[Region] = field(default_factory=list)

    @property
    def reconstruction(self) -> np.ndarray:
        """The autoencoder's reconstruction on the input grid (NaN on the 18 px border).

        For a model with background removal (``core.normalise``) it is ``image - residual``, i.e.
        the reconstruction of the normalised image with the removed background added back.
        """
        return self.image - self.residual

    @property
    def flagged(self) -> bool:
        return bool(self.regions)


# --- running the network ----------------------------------------------------------------------

_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _whole_image_runner(model):
    """A tf.function running the whole-image copy of ``model`` (cached per model).

    It returns the reconstruction only, computed with plain TensorFlow ops from the copy's
    weights (``_plain_network``: the same arithmetic up to float rounding, in forms that run
    faster on CPUs), or by the Keras copy itself for a layer stack that function does not know.
    The input signature has free sizes, so it is traced once per model, whatever the tile shape.
    """
    runner = _RUNNERS.get(model)
    if runner is None:
        import tensorflow as tf

        from core.model import whole_image_model

        full = whole_image_model(model)
        net = _plain_network(full)
        if net is None:
            def net(x):
                return full(x, training=False)[0]

        run = tf.function(net, input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
        runner = (full, run)
        _RUNNERS[model] = runner
    return runner[1]


def _plain_network(full):
    """The reconstruction of ``full`` (a whole-image autoencoder) as plain TensorFlow ops.

    Returns a function of a ``(B, H, W, 1)`` float32 tensor, or None when ``full`` is not a chain
    of the layers ``core.model.build_autoencoder`` uses. Inference only (dropout is skipped).
    Two layers are rewritten, each computing the same sums of products in another order (float
    rounding; measured at most 1.2e-7 on the reconstruction):

    - a 3 x 3, stride 2, ``same`` transposed convolution (``out[2i + a] += in[i] * w[a]``, so
      even outputs take taps 2 and 0 of inputs ``i - 1`` and ``i``, odd ones tap 1 of input ``i``)
      becomes a 2 x 2 convolution with four times the filters, one group per output phase,
      followed by ``depth_to_space``: a forward convolution whose bias and ReLU fuse into it;
    - a 3 x 3 ``same`` convolution to one channel becomes a 1 x 1 convolution to its nine taps
      and a sum of nine shifted maps (oneDNN is slow at single-filter convolutions).

    On the 2-core development machine this took about 5 % off the network's CPU time per tile
    (interleaved with the Keras copy; the two large convolutions are unchanged).
    """
    import keras
    import tensorflow as tf

    steps = []
    prev = full.layers[0]
    for layer in full.layers[1:]:
        if layer.input is not prev.output:
            return None
        prev = layer
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.Dropout):
            continue
        if isinstance(layer, keras.layers.ReLU):
            if cfg.get("negative_slope") or cfg.get("threshold"):
                return None
            steps.append(("clip", cfg.get("max_value")))
            continue
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            return None
        if (cfg.get("data_format") != "channels_last" or tuple(cfg["dilation_rate"]) != (1, 1)
                or not cfg.get("use_bias") or cfg.get("activation") not in ("relu", "linear")
                or tuple(cfg["kernel_size"]) != (3, 3) or cfg.get("groups", 1) not in (1, None)):
            return None
        kernel, bias = (np.asarray(w, np.float32) for w in layer.get_weights())
        relu = cfg["activation"] == "relu"
        strides, padding = tuple(cfg["strides"]), cfg["padding"]
        if isinstance(layer, keras.layers.Conv2DTranspose):
            if strides != (2, 2) or padding != "same" or cfg.get("output_padding") is not None:
                return None
            steps.append(("subpixel", tf.constant(_subpixel_kernel(kernel)),
                          tf.constant(np.tile(bias, 4)), relu))
        elif kernel.shape[3] == 1 and strides == (1, 1) and padding == "same":
            taps = kernel[:, :, :, 0].transpose(2, 0, 1).reshape(1, 1, kernel.shape[2], 9)
            steps.append(("taps", tf.constant(taps), float(bias[0]), relu))
        elif strides[0] == strides[1]:
            steps.append(("conv", tf.constant(kernel), tf.constant(bias), strides[0],
                          padding.upper(), relu))
        else:
            return None
    if not full.outputs or prev.output is not full.outputs[0]:
        return None

    def net(x):
        for kind, *p in steps:
            if kind == "clip":
                x = tf.nn.relu(x) if p[0] is None else tf.clip_by_value(x, 0.0, float(p[0]))
            elif kind == "conv":
                k, b, stride, padding, relu = p
                x = tf.nn.bias_add(tf.nn.conv2d(x, k, stride, padding), b)
                x = tf.nn.relu(x) if relu else x
            elif kind == "subpixel":
                k, b, relu = p
                x = tf.nn.bias_add(tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 0], [1, 0], [0, 0]]), k, 1,
                                                "VALID"), b)
                x = tf.nn.depth_to_space(tf.nn.relu(x) if relu else x, 2)
            else:  # taps
                k, b, relu = p
                t = tf.pad(tf.nn.conv2d(x, k, 1, "VALID"), [[0, 0], [1, 1], [1, 1], [0, 0]])
                h, w = tf.shape(x)[1], tf.shape(x)[2]
                acc = t[:, 0:h, 0:w, 0:1]
                for i in range(1, 9):
                    r, c = divmod(i, 3)
                    acc = acc + t[:, r:r + h, c:c + w, i:i + 1]
                x = acc + b
                x = tf.nn.relu(x) if relu else x
        return x

    return net


def _subpixel_kernel(kernel: np.ndarray) -> np.ndarray:
    """A 3 x 3 stride-2 ``same`` transposed kernel ``(3, 3, out, in)`` as a 2 x 2 convolution
    kernel ``(2, 2, in, 4 * out)`` over the input padded by one row and column at the top and
    left; ``depth_to_space(2)`` of its output is the transposed convolution's."""
    _, _, n_out, n_in = kernel.shape
    taps = {0: {0: 2, 1: 0}, 1: {1: 1}}  # output phase -> {position in the 2-window: tap}
    out = np.zeros((2, 2, n_in, 2, 2, n_out), np.float32)
    for pr, rows in taps.items():
        for pc, cols in taps.items():
            for a, kr in rows.items():
                for b, kc in cols.items():
                    out[a, b, :, pr, pc, :] = kernel[kr, kc].T
    return out.reshape(2, 2, n_in, 4 * n_out)


def _patch_runner(model):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, PATCH, PATCH, 1], tf.float32)])
    def run(x):
        return model(x, training=False)[0]

    return run


def reconstruct_whole(image: np.ndarray, model) -> np.ndarray:
    """Reference: one pass of the whole-image network (the scan's) over the image, padded to a
    multiple of 4.

    Returns the reconstruction on the input grid, NaN on the 18 px border. Memory grows with the
    image; use ``scan_image`` for real radiographs.
    """
    rows, cols = image.shape
    pr, pc = -rows % STRIDE, -cols % STRIDE
    x = np.pad(image, ((0, pr), (0, pc)), mode="edge")
    out = _whole_image_runner(model)(x[None, :, :, None].astype(np.float32)).numpy()[0, :, :, 0]
    recon = np.full((rows, cols), np.nan, np.float32)
    recon[OFFSET:rows - OFFSET, OFFSET:cols - OFFSET] = out[:rows - 2 * OFFSET, :cols - 2 * OFFSET]
    return recon


def _tiles_1d(n_padded: int, tile: int) -> list[tuple[int, int, int]]:
    """Tile origins and kept ranges along one axis: ``(start, keep_lo, keep_hi)``."""
    if n_padded <= tile:
        return [(0, OFFSET, n_padded - OFFSET)]
    step = tile - 2 * HALO
    starts = [0]
    while starts[-1] + tile < n_padded:
        starts.append(min(starts[-1] + step, n_padded - tile))
    out = []
    prev_hi = OFFSET
    for s in starts:
        hi = n_padded - OFFSET if s + tile >= n_padded else s + tile - HALO
        out.append((s, prev_hi, hi))
        prev_hi = hi
    return out


def tile_plan(shape: tuple[int, int], *, tile: int = TILE):
    """Tiles for an image of ``shape``: ``(tile_rows, tile_cols, row_tiles, col_tiles)``."""
    if tile % STRIDE or tile < PATCH:
        raise ValueError(f"tile must be a multiple of {STRIDE} and at least {PATCH}, got {tile}")
    rows, cols = shape
    hp, wp = rows + (-rows % STRIDE), cols + (-cols % STRIDE)
    tr, tc = min(tile, hp), min(tile, wp)
    return tr, tc, _tiles_1d(hp, tr), _tiles_1d(wp, tc)


# --- the scan ---------------------------------------------------------------------------------

def resolve_thresholds(bundle, *, fpr: float | None = None) -> Thresholds:
    """The bundle's thresholds, re-derived for ``fpr`` when given; CalibrationError if none."""
    metadata = getattr(bundle, "metadata", None) or {}
    thr = thresholds_from_metadata(metadata, fpr=fpr)
    if thr is None:
        thr = getattr(bundle, "thresholds", None)
    if thr is None:
        name = getattr(bundle, "path", None) or "the model"
        raise CalibrationError(f"{name}: the model has no calibrated thresholds; calibrate it first")
    return thr


def scan_image(
    image, bundle, *, fpr: float | None = None, thresholds: Thresholds | None = None,
    roi: np.ndarray | None = None, pixel_size_um: float | None = None, progress=None,
    cancel=None, tile: int = TILE, overlap: bool = True,
) -> ScanResult:
    """Scan a whole radiograph.

    Parameters
    ----------
    image : ndarray of shape (M, N), float32 [0, 1], or a ``core.imageio.Radiograph``
        M, N >= 192.
    bundle : core.modelfile.ModelBundle
        Its patch ``model``, ``metadata`` (thresholds, okay scores, input normalisation) and
        ``sha256`` are used. Tiles are cut from ``core.normalise.model_input(image, metadata)``:
        the image itself, or its background-removed version for a model trained with
        ``background_sigma``; ``ScanResult.image`` is the image as given either way.
    fpr : float, optional
        Operating point; thresholds for it are derived from the stored okay scores. Default: the
        calibrated thresholds.
    thresholds : Thresholds, optional
        Use these instead of the bundle's (overrides ``fpr``).
    roi : ndarray of bool or uint8, shape (M, N), optional
        Flags outside are not raised (their regions go to ``ScanResult.outside_roi``). A label
        map (``core.roi.WeldROI.labels``: bead and heat-affected zone) lets thresholds calibrated
        with a zone for the heat-affected zone measure the edge zones from the bead's edge
        (``core.residual.weld_zones``); a boolean region is bead throughout.
    pixel_size_um : float, optional
        For sizes in mm (default: the Radiograph's).
    progress : callable, optional
        ``progress(done, total)`` after each tile and after the regions (``total`` = tiles + 1).
    cancel : callable, optional
        Polled before each tile; returning True raises ScanCancelled.
    tile : int
        Tile side in px (multiple of 4); memory grows with its square.
    overlap : bool
        Compute a tile's local statistics in a worker thread while the model runs on the next
        tile (TensorFlow and scipy.ndimage release the GIL); False runs them one after the
        other. The results are the same; at most two tiles' residuals are held either way.

    Returns
    -------
    ScanResult
        ``timings`` holds ``model_s`` (tile cut, network, residual), ``analysis_s`` (local
        statistics, flags and stitching, summed over tiles, overlapped with the model when
        ``overlap``), ``analysis_wait_s`` (time the scan waited for them), ``regions_s``,
        ``total_s``, ``tiles`` and ``tile_shape``.
    """
    t_start = time.perf_counter()
    if hasattr(image, "image") and hasattr(image, "pixel_size_um"):
        if pixel_size_um is None:
            pixel_size_um = image.pixel_size_um
        image = image.image
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.float32:
        raise ValueError(f"image must be a 2-D float32 array, got {image.dtype} {image.shape}")
    rows, cols = image.shape
    if min(rows, cols) < PATCH:
        raise ValueError(f"image is {rows} x {cols} px; scanning needs at least {PATCH} px a side")
    labels = None
    if roi is not None:
        labels = np.asarray(roi)
        roi = labels.astype(bool)
        if roi.shape != image.shape:
            raise ValueError(f"roi shape {roi.shape} differs from the image's {image.shape}")
    thr = thresholds if thresholds is not None else resolve_thresholds(bundle, fpr=fpr)
    zones = _zones(thr, labels, image)
    run = _whole_image_runner(bundle.model)
    source = model_input(image, getattr(bundle, "metadata", None))  # what the tiles are cut from

    tr, tc, row_tiles, col_tiles = tile_plan((rows, cols), tile=tile)
    total = len(row_tiles) * len(col_tiles) + 1
    resid = np.full((rows, cols), np.nan, np.float32)
    lmean = np.full((rows, cols), np.nan, np.float32)
    lstd = np.full((rows, cols), np.nan, np.float32)
    flags = np.zeros((rows, cols), np.uint8)
    maps = (resid, lmean, lstd, flags)
    t_model = t_stats = t_wait = 0.0
    done = 0

    def analyse(res, ro, co, keep):
        t0 = time.perf_counter()
        _analyse_tile(res, ro, co, keep, (rows, cols), thr, maps, zones)
        return time.perf_counter() - t0

    def finish(job):  # wait for a tile's analysis, then report it
        nonlocal t_stats, t_wait, done
        t0 = time.perf_counter()
        t_stats += job.result() if overlap else job()
        t_wait += time.perf_counter() - t0
        done += 1
        if progress is not None:
            progress(done, total)

    pool = None
    if overlap:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weldreview-scan")
    try:
        pending = None
        for r0, rlo, rhi in row_tiles:
            rhi = min(rhi, rows - OFFSET)
            for c0, clo, chi in col_tiles:
                if cancel is not None and cancel():
                    raise ScanCancelled("scan cancelled")
                chi = min(chi, cols - OFFSET)
                t0 = time.perf_counter()
                x = _cut(source, r0, c0, tr, tc)
                out = run(x[None, :, :, None]).numpy()[0, :, :, 0]
                res = x[OFFSET:tr - OFFSET, OFFSET:tc - OFFSET] - out
                t_model += time.perf_counter() - t0
                if pending is not None:
                    finish(pending)
                # tile output index = input index - (origin + OFFSET)
                args = (res, r0 + OFFSET, c0 + OFFSET, (rlo, rhi, clo, chi))
                pending = pool.submit(analyse, *args) if overlap else partial(analyse, *args)
        if pending is not None:
            finish(pending)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if cancel is not None and cancel():
        raise ScanCancelled("scan cancelled")
    t2 = time.perf_counter()
    outside: list[Region] = []
    if roi is not None:
        outside_flags = np.where(roi, 0, flags).astype(np.uint8)
        flags[~roi] = 0
        outside = find_regions(outside_flags, lmean, lstd, thr, pixel_size_um=pixel_size_um, zones=zones)
        del outside_flags
    regions = find_regions(flags, lmean, lstd, thr, pixel_size_um=pixel_size_um, zones=zones)
    t3 = time.perf_counter()
    if progress is not None:
        progress(total, total)
    timings = {
        "model_s": t_model, "analysis_s": t_stats, "analysis_wait_s": t_wait, "regions_s": t3 - t2,
        "total_s": t3 - t_start, "tiles": total - 1, "tile_shape": [tr, tc],
    }
    return ScanResult(
        image=image, residual=resid, local_mean=lmean, local_std=lstd, flags=flags,
        regions=regions, thresholds=thr, model_sha256=getattr(bundle, "sha256", None),
        pixel_size_um=pixel_size_um, timings=timings, outside_roi=outside,
    )


def _zones(thr: Thresholds, roi, image=None):
    """``(roi, [zones])`` when the thresholds have zones and a weld region is given, else None.

    The zones are the edge band or its zones outermost first, after the heat-affected zone when
    the thresholds give it a pair (``core.residual.weld_zones``; ``roi`` a boolean region or a
    label map), or the zones by the slope of ``image``, the radiograph as loaded
    (``core.residual.slope_zones``).
    """
    if roi is None or not thr.has_zones:
        return None
    region = np.asarray(roi).astype(bool, copy=False)
    if thr.slope_zones:
        if image is None:
            raise ValueError("slope zones need the radiograph")
        return region, slope_zones(region, slope_map(image, thr.slope_sigma_px), thr.slope_bounds)
    return region, weld_zones(roi, thr.band_bounds, haz=thr.has_haz)


def threshold_maps(thr: Thresholds, zones, where) -> tuple:
    """Mean and std thresholds at ``where`` (an index into the image): scalars or arrays.

    Inside the weld region's interior the interior pair, in each edge zone its own pair, and
    outside the region (or everywhere without zones) the larger of each (``Thresholds.whole``).
    """
    if zones is None:
        return thr.whole
    roi = zones[0][where]
    whole = thr.whole
    t_mean = np.where(roi, thr.mean, whole[0])
    t_std = np.where(roi, thr.std, whole[1])
    for zone, (m, sd) in zip(zones[1], thr.zone_pairs()):
        inside = zone[where]
        t_mean = np.where(inside, m, t_mean)
        t_std = np.where(inside, sd, t_std)
    return t_mean, t_std


def _analyse_tile(res, ro, co, keep, shape, thr, maps, zones=None) -> None:
    """Local statistics and flags of one tile, written into the kept part of the maps.

    ``res`` is the tile's residual (tile output grid: index = input index - ``(ro, co)``);
    ``keep`` = ``(rlo, rhi, clo, chi)`` is the kept range on the input grid. The statistics are
    computed over the kept range plus the kernel's half-width (all they depend on); residual
    beyond the image's crop (edge padding) is masked, so kernels reaching it are undefined.
    """
    rlo, rhi, clo, chi = keep
    if rhi <= rlo or chi <= clo:
        return
    rows, cols = shape
    resid, lmean, lstd, flags = maps
    h = KERNEL_SIZE // 2
    a0, a1 = max(rlo - ro - h, 0), min(rhi - ro + h, res.shape[0])
    b0, b1 = max(clo - co - h, 0), min(chi - co + h, res.shape[1])
    window = res[a0:a1, b0:b1]
    end_r, end_c = rows - OFFSET - ro - a0, cols - OFFSET - co - b0  # image crop, window grid
    if end_r < window.shape[0] or end_c < window.shape[1]:
        window = window.copy()
        window[max(end_r, 0):, :] = np.nan
        window[:, max(end_c, 0):] = np.nan
    m, s = local_mean_std(window)
    src = (slice(rlo - ro - a0, rhi - ro - a0), slice(clo - co - b0, chi - co - b0))
    dst = (slice(rlo, rhi), slice(clo, chi))
    resid[dst] = res[rlo - ro:rhi - ro, clo - co:chi - co]
    lmean[dst] = m[src]
    lstd[dst] = s[src]
    t_mean, t_std = threshold_maps(thr, zones, dst)
    with np.errstate(invalid="ignore"):
        flags[dst] = (np.abs(m[src]) > t_mean) * np.uint8(FLAG_MEAN) | (
            s[src] > t_std
        ) * np.uint8(FLAG_STD)


def _cut(image: np.ndarray, r0: int, c0: int, tr: int, tc: int) -> np.ndarray:
    """``image[r0:r0+tr, c0:c0+tc]``, edge-padded where it runs past the bottom/right."""
    x = image[r0:r0 + tr, c0:c0 + tc]
    if x.shape != (tr, tc):
        x = np.pad(x, ((0, tr - x.shape[0]), (0, tc - x.shape[1])), mode="edge")
    return np.ascontiguousarray(x, dtype=np.float32)


def find_regions(flags: np.ndarray, local_mean: np.ndarray, local_std: np.ndarray,
                 thresholds: Thresholds, *, pixel_size_um: float | None = None,
                 zones=None) -> list[Region]:
    """Connected flagged kernels (8-connectivity) as Regions, by decreasing severity.

    Ratios are to each kernel's own thresholds (``threshold_maps``: ``zones`` is ``(roi, [edge
    zones])`` when the weld region's edge zones have their own pairs).

    Rows without flags split the image into bands labelled one at a time, so memory follows the
    flagged bands rather than the image.
    """
    from scipy import ndimage

    row_any = flags.any(axis=1)
    if not row_any.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], row_any.view(np.int8), [0]])))
    structure = np.ones((3, 3), bool)
    regions: list[Region] = []
    for b0, b1 in zip(edges[0::2], edges[1::2]):
        band = flags[b0:b1]
        col_any = np.flatnonzero(band.any(axis=0))
        c0, c1 = int(col_any[0]), int(col_any[-1]) + 1
        band = band[:, c0:c1]
        labels, n = ndimage.label(band > 0, structure=structure, output=np.int32)
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            mask = labels[sl] == k
            glob = (slice(sl[0].start + b0, sl[0].stop + b0), slice(sl[1].start + c0, sl[1].stop + c0))
            bits = np.bitwise_or.reduce(band[sl][mask])
            means = local_mean[glob][mask]
            stds = local_std[glob][mask]
            peak_mean = float(means[np.argmax(np.abs(means))])
            peak_std = float(stds.max())
            t_mean, t_std = threshold_maps(thresholds, zones, glob)
            if zones is not None:
                t_mean, t_std = t_mean[mask], t_std[mask]
            mr = float(threshold_ratio(np.abs(means), t_mean).max())
            sr = float(threshold_ratio(stds, t_std).max())
            bbox = (glob[0].start, glob[1].start, glob[0].stop, glob[1].stop)
            size = None
            if pixel_size_um:
                size = ((bbox[2] - bbox[0]) * pixel_size_um / 1000.0,
                        (bbox[3] - bbox[1]) * pixel_size_um / 1000.0)
            tests = {3: "both", FLAG_STD: "std", FLAG_MEAN: "mean"}[int(bits)]
            regions.append(Region(
                id=0, bbox=tuple(int(v) for v in bbox), area_px=int(mask.sum()),
                peak_mean=peak_mean, peak_std=peak_std, mean_ratio=float(mr), std_ratio=float(sr),
                severity=float(max(mr, sr)), tests=tests, size_mm=size,
            ))
    regions.sort(key=lambda r: (-r.severity, r.bbox))
    for i, r in enumerate(regions, start=1):
        r.id = i
    return regions


# --- patches ----------------------------------------------------------------------------------

def aperture_regions(regions, bounds, *, slopes=None, slope_bounds=(), haz: bool = False):
    """``(roi, zones)`` over each patch's aperture, as ``aperture_scores`` takes them.

    The edge zones (``bounds``; with ``haz`` from the bead's edge, after the heat-affected zone,
    ``core.residual.weld_zones``) are found on the whole patch's region, as a scan finds them on
    the whole radiograph's; with ``slope_bounds`` the zones are by the film's slope over each patch
    instead (``slopes``, ``core.residual.slope_zones``). ``(None, None)`` without regions, no
    zones without bounds or ``haz``.
    """
    if regions is None:
        return None, None
    from core.sampler import aperture

    full = np.asarray(regions)
    whole = full.astype(bool, copy=False)
    if slope_bounds:
        if slopes is None:
            raise ValueError("slope zones need the film's slope over each patch (slopes=...)")
        return aperture(whole), slope_zones(aperture(whole), aperture(np.asarray(slopes)), slope_bounds)
    edges = [aperture(z) for z in weld_zones(full, bounds, haz=haz)] if bounds or haz else None
    return aperture(whole), edges


def patch_scores(patches: np.ndarray, model, *, regions=None, edge_band_px: int = 0, slopes=None,
                 slope_bounds=(), haz: bool = False, batch_size: int = 32, progress=None,
                 cancel=None) -> np.ndarray:
    """Per-patch scores ``(max |local mean|, max local std)`` over each patch's aperture.

    Parameters
    ----------
    patches : ndarray of shape (N, 192, 192), float32 [0, 1]
    model : keras.Model
        The patch model (outputs ``[reconstruction, latent]``).
    regions : ndarray of bool or uint8, shape (N, 192, 192), optional
        Weld region over each patch: only kernels centred inside it count (as in a scan with
        ``roi``), so that calibration sees what the scan flags. Label maps
        (``core.roi.WeldROI.labels``) tell the bead from its heat-affected zone for ``haz``.
    edge_band_px : int or sequence of int
        With ``regions``: score the region's interior and its edge band of this width apart
        (``core.residual.edge_band``, computed on the whole patch as the scan computes it on the
        whole radiograph), four columns; bounds such as ``(32, 48)`` score each edge zone apart
        (``core.residual.edge_zones``), two more columns per zone.
    slopes : ndarray of float, shape (N, 192, 192), optional
        The raw film's slope over each patch (``core.residual.slope_map``, cut as the patch was).
    slope_bounds : sequence of float
        With ``regions`` and ``slopes``: zones by the film's slope instead of the edge zones
        (``core.residual.slope_zones``), two more columns per bound.
    haz : bool
        With ``regions``: the heat-affected zone gets a pair of its own, after the interior's,
        and the edge zones are measured from the bead's edge (``core.residual.weld_zones``).

    Returns
    -------
    scores : ndarray of shape (N, 2), or (N, 2 + 2 * zones) with edge zones, float64
    """
    patches = np.asarray(patches)
    if patches.ndim == 4 and patches.shape[-1] == 1:
        patches = patches[..., 0]
    if patches.ndim != 3 or patches.shape[1:] != (PATCH, PATCH):
        raise ValueError(f"patches must have shape (N, {PATCH}, {PATCH}), got {patches.shape}")
    if patches.dtype != np.float32:
        raise ValueError(f"patches must be float32 in [0, 1], got {patches.dtype}")
    run = _patch_runner(model)
    bounds = band_bounds(edge_band_px) if regions is not None else ()
    slope_bounds = tuple(slope_bounds) if regions is not None else ()
    haz = bool(haz) and regions is not None
    if slope_bounds and (bounds or haz):
        raise ValueError("give edge zones (and the HAZ) or slope zones, not both")
    if slope_bounds and (slopes is None or np.shape(slopes) != np.shape(regions)):
        raise ValueError("slope zones need the film's slope over each patch, shaped as the regions")
    out = np.empty((len(patches), 2 + 2 * (len(bounds or slope_bounds) + haz)), np.float64)
    end = OFFSET + APERTURE
    for i in range(0, len(patches), batch_size):
        if cancel is not None and cancel():
            raise ScanCancelled("scoring cancelled")
        x = patches[i:i + batch_size]
        recon = run(x[..., None]).numpy()[..., 0]
        roi, edges = aperture_regions(None if regions is None else regions[i:i + batch_size], bounds,
                                      slopes=None if slopes is None else slopes[i:i + batch_size],
                                      slope_bounds=slope_bounds, haz=haz)
        out[i:i + len(x)] = aperture_scores(x[:, OFFSET:end, OFFSET:end] - recon, regions=roi, edges=edges)
        if progress is not None:
            progress(min(i + batch_size, len(patches)), len(patches))
    return out
