"""The learning curve of the benchmark (core.learning_curve): segments, evaluation, report sections."""

import json

import numpy as np
import pytest

from app.cli import main
from core.learning_curve import highpass_scorer
from core.report import learning_curve_markdown, rerender_report


def _noise_patches(n, seed=0):
    rng = np.random.default_rng(seed)
    return (0.5 + 0.01 * rng.standard_normal((n, 192, 192))).astype(np.float32)


def test_highpass_reference_scores_a_blob_and_respects_the_region():
    patches = _noise_patches(2)
    yy, xx = np.mgrid[:192, :192]
    blob = (yy - 96) ** 2 + (xx - 96) ** 2 <= 4 ** 2
    patches[1][blob] -= 0.15  # a small dark pore
    score = highpass_scorer(2.0)
    plain = score(patches, None)
    assert plain[1, 0] > 3 * plain[0, 0] and plain[1, 1] > 3 * plain[0, 1]
    # a region that leaves the pore outside (with its kernels' reach) scores it like plain weld
    region = np.ones((2, 192, 192), bool)
    region[:, 70:123, :] = False
    masked = score(patches, region)
    assert masked[1, 0] < 1.5 * plain[0, 0]


def test_curve_command_refuses_bad_minutes_and_sets(tmp_path, capsys):
    assert main(["benchmark", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--curve", "10,5"]) == 2
    assert "increasing" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--curve", "5",
                 "--curve-set", "X"]) == 2
    assert "unknown --curve-set" in capsys.readouterr().err


