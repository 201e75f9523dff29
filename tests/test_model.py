"""The paper's autoencoder (Section 3.1): its figures, full convolution and precision options."""

from __future__ import annotations

import numpy as np
import pytest

from core.model import (
    APERTURE, EDGE_MARGIN, LATENT, OFFSET, PATCH, STRIDE, build_autoencoder, float32_copy, whole_image_model,
)


def _smooth_image(rng, shape):
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    x = 0.5 + 0.2 * np.sin(rows / 17.0) * np.cos(cols / 23.0) + rng.normal(0, 0.02, shape)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return build_autoencoder(seed=0)


def test_paper_figures(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 41186  # "about 41,000 trainable parameters"
    assert abs(trainable - 41000) / 41000 < 0.01
    r, z = model(np.zeros((1, PATCH, PATCH, 1), np.float32), training=False)
    assert tuple(z.shape) == (1, LATENT, LATENT, 1) == (1, 42, 42, 1)
    assert tuple(r.shape) == (1, APERTURE, APERTURE, 1) == (1, 156, 156, 1)
    assert OFFSET == 18


def test_latent_is_bounded_to_unit_interval(model):
    x = np.random.default_rng(0).uniform(-5, 5, (2, PATCH, PATCH, 1)).astype(np.float32)
    z = model(x, training=False)[1].numpy()
    assert z.min() >= 0.0 and z.max() <= 1.0


def test_whole_image_equals_patches_at_aligned_positions(model):
    rng = np.random.default_rng(1)
    image = _smooth_image(rng, (264, 280))  # multiples of STRIDE
    full = whole_image_model(model)
    out = full(image[None, ..., None], training=False)[0].numpy()[0, ..., 0]
    assert out.shape == (264 - 2 * OFFSET, 280 - 2 * OFFSET)
    m = EDGE_MARGIN
    for r0, c0 in [(0, 0), (STRIDE * 5, STRIDE * 11), (264 - PATCH, 280 - PATCH)]:
        assert r0 % STRIDE == 0 and c0 % STRIDE == 0
        patch = image[r0 : r0 + PATCH, c0 : c0 + PATCH]
        rec = model(patch[None, ..., None], training=False)[0].numpy()[0, ..., 0]
        inner = rec[m:-m, m:-m]
        same = out[r0 + m : r0 + APERTURE - m, c0 + m : c0 + APERTURE - m]
        np.testing.assert_allclose(inner, same, atol=2e-5)


def test_edge_margin_is_needed_and_misaligned_offsets_differ(model):
    rng = np.random.default_rng(2)
    image = _smooth_image(rng, (256, 256))
    out = whole_image_model(model)(image[None, ..., None], training=False)[0].numpy()[0, ..., 0]
    r0 = c0 = 32
    rec = model(image[None, r0 : r0 + PATCH, c0 : c0 + PATCH, None], training=False)[0].numpy()[0, ..., 0]
    edge = np.abs(rec - out[r0 : r0 + APERTURE, c0 : c0 + APERTURE])
    assert edge[:EDGE_MARGIN].max() > 1e-4  # the outermost rows see fewer latent pixels
    r1 = 34  # not a multiple of STRIDE: the latent grid shifts
    rec1 = model(image[None, r1 : r1 + PATCH, r1 : r1 + PATCH, None], training=False)[0].numpy()[0, ..., 0]
    inner = np.abs(rec1[8:-8, 8:-8] - out[r1 + 8 : r1 + APERTURE - 8, r1 + 8 : r1 + APERTURE - 8])
    assert inner.max() > 1e-4


def test_dead_latent_with_zero_bias_seed_1():
    """Seed 1 with the plain zero bias gives z = 0 for every input: the reason for LATENT_BIAS and
    core.training's re-centring (test_training covers the cure)."""
    x = np.random.default_rng(0).random((2, PATCH, PATCH, 1), dtype=np.float32)
    dead = build_autoencoder(seed=1, latent_bias=0.0)
    assert dead(x, training=False)[1].numpy().max() == 0.0


def test_mixed_precision_keeps_latent_and_reconstruction_float32():
    m = build_autoencoder(seed=0, dtype_policy="mixed_bfloat16")
    assert m.get_layer("enc1_conv1").compute_dtype == "bfloat16"
    x = np.random.default_rng(0).random((1, PATCH, PATCH, 1), dtype=np.float32)
    r, z = m(x, training=False)
    assert r.dtype.name == "float32" and z.dtype.name == "float32"
    copy = float32_copy(m)
    assert all(layer.compute_dtype == "float32" for layer in copy.layers)
    for a, b in zip(m.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    r32 = copy(x, training=False)[0].numpy()
    assert np.abs(r32 - r.numpy()).max() < 0.05  # bfloat16 rounding only


def test_input_gain_scales_what_the_layers_see_and_keeps_grey_levels_outside(tmp_path):
    """gain g: the same weights see 0.5 + g (x - 0.5) and their output is scaled back around 0.5."""
    from core.model import model_gain
    from core.modelfile import load_model, save_model

    with pytest.raises(ValueError, match="gain must be positive"):
        build_autoencoder(gain=0.0)
    plain = build_autoencoder(seed=0)
    gained = build_autoencoder(seed=0, gain=8.0)
    assert model_gain(plain) == 1.0 and model_gain(gained) == 8.0
    gained.set_weights(plain.get_weights())  # the gain layers hold no weights
    assert sum(int(np.prod(w.shape)) for w in gained.trainable_weights) == 41186
    rng = np.random.default_rng(3)
    x = (0.5 + 0.007 * rng.standard_normal((2, PATCH, PATCH, 1))).astype(np.float32)  # faint texture
    r_plain = plain(0.5 + 8.0 * (x - 0.5), training=False)[0].numpy()
    r_gained, z = gained(x, training=False)
    np.testing.assert_allclose(r_gained.numpy(), 0.5 + (r_plain - 0.5) / 8.0, atol=1e-5)
    np.testing.assert_array_equal(z.numpy(), plain(0.5 + 8.0 * (x - 0.5), training=False)[1].numpy())

    # the gain survives the float32 copy, the whole-image model and a saved file
    assert model_gain(float32_copy(build_autoencoder(seed=0, gain=8.0, dtype_policy="mixed_bfloat16"))) == 8.0
    assert model_gain(whole_image_model(gained)) == 8.0
    bundle = load_model(save_model(gained, tmp_path / "g.keras", metadata={"name": "g"}))
    assert model_gain(bundle.model) == 8.0 and bundle.metadata["architecture"]["gain"] == 8.0
    np.testing.assert_allclose(bundle.model(x, training=False)[0].numpy(), r_gained.numpy(), atol=1e-6)
