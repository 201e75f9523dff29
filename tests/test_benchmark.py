"""The benchmark protocol: the split, the training sets, the seed summary, and a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from core.benchmark import (CNN_SETS, GDXRAY_CALIBRATION, GDXRAY_TEST, TEST_ANOMALIES, RunResult,
                            cnn_positive_sources, make_split, ood_perturbation_sources, summarise)
from core.datasets import LabelledRadiograph, load_dataset


def _sides(split):
    return {side: {it.name for it in getattr(split, side)} for side in ("train", "calibration", "test")}


def _groups_on_one_side(split):
    where = {}
    for side in ("train", "calibration", "test"):
        for it in getattr(split, side):
            where.setdefault(it.group, set()).add(side)
    return all(len(s) == 1 for s in where.values())


def test_random_split_never_separates_a_group():
    # 12 radiographs in 6 groups of two (a crop and its original film), no pixels needed
    items = [LabelledRadiograph(f"r{g}{k}", Path(f"r{g}{k}.png"), Path(f"r{g}{k}_mask.png"), f"g{g}")
             for g in range(6) for k in "ab"]
    for seed in range(20):
        split = make_split(items, seed=seed)
        assert _groups_on_one_side(split)
        sides = _sides(split)
        assert sides["test"] and sides["calibration"] and sides["train"]
        assert sum(len(v) for v in sides.values()) == len(items)


def test_gdxray_split_is_fixed_and_keeps_twins_together(gdxray):
    dataset = load_dataset(gdxray, include_unmasked=True)  # with the W0003 originals
    split = make_split(dataset)
    sides = _sides(split)
    assert set(GDXRAY_TEST) <= sides["test"]
    assert set(GDXRAY_CALIBRATION) <= sides["calibration"]
    assert _groups_on_one_side(split)
    # the originals of the test crops (README: 0002 = W0003_0011, 0003 = W0003_0030) are test too
    assert {"W0003_0011", "W0003_0030"} <= sides["test"]
    assert "W0003_0011" not in sides["train"] | sides["calibration"]
    assert "GDXray" in split.rule
    masked = load_dataset(gdxray, include_unmasked=False)
    assert _sides(make_split(masked))["train"] == {"W0001_0001", "W0001_0006", "W0001_0007"}


def test_training_sets_are_validated():
    with pytest.raises(ValueError, match="unknown CNN"):
        cnn_positive_sources("SC", sampler=None)
    with pytest.raises(ValueError, match="unknown OOD"):
        ood_perturbation_sources("D+SNI", [])
    assert ood_perturbation_sources("None", []) == []
    assert len(cnn_positive_sources("D+SC+SPC", sampler=None)) == 3
    assert set(CNN_SETS) == {"D", "D+SC", "D+SC+SPC", "D+SNI"}


def test_summary_is_mean_and_half_range_over_seeds():
    runs = [RunResult("ood", "SNI", seed, 10, 1.0, 1.0, {}, 0.001, 0.002, tpr={"high": t})
            for seed, t in enumerate((0.90, 0.96, 0.93))]
    cell = summarise(runs)["ood"]["SNI"]["high"]
    assert cell.mean == pytest.approx(0.93)
    assert cell.spread == pytest.approx(0.03)


def test_command_refuses_unknown_sets(tmp_path, capsys):
    rc = main(["benchmark", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
               "--cnn-sets", "D,SC"])
    assert rc == 2
    assert "unknown training set" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_run_writes_report_json_and_figures(gdxray_pair, tmp_path, capsys):
    from skimage import io

    data = gdxray_pair
    out = tmp_path / "out"
    rc = main(["benchmark", "--data", str(data), "--out", str(out), "--budget", "tiny", "--seeds", "1",
               "--ood-sets", "SNI", "--cnn-sets", "D+SC"])
    assert rc == 0
    report = (out / "report.md").read_text()
    assert "layout of the paper's Table 2" in report and "layout of the paper's Table 3" in report
    assert "Synthetic raster" in report and "paper 100 (0)" in report
    assert "Protocol version 3" in report and "0-32 px, 32-48 px from its edge" in report
    results = json.loads((out / "results.json").read_text())
    assert {(r["detector"], r["training_set"]) for r in results["runs"]} == {("ood", "SNI"), ("cnn", "D+SC")}
    ood = next(r for r in results["runs"] if r["detector"] == "ood")
    for kind in TEST_ANOMALIES:  # the rate by zone of the weld region adds up to the rate
        zones = ood["tpr_by_zone"][kind]
        assert set(zones) <= {"0-32 px", "32-48 px", "interior", "outside"}
        assert sum(z["n"] for z in zones.values()) == results["budget"]["n_synthetic"]
        assert sum(z["n"] * z["tpr"] for z in zones.values()) / results["budget"]["n_synthetic"] == \
            pytest.approx(ood["tpr"][kind])
    for r in results["runs"]:
        assert set(TEST_ANOMALIES) <= set(r["tpr"])
        assert all(0.0 <= v <= 1.0 for v in r["tpr"].values())
        assert 0.0 <= r["fpr_calibration"] <= results["budget"]["fpr"]
    split = results["split"]
    assert {it["name"] for it in split["train"]}.isdisjoint({it["name"] for it in split["test"]})
    counts = results["patch_counts"]
    assert counts["high"] + counts["mid"] + counts["low"] == results["budget"]["n_test_defect"]
    assert len(results["contrast"]["test_defect_contrasts"]) == results["budget"]["n_test_defect"]
    for name in ("fig9_residual_statistics.png", "fig10_roc.png", "fig11_sliding_window.png"):
        picture = io.imread(out / "figures" / name)
        assert picture.ndim == 3 and picture.shape[0] > 100 and picture.std() > 0
        assert f"figures/{name}" in report
    # the people's reading of the numbers is kept when the report is written again from its JSON
    from core.report import rerender_report

    (out / "notes.md").write_text("The CNN needs more steps than this budget gives.")
    assert rerender_report(out) == out / "report.md"
    again = (out / "report.md").read_text()
    assert "## Reading these numbers" in again and "needs more steps" in again
    assert "layout of the paper's Table 3" in again and "figures/fig10_roc.png" in again


def _run_tiny(data, out):
    return main(["benchmark", "--data", str(data), "--out", str(out), "--budget", "tiny", "--seeds", "1",
                 "--ood-sets", "SNI", "--cnn-sets", "D+SC"])


def test_evaluation_change_reevaluates_stored_models_without_training(gdxray_pair, tmp_path, capsys):
    """Protocol 3 scores OOD patches with the edge zones 0-32 and 32-48 px and centres the
    synthetic anomalies in the weld region: a run stored by version 2 is evaluated again from its
    saved OOD model; a CNN, which is not kept, is trained again."""
    out = tmp_path / "out"
    assert _run_tiny(gdxray_pair, out) == 0
    capsys.readouterr()
    stored = json.loads((out / "runs" / "ood_SNI_seed0.json").read_text())
    assert stored["evaluation"]["edge_zones_px"] == [32, 48]
    assert stored["thresholds"]["edge_band_px"] == 32
    assert [b[0] for b in stored["thresholds"]["inner_bands"]] == [48]
    # the same runs as version 2 stored them: no evaluation recorded, one 32 px band
    for key in ("ood_SNI_seed0", "cnn_D-SC_seed0"):
        run = json.loads((out / "runs" / f"{key}.json").read_text())
        run.pop("evaluation")
        run["train_seconds"] = 12345.0  # what the original training took
        run["thresholds"].pop("inner_bands", None)
        if key.startswith("ood"):  # a field this version does not know is no reason to fail
            run["scoring"] = {"edge_zones_px": [32]}
        (out / "runs" / f"{key}.json").write_text(json.dumps(run))
    model = out / "models" / "ood_SNI_seed0.keras"
    model_bytes = model.read_bytes()

    assert _run_tiny(gdxray_pair, out) == 0
    log = capsys.readouterr()
    text = log.out + log.err
    assert "ood_SNI_seed0: re-evaluated" in text and "ood SNI seed 0: step" not in text
    assert "cnn_D-SC_seed0: trained" in text
    assert model.read_bytes() == model_bytes  # not trained again
    again = json.loads((out / "runs" / "ood_SNI_seed0.json").read_text())
    assert again["evaluation"] == stored["evaluation"] and again["train_seconds"] == 12345.0
    assert [b[0] for b in again["thresholds"]["inner_bands"]] == [48]
    assert again["tpr"] == pytest.approx(stored["tpr"])  # same model, same patches, same evaluation
    cnn = json.loads((out / "runs" / "cnn_D-SC_seed0.json").read_text())
    assert cnn["evaluation"] == stored["evaluation"] and cnn["train_seconds"] != 12345.0
    # a third start reuses both
    assert _run_tiny(gdxray_pair, out) == 0
    text = "".join(capsys.readouterr())
    assert "ood_SNI_seed0: reused" in text and "cnn_D-SC_seed0: reused" in text
    # without the saved model there is nothing to re-evaluate: the run is trained again
    again.pop("evaluation")
    (out / "runs" / "ood_SNI_seed0.json").write_text(json.dumps(again))
    model.unlink()
    assert _run_tiny(gdxray_pair, out) == 0
    text = "".join(capsys.readouterr())
    assert "ood_SNI_seed0: trained" in text and model.is_file()


def test_synthetic_anomalies_lie_in_the_weld_region_a_scan_inspects(gdxray_pair):
    import dataclasses

    from core.benchmark import BUDGETS, Split, build_patch_sets

    a, b = load_dataset(gdxray_pair, include_unmasked=False)
    added = []

    def indication(x):  # sees each synthetic set's anomalies as they are added
        added.append(np.abs(x))
        return x

    budget = dataclasses.replace(BUDGETS["tiny"], n_synthetic=60)
    sets = build_patch_sets(Split([a], [a], [b], "test split"), budget, indication=indication)
    assert len(added) == len(TEST_ANOMALIES)
    rows, cols = np.mgrid[:added[0].shape[1], :added[0].shape[2]]
    for kind, anomaly in zip(TEST_ANOMALIES, added):
        centres = sets.anomaly_centres[kind]
        assert all(region[r, c] for region, (r, c) in zip(sets.regions[kind], centres)), kind
        if kind == "partial_circle":
            continue  # an arc: its centroid is not its centre
        for x, region, centre in zip(anomaly, sets.regions[kind], centres):
            r, c = (int(round((x * g).sum() / x.sum())) for g in (rows, cols))  # its centre
            assert abs(r - centre[0]) <= 1 and abs(c - centre[1]) <= 1  # the recorded centre
            assert region[r - 1:r + 2, c - 1:c + 2].any(), kind


# --- zones by the raw film's slope (an evaluation option) ------------------------------------------

def _film(seed=0, shape=(420, 520)):
    """A smooth film with a bead across it and some texture (float32 [0, 1])."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    rows = np.arange(shape[0], dtype=np.float64)[:, None]
    bead = 0.3 + 0.4 * np.exp(-((rows - 0.45 * shape[0]) / 70.0) ** 2)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 6) * 0.2
    return (bead + texture + 0.001 * rng.standard_normal(shape)).astype(np.float32)