def test_tiny_curve_on_two_radiographs(gdxray_pair, tmp_path):
    from skimage import io

    data = gdxray_pair
    out = tmp_path / "out"
    rc = main(["benchmark", "--data", str(data), "--out", str(out), "--budget", "tiny",
               "--curve", "0.03,0.06", "--signed-sni"])
    assert rc == 0
    curve, = json.loads((out / "learning_curve.json").read_text())["curves"]
    points = curve["points"]
    assert [p["minutes"] for p in points] == [0.03, 0.06]
    assert 1 <= points[0]["steps"] < points[1]["steps"]  # the second segment resumed the first
    assert curve["recipe"]["signed_sni"] is True and "--signed-sni" in curve["command"]
    for p in points + [curve["whole_image"]] + [e["roi"] for e in curve["highpass"].values()]:
        assert all(0.0 <= v <= 1.0 for v in p["tpr"].values()) and "low" in p["tpr"]
        assert p["thresholds"]["fpr_target"] == 0.05
    assert curve["label"] == "SNI-signed_dropout0"
    assert (out / "curve" / curve["label"] / "model_0.06min.keras").is_file()
    picture = io.imread(out / curve["figure"])
    assert picture.ndim == 3 and picture.std() > 0
    assert rerender_report(out) is None  # no tables were run into this folder
    text = "\n".join(learning_curve_markdown([curve]))
    assert "0.06 min (" in text and "paper, Table 3 SNI" in text and "high-pass sigma 2" in text
    assert "| whole radiographs |" in text and "| weld region |" in text
    assert all(isinstance(p["latent_resets"], int) and p["latent_resets"] >= 0 for p in points)
    dead = dict(curve, points=[dict(points[0], latent_resets=7)])
    assert "steps, latent dead and re-centred 7 times)" in "\n".join(learning_curve_markdown([dead]))

    # a second recipe (background removal, input gain, weight on the perturbed terms) is stored
    # beside the first, not over it
    recipe = ["--background", "24", "--gain", "8", "--per-weight", "0.25"]
    rc = main(["benchmark", "--data", str(data), "--out", str(out), "--budget", "tiny",
               "--curve", "0.03", *recipe])
    assert rc == 0
    curves = json.loads((out / "learning_curve.json").read_text())["curves"]
    assert [c["label"] for c in curves] == ["SNI-signed_dropout0", "SNI_dropout0_background24_gain8_per0.25"]
    assert "background removal, sigma 24 px" in curves[1]["recipe_text"]
    assert "input gain 8" in curves[1]["recipe_text"] and "--gain 8 --per-weight 0.25" in curves[1]["command"]
    model_meta = json.loads((out / "curve" / curves[1]["label"] / "model_0.03min.json").read_text())
    assert model_meta["architecture"]["gain"] == 8.0
    assert model_meta["training"]["loss_weights"]["per"] == model_meta["training"]["loss_weights"]["kern_per"] == 0.25
    assert (out / curves[1]["figure"]).is_file()
    # the weld region's edge zones (0-32, 32-48 px) have their own thresholds wherever a region
    # is scored, and the curve records the protocol it was scored with
    assert curves[1]["points"][0]["thresholds"]["edge_band_px"] == 32
    assert [b[0] for b in curves[1]["points"][0]["thresholds"]["inner_bands"]] == [48]
    assert [b[0] for b in curves[1]["highpass"]["2"]["roi"]["thresholds"]["inner_bands"]] == [48]
    assert curves[1]["protocol"] == 3 and curves[1]["evaluation"]["edge_zones_px"] == [32, 48]
    text = "\n".join(learning_curve_markdown(curves[1:]))
    assert "Protocol version 3" in text and "Synthetic anomalies by where their centre lies" in text
    zones = curves[1]["points"][0]["tpr_by_zone"]["raster"]
    assert sum(z["n"] for z in zones.values()) == curves[1]["patch_counts"]["raster"]
    row = next(line for line in text.splitlines() if line.startswith("| 0.03 min | interior |"))
    assert row.endswith(f" {100 * zones['interior']['tpr']:.0f} ({zones['interior']['n']}) |")  # raster last
    assert "edge_band_px" not in curves[1]["whole_image"]["thresholds"]

    # extending continues the same model from its checkpoint; the points join the curve
    first = curves[1]["points"][0]
    rc = main(["benchmark", "--data", str(data), "--out", str(out), "--budget", "tiny",
               "--curve", "0.06", *recipe, "--extend"])
    assert rc == 0
    curves = json.loads((out / "learning_curve.json").read_text())["curves"]
    extended = curves[-1]
    assert [p["minutes"] for p in extended["points"]] == [0.03, 0.06]
    assert extended["points"][1]["steps"] > first["steps"] and "--extend" in extended["command"]
    assert main(["benchmark", "--data", str(data), "--out", str(out), "--budget", "tiny",
                 "--curve", "0.05", *recipe, "--extend"]) == 2  # not beyond the curve

    # re-evaluation scores the stored models again without training: same steps, same numbers
    rc = main(["benchmark", "--data", str(data), "--out", str(out), "--budget", "tiny",
               "--curve", "0.03,0.06", *recipe, "--reevaluate"])
    assert rc == 0
    again = json.loads((out / "learning_curve.json").read_text())["curves"][-1]
    assert [p["steps"] for p in again["points"]] == [p["steps"] for p in extended["points"]]
    assert [p["tpr"] for p in again["points"]] == [p["tpr"] for p in extended["points"]]
    assert again["reevaluated_by"].endswith("--reevaluate") and "--extend" in again["command"]
    assert main(["benchmark", "--data", str(data), "--out", str(out), "--budget", "tiny",
                 "--curve", "0.03", "--reevaluate"]) == 2  # that recipe has no stored models

    # zones by the raw film's slope: the same models re-evaluated, stored as a curve of its own
    distance = json.loads((out / "learning_curve.json").read_text())["curves"]
    assert main(["benchmark", "--data", str(data), "--out", str(out), "--budget", "tiny",
                 "--curve", "0.03", *recipe, "--zones", "slope"]) == 2  # only re-evaluation
    rc = main(["benchmark", "--data", str(data), "--out", str(out), "--budget", "tiny",
               "--curve", "0.03,0.06", *recipe, "--reevaluate", "--zones", "slope"])
    assert rc == 0
    curves = json.loads((out / "learning_curve.json").read_text())["curves"]
    assert curves[:-1] == distance  # the distance-zone curves are left as they were
    slope = curves[-1]
    assert slope["label"] == distance[-1]["label"] + "_slope-zones"
    assert slope["evaluation"] == {**distance[-1]["evaluation"], "zones": "slope",
                                   "slope_quantiles": [0.5, 0.8], "slope_sigma_px": 16.0}
    assert slope["models"] == f"curve/{distance[-1]['label']}"
    assert slope["reevaluated_by"].endswith("--reevaluate --zones slope")
    assert slope["command"] == distance[-1]["command"]  # trained by the recipe's curve's command
    assert [p["steps"] for p in slope["points"]] == [p["steps"] for p in distance[-1]["points"]]
    assert not (out / "curve" / slope["label"]).exists()  # no models of its own
    assert slope["calibration_across_films"] is None  # one training-side film (tested below)
    for p in slope["points"] + [slope["highpass"]["2"]["roi"]]:
        t = p["thresholds"]
        assert len(t["slope_zones"]) == 2 and t["slope_sigma_px"] == 16.0 and "edge_band_px" not in t
    bounds = [z[0] for z in slope["points"][0]["thresholds"]["slope_zones"]]
    assert [z[0] for z in slope["points"][1]["thresholds"]["slope_zones"]] == bounds  # same patches
    zones = slope["points"][0]["tpr_by_zone"]["raster"]
    assert set(zones) <= {f"slope {bounds[0]:.4f}-{bounds[1]:.4f}", f"slope >= {bounds[1]:.4f}",
                          "interior", "outside"}
    assert sum(z["n"] for z in zones.values()) == slope["patch_counts"]["raster"]
    assert (out / slope["figure"]).is_file() and slope["figure"].endswith("_slope-zones.png")
    text = "\n".join(learning_curve_markdown(curves))
    assert f"### {slope['label']}" in text and "zones by the raw film's slope" in text
    assert "by the raw film's slope at their centre" in text
    assert f"| 0.03 min | slope >= {bounds[1]:.4f} |" in text or f"| 0.03 min | slope {bounds[0]:.4f}" in text


