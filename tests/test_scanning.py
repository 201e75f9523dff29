"""Whole-radiograph scan: tiled result equals one pass, aligned maps, regions, ROI, cancel."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from core.calibration import Thresholds
from core.model import build_autoencoder
from core.residual import local_mean_std
from core.scanning import (
    HALO, ScanCancelled, find_regions, patch_scores, reconstruct_whole, scan_image, tile_plan,
)


@dataclass
class _Bundle:  # what scan_image reads from a core.modelfile.ModelBundle
    model: object
    sha256: str = "0" * 64
    metadata: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def model():
    return build_autoencoder(seed=3)


def _weld(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.linspace(-1, 1, shape[0])[:, None]
    img = 0.45 + 0.2 * np.exp(-(rows / 0.4) ** 2) + 0.01 * rng.standard_normal(shape)
    return np.clip(img, 0, 1).astype(np.float32)


def _thresholds(mean, std) -> Thresholds:
    return Thresholds(mean, std, 0.001, 3000, 0.0, (0.0, 0.0012))


def test_tiles_equal_one_pass_over_the_whole_image(model):
    img = _weld((403, 611))  # sides not multiples of 4
    tr, tc, row_tiles, col_tiles = tile_plan(img.shape, tile=196)
    assert (tr, tc) == (196, 196) and len(row_tiles) == 3 and len(col_tiles) == 4
    res = scan_image(img, _Bundle(model), thresholds=_thresholds(1.0, 1.0), tile=196)
    assert res.timings["tiles"] == 12
    ref = reconstruct_whole(img, model)
    np.testing.assert_allclose(res.reconstruction, ref, atol=1e-5, equal_nan=True)
    ref_m, ref_s = local_mean_std(img - ref)
    np.testing.assert_allclose(res.local_mean, ref_m, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(res.local_std, ref_s, atol=1e-5, equal_nan=True)
    big = scan_image(img, _Bundle(model), thresholds=_thresholds(1.0, 1.0), tile=1024)
    assert big.timings["tiles"] == 1
    np.testing.assert_allclose(big.local_std, res.local_std, atol=1e-5, equal_nan=True)


def test_tile_count_is_bounded_for_long_images():
    tr, tc, row_tiles, col_tiles = tile_plan((3000, 30000), tile=1024)
    assert (tr, tc) == (1024, 1024)
    step = 1024 - 2 * HALO
    assert len(row_tiles) == -(-(3000 - 1024) // step) + 1
    assert len(col_tiles) == -(-(30000 - 1024) // step) + 1
    kept = [hi - lo for _, lo, hi in col_tiles]
    assert sum(kept) == 30000 - 36  # the kept ranges tile the defined area exactly once


def test_maps_are_aligned_with_nan_borders(model):
    img = _weld((200, 260))
    res = scan_image(img, _Bundle(model, sha256="ab" * 32), thresholds=_thresholds(1.0, 1.0),
                     pixel_size_um=40.0)
    defined = ~np.isnan(res.reconstruction)
    assert defined[18:182, 18:242].all() and defined.sum() == 164 * 224
    assert (~np.isnan(res.local_std)).sum() == 156 * 216 and not np.isnan(res.local_std[22, 22])
    np.testing.assert_allclose(res.reconstruction, reconstruct_whole(img, model), atol=1e-5,
                               equal_nan=True)
    assert res.flags.dtype == np.uint8 and not res.flags.any() and res.regions == []
    assert res.model_sha256 == "ab" * 32 and res.pixel_size_um == 40.0


def test_inserted_defect_becomes_a_region_and_roi_excludes_it(model):
    img = _weld((240, 400), seed=1)
    clean = scan_image(img, _Bundle(model), thresholds=_thresholds(1.0, 1.0))
    thr = _thresholds(1.05 * np.nanmax(np.abs(clean.local_mean)), 1.05 * np.nanmax(clean.local_std))
    assert scan_image(img, _Bundle(model), thresholds=thr).regions == []
    spot = img.copy()
    spot[110:124, 200:214] -= 0.3
    res = scan_image(spot, _Bundle(model), thresholds=thr, pixel_size_um=50.0)
    assert res.regions, "a 14 px dark spot must be flagged"
    worst = res.regions[0]
    r0, c0, r1, c1 = worst.bbox
    assert r0 < 124 and r1 > 110 and c0 < 214 and c1 > 200
    assert worst.severity == max(worst.mean_ratio, worst.std_ratio) > 1.0
    assert worst.tests in ("both", "std", "mean")
    assert worst.size_mm == pytest.approx(((r1 - r0) * 0.05, (c1 - c0) * 0.05))
    roi = np.ones(img.shape, bool)
    roi[:, 150:260] = False
    masked = scan_image(spot, _Bundle(model), thresholds=thr, roi=roi)
    assert masked.regions == [] and not masked.flags[:, 150:260].any()
    assert [r.bbox for r in masked.outside_roi] == [r.bbox for r in res.regions]


def test_find_regions_reports_peaks_ratios_and_tests():
    flags = np.zeros((50, 60), np.uint8)
    mean = np.zeros((50, 60), np.float32)
    std = np.zeros((50, 60), np.float32)
    flags[10:13, 20:25] = 2
    flags[11, 22] = 3
    mean[11, 22], std[10:13, 20:25], std[12, 24] = -0.04, 0.03, 0.06
    flags[40, 50] = 1
    mean[40, 50] = 0.025
    regions = find_regions(flags, mean, std, _thresholds(0.02, 0.02), pixel_size_um=100.0)
    assert [r.id for r in regions] == [1, 2]
    a, b = regions
    assert a.bbox == (10, 20, 13, 25) and a.area_px == 15 and a.tests == "both"
    assert a.peak_mean == pytest.approx(-0.04) and a.peak_std == pytest.approx(0.06)
    assert a.std_ratio == pytest.approx(3.0) and a.severity == pytest.approx(3.0)
    assert a.size_mm == pytest.approx((0.3, 0.5))
    assert b.tests == "mean" and b.bbox == (40, 50, 41, 51) and b.mean_ratio == pytest.approx(1.25)


def test_progress_and_cancel(model):
    img = _weld((300, 300))
    seen = []
    scan_image(img, _Bundle(model), thresholds=_thresholds(1.0, 1.0), tile=200,
               progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == len(seen) == 5  # 4 tiles + regions
    calls = []
    with pytest.raises(ScanCancelled):
        scan_image(img, _Bundle(model), thresholds=_thresholds(1.0, 1.0), tile=200,
                   cancel=lambda: calls.append(1) or len(calls) > 1)
    assert len(calls) == 2


def test_uncalibrated_model_is_refused(model):
    from core.errors import CalibrationError

    with pytest.raises(CalibrationError, match="no calibrated thresholds"):
        scan_image(_weld((200, 200)), _Bundle(model))


def test_patch_scores_flag_a_spot(model):
    rng = np.random.default_rng(5)
    patches = np.stack([_weld((192, 192), seed=s) for s in range(3)])
    patches[2, 90:100, 90:100] += 0.3
    scores = patch_scores(patches, model, batch_size=2)
    assert scores.shape == (3, 2) and np.isfinite(scores).all()
    assert scores[2, 0] > max(scores[0, 0], scores[1, 0]) + 0.1
    recon = model(patches[..., None], training=False)[0].numpy()[..., 0]
    for i in range(3):
        m, s = local_mean_std(patches[i, 18:174, 18:174] - recon[i])
        assert scores[i] == pytest.approx([np.nanmax(np.abs(m)), np.nanmax(s)], rel=1e-5)
    with pytest.raises(ValueError, match="192"):
        patch_scores(rng.random((2, 100, 100), dtype=np.float32), model)


def test_tile_statistics_equal_statistics_of_the_stitched_residual(model):
    img = _weld((403, 611), seed=2)  # 12 tiles with edge padding on two sides
    res = scan_image(img, _Bundle(model), thresholds=_thresholds(1.0, 1.0), tile=196)
    ref_m, ref_s = local_mean_std(res.residual)
    np.testing.assert_array_equal(np.isnan(res.local_mean), np.isnan(ref_m))
    np.testing.assert_array_equal(np.isnan(res.local_std), np.isnan(ref_s))
    np.testing.assert_allclose(res.local_mean, ref_m, rtol=0, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(res.local_std, ref_s, rtol=0, atol=1e-7, equal_nan=True)


def test_overlapped_and_sequential_analysis_agree(model):
    import threading

    img = _weld((403, 611), seed=4)
    img[200:214, 300:314] -= 0.3  # something to flag
    clean = scan_image(img, _Bundle(model), thresholds=_thresholds(1.0, 1.0), tile=196)
    thr = _thresholds(float(np.nanpercentile(np.abs(clean.local_mean), 99.5)),
                      float(np.nanpercentile(clean.local_std, 99.5)))
    runs = {}
    for overlap in (True, False):
        seen = []
        res = scan_image(img, _Bundle(model), thresholds=thr, tile=196, overlap=overlap,
                         progress=lambda d, t: seen.append((d, t, threading.get_ident())))
        assert [d for d, _, _ in seen] == list(range(1, 14)) and {t for _, t, _ in seen} == {13}
        assert {ident for _, _, ident in seen} == {threading.get_ident()}  # caller's thread
        runs[overlap] = res
    a, b = runs[True], runs[False]
    assert a.flags.any() and a.regions
    for name in ("residual", "local_mean", "local_std", "flags"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert [r.to_dict() for r in a.regions] == [r.to_dict() for r in b.regions]
    assert a.timings["analysis_s"] > 0 and a.timings["analysis_wait_s"] >= 0


def test_failure_in_tile_analysis_reaches_the_caller(model, monkeypatch):
    import core.scanning as scanning

    def broken(*args, **kwargs):
        raise RuntimeError("analysis failed")

    monkeypatch.setattr(scanning, "_analyse_tile", broken)
    for overlap in (True, False):
        with pytest.raises(RuntimeError, match="analysis failed"):
            scan_image(_weld((300, 300)), _Bundle(model), thresholds=_thresholds(1.0, 1.0),
                       tile=200, overlap=overlap)


@pytest.mark.parametrize("filters", [None, (8, 12)])
def test_scan_network_equals_the_keras_whole_image_model(model, filters):
    from core.model import whole_image_model
    from core.scanning import _RUNNERS, _plain_network, _whole_image_runner

    net = model if filters is None else build_autoencoder(seed=1, filters=filters)
    full = whole_image_model(net)
    assert _plain_network(full) is not None  # the rewritten ops, not the fallback
    run = _whole_image_runner(net)
    for shape in ((196, 200), (404, 612)):  # one trace serves every tile shape
        x = np.clip(_weld(shape, seed=5), 0, 1)[None, :, :, None]
        got = run(x).numpy()
        want = full(x, training=False)[0].numpy()
        assert got.shape == want.shape == (1, shape[0] - 36, shape[1] - 36, 1)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert run.experimental_get_tracing_count() == 1
    assert _RUNNERS[net][1] is run


def test_unknown_layer_stack_falls_back_to_keras(model):
    import keras

    from core.scanning import _plain_network

    inp = keras.Input((None, None, 1))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="tanh")(inp)
    assert _plain_network(keras.Model(inp, [out, out])) is None
