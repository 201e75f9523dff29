"""Zones by the film's slope end to end: ``weldreview calibrate --zones slope``, a scan with the
thresholds it stores, the calibration review and the synthetic evaluation.

A real (tiny, untrained) model is calibrated for real on two generated welds through the command
line, once for the module; tests that change it work on a copy.
"""

from __future__ import annotations

import contextlib
import io
import shutil

import numpy as np
import pytest

from core.calibration import Thresholds, calibrate, thresholds_from_metadata
from core.imageio import normalise
from core.model import APERTURE, OFFSET, build_autoencoder
from core.modelfile import load_model, read_metadata, save_model, sidecar_path
from core.residual import slope_bounds, slope_map, slope_zones
from core.synthetic import generate_weld

CAL = ["--synthetic", "2", "--zones", "slope", "--patches", "80", "--fpr", "0.05", "--seed", "1000"]


@pytest.fixture(scope="module")
def slope_model(tmp_path_factory):
    """A tiny model calibrated with slope zones, and what ``weldreview calibrate`` printed."""
    from app.cli import main

    folder = tmp_path_factory.mktemp("slope")
    path = save_model(build_autoencoder(seed=3, filters=(4, 6), dropout=0.0), folder / "s.keras",
                      metadata={"name": "s"})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["calibrate", str(path), *CAL]) == 0
    return path, out.getvalue()


@pytest.fixture
def copied(slope_model, tmp_path):
    """A copy of the slope-calibrated model (file and sidecar) of this test's own."""
    path = tmp_path / "s.keras"
    shutil.copy(slope_model[0], path)
    shutil.copy(sidecar_path(slope_model[0]), sidecar_path(path))
    return path


def _raw(seed: int) -> np.ndarray:
    return normalise(generate_weld(seed).image, bits_stored=16)[0]


def test_calibrate_by_slope_stores_slope_zones_and_a_scan_applies_each_pair(slope_model):
    from app.commands.calibrate import draw_okay_patches
    from core.calibration_review import origins
    from core.sampler import PatchGeometry, extract
    from core.scanning import patch_scores, scan_image

    path, printed = slope_model
    bundle = load_model(path)
    thr = bundle.thresholds
    assert len(thr.slope_zones) == 2 and thr.slope_sigma_px == 16 and not thr.has_edge_band
    low, high = thr.slope_bounds
    assert "where the film's slope is below" in printed and f"slope >= {high:.4f}" in printed
    assert "Gaussian of 16 px" in printed and "edge band" not in printed

    # the thresholds are those of the okay patches scored in zones of the raw films' slope, split
    # at the median and 80 % of their kernels' slopes
    patches, regions, _, _, slopes = draw_okay_patches(bundle.metadata, 80, synthetic=2, seed=1000,
                                                       slopes=True)
    inner = np.s_[:, OFFSET:OFFSET + APERTURE, OFFSET:OFFSET + APERTURE]
    assert thr.slope_bounds == pytest.approx(slope_bounds(slopes[inner], regions[inner], (0.5, 0.8)))
    scores = patch_scores(patches, bundle.model, regions=regions, slopes=slopes, **thr.scoring())
    assert thr == calibrate(scores, fpr=0.05, **thr.zoning())
    o = origins(bundle.metadata)[0]
    film = slope_map(_raw(int(o.source.split(":")[1])))
    np.testing.assert_allclose(slopes[0], extract(film, PatchGeometry(0, o.centre, o.matrix), order=1),
                               atol=1e-7)

    # a scan flags each slope zone of the radiograph at its own pair
    weld = generate_weld(1000)
    image, roi = _raw(1000)[:, :600], weld.haz_mask[:, :600]
    result = scan_image(image, bundle, roi=roi)
    zones = slope_zones(roi, slope_map(image, 16), thr.slope_bounds)
    interior = roi & ~np.logical_or.reduce(zones)
    m, sd, flagged = np.abs(result.local_mean), result.local_std, result.flags > 0
    for where, (tm, ts) in zip([interior, *zones], [(thr.mean, thr.std), *thr.zone_pairs()]):
        ok = where & np.isfinite(m)
        assert ok.sum() > 1000
        assert np.mean(flagged[ok] == ((m[ok] > tm) | (sd[ok] > ts))) > 0.999
    steep = zones[-1] & np.isfinite(m)  # the interior's pair there would flag otherwise
    assert thr.zone_pairs()[-1] != (thr.mean, thr.std)
    assert np.any(flagged[steep] != ((m[steep] > thr.mean) | (sd[steep] > thr.std)))