def test_background_removal_keeps_a_small_defect_and_drops_the_film_gradient():
    from core.normalise import remove_background

    rows, cols = np.mgrid[:300, :400]
    image = (0.2 + 0.6 * cols / 400).astype(np.float32)  # density wedge across the film
    pore = (rows - 150) ** 2 + (cols - 200) ** 2 <= 3 ** 2
    image[pore] -= 0.1
    out = remove_background(image, 24)
    assert out.dtype == np.float32
    inner = out[60:-60, 80:-80]
    ring = (rows - 150) ** 2 + (cols - 200) ** 2
    around = out[(ring > 8 ** 2) & (ring < 15 ** 2)].mean()
    assert abs(inner[~pore[60:-60, 80:-80]].mean() - 0.5) < 0.01  # the wedge is gone
    assert around - out[pore].mean() > 0.09  # the pore keeps its contrast
    with pytest.raises(ValueError, match="positive"):
        remove_background(image, 0)


def test_twicing_background_leaves_no_offset_on_a_curved_bead():
    from core.normalise import remove_background

    rows = np.arange(400, dtype=np.float32)[:, None]
    bead = 0.3 + 0.5 * np.exp(-((rows - 200) / 60.0) ** 2)  # a rounded bead profile across a weld
    image = np.repeat(bead, 300, axis=1).astype(np.float32)
    centre = slice(150, 250)
    gauss = remove_background(image, 24)[centre] - 0.5
    twice = remove_background(image, 24, "twicing")[centre] - 0.5
    assert np.abs(gauss).max() > 0.02  # the Gaussian leaves the bead's curvature in
    assert np.abs(twice).max() < 0.35 * np.abs(gauss).max()  # 0.31 on this narrow bead
    pore = np.zeros_like(image)
    yy, xx = np.mgrid[:400, :300]
    pore[(yy - 200) ** 2 + (xx - 150) ** 2 <= 9] = -0.1
    diff = remove_background(image + pore, 24, "twicing") - remove_background(image, 24, "twicing")
    assert diff[200, 150] < -0.09  # a small defect keeps its contrast (the operator is linear)
    with pytest.raises(ValueError, match="unknown background method"):
        remove_background(image, 24, "median")


