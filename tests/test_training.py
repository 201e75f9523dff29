"""Training: fresh perturbations every step, resume, cancel, progress, dead latent, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.model import PATCH
from core.training import (
    TrainConfig, TrainingCancelled, draw_batch, learning_rate, make_dataset, recentre_latent, train,
)

TINY = dict(batch=2, filters=(2, 2), mixed_precision="off", checkpoint_every=0)


def okay(rng, n):
    """Weld-like okay patches: a bright band across a darker plate, with noise."""
    rows = np.arange(PATCH, dtype=np.float32)[:, None]
    centre = rng.uniform(70, 120, (n, 1, 1))
    x = 0.3 + 0.3 * np.exp(-(((rows[None] - centre) / 35.0) ** 2)) + rng.normal(0, 0.01, (n, PATCH, PATCH))
    return x.astype(np.float32)


class Squares:
    """A perturbation source: one square of amplitude 0.2 at a random place."""

    name = "squares"

    def sample(self, rng, n):
        delta = np.full((n, PATCH, PATCH), 0.2, np.float32)
        weight = np.zeros((n, PATCH, PATCH), np.float32)
        for k in range(n):
            r, c = rng.integers(20, 150, 2)
            weight[k, r : r + 20, c : c + 20] = 1
        return delta, weight


def _weights_equal(a, b, atol=0.0):
    return all(np.allclose(x, y, atol=atol, rtol=0) for x, y in zip(a.get_weights(), b.get_weights()))


def test_draw_batch_applies_equation_2():
    rng = np.random.default_rng(0)
    x_ok, x_per = draw_batch(okay, [Squares()], rng, 3)
    assert x_ok.shape == x_per.shape == (3, PATCH, PATCH, 1) and x_ok.dtype == np.float32
    diff = x_per - x_ok
    for k in range(3):
        changed = np.abs(diff[k, ..., 0]) > 0
        assert changed.sum() == 400  # the 20 x 20 square, and nothing else
        np.testing.assert_allclose(diff[k, ..., 0][changed], 0.2, atol=1e-6)


def test_dataset_draws_fresh_combinations_every_step():
    ds = make_dataset(okay, [Squares()], batch=2, seed=0, start=0, stop=3)
    batches = [(a.numpy(), b.numpy()) for a, b in ds]
    assert len(batches) == 3
    assert not np.allclose(batches[0][0], batches[1][0])
    assert not np.array_equal(batches[0][1] - batches[0][0], batches[1][1] - batches[1][0])
    again = [a.numpy() for a, _ in make_dataset(okay, [Squares()], batch=2, seed=0, start=1, stop=2)]
    np.testing.assert_array_equal(again[0], batches[1][0])  # step k is reproducible on resume


def test_okay_sampler_forms_are_accepted():
    calls = []

    class Sampler:  # PatchSampler.okay's signature
        def okay(self, n, *, rng=None):
            calls.append(rng)
            return okay(rng, n)

    rng = np.random.default_rng(0)
    x_ok, _ = draw_batch(__import__("core.training", fromlist=["_okay_caller"])._okay_caller(Sampler().okay),
                         [], rng, 2)
    assert calls == [rng] and x_ok.shape == (2, PATCH, PATCH, 1)


def test_progress_reports_every_term_and_model_is_saved(tmp_path):
    seen = []
    bundle = train(TrainConfig(steps=3, seed=0, out=tmp_path / "m.keras", perturbations=["squares"], **TINY),
                   okay, [Squares()], progress=seen.append)
    assert [p["step"] for p in seen] == [1, 2, 3]
    for p in seen:
        assert p["steps"] == 3 and p["samples_per_s"] > 0
        for key in ("ok", "per", "kern_ok", "kern_per", "reg", "total"):
            assert np.isfinite(p[key]) and p[key] >= 0
        assert p["total"] == pytest.approx(p["ok"] + p["per"] + p["kern_ok"] + p["kern_per"] + p["reg"], rel=1e-5)
    meta = json.loads((tmp_path / "m.json").read_text())
    t = meta["training"]
    assert t["steps"] == 3 and t["seed"] == 0 and t["perturbations"] == ["squares"] and t["batch"] == 2
    assert t["final_losses"]["total"] == pytest.approx(seen[-1]["total"])
    assert bundle.path == tmp_path / "m.keras" and bundle.sha256 == meta["sha256"]


def test_resume_continues_steps_weights_and_optimizer(tmp_path):
    straight = train(TrainConfig(steps=4, seed=4, out=tmp_path / "a.keras", **TINY), okay, [Squares()])
    first = train(TrainConfig(steps=2, seed=4, out=tmp_path / "b.keras", **TINY), okay, [Squares()])
    steps = []
    resumed = train(TrainConfig(steps=4, seed=4, out=tmp_path / "c.keras", **TINY), okay, [Squares()],
                    resume_from=tmp_path / "b.ckpt", progress=lambda p: steps.append(p["step"]))
    assert steps == [3, 4]
    assert resumed.metadata["training"]["steps"] == 4
    assert not _weights_equal(first.model, resumed.model, atol=1e-7)
    # same draws, weights, Adam moments and dropout masks: it ends where the straight run did
    assert _weights_equal(straight.model, resumed.model, atol=1e-5)


def test_a_crash_while_saving_a_checkpoint_leaves_one_to_resume_from(tmp_path):
    import os

    from core.training import checkpoint_to_read

    straight = train(TrainConfig(steps=4, seed=4, out=tmp_path / "a.keras", **TINY), okay, [Squares()])
    train(TrainConfig(steps=2, seed=4, out=tmp_path / "b.keras", **TINY), okay, [Squares()])
    ckpt = tmp_path / "b.ckpt"
    assert checkpoint_to_read(ckpt) == ckpt and not list(tmp_path.glob("b.ckpt.*"))
    # the power goes off after the new checkpoint was written and the old one moved aside
    os.replace(ckpt, tmp_path / "b.ckpt.new")
    assert checkpoint_to_read(ckpt) == tmp_path / "b.ckpt.new"
    resumed = train(TrainConfig(steps=4, seed=4, out=tmp_path / "c.keras", **TINY), okay, [Squares()],
                    resume_from=ckpt)
    assert resumed.metadata["training"]["steps"] == 4
    assert _weights_equal(straight.model, resumed.model, atol=1e-5)


def test_init_weights_start_a_fine_tune_from_a_model_or_its_file(tmp_path):
    parent = train(TrainConfig(steps=2, seed=4, out=tmp_path / "p.keras", **TINY), okay, [Squares()])
    assert parent.metadata["training"]["init_weights"] is None
    before = [w.copy() for w in parent.model.get_weights()]
    # learning rate 0: the run ends with the parent's weights exactly (no bias set from a batch,
    # nothing of the seed's own initialisation left)
    still = train(TrainConfig(steps=2, seed=9, lr=0.0, out=tmp_path / "still.keras", **TINY), okay,
                  [Squares()], init_weights=parent.model)
    assert _weights_equal(parent.model, still.model)
    assert still.metadata["training"]["init_weights"].startswith("model ")
    # from the file, learning: steps count from 1 with a fresh optimiser; the parent is unchanged
    steps = []
    tuned = train(TrainConfig(steps=2, seed=9, out=tmp_path / "tuned.keras", **TINY), okay,
                  [Squares()], init_weights=parent.path, progress=lambda p: steps.append(p["step"]))
    assert steps == [1, 2] and tuned.metadata["training"]["steps"] == 2
    assert parent.sha256[:12] in tuned.metadata["training"]["init_weights"]
    assert all(np.array_equal(a, b) for a, b in zip(before, parent.model.get_weights()))
    assert not _weights_equal(parent.model, tuned.model)
    scratch = train(TrainConfig(steps=2, seed=9, out=tmp_path / "scratch.keras", **TINY), okay,
                    [Squares()])
    assert not _weights_equal(scratch.model, tuned.model, atol=1e-3)
    # another shape, or together with resume_from: refused before training
    with pytest.raises(ValueError, match="filters"):
        train(TrainConfig(steps=1, out=tmp_path / "x.keras", **{**TINY, "filters": (4, 4)}), okay,
              [Squares()], init_weights=parent.model)
    with pytest.raises(ValueError, match="resume_from"):
        train(TrainConfig(steps=3, out=tmp_path / "y.keras", **TINY), okay, [Squares()],
              init_weights=parent.model, resume_from=tmp_path / "p.ckpt")
    with pytest.raises(ValueError, match="input gain 1, this run 8"):  # same weights, other meaning
        train(TrainConfig(steps=1, out=tmp_path / "g.keras", gain=8.0, **TINY), okay, [Squares()],
              init_weights=parent.model)
    assert not any((tmp_path / f"{n}.keras").exists() for n in "xyg")


def test_resume_without_checkpoint_fails_clearly(tmp_path):
    from core.errors import ModelFileError

    with pytest.raises(ModelFileError, match="no training checkpoint"):
        train(TrainConfig(steps=2, out=tmp_path / "m.keras", **TINY), okay, [Squares()],
              resume_from=tmp_path / "missing.ckpt")


def test_cancel_stops_within_one_step_and_can_resume(tmp_path):
    seen = []
    cfg = TrainConfig(steps=50, seed=0, out=tmp_path / "m.keras", **TINY)
    with pytest.raises(TrainingCancelled) as info:
        train(cfg, okay, [Squares()], progress=seen.append, cancel=lambda: len(seen) >= 2)
    assert info.value.step == 2 and len(seen) == 2
    assert not (tmp_path / "m.keras").exists()
    assert (info.value.checkpoint / "state.index").is_file()
    done = train(TrainConfig(steps=4, seed=0, out=tmp_path / "m.keras", **TINY), okay, [Squares()],
                 resume_from=info.value.checkpoint)
    assert done.metadata["training"]["steps"] == 4


def test_dead_latent_is_revived(tmp_path):
    from core.model import build_autoencoder

    x = okay(np.random.default_rng(0), 2)[..., None]
    dead = build_autoencoder(seed=1, latent_bias=0.0)
    assert dead(x, training=False)[1].numpy().max() == 0.0
    recentre_latent(dead, x)
    z = dead(x, training=False)[1].numpy()
    assert 0.3 < (z > 0).mean()  # about half the latent positions are active again
    # seed 1 trains with a live latent
    seen = []
    bundle = train(TrainConfig(steps=3, seed=1, out=tmp_path / "m.keras", **TINY), okay, [Squares()],
                   progress=seen.append)
    assert all(p["z_max"] > 0 for p in seen)
    assert bundle.model(x, training=False)[1].numpy().max() > 0


def test_saturated_latent_is_brought_back_into_range():
    """z = 1 everywhere passes no gradient either (seen after 100 steps of the demo recipe)."""
    from core.model import build_autoencoder

    x = okay(np.random.default_rng(0), 2)[..., None]
    model = build_autoencoder(seed=2, latent_bias=50.0)
    assert model(x, training=False)[1].numpy().min() == 1.0
    recentre_latent(model, x)
    z = model(x, training=False)[1].numpy()
    assert ((z > 0) & (z < 1)).mean() > 0.5  # most latent pixels live again


def test_training_starts_at_the_mean_grey_level_with_a_live_latent(tmp_path):
    seen = []
    train(TrainConfig(steps=2, seed=3, out=tmp_path / "m.keras", **TINY), okay, [Squares()], progress=seen.append)
    assert all(p["z_live"] > 0.05 for p in seen)
    # a constant grey output would cost about the variance of the patch; starting at its mean keeps
    # the first step's pixel loss near that, not (mean - 0)^2
    assert seen[0]["ok"] < 0.05


def test_learning_rate_warmup():
    cfg = TrainConfig(steps=10, lr=1e-3, warmup_steps=4)
    assert [learning_rate(cfg, s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert learning_rate(TrainConfig(lr=1e-3), 0) == 1e-3


def test_config_validates():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")


def test_bfloat16_training_with_time_budget_saves_float32_model(tmp_path):
    cfg = TrainConfig(steps=5, seed=0, out=tmp_path / "m.keras", budget_s=0.0,
                      **{**TINY, "mixed_precision": "bfloat16"})
    bundle = train(cfg, okay, [Squares()])
    t = bundle.metadata["training"]
    assert t["mixed_precision"] == "mixed_bfloat16"
    assert t["stopped_by_budget"] and t["steps"] == 1 and t["steps_planned"] == 5
    assert all(layer.compute_dtype == "float32" for layer in bundle.model.layers)


def test_cli_train_on_a_data_folder(tmp_path, capsys):
    from app.cli import main
    from core.synthetic import generate_weld, write_radiograph

    weld = generate_weld(5, shape=(300, 700), defects=["porosity"], iqi=False, markers=False)
    data = tmp_path / "data"
    data.mkdir()
    write_radiograph(data / "weld.tif", weld)
    out = tmp_path / "cli.keras"
    rc = main(["train", "--data", str(data), "--perturbations", "D,dogbone", "--steps", "2", "--batch", "2",
               "--seed", "3", "--out", str(out)])
    assert rc == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["training"]["steps"] == 2 and meta["training"]["seed"] == 3
    assert meta["training"]["perturbations"] == ["D", "synthetic:dogbone"]
    assert meta["training"]["images"][0].endswith("weld.tif")
    captured = capsys.readouterr()
    assert "2/2" in captured.err and f"wrote {out}" in captured.out
    assert main(["train", "--data", str(data), "--steps", "2", "--out", str(out)]) == 1  # no overwrite


def test_cli_trains_on_accepted_films_without_masks(tmp_path, capsys):
    """A plant's accepted films need no masks (--accepted); --data alone refuses them and says so."""
    from app.cli import main
    from core.imageio import write_png
    from core.synthetic import generate_weld, write_radiograph

    accepted = tmp_path / "accepted"
    accepted.mkdir()
    clean = generate_weld(6, shape=(300, 700), defects=[], iqi=False, markers=False)
    write_png(accepted / "film_a.png", clean.image)
    out = tmp_path / "m.keras"
    base = ["train", "--perturbations", "SNI", "--steps", "2", "--batch", "2", "--quiet"]
    assert main([*base, "--data", str(accepted), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "1 radiograph(s) and none with a defect mask (film_a)" in err and "--accepted DIR" in err
    assert not out.exists()

    assert main([*base, "--accepted", str(accepted), "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert [Path(p).name for p in meta["training"]["images"]] == ["film_a.png"]

    # beside masked films: both train, and the defects (set D) come from the masked one only
    data = tmp_path / "data"
    data.mkdir()
    write_radiograph(data / "weld.tif", generate_weld(5, shape=(300, 700), defects=["porosity"], iqi=False,
                                                      markers=False))
    both = tmp_path / "both.keras"
    assert main(["train", "--perturbations", "D,SNI", *base[3:], "--data", str(data), "--accepted",
                 str(accepted), "--out", str(both)]) == 0
    meta = json.loads(both.with_suffix(".json").read_text())
    assert [Path(p).name for p in meta["training"]["images"]] == ["weld.tif", "film_a.png"]
    assert meta["training"]["perturbations"] == ["D", "SNI"]

    # the accepted films are training films: calibrating on them is refused before training
    assert main([*base, "--accepted", str(accepted), "--calibrate-data", str(accepted),
                 "--out", str(tmp_path / "c.keras")]) == 2
    assert "--calibrate-data is the training folder --accepted" in capsys.readouterr().err
    assert main(["train", "--from-verdicts", "--accepted", str(accepted)]) == 2  # it trains on verdicts
    assert "--accepted cannot be added to it" in capsys.readouterr().err
    # the default perturbations D,SNI: accepted films have no defects to cut, said without a traceback
    assert main(["train", "--accepted", str(accepted), "--steps", "1", "--quiet", "--out", str(tmp_path / "d.keras")]) == 2
    assert "give --perturbations SNI (or another set) with --accepted alone" in capsys.readouterr().err


def test_cli_accepted_skips_gdxray_films_with_unmasked_flaws(tmp_path, capsys):
    from app.cli import main
    from core.imageio import write_png
    from core.synthetic import generate_weld

    root = tmp_path / "gdxray"
    for sub in ("W0001", "W0002", "W0003"):
        (root / sub).mkdir(parents=True)
    image = generate_weld(7, shape=(300, 700), defects=[], iqi=False, markers=False).image
    write_png(root / "W0003" / "W0003_0023.png", image)  # "no indication" in GDXray's list
    write_png(root / "W0003" / "W0003_0020.png", image)  # flaws listed, no mask
    out = tmp_path / "m.keras"
    assert main(["train", "--accepted", str(root), "--perturbations", "SNI", "--steps", "1", "--batch", "2",
                 "--out", str(out)]) == 0
    assert "--accepted: skipping 1 radiograph(s) known to hold flaws no mask marks (W0003_0020" in \
        capsys.readouterr().err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert [Path(p).name for p in meta["training"]["images"]] == ["W0003_0023.png"]


def test_cli_needs_input(capsys):
    from app.cli import main

    assert main(["train", "--steps", "2"]) == 2
    assert "--data" in capsys.readouterr().err


def test_a_latent_that_keeps_dying_is_reported():
    from core.training import latent_warning

    assert latent_warning({"steps": 1000, "dead_latent_resets": 0}) is None
    assert latent_warning({"steps": 1000, "dead_latent_resets": 3}) is None  # revived now and then
    text = latent_warning({"steps": 1036, "dead_latent_resets": 499})  # measured without input gain
    assert "499 times in 1036 steps" in text and "--gain" in text
    assert latent_warning({"steps": 40, "dead_latent_resets": 4}) is not None
    # alive in a few pixels only: no re-centring, but the output is as good as constant
    text = latent_warning({"steps": 331, "dead_latent_resets": 0, "explained_variance": -0.003})
    assert "reproduces 0 % of its okay patches' variance" in text and "unsigned SNI" in text
    assert latent_warning({"steps": 331, "dead_latent_resets": 0, "explained_variance": 0.6}) is None


def test_explained_variance_tells_a_constant_output_from_a_reconstruction():
    from core.model import build_autoencoder
    from core.training import explained_variance

    rng = np.random.default_rng(0)
    x = (0.5 + 0.05 * rng.standard_normal((4, 192, 192, 1))).astype(np.float32)
    model = build_autoencoder(seed=0)
    last = model.get_layer("reconstruction")
    kernel, bias = last.get_weights()
    last.set_weights([np.zeros_like(kernel), np.full_like(bias, 0.5)])  # a constant output
    assert abs(explained_variance(model, x)) < 1e-3
    # a model that passes its input through reproduces all of it
    import keras

    inp = keras.Input((192, 192, 1))
    crop = keras.layers.Cropping2D(18)(inp)
    identity = keras.Model(inp, [crop, crop])
    assert explained_variance(identity, x) == pytest.approx(1.0)


def test_a_trained_model_records_how_much_it_reconstructs(tmp_path):
    bundle = train(TrainConfig(steps=2, seed=4, out=tmp_path / "a.keras", **TINY), okay, [Squares()])
    value = bundle.metadata["training"]["explained_variance"]
    assert isinstance(value, float) and value <= 1.0
