"""Detection figures of a calibrated model on generated radiographs it has never seen.

Scores count only kernels centred in the weld region (``haz_mask``), exactly as a scan with the
weld region does; synthetic anomalies are pasted into okay weld patches and their pixels count as
weld region.

Used for the bundled default model (README, ``docs/default_model.md``) and its regression test:
okay and defect patches are drawn from the weld region of fresh ``core.synthetic`` radiographs (a
seed range disjoint from training, calibration and the demo images), defect patches are graded by the
objective contrast figure of ``core.contrast``, and the model's stored thresholds decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.contrast import GRADES, grade_patches

EVALUATION_SEEDS = range(2000, 2100)  # never used for training (0-99), calibration (1000-1099) or demo (9001-9004)


@dataclass
class SyntheticEvaluation:
    """TPR per contrast grade and per synthetic anomaly type, FPR on okay patches, with counts."""

    tpr: dict
    n_defect: dict
    fpr: float
    n_okay: int
    thresholds: dict

    def lines(self) -> list[str]:
        out = [f"okay patches flagged: {self.fpr:.4f} of {self.n_okay} (target {self.thresholds['fpr_target']:g})"]
        for name, value in self.tpr.items():
            out.append(f"TPR {name:>16}: {value:6.3f} of {self.n_defect[name]}")
        return out


def evaluate_synthetic(bundle, *, n_radiographs: int = 4, n_okay: int = 2000, n_defect: int = 600,
                       n_anomaly: int = 100, seed: int = EVALUATION_SEEDS[0], fpr: float | None = None,
                       progress=None) -> SyntheticEvaluation:
    """Score fresh synthetic okay/defect patches and synthetic anomalies with ``bundle``'s thresholds.

    Patches are cut from ``core.normalise.model_input`` of each radiograph (the radiograph as the
    model sees it); synthetic anomalies are added as they would lie on the film, so for a model
    with background removal they are normalised with it (``core.normalise.indication_input``).
    Patches are scored in the thresholds' zones (``Thresholds.scoring``): edge zones, or zones by
    the slope of each raw radiograph (``core.residual.slope_map``) cut as the patch was.
    """
    from core.imageio import normalise
    from core.normalise import indication_input, model_input
    from core.perturbations import ANOMALY_KINDS, SyntheticAnomalies
    from core.residual import slope_map
    from core.sampler import PatchSampler
    from core.scanning import patch_scores, resolve_thresholds
    from core.synthetic import generate_weld

    thr = resolve_thresholds(bundle, fpr=fpr)
    metadata = getattr(bundle, "metadata", None)
    images, masks, rois, slopes = [], [], [], []
    for i in range(n_radiographs):
        weld = generate_weld(seed + i)
        # as the model sees it (background removed where it was trained so); the weld region and
        # defect masks are the generator's, so they are unaffected
        raw = normalise(weld.image, bits_stored=16)[0]
        images.append(model_input(raw, metadata))
        masks.append(weld.mask)
        rois.append(weld.region_labels())
        if thr.slope_zones:  # zones by the raw film's slope, as a scan finds them
            slopes.append(slope_map(raw, thr.slope_sigma_px))
    sampler = PatchSampler(images, masks, rois=rois, seed=seed)
    rng = np.random.default_rng(seed)

    def flagged(patches, regions, geometries):
        cut = sampler.cut(slopes, geometries) if slopes else None
        s = patch_scores(patches, bundle.model, regions=regions, slopes=cut, **thr.scoring())
        return thr.flagged(s)

    okay, okay_rois, okay_geos = sampler.okay_with_roi(n_okay, rng=rng, geometries=True)
    okay_flags = flagged(okay, okay_rois, okay_geos)
    defect, defect_masks, defect_rois, defect_geos = sampler.defect(n_defect, rng=rng, with_roi=True,
                                                                    geometries=True)
    _, grades = grade_patches(defect, defect_masks)
    defect_flags = flagged(defect, defect_rois, defect_geos)
    tpr, counts = {}, {}
    for g in GRADES:
        sel = np.asarray(grades) == g
        counts[g] = int(sel.sum())
        tpr[g] = float(defect_flags[sel].mean()) if sel.any() else float("nan")
    for kind in ANOMALY_KINDS:
        pick = rng.choice(len(okay), n_anomaly)
        delta, weight = SyntheticAnomalies(kind).sample(rng, n_anomaly)
        # the anomaly must lie in the weld region to count (outside it nothing is flagged)
        regions = np.maximum(okay_rois[pick], weight > 0)
        anomaly = indication_input(weight * delta, metadata)  # as it would lie on the film
        # slope zones come from the okay film under the anomaly: its own slope is ignored (on a
        # film it would add to the slope map a little, smoothed by the slope's Gaussian)
        tpr[kind] = float(flagged(okay[pick] + anomaly, regions, [okay_geos[j] for j in pick]).mean())
        counts[kind] = n_anomaly
    return SyntheticEvaluation(tpr=tpr, n_defect=counts, fpr=float(okay_flags.mean()), n_okay=n_okay,
                               thresholds=thr.to_dict())