def test_calibration_across_films_leaves_each_film_out(gdxray_pair):
    from core.benchmark import BUDGETS, Split, build_patch_sets, patch_sampler
    from core.calibration import calibrate
    from core.datasets import load_dataset
    from core.learning_curve import calibration_across_films

    a, b = load_dataset(gdxray_pair, include_unmasked=False)
    split = Split([a], [b], [a], "test split")
    sets = build_patch_sets(split, BUDGETS["tiny"], slopes=True)  # the same patches, with slopes
    score = highpass_scorer(2.0, (32, 48))  # the edge zones, which are the default
    across = calibration_across_films(score, split, sets, n_per_film=80, fpr=0.05, seed=3)
    assert set(across["films"]) == {a.name, b.name}
    assert across["films"][a.name]["role"] == "training" and across["films"][b.name]["role"] == "calibration"
    # b's FPR comes from thresholds set on a's patches alone: recompute it by hand
    rng = np.random.default_rng(3)
    xa, ra = patch_sampler([a], seed=3, roi=True).okay_with_roi(80, rng=rng)
    xb, rb = patch_sampler([b], seed=3, roi=True).okay_with_roi(80, rng=rng)
    sa, sb = score(xa, ra), score(xb, rb)
    assert sa.shape == (80, 6)  # interior, then the zones 0-32 and 32-48 px
    thr_a = calibrate(sa, fpr=0.05, edge_band_px=(32, 48))
    assert across["films"][b.name]["fpr"] == pytest.approx(float(np.mean(thr_a.flagged(sb))))
    pooled = calibrate(np.concatenate([sa, sb]), fpr=0.05, edge_band_px=(32, 48))
    assert across["pooled"]["thresholds"]["mean"] == pytest.approx(pooled.mean)
    assert across["pooled"]["thresholds"]["edge_band_px"] == 32
    assert [b[0] for b in across["pooled"]["thresholds"]["inner_bands"]] == [48]
    assert set(across["pooled"]["tpr"]) >= {"circular_hollow", "raster"}
    assert calibration_across_films(score, Split([a], [], [b], "one film"), sets, n_per_film=80,
                                    fpr=0.05) is None
    # a film whose defects leave no room for an okay patch is left out, and said so
    import dataclasses

    full = dataclasses.replace(b)
    full.__dict__["mask"] = np.ones_like(b.mask)
    full.__dict__["name"] = "all-defect"
    full._weld_region = None
    again = calibration_across_films(score, Split([a, full], [b], [a], "three"), sets, n_per_film=80,
                                     fpr=0.05, seed=3)
    assert again["films"]["all-defect"]["fpr"] is None and "no defect-free" in again["films"]["all-defect"]["skipped"]
    assert all(0.0 <= again["films"][f.name]["fpr"] <= 1.0 for f in (a, b))
    assert again["pooled"]["thresholds"]["n_okay"] == 160  # the two films that gave patches

    # zones by the raw film's slope: each film's patches get their slopes, the same bounds for all
    from core.benchmark import calibration_slope_bounds, patch_slopes

    bounds = calibration_slope_bounds(sets)
    by_slope = highpass_scorer(2.0, slope_bounds=bounds)
    across = calibration_across_films(by_slope, split, sets, n_per_film=80, fpr=0.05, seed=3,
                                      slope_bounds=bounds)
    rng = np.random.default_rng(3)
    xa, ra, ga = patch_sampler([a], seed=3, roi=True).okay_with_roi(80, rng=rng, geometries=True)
    xb, rb, gb = patch_sampler([b], seed=3, roi=True).okay_with_roi(80, rng=rng, geometries=True)
    sa, sb = by_slope(xa, ra, patch_slopes([a], ga)), by_slope(xb, rb, patch_slopes([b], gb))
    thr_a = calibrate(sa, fpr=0.05, slope_bounds=bounds)
    assert across["films"][b.name]["fpr"] == pytest.approx(float(np.mean(thr_a.flagged(sb))))
    pooled = across["pooled"]["thresholds"]
    assert [z[0] for z in pooled["slope_zones"]] == pytest.approx(bounds) and "edge_band_px" not in pooled
    assert pooled["mean"] == pytest.approx(calibrate(np.concatenate([sa, sb]), fpr=0.05,
                                                     slope_bounds=bounds).mean)


@pytest.mark.parametrize("method", ["gaussian", "twicing"])
def test_an_indication_normalised_alone_equals_it_normalised_on_the_film(method):
    from core.normalise import normalise_indication, remove_background

    rng = np.random.default_rng(4)
    rows = np.arange(500, dtype=np.float32)[:, None]
    film = np.repeat(0.3 + 0.4 * np.exp(-((rows - 250) / 80.0) ** 2), 600, axis=1)
    film = (film + 0.01 * rng.standard_normal(film.shape)).astype(np.float32)
    blob = np.zeros((192, 192), np.float32)
    yy, xx = np.mgrid[:192, :192]
    blob += 0.1 * np.exp(-((yy - 96) ** 2 + (xx - 90) ** 2) / (2 * 9.0 ** 2))
    on_film = film.copy()
    on_film[150:342, 200:392] += blob
    want = (remove_background(on_film, 24, method) - remove_background(film, 24, method))[150:342, 200:392]
    got = normalise_indication(blob[None], 24, method)[0]
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert got.max() < 0.95 * blob.max()  # a smooth blob loses part of its height


def test_a_curve_run_again_keeps_its_place_in_the_report():
    from core.learning_curve import replace_curve

    curves = [{"label": "a", "v": 1}, {"label": "b", "v": 1}, {"label": "c", "v": 1}]
    assert replace_curve(curves, {"label": "a", "v": 2}) == [
        {"label": "a", "v": 2}, {"label": "b", "v": 1}, {"label": "c", "v": 1}]
    assert [c["label"] for c in replace_curve(curves, {"label": "d"})] == ["a", "b", "c", "d"]