def test_patch_slopes_are_the_raw_films_slope_where_the_patch_was_cut():
    from types import SimpleNamespace

    from core.benchmark import patch_slopes, raw_film
    from core.residual import slope_map
    from core.sampler import PatchGeometry, extract

    film = _film()
    raw = SimpleNamespace(image=film)
    normalised = SimpleNamespace(image=np.zeros_like(film), _raw_item=raw)  # a background-removed copy
    assert raw_film(normalised) is film
    full = slope_map(film, 16.0)
    r0, c0 = 110, 150
    plain = PatchGeometry(0, (r0 + 95.5, c0 + 95.5), np.eye(2))
    # a 90-degree turn and a flip on the pixel grid: the magnitude is the film's, cut the same way
    turned = PatchGeometry(0, (r0 + 95.5, c0 + 95.5), np.array([[0.0, -1.0], [-1.0, 0.0]]))
    got = patch_slopes([normalised], [plain, turned], sigma=16.0)
    assert got.shape == (2, 192, 192) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], full[r0:r0 + 192, c0:c0 + 192], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(got[1], extract(full, turned, order=1), rtol=1e-5, atol=1e-8)
    # a synthetic anomaly's own slope: as if it had been added to the raw film there
    yy, xx = np.mgrid[:192, :192]
    blob = 0.05 * np.exp(-((yy - 80) ** 2 + (xx - 100) ** 2) / (2 * 8.0 ** 2))
    on_film = film.astype(np.float64).copy()
    on_film[r0:r0 + 192, c0:c0 + 192] += blob
    with_blob = patch_slopes([raw], [plain], sigma=16.0, anomalies=blob[None])[0]
    np.testing.assert_allclose(with_blob, slope_map(on_film, 16.0)[r0:r0 + 192, c0:c0 + 192],
                               rtol=1e-4, atol=1e-7)
    assert np.abs(with_blob - got[0]).max() > 1e-4  # the anomaly's slope is in


