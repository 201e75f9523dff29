"""``weldreview scan`` end to end with a tiny calibrated model; the overlay's colours."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from app.cli import main
from core.calibration import calibrate_model
from core.errors import CalibrationError
from core.model import build_autoencoder
from core.modelfile import load_model, save_model
from core.overlay import COLOURS, render_overlay


def _weld(shape, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.linspace(-1, 1, shape[0])[:, None]
    img = 0.45 + 0.2 * np.exp(-(rows / 0.4) ** 2) + 0.01 * rng.standard_normal(shape)
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(build_autoencoder(seed=7), path, metadata={"training": {"steps": 0, "seed": 7}})
    okay = np.stack([_weld((192, 192), seed=100 + i) for i in range(60)])
    thr = calibrate_model(path, okay, fpr=0.05)
    assert thr.n_okay == 60 and thr.fpr_achieved <= 0.05
    return path


def _write_16bit(path, image) -> None:
    tifffile.imwrite(path, np.rint(image * 4095).astype(np.uint16),
                     resolution=(250.0, 250.0), resolutionunit="CENTIMETER")


def test_calibration_is_stored_and_refused_when_too_few(model_file):
    bundle = load_model(model_file)
    assert bundle.thresholds.fpr_target == 0.05 and bundle.thresholds.n_okay == 60
    assert bundle.metadata["okay_scores"]["shape"] == [60, 2]
    with pytest.raises(CalibrationError, match="at least 3000"):
        calibrate_model(model_file, np.zeros((100, 192, 192), np.float32), fpr=0.001)


def test_scan_writes_json_maps_and_overlay(model_file, tmp_path, capsys):
    image = _weld((240, 400), seed=1)
    image[110:124, 200:214] -= 0.3
    _write_16bit(tmp_path / "weld.tif", image)
    rc = main(["scan", str(tmp_path / "weld.tif"), "--model", str(model_file),
               "--json", str(tmp_path / "out.json"), "--maps", str(tmp_path / "maps.npz"),
               "--overlay", str(tmp_path / "overlay.png")])
    assert rc == 0
    report = json.loads((tmp_path / "out.json").read_text())
    bundle = load_model(model_file)
    assert report["model"]["sha256"] == bundle.sha256
    assert report["thresholds"]["mean"] == pytest.approx(bundle.thresholds.mean)
    (entry,) = report["images"]
    assert entry["pixel_size_um"] == pytest.approx(40.0) and entry["bit_depth"] == 12
    assert entry["expected_false_flags_per_metre"] == pytest.approx(0.05 * 1000 / 6.24)
    maps = np.load(tmp_path / "maps.npz")
    assert maps["local_std"].shape == maps["flags"].shape == (240, 400)
    assert np.isnan(maps["residual"][:18]).all() and np.isfinite(maps["residual"][18:222, 18:382]).all()
    n_flags = int((maps["flags"] > 0).sum())
    assert entry["flagged"] == (n_flags > 0)
    assert sum(r["area_px"] for r in entry["regions"]) == n_flags
    overlay = np.asarray(Image.open(tmp_path / "overlay.png"))
    assert overlay.shape[1] == 400 and overlay.shape[0] > 240 and overlay.shape[2] == 3
    from scipy.ndimage import maximum_filter

    grey = overlay[:240][maximum_filter(maps["flags"], 9) == 0]
    assert (grey[:, 0] == grey[:, 1]).all()  # only flagged kernels' 9x9 footprints are coloured
    assert "weld.tif" in capsys.readouterr().out


def test_other_fpr_derives_thresholds_from_stored_scores(model_file, tmp_path):
    _write_16bit(tmp_path / "a.tif", _weld((200, 200), seed=2))
    main(["scan", str(tmp_path / "a.tif"), "--model", str(model_file), "--json", str(tmp_path / "a.json")])
    main(["scan", str(tmp_path / "a.tif"), "--model", str(model_file), "--fpr", "0.1",
          "--json", str(tmp_path / "b.json")])
    a = json.loads((tmp_path / "a.json").read_text())["thresholds"]
    b = json.loads((tmp_path / "b.json").read_text())["thresholds"]
    assert b["fpr_target"] == 0.1 and b["mean"] <= a["mean"] and b["std"] <= a["std"]
    assert (b["mean"], b["std"]) != (a["mean"], a["std"])


def test_patch_stack_gives_one_row_per_patch(model_file, tmp_path, capsys):
    patches = np.stack([_weld((192, 192), seed=200 + i) for i in range(4)])
    patches[3, 80:100, 80:100] = 1.0
    np.save(tmp_path / "patches.npy", patches)
    rc = main(["scan", str(tmp_path / "patches.npy"), "--model", str(model_file),
               "--json", str(tmp_path / "p.json")])
    assert rc == 0
    (stack,) = json.loads((tmp_path / "p.json").read_text())["patch_stacks"]
    thr = load_model(model_file).thresholds
    assert len(stack["scores"]) == 4
    for max_mean, max_std, flagged in stack["scores"]:
        assert flagged == (max_mean > thr.mean or max_std > thr.std)
    assert stack["scores"][3][2]  # the saturated square is flagged
    rows = [line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert len(rows) == 4


def test_folder_with_a_bad_file_reports_it_and_exits_1(model_file, tmp_path, capsys):
    folder = tmp_path / "batch"
    folder.mkdir()
    _write_16bit(folder / "good.tif", _weld((200, 220), seed=3))
    (folder / "bad.tif").write_text("not an image")
    rc = main(["scan", str(folder), "--model", str(model_file), "--json", str(tmp_path / "r.json")])
    assert rc == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert [e["path"].endswith("good.tif") for e in report["images"]] == [True]
    err = capsys.readouterr().err
    assert "bad.tif: not an image" in err


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    _write_16bit(tmp_path / "a.tif", _weld((200, 200), seed=4))
    rc = main(["scan", str(tmp_path / "a.tif"), "--model", str(tmp_path / "none.keras")])
    assert rc == 1
    assert "none.keras" in capsys.readouterr().err


def test_overlay_colours_follow_the_paper_on_a_fixed_scale():
    image = np.full((40, 60), 0.5, np.float32)
    flags = np.zeros((40, 60), np.uint8)
    mean = np.zeros((40, 60), np.float32)
    std = np.zeros((40, 60), np.float32)
    flags[10, 10], flags[10, 30], flags[10, 50] = 3, 2, 1
    mean[10, 10], std[10, 10], std[10, 30], mean[10, 50] = 0.5, 0.5, 0.5, -0.5
    rgb = render_overlay(image, flags, mean, std, 0.1, 0.1, legend=False)
    assert rgb.shape == (40, 60, 3)
    assert tuple(rgb[14, 6]) == COLOURS["both"]  # ratio 5 >= full scale, over the 9x9 kernel
    assert tuple(rgb[10, 30]) == COLOURS["std"] and tuple(rgb[10, 50]) == COLOURS["mean"]
    assert tuple(rgb[15, 10]) == tuple(rgb[0, 0]) == (127, 127, 127)  # outside the kernel: grey
    # the same ratio is drawn the same whatever else the image holds (no per-image scaling)
    std2 = std.copy()
    std2[10, 30] = 0.15  # ratio 1.5
    b = render_overlay(image, flags, mean, std2, 0.1, 0.1, legend=False)[10, 30]
    flags[30, 30], std2[30, 30] = 2, 50.0  # a much stronger flag elsewhere
    a = render_overlay(image, flags, mean, std2, 0.1, 0.1, legend=False)[10, 30]
    assert tuple(a) == tuple(b) and tuple(a) != COLOURS["std"]


def _plate_with_weld(shape, seed) -> np.ndarray:
    """A plate with a horizontal weld bead across the middle, as wide as ``_weld``'s (the model
    was calibrated on those), so that most of the image is plate outside the weld region."""
    rng = np.random.default_rng(seed)
    rows = (np.arange(shape[0])[:, None] - (shape[0] - 1) / 2) / (0.4 * 96)
    img = 0.45 + 0.2 * np.exp(-rows ** 2) + 0.01 * rng.standard_normal(shape)
    return np.clip(img, 0, 1).astype(np.float32)


def _overlaps(bbox, rows, cols) -> bool:
    r0, c0, r1, c1 = bbox
    return r0 < rows[1] and rows[0] < r1 and c0 < cols[1] and cols[0] < c1


def _scan_entry(model_file, film, out, *options) -> dict:
    """``weldreview scan FILM --json OUT`` (exit 0 asserted); the film's entry of the report."""
    assert main(["scan", str(film), "--model", str(model_file), "--json", str(out), *options]) == 0
    (entry,) = json.loads(out.read_text())["images"]
    return entry


