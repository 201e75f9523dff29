"""Background removal as a property of a model: train records it, calibrate and scan honour it.

A model whose metadata has ``input.background_sigma`` sees every radiograph through
``core.normalise.remove_background``; models without the key (the bundled default among them)
see it as it is (tests/test_scanning.py, tests/test_default_model.py and the train CLI tests).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core.calibration import Thresholds
from core.model import build_autoencoder
from core.modelfile import load_model, save_model
from core.normalise import background_sigma, model_input, remove_background

SIGMA = 24.0
INPUT = {"background_sigma": SIGMA, "rule": "image - gaussian(image, sigma) + 0.5 (core.normalise)"}


def _weld(shape=(256, 448), seed=0) -> np.ndarray:
    """A bright bead across a darker plate with a small dark spot: the background matters."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(-1, 1, shape[0])[:, None]
    img = 0.35 + 0.5 * np.exp(-(rows / 0.35) ** 2) + 0.01 * rng.standard_normal(shape)
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    img -= 0.15 * np.exp(-((rr - shape[0] // 2) ** 2 + (cc - 200) ** 2) / (2 * 3.0 ** 2))
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same weights saved twice: with the background key and without it."""
    folder = tmp_path_factory.mktemp("models")
    net = build_autoencoder(seed=3, filters=(4, 6), dropout=0.0)
    plain = save_model(net, folder / "plain.keras", metadata={"name": "plain"})
    normed = save_model(net, folder / "normed.keras", metadata={"name": "normed", "input": INPUT})
    return load_model(plain), load_model(normed)


def test_background_sigma_and_model_input():
    image = _weld()
    assert background_sigma(None) is None and background_sigma({}) is None
    assert background_sigma({"input": {}}) is None
    assert background_sigma({"input": INPUT}) == SIGMA
    assert model_input(image, {"name": "x"}) is image  # unchanged, not even copied
    np.testing.assert_array_equal(model_input(image, {"input": INPUT}), remove_background(image, SIGMA))


def test_a_synthetic_indication_reaches_a_background_model_as_it_would_from_the_film():
    from core.normalise import indication_input, normalise_indication

    yy, xx = np.mgrid[:192, :192]
    blob = (0.1 * np.exp(-((yy - 96) ** 2 + (xx - 90) ** 2) / (2 * 9.0 ** 2))).astype(np.float32)
    np.testing.assert_array_equal(indication_input(blob, {"name": "plain"}), blob)
    twicing = {"input": {"background_sigma": SIGMA, "background_method": "twicing"}}
    for metadata, method in (({"input": INPUT}, "gaussian"), (twicing, "twicing")):
        seen = indication_input(blob[None], metadata)[0]
        np.testing.assert_allclose(seen, normalise_indication(blob[None], SIGMA, method)[0])
        assert seen.max() < 0.95 * blob.max()  # the background removal takes part of a smooth blob


def test_scan_of_a_background_model_equals_the_plain_model_on_the_normalised_image(models):
    from core.scanning import scan_image

    plain, normed = models
    image = _weld()
    thr = Thresholds(0.02, 0.02, 0.001, 3000, 0.0, (0.0, 0.0012))
    got = scan_image(image, normed, thresholds=thr, tile=256)
    want = scan_image(remove_background(image, SIGMA), plain, thresholds=thr, tile=256)
    raw = scan_image(image, plain, thresholds=thr, tile=256)
    assert got.image is image  # the result shows the radiograph as given
    np.testing.assert_array_equal(got.residual, want.residual)
    np.testing.assert_array_equal(got.local_mean, want.local_mean)
    np.testing.assert_array_equal(got.flags, want.flags)
    assert [r.to_dict() for r in got.regions] == [r.to_dict() for r in want.regions]
    # and the normalisation did change what the model saw
    assert not np.allclose(got.residual, raw.residual, equal_nan=True)


def _cli_train(tmp_path, *extra):
    from app.cli import main

    out = tmp_path / "bg.keras"
    rc = main(["train", "--synthetic", "1", "--perturbations", "dogbone", "--steps", "2", "--batch", "2",
               "--precision", "off", "--quiet", "--out", str(out), *extra])
    return rc, out


def test_train_records_the_sigma_and_calibrate_uses_normalised_patches(tmp_path, capsys):
    from app.cli import main

    rc, out = _cli_train(tmp_path, "--background", "24")
    assert rc == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["input"]["background_sigma"] == 24
    assert meta["input"]["background_method"] == "twicing" and "2 g - gaussian" in meta["input"]["rule"]
    assert meta["training"]["background_sigma"] == 24
    assert load_model(out).metadata["input"]["background_sigma"] == 24
    # the input gain that keeps the latent of a background model alive (core.model)
    from core.model import model_gain

    assert meta["architecture"]["gain"] == 8.0 and model_gain(load_model(out).model) == 8.0

    # the same weights without the key
    plain = tmp_path / "plain.keras"
    shutil.copyfile(out, plain)
    side = dict(meta)
    del side["input"]
    plain.with_suffix(".json").write_text(json.dumps(side))
    assert background_sigma(load_model(plain).metadata) is None

    cal = ["--synthetic", "1", "--fpr", "0.05", "--patches", "60", "--seed", "1000"]
    assert main(["calibrate", str(out), *cal]) == 0
    assert main(["calibrate", str(plain), *cal]) == 0
    thr_bg = json.loads(out.with_suffix(".json").read_text())["thresholds"]
    thr_plain = json.loads(plain.with_suffix(".json").read_text())["thresholds"]
    assert (thr_bg["mean"], thr_bg["std"]) != (thr_plain["mean"], thr_plain["std"])

    # calibrate drew exactly the patches of the normalised radiographs
    from core.imageio import normalise
    from core.sampler import PatchSampler
    from core.scanning import patch_scores
    from core.synthetic import generate_weld

    weld = generate_weld(1000)
    raw = normalise(weld.image, bits_stored=16)[0]
    sampler = PatchSampler([remove_background(raw, 24.0, "twicing")], [weld.mask],
                           rois=[weld.region_labels()], seed=1000)
    patches, regions = sampler.okay_with_roi(60)
    zoning = {"edge_band_px": (32, 48), "haz": True}
    scores = patch_scores(patches, load_model(out).model, regions=regions, **zoning)
    from core.calibration import calibrate

    expected = calibrate(scores, fpr=0.05, **zoning)
    assert thr_bg["mean"] == pytest.approx(expected.mean) and thr_bg["std"] == pytest.approx(expected.std)
    assert thr_bg["edge_mean"] == pytest.approx(expected.edge_mean) and thr_bg["edge_band_px"] == 32
    assert thr_bg["inner_bands"] == [[48, pytest.approx(expected.inner_bands[0][1]),
                                      pytest.approx(expected.inner_bands[0][2])]]

    # resuming with another sigma is refused with a clear message
    capsys.readouterr()
    rc, _ = _cli_train(tmp_path, "--background", "12", "--resume", "--force")
    assert rc == 1
    err = capsys.readouterr().err
    assert "background sigma 24 px" in err and "12" in err and "same --background" in err
    rc, _ = _cli_train(tmp_path, "--resume", "--force")
    assert rc == 1 and "no background removal" in capsys.readouterr().err
    rc, _ = _cli_train(tmp_path, "--background", "24", "--background-method", "gaussian", "--resume", "--force")
    assert rc == 1 and "(twicing)" in capsys.readouterr().err  # another estimate: refused too
    rc, _ = _cli_train(tmp_path, "--background", "24", "--gain", "1", "--resume", "--force")
    assert rc == 1 and "input gain 8" in capsys.readouterr().err  # another gain: refused too


@pytest.mark.parametrize("value", ["0", "-3", "nan"])
def test_train_rejects_a_non_positive_sigma(tmp_path, capsys, value):
    rc, out = _cli_train(tmp_path, "--background", value)
    assert rc == 2 and not out.exists()
    assert "--background must be a positive number" in capsys.readouterr().err


@pytest.fixture
def store_with_background_model(tmp_path, models):
    from core.store import Store

    _, normed = models
    store = Store(tmp_path / "review.sqlite")
    store.add_user("sam", role="supervisor")
    mid = store.add_model(sha256=normed.sha256, metadata=normed.metadata, name="normed",
                          path=normed.path, user="sam")
    store.activate_model(mid, user="sam", justification="test")
    yield store, mid
    store.close()


def test_retrain_and_qualify_take_a_background_model(store_with_background_model):
    """No refusal any more (tests/test_retrain_background.py runs them): here they stop where
    they stop for any model, at the missing verdicts and radiographs."""
    from core.qualification import qualify
    from core.retraining import retrain

    store, mid = store_with_background_model
    with pytest.raises(ValueError, match="the training set is empty"):
        retrain(store, user="sam")
    with pytest.raises(ValueError, match="the training set is empty"):
        retrain(store, user="sam", from_scratch=True)
    with pytest.raises(ValueError, match="no reviewed radiograph in the holdback split"):
        qualify(store, mid, user="sam")


def test_resuming_keeps_the_checkpoints_gain(tmp_path):
    """A run started without the gain (as before it existed) resumes as it was trained."""
    from core.model import model_gain

    rc, out = _cli_train(tmp_path, "--background", "24", "--gain", "1")
    assert rc == 0 and model_gain(load_model(out).model) == 1.0
    rc, out = _cli_train(tmp_path, "--background", "24", "--resume", "--force", "--steps", "3")
    assert rc == 0
    bundle = load_model(out)
    assert model_gain(bundle.model) == 1.0 and bundle.metadata["training"]["steps"] == 3