def test_slopes_leave_every_patch_and_draw_as_they_were(gdxray_pair):
    from core.benchmark import (BUDGETS, GRADES, Split, build_patch_sets, film_gradient, patch_sampler,
                                patch_slopes)
    from core.calibration_review import origins
    from core.sampler import PatchGeometry

    a, b = load_dataset(gdxray_pair, include_unmasked=False)
    split = Split([a], [a], [b], "test split")
    plain = build_patch_sets(split, BUDGETS["tiny"])
    sloped = build_patch_sets(split, BUDGETS["tiny"], slopes=True)
    assert plain.slopes is None and sloped.slope_sigma_px == 16.0
    for name in ("calibration_okay", "test_okay"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(sloped, name))
    for g in GRADES:
        np.testing.assert_array_equal(plain.test_defects[g], sloped.test_defects[g])
    for kind in TEST_ANOMALIES:
        np.testing.assert_array_equal(plain.synthetic[kind], sloped.synthetic[kind])
        np.testing.assert_array_equal(plain.anomaly_centres[kind], sloped.anomaly_centres[kind])
    assert set(plain.regions) == set(sloped.slopes)
    for name, region in plain.regions.items():
        np.testing.assert_array_equal(region, sloped.regions[name])
        assert sloped.slopes[name].shape == region.shape and sloped.slopes[name].dtype == np.float32
    assert plain.calibration_origins == sloped.calibration_origins
    # the calibration patches' slopes are the film's gradient cut where their origins say
    where = origins({"okay_origins": sloped.calibration_origins})
    geos = [PatchGeometry(0, o.centre, o.matrix) for o in where[:3]]
    np.testing.assert_array_equal(sloped.slopes["calibration_okay"][:3], patch_slopes([a], geos))
    assert all(np.isfinite(s).all() and s.max() > 0 for s in sloped.slopes.values())
    assert len(film_gradient(a)) == 2 and a._film_gradient  # cached on the film
    # the defect patches with their geometries are exactly the sampler's defect draws
    want = patch_sampler([b], seed=5, roi=True).defect(4, rng=np.random.default_rng(1), with_roi=True)
    sampler = patch_sampler([b], seed=5, roi=True)
    *got, geos = sampler.defect(4, rng=np.random.default_rng(1), with_roi=True, geometries=True)
    for x, y in zip(want, got):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(sampler.patch(geos[2]), got[0][2])