def test_scan_looks_only_at_the_weld_region_unless_whole_image(model_file, tmp_path, capsys):
    image = _plate_with_weld((400, 800), seed=11)
    image[195:209, 400:414] -= 0.3  # a flaw in the bead
    image[40:56, 80:96] -= 0.3  # a mark on the plate near the corner, far from the weld
    _write_16bit(tmp_path / "weld.tif", image)
    entry = _scan_entry(model_file, tmp_path / "weld.tif", tmp_path / "weld.json")
    region = entry["region"]
    assert region["kind"] == "weld" and region["reason"] is None
    assert region["haz_margin_px"] > 0 and 0 < region["area_px"] < 400 * 800
    flaw, mark = ((195, 209), (400, 414)), ((40, 56), (80, 96))
    assert any(_overlaps(r["bbox"], *flaw) for r in entry["regions"])
    assert not any(_overlaps(r["bbox"], *mark) for r in entry["regions"])
    assert any(_overlaps(r["bbox"], *mark) for r in entry["outside_region"])
    out = capsys.readouterr().out
    assert "weld.tif: FLAGGED" in out
    assert "weld region: bead + heat-affected zone (HAZ margin" in out
    assert f"{region['area_px']:,} px" in out
    assert f"{len(entry['outside_region'])} flagged region(s) outside the weld region" in out

    entry = _scan_entry(model_file, tmp_path / "weld.tif", tmp_path / "whole.json", "--whole-image")
    assert entry["region"] == {"kind": "whole image", "haz_margin_px": None,
                               "area_px": 400 * 800, "reason": "--whole-image"}
    assert any(_overlaps(r["bbox"], *mark) for r in entry["regions"])
    assert any(_overlaps(r["bbox"], *flaw) for r in entry["regions"])
    assert entry["outside_region"] == []
    captured = capsys.readouterr()
    assert "region: whole image" in captured.out and "outside the weld region" not in captured.out
    assert "warning" not in captured.err


def test_no_weld_found_scans_the_whole_image_with_a_warning(model_file, tmp_path, capsys):
    rng = np.random.default_rng(12)
    image = (0.45 + 0.01 * rng.standard_normal((400, 800))).astype(np.float32)  # plate, no weld
    image[40:56, 80:96] -= 0.3
    _write_16bit(tmp_path / "plate.tif", image)
    entry = _scan_entry(model_file, tmp_path / "plate.tif", tmp_path / "plate.json")
    region = entry["region"]
    assert region["kind"] == "whole image" and region["haz_margin_px"] is None
    assert region["area_px"] == 400 * 800 and "No weld seam found" in region["reason"]
    assert any(_overlaps(r["bbox"], (40, 56), (80, 96)) for r in entry["regions"])
    assert entry["outside_region"] == []
    captured = capsys.readouterr()
    assert (f"weldreview: warning: {tmp_path / 'plate.tif'}: no weld found ({region['reason']}); "
            "scanned the whole image") in captured.err
    assert "region: whole image (no weld found)" in captured.out
