"""Retraining and qualification of a model trained with background removal (core.normalise).

The parent is trained (a few steps) with ``background_sigma`` 24, as ``weldreview train
--background 24`` trains it, calibrated on normalised held-back patches, and scans and reviews
generated radiographs (tests/retrain_support). Retraining from those verdicts must give a model
with the parent's ``input`` whose training and calibration patches are cut from the
background-removed *whole* radiographs; qualification must score each model on patches of the
radiographs as it sees them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from core import training_set as ts
from core.model import PATCH
from core.normalise import remove_background
from retrain_support import make_welds, scan_and_review

DATA = Path(__file__).parent / "data"
SIGMA, METHOD = 24.0, "twicing"
FPR = 0.05
N_CAL = 60  # held-back okay patches (3 / FPR)


def _register(store, bundle, name):
    return store.add_model(sha256=bundle.sha256, metadata=bundle.metadata,
                           thresholds=bundle.metadata["thresholds"], name=name, path=bundle.path, user="sam")


def _calibrate(bundle, patches):
    from core.calibration import calibrate
    from core.modelfile import load_model, update_metadata
    from core.scanning import patch_scores

    update_metadata(bundle.path, thresholds=calibrate(patch_scores(patches, bundle.model), fpr=FPR).to_dict())
    return load_model(bundle.path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from core.paths import database_path
    from core.sampler import PatchSampler
    from core.store import Store
    from core.training import TrainConfig, train

    folder = tmp_path_factory.mktemp("bg")
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("WELDREVIEW_HOME", str(home))
    (weld,) = make_welds(folder, (60,), blobs=3, sigma=8.0, amplitude=0.06)
    (held,) = make_welds(folder, (50,), blobs=3, sigma=8.0, amplitude=0.06)
    store = Store(database_path())  # the default database: the CLI finds it without --db
    store.add_user("ina", role="interpreter")
    store.add_user("sam", role="supervisor")
    for w in (weld, held):
        w.id = store.add_radiograph_from(w.radiograph, user="ina")
        ts.set_split(store, w.id, "holdback" if w is held else "train", user="sam")
    images = {w.radiograph.sha256: w.image for w in (weld, held)}

    # the parent: trained on the background-removed radiograph (as train --background 24 does,
    # with its input gain) and with its own weight on the perturbed terms
    from core.loss import LossWeights
    from core.model import BACKGROUND_GAIN

    normed = [remove_background(weld.image, SIGMA, METHOD)]
    config = TrainConfig(steps=3, batch=4, filters=(4, 6), dropout=0.0, lr=3e-3, mixed_precision="off",
                         checkpoint_every=0, out=folder / "parent.keras", background_sigma=SIGMA,
                         background_method=METHOD, name="parent", gain=BACKGROUND_GAIN,
                         weights=LossWeights(per=0.25, kern_per=0.25))
    parent = train(config, PatchSampler(normed, seed=0, order=1).okay, [])
    blobs = np.zeros(held.image.shape, bool)
    for r0, c0, r1, c1 in held.boxes:
        blobs[r0 - 8:r1 + 8, c0 - 8:c1 + 8] = True
    held_normed = remove_background(held.image, SIGMA, METHOD)
    parent = _calibrate(parent, PatchSampler([held_normed], [blobs], seed=0).okay(N_CAL))
    parent_id = _register(store, parent, "parent")
    store.activate_model(parent_id, user="sam", justification="first model")
    for w in (weld, held):
        scan_and_review(store, w, parent, interpreter="ina")
    yield dict(store=store, weld=weld, held=held, images=images, parent=parent, parent_id=parent_id,
               folder=folder, home=home)
    store.close()
    mp.undo()


@pytest.fixture(scope="module")
def retrained(world):
    from core.retraining import retrain

    return retrain(world["store"], user="ina", steps=2, batch=4, budget_min=None, images=world["images"],
                   fpr=FPR, n_calibration=N_CAL)


def test_extraction_locates_defects_on_the_normalised_whole_radiograph(world):
    """The residual that finds a missed defect is the scan's: a window of the normalised whole
    radiograph (not a window normalised on its own); the stored delta is the raw one."""
    import copy

    from core.calibration import thresholds_from_metadata

    parent, weld = world["parent"], world["weld"]
    plain = copy.copy(parent)
    plain.metadata = {k: v for k, v in parent.metadata.items() if k != "input"}
    thr = thresholds_from_metadata(parent.metadata)
    box = weld.boxes[0]
    got = ts.extract_defect(weld.image, box, parent, thr, missed=True)
    want = ts.extract_defect(remove_background(weld.image, SIGMA, METHOD), box, plain, thr, missed=True)
    assert got.origin == want.origin and got.source == want.source
    np.testing.assert_array_equal(got.weight, want.weight)
    r0, c0 = got.origin
    h, w = got.weight.shape
    raw_delta, _ = ts.delta_from_region(weld.image[r0:r0 + h, c0:c0 + w], got.weight)
    np.testing.assert_array_equal(got.delta, raw_delta)


def _ring_delta(image, weight):
    """Section 3.3 by hand: per 8-connected region, image minus the mean of its 1 px ring."""
    labels, n = ndimage.label(weight, structure=np.ones((3, 3), bool))
    out = np.zeros(weight.shape, np.float32)
    for k in range(1, n + 1):
        region = labels == k
        ring = ndimage.binary_dilation(region, np.ones((3, 3), bool)) & ~region
        out[region] = image[region] - image[ring].mean()
    return out


def test_training_entries_are_cut_from_the_normalised_whole_radiograph(world):
    store, weld, parent = world["store"], world["weld"], world["parent"]
    ts.add_from_verdicts(store, user="ina", images=world["images"])
    used = ts.entries(store, split="train", with_data=True)
    assert {e.kind for e in used} >= {"okay"} and any(e.kind in ("defect", "missed") for e in used)
    whole = remove_background(weld.image, SIGMA, METHOD)
    arrays = ts.arrays_for_model(used, parent.metadata, images=world["images"])
    for e, a in zip(used, arrays):
        r0, c0 = e.origin
        # with the raw radiograph the stored arrays come back exactly
        for k, v in ts.entry_arrays(e, weld.image).items():
            np.testing.assert_array_equal(v, e.arrays()[k])
        if e.kind == "okay":
            np.testing.assert_array_equal(a["patch"], whole[r0:r0 + PATCH, c0:c0 + PATCH])
            assert not np.allclose(a["patch"], e.arrays()["patch"])
        else:
            weight = e.arrays()["weight"]
            np.testing.assert_array_equal(a["weight"], weight)
            crop = whole[r0:r0 + weight.shape[0], c0:c0 + weight.shape[1]]
            np.testing.assert_allclose(a["delta"], _ring_delta(crop, weight), atol=2e-6)
    # the okay patches of the training radiographs too
    sampler, _ = ts.patch_sampler(store, "train", images=world["images"], metadata=parent.metadata)
    np.testing.assert_array_equal(sampler.images[0], whole)


def test_retrained_model_keeps_the_normalisation_and_is_calibrated_on_normalised_patches(world, retrained):
    from core.calibration import calibrate
    from core.modelfile import load_model
    from core.retraining import calibration_patches
    from core.sampler import PatchSampler
    from core.scanning import patch_scores

    store, held, parent = world["store"], world["held"], world["parent"]
    new = load_model(retrained.path)
    assert new.metadata["input"] == parent.metadata["input"]
    assert new.metadata["input"]["background_sigma"] == SIGMA
    assert new.metadata["input"]["background_method"] == METHOD
    assert new.metadata["retraining"]["input"] == parent.metadata["input"]
    assert new.metadata["retraining"]["parent"] == parent.sha256
    # the same network (input gain) and the same loss: a fine-tune continues its parent's recipe
    from core.model import model_gain

    assert model_gain(new.model) == model_gain(parent.model) == 8.0
    assert new.metadata["architecture"]["gain"] == 8.0
    assert new.metadata["training"]["loss_weights"] == parent.metadata["training"]["loss_weights"]
    assert new.metadata["training"]["loss_weights"]["per"] == 0.25

    # the calibration patches: okay patches of the background-removed whole held-back radiograph
    mask = ts.not_okay_mask(store, held.id, held.image.shape)
    sampler = PatchSampler([remove_background(held.image, SIGMA, METHOD)], [mask], seed=1)
    cal = sampler.okay(N_CAL, rng=np.random.default_rng([1, 1]))
    np.testing.assert_array_equal(cal, calibration_patches(store, N_CAL, images=world["images"], seed=1,
                                                           metadata=new.metadata))
    want = calibrate(patch_scores(cal, new.model), fpr=FPR).to_dict()
    got = new.metadata["thresholds"]
    assert got["n_okay"] == N_CAL
    for key in ("mean", "std", "fpr_achieved"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    # the raw patches would have given other thresholds
    raw = calibration_patches(store, N_CAL, images=world["images"], seed=1)
    other = calibrate(patch_scores(raw, new.model), fpr=FPR).to_dict()
    assert (other["mean"], other["std"]) != (got["mean"], got["std"])


def test_qualification_scores_each_model_on_its_own_input(world, retrained):
    from core.modelfile import load_model
    from core.qualification import evaluate, qualification_sets, qualify
    from core.sampler import PatchSampler

    store, held, images = world["store"], world["held"], world["images"]
    new = load_model(retrained.path)
    kw = dict(n_okay=60, n_synthetic=4, images=images)
    q = qualify(store, retrained.model_id, user="sam", **kw)  # against the active parent

    sets = qualification_sets(store, metadata=new.metadata, **kw)
    whole = remove_background(held.image, SIGMA, METHOD)
    holdback = ts.entries(store, split="holdback", kinds=("defect", "missed"))
    assert len(sets["defects"]) == len(holdback) >= 3  # each blob confirmed or marked missed
    for patch, e in zip(sets["defects"], holdback):
        np.testing.assert_array_equal(patch, ts.okay_patch(whole, e.bbox)[0])
    mask = ts.not_okay_mask(store, held.id, held.image.shape)
    okay = PatchSampler([whole], [mask]).okay(60, rng=np.random.default_rng([7, 2]))
    np.testing.assert_array_equal(sets["okay"], okay)
    assert q.candidate == evaluate(new, sets)
    assert q.reference == evaluate(world["parent"], sets)

    # a reference without background removal sees the same places of the raw radiograph
    old_path = world["folder"] / "plain.keras"
    shutil.copy(DATA / "retrain_old_model.keras", old_path)
    shutil.copy(DATA / "retrain_old_model.json", old_path.with_suffix(".json"))
    plain = _calibrate(load_model(old_path), PatchSampler([held.image], [mask], seed=0).okay(N_CAL))
    plain_id = _register(store, plain, "plain")
    q2 = qualify(store, retrained.model_id, reference_id=plain_id, user="sam", **kw)
    raw_sets = qualification_sets(store, **kw)
    okay_raw = PatchSampler([held.image], [mask]).okay(60, rng=np.random.default_rng([7, 2]))
    np.testing.assert_array_equal(raw_sets["okay"], okay_raw)
    assert q2.candidate == q.candidate
    assert q2.reference == evaluate(plain, raw_sets)
    assert not np.allclose(raw_sets["okay"], sets["okay"], atol=1e-3)  # the same places, other input
    # a synthetic anomaly is what it would be on the film: normalised with it, so lower
    from core.normalise import normalise_indication

    from core.perturbations import ANOMALY_KINDS

    def anomalies(metadata, the_sets):
        sampler, _ = ts.patch_sampler(store, "holdback", images=images, seed=7, metadata=metadata)
        rng = np.random.default_rng([7, 2])
        sampler.okay(60, rng=rng)  # the okay set's draws come first
        base = sampler.okay(4 * len(ANOMALY_KINDS), rng=rng)
        return {k: the_sets[f"synthetic:{k}"] - base[j * 4:(j + 1) * 4] for j, k in enumerate(ANOMALY_KINDS)}

    raw_anomalies, normalised = anomalies(None, raw_sets), anomalies(new.metadata, sets)
    for kind in ("raster", "dogbone"):
        np.testing.assert_allclose(normalised[kind], normalise_indication(raw_anomalies[kind], SIGMA, METHOD),
                                   atol=2e-5)
        assert np.abs(normalised[kind]).max() < np.abs(raw_anomalies[kind]).max()


def test_cli_retrains_a_background_model(world, capsys, monkeypatch):
    from app.cli import main
    from core.modelfile import load_model

    store = world["store"]
    monkeypatch.setenv("WELDREVIEW_HOME", str(world["home"]))  # the CLI's default database
    assert main(["train", "--from-verdicts", "--background", "24"]) == 2
    assert "keeps the normalisation of its parent" in capsys.readouterr().err
    before = {m["id"] for m in store.models()}
    # (train --from-verdicts runs the same retraining: app.commands.retrain.run_from_train)
    assert main(["retrain", "--from-verdicts", "--steps", "2", "--batch", "4", "--quiet"]) == 0
    assert "Next: weldreview models qualify" in capsys.readouterr().out
    (added,) = [m for m in store.models() if m["id"] not in before]
    meta = load_model(added["path"]).metadata
    assert meta["input"] == world["parent"].metadata["input"]
    assert meta["retraining"]["parent"] == world["parent"].sha256

