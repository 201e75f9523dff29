"""Equations 1 to 5 against values computed by hand with numpy."""

from __future__ import annotations

import numpy as np
import pytest

from core.loss import LossWeights, crop_target, kernel_means, ood_loss_terms

A = 156


def _numpy_local_means(d, ks=9):
    """Plain loops over the valid positions of a (M, N) array."""
    m, n = d.shape
    out = np.empty((m - ks + 1, n - ks + 1))
    for i in range(m - ks + 1):
        for j in range(n - ks + 1):
            out[i, j] = d[i : i + ks, j : j + ks].mean()
    return out


def _numpy_window_means(d, ks=9):
    """The same with numpy's sliding windows (fast enough for 156 x 156)."""
    return np.lib.stride_tricks.sliding_window_view(d, (ks, ks)).mean(axis=(-2, -1))


def _tf(a):
    return np.asarray(a, np.float32)[..., None]


def test_kernel_means_match_numpy_loops():
    d = np.random.default_rng(0).normal(size=(2, 20, 24)).astype(np.float32)
    got = kernel_means(_tf(d)).numpy()[..., 0]
    assert got.shape == (2, 12, 16)
    for b in range(2):
        np.testing.assert_allclose(got[b], _numpy_local_means(d[b].astype(np.float64)), atol=1e-6)
        np.testing.assert_allclose(got[b], _numpy_window_means(d[b].astype(np.float64)), atol=1e-6)


def test_terms_match_hand_computation_default_and_paper():
    rng = np.random.default_rng(3)
    x = rng.random((2, 192, 192)).astype(np.float32)
    t = x[:, 18:174, 18:174]
    r_ok = (t + rng.normal(0, 0.05, t.shape)).astype(np.float32)
    r_per = (t + rng.normal(0.02, 0.1, t.shape)).astype(np.float32)
    z_ok = rng.random((2, 42, 42)).astype(np.float32)
    z_per = rng.random((2, 42, 42)).astype(np.float32)
    d_ok, d_per = (t - r_ok).astype(np.float64), (t - r_per).astype(np.float64)

    kern_ok = np.mean([(_numpy_window_means(d_ok[b]) ** 2).max() for b in range(2)])
    kern_per = np.mean([(_numpy_window_means(d_per[b]) ** 2).max() for b in range(2)])
    sum_ok = np.mean((d_ok**2).sum(axis=(1, 2)))
    sum_per = np.mean((d_per**2).sum(axis=(1, 2)))
    z_sum = np.mean(z_ok.sum(axis=(1, 2))) + np.mean(z_per.sum(axis=(1, 2)))

    target = np.asarray(crop_target(_tf(x)))
    np.testing.assert_array_equal(target[..., 0], t)
    args = (target, _tf(r_ok), _tf(r_per), _tf(z_ok), _tf(z_per))

    paper = {k: float(v) for k, v in ood_loss_terms(*args, LossWeights.paper()).items()}
    assert paper["ok"] == pytest.approx(sum_ok, rel=1e-4)
    assert paper["per"] == pytest.approx(sum_per, rel=1e-4)
    assert paper["kern_ok"] == pytest.approx(kern_ok, rel=1e-3)
    assert paper["kern_per"] == pytest.approx(kern_per, rel=1e-3)
    assert paper["reg"] == pytest.approx(0.01 * z_sum, rel=1e-4)
    assert paper["total"] == pytest.approx(sum(paper[k] for k in ("ok", "per", "kern_ok", "kern_per", "reg")),
                                           rel=1e-5)

    w = LossWeights.default()
    dflt = {k: float(v) for k, v in ood_loss_terms(*args, w).items()}
    assert dflt["ok"] == pytest.approx(sum_ok / A**2, rel=1e-4)
    assert dflt["per"] == pytest.approx(sum_per / A**2, rel=1e-4)
    assert dflt["kern_ok"] == pytest.approx(kern_ok, rel=1e-3)
    assert dflt["reg"] == pytest.approx(w.reg * z_sum / 42**2, rel=1e-4)


def test_literal_kernel_terms_are_negligible_and_default_weighs_them():
    """The derivation in core.loss: a 9 x 9 error blob of amplitude a."""
    a = 0.1
    d = np.zeros((1, A, A), np.float32)
    d[0, 70:79, 70:79] = a
    zero = np.zeros((1, A, A), np.float32)
    z = np.zeros((1, 42, 42), np.float32)
    args = (_tf(zero), _tf(-d), _tf(zero), _tf(z), _tf(z))  # D_ok = target - r_ok = d
    paper = {k: float(v) for k, v in ood_loss_terms(*args, LossWeights.paper()).items()}
    dflt = {k: float(v) for k, v in ood_loss_terms(*args, LossWeights.default()).items()}
    assert paper["kern_ok"] == pytest.approx(a**2, rel=1e-4)
    assert paper["ok"] == pytest.approx(81 * a**2, rel=1e-4)
    assert dflt["ok"] == pytest.approx(81 * a**2 / A**2, rel=1e-4)  # diluted 300-fold
    assert dflt["kern_ok"] / dflt["ok"] == pytest.approx(A**2 / 81, rel=1e-3)
    assert paper["per"] == paper["kern_per"] == 0.0
    # a uniform error costs the same in both default terms
    u = np.full((1, A, A), a, np.float32)
    uni = ood_loss_terms(_tf(zero), _tf(-u), _tf(zero), _tf(z), _tf(z), LossWeights.default())
    assert float(uni["ok"]) == pytest.approx(float(uni["kern_ok"]), rel=1e-4)


def test_loss_weights_validate_and_presets():
    with pytest.raises(ValueError, match="pixel_reduction"):
        LossWeights(pixel_reduction="median")
    assert LossWeights.from_name("paper") == LossWeights.paper()
    assert LossWeights.paper().reg == 0.01
    assert LossWeights.default().reg == pytest.approx(0.01 * 42**2 / 156**2 / 10)
    with pytest.raises(ValueError, match="preset"):
        LossWeights.from_name("fast")