def test_slope_zones_take_no_edge_band_and_need_the_weld_region(tmp_path, capsys):
    from app.cli import main
    from app.commands.calibrate import calibrate_file
    from core.errors import CalibrationError

    model = str(tmp_path / "x.keras")  # refused before the model is read
    assert main(["calibrate", model, "--synthetic", "2", "--zones", "slope", "--edge-band", "32"]) == 2
    err = capsys.readouterr().err
    assert "--edge-band" in err and "--zones slope" in err and "one or the other" in err
    assert main(["calibrate", model, "--synthetic", "2", "--zones", "slope", "--whole-image"]) == 2
    assert "--whole-image" in capsys.readouterr().err
    with pytest.raises(CalibrationError, match="edge_band_px"):
        calibrate_file(model, synthetic=1, zones="slope", edge_band_px=(32,))


def test_excluding_calibration_patches_keeps_the_slope_zones(copied, capsys):
    from app.cli import main
    from core.calibration_review import exclude, exclusions, kept_scores, tail
    from core.store import Store

    before = Thresholds.from_dict(read_metadata(copied)["thresholds"])
    with Store(copied.parent / "r.db") as store:
        store.add_user("sue", role="supervisor")
        top = tail(read_metadata(copied), 1)[0].index
        after = exclude(copied, [top], user="sue", reason="unmarked pore", store=store)
    meta = read_metadata(copied)
    assert after.slope_bounds == before.slope_bounds and after.slope_sigma_px == 16
    assert after == calibrate(kept_scores(meta), fpr=0.05, **before.zoning()) and after.n_okay == 79
    assert thresholds_from_metadata(meta, fpr=0.1).slope_bounds == before.slope_bounds

    capsys.readouterr()
    assert main(["calibrate", str(copied), "--review", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[3:9] == ["|mean|", "std", "s1|m|", "s1", "sd", "s2|m|"]
    labels = after.zone_labels()
    at = lines.index(f"zones: s1: {labels[0]}, s2: {labels[1]} (grey levels/px)")
    assert lines[at + 1].startswith("Each film left out") and "synthetic:1000: " in "\n".join(lines[at + 2:])
    # --spot re-cuts the patch from its film and runs the model on it: no zones needed
    second = next(t.index for t in tail(meta, 5) if t.excluded is None)
    assert main(["calibrate", str(copied), "--exclude", str(second), "--spot", "--user", "sue",
                 "--reason", "scratch", "--db", str(copied.parent / "r.db")]) == 0
    assert "thresholds now:" in capsys.readouterr().out and second in exclusions(read_metadata(copied))
    assert Thresholds.from_dict(read_metadata(copied)["thresholds"]).slope_bounds == before.slope_bounds


@pytest.mark.parametrize("bound, expected", [(1e-9, 1.0), (1e3, 0.0)])
def test_synthetic_evaluation_scores_in_the_slope_zones(slope_model, bound, expected):
    """Nothing is flagged in the flat interior (threshold 1e9), everything in the steep zone
    (threshold 0): a slope bound below every slope flags every patch, one above none."""
    from core.evaluation import evaluate_synthetic
    from core.modelfile import ModelBundle

    thr = Thresholds(1e9, 1e9, 0.05, 80, 0.05, (0.0, 1.0), slope_zones=((bound, 0.0, 0.0),),
                     slope_sigma_px=16)
    bundle = ModelBundle(load_model(slope_model[0]).model, metadata={"thresholds": thr.to_dict()})
    result = evaluate_synthetic(bundle, n_radiographs=1, n_okay=8, n_defect=6, n_anomaly=3)
    assert result.fpr == expected and result.thresholds["slope_zones"][0][0] == bound
    assert all(v == expected for v in result.tpr.values() if not np.isnan(v))


def test_train_calibrates_by_slope_when_asked(tmp_path, capsys):
    import argparse

    from app.cli import main
    from app.commands.train import _calibrate
    from core.training_runs import calibrate_command

    path = save_model(build_autoencoder(seed=3, filters=(4, 6), dropout=0.0), tmp_path / "t.keras",
                      metadata={"name": "t"})
    args = argparse.Namespace(calibrate_data=None, calibrate_synthetic=1, calibrate_fpr=0.05,
                              calibrate_patches=60, calibrate_seed=None, calibrate_zones="slope", quiet=True)
    assert _calibrate(args, path, None, None, f"wrote {path}") == 0
    assert len(load_model(path).thresholds.slope_zones) == 2
    assert "slope >= " in capsys.readouterr().out
    assert calibrate_command("m.keras", {"calibrate_synthetic": 1, "calibrate_zones": "slope"}) == \
        'weldreview calibrate "m.keras" --synthetic 1 --zones slope'
    base = ["train", "--steps", "2", "--synthetic", "1", "--quiet", "--out", str(tmp_path / "n.keras")]
    assert main([*base, "--calibrate-zones", "slope"]) == 2  # calibrate on what?
    assert "--calibrate-zones needs --calibrate-data DIR" in capsys.readouterr().err
