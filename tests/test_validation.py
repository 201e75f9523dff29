"""Checkpoint choice by validation on held-out radiographs (core.validation, train(validation=...))."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from core.training import TrainConfig, TrainingCancelled, train
from tests.test_training import TINY, Squares, _weights_equal, okay


class Scripted:
    """A validation with scores given in advance; it keeps the weights it saw at each step."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.seen = []

    def __call__(self, model):
        self.seen.append([w.copy() for w in model.get_weights()])
        return {"score": self.scores[len(self.seen) - 1]}


def _same(weights, model):
    return all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))


def test_the_saved_model_is_the_best_validated_state_and_the_checkpoint_the_last(tmp_path):
    from core.modelfile import load_model

    check = Scripted([0.5, 0.9, 0.3])
    seen = []
    bundle = train(TrainConfig(steps=6, seed=3, out=tmp_path / "m.keras", validate_every=2, **TINY), okay,
                   [Squares()], validation=check, progress=seen.append)
    assert len(check.seen) == 3  # steps 2, 4 and 6 (the end)
    assert _same(check.seen[1], bundle.model) and not _same(check.seen[2], bundle.model)
    assert _same(check.seen[1], load_model(tmp_path / "m.keras").model)
    v = bundle.metadata["training"]["validation"]
    assert (v["chosen_step"], v["chosen_score"], v["last_score"], v["every"]) == (4, 0.9, 0.3, 2)
    assert [r["step"] for r in v["history"]] == [2, 4, 6]
    assert bundle.metadata["training"]["steps"] == 6
    # progress reports the validations as they come
    assert "validation" not in seen[0] and seen[1]["validation"]["step"] == 2
    assert seen[5]["validation"]["score"] == 0.3 and seen[5]["best_validation"]["step"] == 4
    # the checkpoint is the last state: a resumed run trains on from step 6, not from the best
    last = train(TrainConfig(steps=6, seed=3, out=tmp_path / "n.keras", **TINY), okay, [Squares()])
    assert _weights_equal(last.model, train(
        TrainConfig(steps=6, seed=3, out=tmp_path / "r.keras", **TINY), okay, [Squares()],
        resume_from=tmp_path / "m.ckpt").model, atol=1e-5)


def test_ties_keep_the_later_state_and_validation_runs_at_a_budget_stop(tmp_path):
    check = Scripted([0.4, 0.4])
    bundle = train(TrainConfig(steps=50, seed=1, out=tmp_path / "m.keras", validate_every=3, budget_s=1e-9,
                               **TINY), okay, [Squares()], validation=check)
    t = bundle.metadata["training"]
    assert t["stopped_by_budget"] and t["steps"] == 1
    assert t["validation"]["chosen_step"] == 1 and len(check.seen) == 1  # the end is validated
    check = Scripted([0.4, 0.4])
    bundle = train(TrainConfig(steps=4, seed=1, out=tmp_path / "t.keras", validate_every=2, **TINY), okay,
                   [Squares()], validation=check)
    assert bundle.metadata["training"]["validation"]["chosen_step"] == 4
    assert _same(check.seen[1], bundle.model)


def test_an_interrupted_run_keeps_its_best_state_across_the_resume(tmp_path):
    check = Scripted([0.9, 0.2, 0.1])
    steps = []
    cfg = dict(seed=2, out=tmp_path / "m.keras", validate_every=2, **TINY)
    with pytest.raises(TrainingCancelled) as info:
        train(TrainConfig(steps=6, **cfg), okay, [Squares()], validation=check,
              progress=lambda p: steps.append(p["step"]), cancel=lambda: len(steps) >= 3)
    assert len(check.seen) == 1  # step 2, before the stop at step 3
    bundle = train(TrainConfig(steps=6, **cfg), okay, [Squares()], validation=check,
                   resume_from=info.value.checkpoint)
    v = bundle.metadata["training"]["validation"]
    assert [r["step"] for r in v["history"]] == [2, 4, 6] and v["chosen_step"] == 2
    assert _same(check.seen[0], bundle.model)  # the weights of step 2, from before the interruption


def test_validate_every_must_be_a_number_of_steps():
    with pytest.raises(ValueError, match="validate_every"):
        TrainConfig(validate_every=0)


# --------------------------------------------------------------- core.validation on real patches

@pytest.fixture(scope="module")
def held_out():
    """Two generated welds (seeds outside training's), as a calibration folder would give them."""
    from core.imageio import normalise
    from core.synthetic import generate_weld

    welds = [generate_weld(1500 + i) for i in range(2)]
    return ([normalise(w.image, bits_stored=16)[0] for w in welds], [w.mask for w in welds],
            [w.haz_mask for w in welds])


def _patch_model(reconstruct):
    """A patch model (as core.scanning runs one) whose reconstruction is ``reconstruct(input)``."""
    import keras

    from core.model import OFFSET, PATCH

    x = keras.Input((PATCH, PATCH, 1))
    return keras.Model(x, [keras.layers.Cropping2D(OFFSET)(reconstruct(x)), keras.layers.AveragePooling2D(4)(x)])


def _high_pass(sigma=6.0):
    """The benchmark's reference detector: the reconstruction is a Gaussian blur of the input."""
    import keras

    r = int(3 * sigma)
    t = np.arange(-r, r + 1)
    g = np.exp(-t**2 / (2 * sigma**2))
    g /= g.sum()
    conv = keras.layers.Conv2D(1, 2 * r + 1, padding="same", use_bias=False, trainable=False)
    model = _patch_model(conv)
    conv.set_weights([np.outer(g, g)[:, :, None, None].astype(np.float32)])
    return model


