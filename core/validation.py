"""Choosing a checkpoint without a test film: validation on held-out accepted radiographs.

Training longer does not always help: on GDXray one seed of the live recipe lost most of the thin
anomaly types and low-contrast defects between 5 and 20 minutes (docs/benchmark/notes.md, items 11
and 12). A plant training overnight needs to know which state to keep, and has no test film.

A checkpoint is measured on the held-out radiographs it will be calibrated on: thresholds
calibrated on their okay patches at the operating FPR, in the weld region's edge zones
(``core.calibration.calibrate``, as ``weldreview calibrate`` sets them), then the fraction of each
synthetic anomaly type of Section 3.3 (``VALIDATION_KINDS``) found when it is added to other okay
patches of the same radiographs, centred in the weld region and as it would lie on the film. The
score is the mean over the types. The patches are drawn once, so every checkpoint of a run is
measured on the same ones.

The okay patches should be the very ones the calibration after training will score
(``validation_set(okay=...)``; ``weldreview train --validate-every`` does so). At 0.1 % FPR a
handful of them set the thresholds, and a checkpoint's figures depend on its residual on exactly
those. On GDXray, the validation mean of 27 stored checkpoints ranked as their test films' mean
synthetic TPR with a Spearman correlation of 0.85 with the calibration's own patches, 0.55 with a
fresh draw of the same films (notes item 12, ``docs/scripts/checkpoint_choice.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.calibration import DEFAULT_FPR, calibrate, min_okay_patches
from core.residual import EDGE_ZONES_PX

# the paper's five synthetic test types (Table 3; the benchmark's TEST_ANOMALIES)
VALIDATION_KINDS = ("circular_hollow", "dogbone", "elongated", "partial_circle", "raster")
N_ANOMALY = 100  # patches per type
VALIDATION_SEED = 3000  # patch draws: another stream than calibration's (seed 1000 by default)


@dataclass
class ValidationSet:
    """Held-out patches (float32 (N, 192, 192), as the model sees them) and their weld regions."""

    okay: np.ndarray
    okay_regions: np.ndarray
    anomalies: dict  # kind -> (patches, regions)
    fpr: float = DEFAULT_FPR
    edge_band_px: tuple = EDGE_ZONES_PX

    def __len__(self) -> int:
        return len(self.okay) + sum(len(x) for x, _ in self.anomalies.values())


def validation_set(images, masks, rois, *, indication=None, fpr: float = DEFAULT_FPR, n_okay: int | None = None,
                   n_anomaly: int = N_ANOMALY, seed: int = VALIDATION_SEED, kinds=VALIDATION_KINDS,
                   okay=None) -> ValidationSet:
    """Draw a validation set from held-out radiographs.

    Parameters
    ----------
    images : list of ndarray
        Held-out accepted radiographs as the model sees them (``core.normalise.model_input``).
    masks, rois : list of ndarray or None
        Defect masks (patches keep clear of them) and weld regions found on the raw radiographs.
    indication : callable, optional
        Maps an additive anomaly to what the model sees of it on the film
        (``core.normalise.normalise_indication`` for a model with background removal).
    fpr : float
        The operating point; ``n_okay`` (default ``min_okay_patches(fpr)``) okay patches set it.
    okay : tuple of ndarray, optional
        ``(patches, regions)``: the okay patches that set the thresholds, instead of drawing them;
        those of the calibration that follows training, so that a checkpoint is measured at the
        thresholds it will be given (``n_okay`` is then unused).
    """
    from core.perturbations import SyntheticAnomalies
    from core.sampler import PatchSampler

    n_okay = n_okay or min_okay_patches(fpr)
    sampler = PatchSampler(images, masks, rois=rois, seed=seed)
    rng = np.random.default_rng(seed)
    okay, okay_regions = sampler.okay_with_roi(n_okay, rng=rng) if okay is None else okay
    anomalies = {}
    for j, kind in enumerate(kinds):
        base, regions = sampler.okay_with_roi(n_anomaly, rng=rng)
        delta, weight = SyntheticAnomalies(kind).sample(rng, n_anomaly, regions=regions,
                                                       place_rng=np.random.default_rng([seed, j]))
        added = weight * delta
        if indication is not None:
            added = indication(added)
        anomalies[kind] = ((base + added).astype(np.float32), regions)
    return ValidationSet(okay, okay_regions, anomalies, fpr)


def validate(model, vset: ValidationSet) -> dict:
    """Measure ``model`` (a patch model) on ``vset``.

    Returns a JSON-ready dict: ``score`` (mean TPR over the types, the higher the better), ``tpr``
    per type, and the interior ``mean`` / ``std`` thresholds the okay patches set.
    """
    from core.residual import has_haz
    from core.scanning import patch_scores

    zoning = {"edge_band_px": vset.edge_band_px, "haz": has_haz(vset.okay_regions)}

    def scores(x, regions):
        return patch_scores(x, model, regions=regions, **zoning)

    thr = calibrate(scores(vset.okay, vset.okay_regions), fpr=vset.fpr, **zoning)
    tpr = {kind: float(thr.flagged(scores(x, r)).mean()) for kind, (x, r) in vset.anomalies.items()}
    return {"score": float(np.mean(list(tpr.values()))), "tpr": tpr,
            "mean_threshold": float(thr.mean), "std_threshold": float(thr.std)}
