"""The supervised CNN of Section 3.2: architecture, parameter count and a short training run."""

from __future__ import annotations

import numpy as np
import pytest

from core.cnn import CNN_PARAMS, CNNTrainConfig, build_cnn, cnn_logits, predict_cnn, train_cnn


def test_architecture_matches_section_3_2():
    model = build_cnn(seed=0)
    # valid 3 x 3 convolutions, pooling between and after the blocks: 8 x 8 x 40 features
    assert model.count_params() == CNN_PARAMS == 223_221
    convs = [layer for layer in model.layers if layer.name.startswith("block") and "conv" in layer.name]
    assert [c.filters for c in convs] == [24, 24, 30, 30, 34, 34, 40, 40]
    assert all(c.kernel_size == (3, 3) for c in convs)
    drops = [layer.rate for layer in model.layers if "dropout" in layer.name]
    assert drops == [0.1] * 8
    assert model.get_layer("flatten").output.shape[-1] == 8 * 8 * 40
    dense = [model.get_layer(n).units for n in ("dense1", "dense2", "not_okay")]
    assert dense == [60, 50, 1]
    assert model.get_layer("not_okay").activation.__name__ == "sigmoid"


def test_logits_order_patches_like_the_sigmoid_output():
    model = build_cnn(seed=1)
    x = np.random.default_rng(0).random((5, 192, 192), dtype=np.float32)
    direct = np.asarray(model(x[..., None], training=False)).ravel()
    np.testing.assert_allclose(predict_cnn(model, x), direct, rtol=1e-4, atol=1e-6)
    logits = cnn_logits(model, x)
    np.testing.assert_array_equal(np.argsort(logits), np.argsort(direct))


@pytest.mark.slow
def test_training_learns_an_easy_task():
    side = 80  # smaller patches keep the test fast; the trainer takes the size from the data
    rr, cc = np.mgrid[:side, :side]

    def okay(rng, n):
        return (0.5 + rng.normal(0, 0.02, (n, side, side))).astype(np.float32)

    def disc(rng, n):
        out = okay(rng, n)
        for k in range(n):
            r, c = rng.integers(20, side - 20, size=2)
            out[k][(rr - r) ** 2 + (cc - c) ** 2 <= 144] += 0.4
        return out

    model = train_cnn(CNNTrainConfig(steps=120, batch=16, lr=3e-3, seed=0), okay, [disc])
    assert model.input_shape[1:3] == (side, side)
    rng = np.random.default_rng(99)
    p_okay, p_disc = predict_cnn(model, okay(rng, 32)), predict_cnn(model, disc(rng, 32))
    assert p_disc.mean() > p_okay.mean() + 0.3
    assert np.mean(model.history_loss[-10:]) < 0.5 * np.mean(model.history_loss[:10])


def test_trainer_needs_positive_sources():
    with pytest.raises(ValueError, match="positive"):
        train_cnn(CNNTrainConfig(steps=1, batch=4), lambda rng, n: None, [])