def test_a_validation_set_is_drawn_once_the_same_way(held_out):
    from core.validation import VALIDATION_KINDS, validation_set

    a = validation_set(*held_out, fpr=0.01, n_anomaly=8)
    b = validation_set(*held_out, fpr=0.01, n_anomaly=8)
    assert len(a.okay) == 300 and set(a.anomalies) == set(VALIDATION_KINDS)
    assert np.array_equal(a.okay, b.okay) and np.array_equal(a.anomalies["dogbone"][0], b.anomalies["dogbone"][0])
    assert len(a) == 300 + 5 * 8
    # the anomalies differ from okay film, and each lies in the weld region it is scored in
    for x, regions in a.anomalies.values():
        assert x.dtype == np.float32 and x.shape == (8, 192, 192) and regions.any(axis=(1, 2)).all()


def test_validation_scores_a_detector_above_a_model_that_copies_every_anomaly(held_out):
    from core.validation import validate, validation_set

    vset = validation_set(*held_out, fpr=0.01, n_anomaly=20)
    copying = validate(_patch_model(lambda x: x), vset)
    assert copying["score"] == 0.0 and set(copying["tpr"].values()) == {0.0}  # no residual, no find
    found = validate(_high_pass(), vset)
    assert found["score"] == pytest.approx(np.mean(list(found["tpr"].values())))
    assert found["score"] > 0.2 and max(found["tpr"].values()) >= 0.4  # measured: 0.34, 0.6 (dogbone)
    assert found["mean_threshold"] > 0 and found["std_threshold"] > 0


def test_training_with_core_validation_records_its_figures(tmp_path, held_out):
    from core.validation import validate, validation_set

    vset = validation_set(*held_out, fpr=0.01, n_anomaly=4)
    bundle = train(TrainConfig(steps=2, seed=0, out=tmp_path / "m.keras", validate_every=1, **TINY), okay,
                   [Squares()], validation=partial(validate, vset=vset))
    history = bundle.metadata["training"]["validation"]["history"]
    assert [r["step"] for r in history] == [1, 2]
    assert set(history[0]["tpr"]) == set(vset.anomalies) and history[0]["seconds"] > 0


# --------------------------------------------------------------- weldreview train --validate-every

def test_cli_validates_during_training_and_says_which_state_it_saved(tmp_path, capsys):
    from app.cli import main
    from core.modelfile import load_model
    from core.training_runs import read_run

    out, run = tmp_path / "m.keras", tmp_path / "run"
    rc = main(["train", "--synthetic", "1", "--steps", "3", "--batch", "2", "--perturbations", "dogbone",
               "--precision", "off", "--out", str(out), "--run", str(run), "--calibrate-synthetic", "1",
               "--calibrate-fpr", "0.05", "--validate-every", "2"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "validating every 2 steps and at the end on 1 held-out radiographs: the calibration's 90 okay " \
           "patches set thresholds at FPR 0.05" in captured.err
    assert "validation at step 2: " in captured.err and "validation at step 3: " in captured.err
    assert "% of the synthetic anomalies found (circular hollow " in captured.err
    bundle = load_model(out)
    v = bundle.metadata["training"]["validation"]
    assert [r["step"] for r in v["history"]] == [2, 3] and v["every"] == 2
    best = max(v["history"], key=lambda r: (r["score"], r["step"]))
    assert v["chosen_step"] == best["step"]
    assert ("saved the state of step 2" in captured.out) == (v["chosen_step"] == 2)
    assert bundle.thresholds is not None  # calibrated at the end, as without validation
    # the kept state was measured at the very thresholds the calibration then gave it
    chosen = next(r for r in v["history"] if r["step"] == v["chosen_step"])
    assert chosen["mean_threshold"] == pytest.approx(bundle.thresholds.mean, rel=1e-5)
    assert chosen["std_threshold"] == pytest.approx(bundle.thresholds.std, rel=1e-5)
    status = read_run(run).status
    assert status["state"] == "finished" and status["validation"]["step"] == 3
    assert status["validation"]["best_step"] == v["chosen_step"]


def test_cli_refuses_validation_without_held_out_radiographs_before_training(tmp_path, capsys):
    from skimage import io

    from app.cli import main

    out = tmp_path / "m.keras"
    base = ["train", "--synthetic", "1", "--steps", "2", "--batch", "2", "--quiet", "--out", str(out)]
    assert main([*base, "--validate-every", "100"]) == 2
    assert "--validate-every needs --calibrate-data DIR and/or --calibrate-synthetic N" in capsys.readouterr().err
    assert main([*base, "--calibrate-synthetic", "1", "--validate-every", "0"]) == 2
    assert "--validate-every must be a number of steps, got 0" in capsys.readouterr().err
    flat = tmp_path / "flat"  # no weld on it: nothing to validate on
    flat.mkdir()
    rng = np.random.default_rng(0)
    io.imsave(flat / "plate.png", (30000 + 500 * rng.standard_normal((300, 900))).astype(np.uint16),
              check_contrast=False)
    assert main([*base, "--calibrate-data", str(flat), "--validate-every", "1"]) == 2
    err = capsys.readouterr().err
    assert "--validate-every: no held-out radiograph with a weld region" in err
    assert not out.exists()


def test_validation_does_not_apply_to_retraining_from_verdicts(capsys):
    from app.cli import main

    assert main(["train", "--from-verdicts", "--validate-every", "100"]) == 2
    assert "--validate-every do not apply to --from-verdicts" in capsys.readouterr().err