def test_slope_zones_calibrate_and_split_the_rate_by_zone(gdxray_pair):
    from core.benchmark import (BUDGETS, Split, build_patch_sets, calibration_slope_bounds,
                                evaluate_residual_scores, tpr_by_zone)
    from core.calibration import Thresholds
    from core.learning_curve import highpass_scorer

    a, b = load_dataset(gdxray_pair, include_unmasked=False)
    sets = build_patch_sets(Split([a], [a], [b], "test split"), BUDGETS["tiny"], slopes=True)
    bounds = calibration_slope_bounds(sets)
    assert len(bounds) == 2 and 0 < bounds[0] < bounds[1]
    numbers, scores = evaluate_residual_scores(highpass_scorer(2.0, slope_bounds=bounds), sets,
                                               fpr=0.05, slope_bounds=bounds)
    thr = Thresholds.from_dict(numbers["thresholds"])
    assert thr.slope_bounds == pytest.approx(bounds) and thr.slope_sigma_px == 16.0
    assert "edge_band_px" not in numbers["thresholds"] and scores["test_okay"].shape[1] == 6
    labels = thr.zone_labels()
    n = BUDGETS["tiny"].n_synthetic
    for kind in TEST_ANOMALIES:  # each anomaly in one zone, the rates add up to the set's
        zones = numbers["tpr_by_zone"][kind]
        assert set(zones) <= {*labels, "interior", "outside"}
        assert sum(z["n"] for z in zones.values()) == n
        assert sum(z["n"] * z["tpr"] for z in zones.values()) / n == pytest.approx(numbers["tpr"][kind])
    # a centre's zone is the slope there: move every raster centre's slope above the top bound
    steep = dict(sets.slopes, raster=np.full_like(sets.slopes["raster"], 2 * bounds[1]))
    import dataclasses

    zones = tpr_by_zone(dataclasses.replace(sets, slopes=steep), thr, scores)["raster"]
    assert set(zones) <= {labels[-1], "outside"} and labels[-1].startswith("slope >=")
    with pytest.raises(ValueError, match="slope"):  # no slopes drawn: refused, not silently distance
        evaluate_residual_scores(highpass_scorer(2.0, slope_bounds=bounds),
                                 dataclasses.replace(sets, slopes=None), fpr=0.05, slope_bounds=bounds)


def test_tables_refuse_slope_zones(tmp_path, capsys):
    rc = main(["benchmark", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--zones", "slope"])
    assert rc == 2
    assert "--zones slope is for learning curves" in capsys.readouterr().err
