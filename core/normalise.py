"""Intensity normalisation of a radiograph before the autoencoder: background removal.

Weld radiographs span a wide grey range (GDXray: weld bead near 0.93, plate near 0.3) that the
paper's autoencoder, with its single bounded latent channel, learns to reproduce only slowly: after
5 minutes of CPU training its output topped out at 0.65, so the residual's local mean on bright
bead was 0.29 and the mean test measured brightness (docs/benchmark/report.md, learning curve).
Removing the smooth background first leaves the model the structure it has to judge:

    normalised = image - gaussian(image, sigma) + 0.5

A defect smaller than ``sigma`` keeps its contrast; the film's density gradients, the bead's
overall brightness and the plate level go. The operator is linear, so an indication added to the
raw image adds its own normalised version to the normalised image.

Two background estimates (``METHODS``):

``gaussian``
    ``gaussian(image, sigma)``. Biased where the grey level curves: on the rounded profile of a
    bead the Gaussian mean lies below the peak by about ``sigma**2 / 2`` times the curvature, so
    the normalised bead carries a smooth offset. On narrow, high-contrast GDXray films
    (W0001_0001/0004/0009) the 9 x 9 local mean of the normalised weld region is 0.016-0.024 in
    the median, against 0.004-0.007 on the others, and the autoencoder's residual inherits it
    (measured: the model's median |local mean| per film equals it to within 0.001).
``twicing``
    ``2 * g - gaussian(g, sigma)`` with ``g = gaussian(image, sigma)`` (Tukey's twicing): the
    smoothing kernel's second moment vanishes, so smooth curvature no longer leaks into the
    normalised image (median 9 x 9 mean 0.004-0.010 on the same films, 0.0025-0.004 elsewhere).
    The high-pass becomes ``(1 - G)**2``: small defects keep their contrast as before.
"""

from __future__ import annotations

import numpy as np

OFFSET_GREY = 0.5  # the normalised image's background level (keeps values near [0, 1])
METHODS = ("gaussian", "twicing")


def remove_background(image: np.ndarray, sigma: float, method: str = "gaussian") -> np.ndarray:
    """``image - background + 0.5`` as float32 (reflecting at the image's edges).

    Parameters
    ----------
    image : ndarray of shape (M, N), float32 in [0, 1]
    sigma : float
        Gaussian standard deviation in pixels; structures much larger than it are removed.
    method : {"gaussian", "twicing"}
        The background estimate (module docstring).
    """
    from scipy import ndimage

    if sigma <= 0:
        raise ValueError(f"the background sigma must be positive, got {sigma}")
    if method not in METHODS:
        raise ValueError(f"unknown background method {method!r}; choose one of {', '.join(METHODS)}")
    image = np.asarray(image, dtype=np.float32)
    background = ndimage.gaussian_filter(image, sigma, mode="reflect", truncate=3.0)
    if method == "twicing":
        background = 2 * background - ndimage.gaussian_filter(background, sigma, mode="reflect",
                                                               truncate=3.0)
    return (image - background + OFFSET_GREY).astype(np.float32)


def normalise_indication(indication: np.ndarray, sigma: float, method: str = "gaussian") -> np.ndarray:
    """What background removal makes of an indication added to a radiograph.

    The operator is linear, so ``remove_background(image + a) = remove_background(image) + N(a)``
    with ``N(a) = a - background(a)`` for an indication ``a`` that is zero outside its support.
    This computes ``N(a)`` on a zero-padded canvas wide enough for the whole filter, so an
    indication inserted into a patch of a normalised radiograph is what it would have been had it
    been on the film (the benchmark's synthetic anomalies; a smooth blob loses part of its height).

    Parameters
    ----------
    indication : ndarray of shape (..., M, N)
        Additive indications (``weight * delta`` of Equation 2), one per leading index.
    sigma, method
        As :func:`remove_background`.
    """
    a = np.asarray(indication, dtype=np.float32)
    reach = int(np.ceil(3.0 * sigma)) * (2 if method == "twicing" else 1) + 1
    flat = a.reshape((-1,) + a.shape[-2:])
    out = np.empty_like(flat)
    for i, one in enumerate(flat):
        if not one.any():
            out[i] = 0.0
            continue
        padded = np.pad(one, reach)
        out[i] = (remove_background(padded, sigma, method) - OFFSET_GREY)[reach:-reach, reach:-reach]
    return out.reshape(a.shape)


def background_method(metadata: dict | None) -> str:
    """The background estimate a model was trained with (``gaussian`` when not recorded)."""
    return ((metadata or {}).get("input") or {}).get("background_method") or "gaussian"


def background_sigma(metadata: dict | None) -> float | None:
    """The background-removal sigma a model was trained with, or None when it has none.

    Parameters
    ----------
    metadata : dict or None
        A model's metadata (``ModelBundle.metadata``); the sigma is ``metadata["input"]
        ["background_sigma"]``. Models without the key (the bundled default among them) take
        the radiograph as it is.

    Returns
    -------
    float or None
    """
    value = ((metadata or {}).get("input") or {}).get("background_sigma")
    return None if value is None else float(value)


def model_input(image: np.ndarray, metadata: dict | None) -> np.ndarray:
    """The whole radiograph as the model described by ``metadata`` expects it.

    Parameters
    ----------
    image : ndarray of shape (M, N), float32 in [0, 1]
        The raw (display-normalised) radiograph.
    metadata : dict or None
        The model's metadata (see ``background_sigma``).

    Returns
    -------
    ndarray
        ``image`` itself (not a copy) for a model without background removal, else
        ``remove_background(image, sigma)``.
    """
    sigma = background_sigma(metadata)
    return image if sigma is None else remove_background(image, sigma, background_method(metadata))


def indication_input(indication: np.ndarray, metadata: dict | None) -> np.ndarray:
    """An additive indication as the model described by ``metadata`` sees it on the film.

    The counterpart of :func:`model_input` for a synthetic anomaly that is added to patches of an
    already prepared radiograph: unchanged for a model without background removal, else
    :func:`normalise_indication` with the model's sigma and method.
    """
    sigma = background_sigma(metadata)
    if sigma is None:
        return np.asarray(indication, dtype=np.float32)
    return normalise_indication(indication, sigma, background_method(metadata))
