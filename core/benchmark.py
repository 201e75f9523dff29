"""The benchmark protocol of Lindgren and Zach (2022), Sections 3.3 and 4, on a labelled dataset.

Protocol
--------
1. Image-level split (:func:`make_split`): test radiographs, held-out *calibration* radiographs of
   the training side, and training radiographs. Groups (a GDXray W0001 image and its W0003 twin) are
   never separated. On the GDXray layout the split is fixed (``GDXRAY_TEST``,
   ``GDXRAY_CALIBRATION``); on other data it is drawn once from the seed and written in the report.
2. Patch sets (:func:`build_patch_sets`), drawn once per run with ``DATA_SEED`` so that every model
   sees the same patches: okay and defect test patches from the test radiographs
   (``core.sampler.PatchSampler``: random translation, rotation, 90-degree turns, flips); the defect
   patches graded high / mid / low by ``core.contrast``; the five synthetic OOD test sets of Section
   3.3 inserted into fresh okay test patches; okay patches of the calibration radiographs. By
   default every patch (training ones too) is centred in the weld region of its radiograph
   (``core.roi.find_weld``) and only kernels centred in that region are scored, as the scan does;
   ``roi=False`` uses whole radiographs (the paper's setting, for the before/after comparison).
3. Models, each with ``seeds`` seeds: the OOD detector (``core.training.train``) with perturbation
   sets None, D (real defects of the training radiographs) and SNI; the supervised CNN
   (``core.cnn``) trained on D, D + SC, D + SC + SPC and D + SNI (positives: real defect patches, and
   okay patches with the synthetic circular indication, partial circle, or SNI inserted).
4. Scores and operating point: OOD detector per patch ``(max |local mean|, max local std)`` of the
   9 x 9 kernels over the aperture (``core.scanning.patch_scores``; in the weld region one pair
   for its interior and one per edge zone, 0-32 and 32-48 px from its edge,
   ``core.residual.EDGE_ZONES_PX``, as ``weldreview calibrate`` sets them), thresholds from
   ``core.calibration.calibrate`` on the calibration okay patches (never test patches). As an
   option (``zones="slope"``, not the protocol's default) the zones are by the raw film's slope
   instead of the distance from the region's edge: the slope over every patch is cut from the raw
   radiograph as the patch was (:func:`patch_slopes`; a synthetic anomaly's own slope added), the
   bounds at ``core.residual.SLOPE_QUANTILES`` of the calibration okay kernels' slopes. CNN: its
   output thresholded at the same FPR on the same calibration okay patches (computed on the logit,
   which orders patches like the sigmoid but does not saturate to 1.0 in float32).
5. TPR at that operating point per test set, mean and spread ``(max - min) / 2`` over the seeds;
   the FPR actually reached on the okay test patches; ROC curves against the okay test patches.

Each trained model's numbers are kept in ``OUT/runs/`` (JSON + the raw scores as NPZ) and reused when
the benchmark is started again with the same protocol, so an interrupted run resumes. When only the
evaluation changed (``EVALUATION``, e.g. protocol version 3's edge zones and placement of the
synthetic anomalies), the OOD models kept in ``OUT/models/`` are evaluated again instead of
trained again; the CNNs, which are not kept, are trained again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from core.contrast import GRADE_THRESHOLDS, GRADES, grade_patches
from core.residual import EDGE_ZONES_PX, SLOPE_QUANTILES, SLOPE_SIGMA_PX
from core.metrics import mean_spread, rate_above, roc_curve, auc, threshold_at_fpr

OOD_SETS = ("None", "D", "SNI")
CNN_SETS = ("D", "D+SC", "D+SC+SPC", "D+SNI")
TEST_ANOMALIES = ("circular_hollow", "dogbone", "elongated", "partial_circle", "raster")
TEST_SETS = tuple(GRADES) + TEST_ANOMALIES
TEST_SET_TITLES = {
    "high": "Defects high contrast", "mid": "Defects mid-contrast", "low": "Defects low contrast",
    "circular_hollow": "Synthetic circular hollow inclusion",
    "dogbone": "Synthetic dogbone inclusion", "elongated": "Synthetic elongated inclusion",
    "partial_circle": "Synthetic partial circle inclusion", "raster": "Synthetic raster",
}
# The fixed GDXray split (names of W0001 radiographs; each takes its W0003 twin along). Test: two
# radiographs whose defect patches span the contrast range in about the paper's proportions;
# calibration: two more; training: W0001_0001, 0006 and 0007, which hold most defect pixels (the
# D perturbations and the CNN's positives come from them).
GDXRAY_TEST = ("W0001_0002", "W0001_0003")
GDXRAY_CALIBRATION = ("W0001_0004", "W0001_0009")
DATA_SEED = 20220  # seeds the patch sets (independent of the model seeds)
# 2: the weld region's 32 px edge band has its own thresholds. 3: its edge zones 0-32 and 32-48 px
# each have their own (core.residual.EDGE_ZONES_PX), and the synthetic anomalies are centred in
# the weld region. Version 3 changed only the evaluation (EVALUATION): the split, the training
# patches and every other patch are version 2's (_SAMPLING_VERSION), so trained models stay valid.
PROTOCOL_VERSION = 3
_SAMPLING_VERSION = 2
# How a trained model is evaluated, stored with each run: the OOD detector's edge zones, where the
# synthetic test anomalies are placed
EVALUATION = {"edge_zones_px": list(EDGE_ZONES_PX), "synthetic_anomalies": "centred in the weld region"}
# How the OOD detector's thresholds split the weld region: "distance" from its edge (EDGE_ZONES_PX,
# protocol version 3), or "slope" of the raw film (core.residual.slope_zones), an option
ZONES = ("distance", "slope")


def evaluation(zones: str = "distance") -> dict:
    """``EVALUATION`` for the zones ``"distance"`` (the protocol's), or with the slope zones added."""
    if zones == "distance":
        return EVALUATION
    if zones == "slope":
        return {**EVALUATION, "zones": "slope", "slope_quantiles": [float(q) for q in SLOPE_QUANTILES],
                "slope_sigma_px": float(SLOPE_SIGMA_PX)}
    raise ValueError(f"unknown zones {zones!r}; choose one of {', '.join(ZONES)}")

# The paper's numbers (Tables 2 and 3): mean, spread in percent.
PAPER_TABLE2 = {
    "D": {"high": (78, 3), "mid": (45, 7), "low": (15, 10), "circular_hollow": (46, 11),
          "dogbone": (45, 14), "elongated": (24, 7), "partial_circle": (31, 6), "raster": (71, 27)},
    "D+SC": {"high": (83, 3), "mid": (74, 4), "low": (23, 3), "circular_hollow": (69, 24),
             "dogbone": (48, 11), "elongated": (24, 3), "partial_circle": (33, 9), "raster": (98, 3)},
    "D+SC+SPC": {"high": (84, 4), "mid": (77, 7), "low": (17, 2), "circular_hollow": (100, 0),
                 "dogbone": (97, 2), "elongated": (70, 8), "partial_circle": (89, 6),
                 "raster": (97, 5)},
    "D+SNI": {"high": (85, 2), "mid": (76, 4), "low": (21, 2), "circular_hollow": (100, 0),
              "dogbone": (97, 2), "elongated": (86, 7), "partial_circle": (90, 6), "raster": (100, 0)},
}
PAPER_TABLE3 = {
    "None": {"high": (50, 2), "mid": (6, 5), "low": (0, 1), "circular_hollow": (12, 10),
             "dogbone": (10, 2), "elongated": (3, 1), "partial_circle": (4, 3), "raster": (100, 0)},
    "D": {"high": (79, 9), "mid": (69, 17), "low": (16, 6), "circular_hollow": (100, 0),
          "dogbone": (100, 0), "elongated": (100, 0), "partial_circle": (99, 1), "raster": (100, 0)},
    "SNI": {"high": (94, 3), "mid": (90, 3), "low": (26, 7), "circular_hollow": (100, 0),
            "dogbone": (100, 0), "elongated": (100, 0), "partial_circle": (99, 1), "raster": (100, 0)},
}


@dataclass(frozen=True)
class Budget:
    """How much work one benchmark run does; the protocol is the same at every budget.

    Attributes
    ----------
    ood_steps, ood_batch : int
        Training steps of each OOD detector, and okay patches per step (as many perturbed).
    cnn_steps, cnn_batch : int
        Training steps of each CNN and patches per step (half okay, half positives).
    n_calibration : int
        Okay patches of the calibration radiographs (at least 3 / fpr, core.calibration's rule).
    n_test_okay, n_test_defect, n_synthetic : int
        Okay and defect test patches, and patches per synthetic OOD test set.
    fpr : float
        The operating point (the paper's 0.1 %).
    note : str
        What the budget is for, written in the report.
    """

    name: str
    ood_steps: int
    ood_batch: int
    cnn_steps: int
    cnn_batch: int
    n_calibration: int
    n_test_okay: int
    n_test_defect: int
    n_synthetic: int
    fpr: float = 0.001
    note: str = ""


BUDGETS = {
    # Meant to fit 45 min on 2 CPU cores with 3 seeds (21 models). Rates measured on the shared
    # 2-core machine: inference about 180 patches/s, so scoring 3000 calibration + 1450 test
    # patches is ~25 s per model, ~9 min for all 21; OOD training 80 steps of 2 x 32 patches at
    # ~42 patches/s (bfloat16) ~2 min each; CNN training 40 steps of 32 patches at ~20 patches/s
    # ~65 s each. The models are far from converged; same protocol otherwise.
    "small": Budget("small", ood_steps=80, ood_batch=32, cnn_steps=40, cnn_batch=32,
                    n_calibration=3000, n_test_okay=500, n_test_defect=450, n_synthetic=100,
                    note="CPU budget (45 min on 2 cores): each model trained for about two minutes or less, "
                    "far from convergence; 450 test defect and 500 okay test patches, 100 instead "
                    "of 200 patches per synthetic test set"),
    # Paper scale (Table 1 test counts), meant for a GPU.
    "full": Budget("full", ood_steps=20000, ood_batch=32, cnn_steps=10000, cnn_batch=64,
                   n_calibration=10000, n_test_okay=3480, n_test_defect=8124, n_synthetic=200,
                   note="paper scale (test patch counts of Table 1), for a GPU"),
    # Smoke test of the machinery only (tests, a few seconds per model); FPR 5 % so that 60
    # calibration patches suffice. Its numbers mean nothing.
    "tiny": Budget("tiny", ood_steps=2, ood_batch=4, cnn_steps=2, cnn_batch=4,
                   n_calibration=60, n_test_okay=30, n_test_defect=20, n_synthetic=5, fpr=0.05,
                   note="smoke test of the machinery; the numbers mean nothing"),
}


# --- split ----------------------------------------------------------------------------------------

@dataclass
class Split:
    """Radiographs (``core.datasets.LabelledRadiograph``) of each side of the benchmark."""

    train: list
    calibration: list
    test: list
    rule: str

    def to_dict(self) -> dict:
        def side(items):
            return [{"name": it.name, "group": it.group} for it in items]

        return {"rule": self.rule, "train": side(self.train), "calibration": side(self.calibration),
                "test": side(self.test)}


def make_split(dataset, *, test_names=None, calibration_names=None, seed: int = 0) -> Split:
    """Split radiographs into training, calibration and test sides at group level.

    Parameters
    ----------
    dataset : list of LabelledRadiograph
        Radiographs with masks (``core.datasets.load_dataset(..., include_unmasked=False)``).
    test_names, calibration_names : iterable of str, optional
        Fixed sides; default: the GDXray split when the dataset holds those radiographs, else a
        third of the groups for test and a third of the rest for calibration, drawn with ``seed``.
        ``calibration_names=()`` calibrates on okay patches of the training radiographs instead;
        so does a training side of a single group (datasets too small for a held-out side; the
        split's rule, written in the report, says so).

    Returns
    -------
    Split
    """
    from core.datasets import split_by_image

    names = {it.name for it in dataset}
    if test_names is None and calibration_names is None and set(GDXRAY_TEST + GDXRAY_CALIBRATION) <= names:
        test_names, calibration_names = GDXRAY_TEST, GDXRAY_CALIBRATION
        rule = "fixed GDXray split (core.benchmark.GDXRAY_TEST / GDXRAY_CALIBRATION)"
    else:
        rule = "given names" if test_names is not None else f"random groups, seed {seed}"
    if test_names is not None:
        rest, test = split_by_image(dataset, test_names=test_names)
    else:
        rest, test = split_by_image(dataset, test_fraction=1 / 3, seed=seed)
    few = calibration_names is None and len({it.group for it in rest}) < 2
    if few or (calibration_names is not None and len(tuple(calibration_names)) == 0):
        return Split(rest, [], test, rule + "; no held-out calibration radiograph (too few "
                     "radiographs): thresholds from okay patches of the training radiographs")
    if calibration_names is not None:
        train, calibration = split_by_image(rest, test_names=calibration_names)
    else:
        train, calibration = split_by_image(rest, test_fraction=1 / 3, seed=seed + 1)
    if not train:
        raise ValueError("the split leaves no training radiograph; name fewer test/calibration ones")
    return Split(train, calibration, test, rule)


# --- patch sets -----------------------------------------------------------------------------------

@dataclass
class PatchSets:
    """Every patch set of one benchmark run (float32 (N, 192, 192) arrays).

    ``regions`` holds, per set name (``calibration_okay``, ``test_okay`` and every test set), the
    weld region over each patch (bool (N, 192, 192)); None when the run uses whole radiographs.
    ``calibration_origins`` says where each calibration patch was cut
    (``core.calibration_review.encode_origins``: film name and geometry), so the patches that
    set the thresholds can be looked at. ``anomaly_centres`` says where each synthetic anomaly
    was centred in its patch, so its rate can be told apart by zone of the weld region.
    ``slopes`` (when asked for, ``build_patch_sets(slopes=True)``) holds the raw film's slope over
    every patch of every set named as in ``regions`` (float32 (N, 192, 192), :func:`patch_slopes`
    with ``slope_sigma_px``), for zones by slope.
    """

    calibration_okay: np.ndarray
    test_okay: np.ndarray
    test_defects: dict  # grade -> patches
    contrasts: np.ndarray  # contrast figure of every test defect patch (before grading)
    synthetic: dict  # kind -> patches
    regions: dict | None = None
    calibration_origins: dict | None = None
    anomaly_centres: dict | None = None  # kind -> (N, 2) row, column of each anomaly's centre
    slopes: dict | None = None  # set name -> (N, 192, 192) raw film's slope over each patch
    slope_sigma_px: float | None = None  # the slope's Gaussian, with slopes

    def test_sets(self) -> dict:
        """Every positive test set by name (``TEST_SETS`` order), empty ones left out."""
        sets = {g: self.test_defects[g] for g in GRADES if len(self.test_defects[g])}
        sets.update({k: self.synthetic[k] for k in TEST_ANOMALIES})
        return sets

    def counts(self) -> dict:
        c = {"calibration_okay": len(self.calibration_okay), "test_okay": len(self.test_okay)}
        c.update({g: len(self.test_defects[g]) for g in GRADES})
        c.update({k: len(v) for k, v in self.synthetic.items()})
        return c


def weld_region(item):
    """The weld region of a radiograph (``core.roi.find_weld``), cached on the item; None if none found."""
    from core.roi import WeldNotFoundError, find_weld

    if not hasattr(item, "_weld_region"):
        try:
            item._weld_region = find_weld(item.image).mask
        except WeldNotFoundError:
            item._weld_region = None  # the whole radiograph is used
    return item._weld_region


def patch_sampler(items, *, seed, roi: bool = False):
    """PatchSampler over the radiographs with masks (an unmasked one could hide defects).

    With ``roi`` patch centres are drawn only from each radiograph's weld region (:func:`weld_region`).
    """
    from core.sampler import PatchSampler

    masked = [it for it in items if it.mask_path is not None]
    if not masked:
        raise ValueError("the benchmark needs radiographs with defect masks on every side of the split")
    rois = [weld_region(it) for it in masked] if roi else None
    return PatchSampler([it.image for it in masked], [it.mask for it in masked], rois=rois, seed=seed)


def _raw_item(item):
    """The item a normalised copy was made from (``core.learning_curve.normalised_items``), or itself."""
    while getattr(item, "_raw_item", None) is not None:
        item = item._raw_item
    return item


def raw_film(item):
    """The radiograph as loaded, before any background removal: ``item.image``, or that of the item
    a normalised copy was made from (``core.learning_curve.normalised_items``)."""
    return _raw_item(item).image


def film_gradient(item, sigma: float = SLOPE_SIGMA_PX):
    """``(gy, gx)`` of the raw film, ``core.residual.slope_field``: the vector field whose magnitude
    is the slope a scan takes; cached on the item (on the raw one for a copy)."""
    from core.residual import slope_field

    raw = _raw_item(item)
    cache = raw.__dict__.setdefault("_film_gradient", {})
    if float(sigma) not in cache:
        cache[float(sigma)] = slope_field(raw.image, float(sigma))
    return cache[float(sigma)]


def patch_slopes(items, geometries, *, sigma: float = SLOPE_SIGMA_PX, anomalies=None) -> np.ndarray:
    """The raw film's slope over each patch: float32 (N, 192, 192).

    ``geometries`` (``core.sampler.PatchGeometry``) index ``items``, the radiographs the patches
    were cut from (a sampler's images, in order). The film's gradient field (:func:`film_gradient`)
    is cut at each geometry with linear interpolation and turned into the patch's frame (patch ->
    image map ``M``: d/dp = M^T d/dimage); ``anomalies`` (N, 192, 192), what was added to each
    patch as it would lie on the raw film (a synthetic anomaly's ``weight * delta``), adds its own
    gradient after the same Gaussian (zero outside the patch) before the magnitude is taken. For an
    unrotated patch without an anomaly this is ``core.residual.slope_map`` of the film cut there.
    """
    from scipy.ndimage import gaussian_filter

    from core.sampler import PATCH, extract

    out = np.empty((len(geometries), PATCH, PATCH), np.float32)
    for k, g in enumerate(geometries):
        gy, gx = (extract(a, g, order=1) for a in film_gradient(items[g.image], sigma))
        m = np.asarray(g.matrix, np.float64)
        vy, vx = m[0, 0] * gy + m[1, 0] * gx, m[0, 1] * gy + m[1, 1] * gx
        if anomalies is not None:
            smooth = gaussian_filter(np.asarray(anomalies[k], np.float64), sigma, mode="constant")
            ay, ax = np.gradient(smooth)
            vy, vx = vy + ay, vx + ax
        out[k] = np.hypot(vy, vx)
    return out


def build_patch_sets(split: Split, budget: Budget, *, seed: int = DATA_SEED, roi: bool = True,
                     indication=None, slopes: bool = False,
                     slope_sigma_px: float = SLOPE_SIGMA_PX) -> PatchSets:
    """Draw the test and calibration patch sets of one run (reproducible from ``seed``).

    With ``roi`` (the default, as the scan works) patches are centred in the weld region of their
    radiograph and only kernels centred in it are scored; without, the whole radiograph is used.
    With ``roi`` each synthetic anomaly is centred in its patch's weld region: one placed on the
    plate beside it would be outside what a scan inspects and would count as a miss of the
    detector; ``rng`` draws the same shapes and patches either way.
    ``indication`` maps the synthetic anomalies (``weight * delta``) before they are added, for
    radiographs that were normalised: ``core.normalise.normalise_indication``, so that an anomaly
    is what it would have been on the film.

    With ``slopes`` the raw film's slope over every patch is kept too (``PatchSets.slopes``,
    :func:`patch_slopes`, Gaussian ``slope_sigma_px``; for normalised copies the film they were
    made from): the patches and every draw are the same with and without.
    """
    from core.perturbations import SyntheticAnomalies, apply_perturbation

    rng = np.random.default_rng(seed)
    test = patch_sampler(split.test, seed=seed, roi=roi)
    test_items = [it for it in split.test if it.mask_path is not None]  # the sampler's images
    regions, geometries, added = {}, {}, {}
    test_okay, regions["test_okay"], geometries["test_okay"] = test.okay_with_roi(
        budget.n_test_okay, rng=rng, geometries=True)
    defects, masks, defect_rois, defect_geos = test.defect(budget.n_test_defect, rng=rng, with_roi=True,
                                                           geometries=True)
    contrasts, grades = grade_patches(defects, masks)
    test_defects = {g: defects[grades == g] for g in GRADES}
    regions.update({g: defect_rois[grades == g] for g in GRADES})
    geometries.update({g: [geo for geo, gr in zip(defect_geos, grades) if gr == g] for g in GRADES})
    synthetic, centres = {}, {}
    for kind in TEST_ANOMALIES:
        base, regions[kind], geometries[kind] = test.okay_with_roi(budget.n_synthetic, rng=rng,
                                                                   geometries=True)
        # centred in the weld region, which is all a scan inspects (anywhere in the patch without)
        delta, weight, centres[kind] = SyntheticAnomalies(kind).sample(
            rng, budget.n_synthetic, regions=regions[kind] if roi else None,
            place_rng=np.random.default_rng([seed, TEST_ANOMALIES.index(kind)]), centres=True)
        if indication is None:
            synthetic[kind] = apply_perturbation(base, delta, weight)
        else:
            synthetic[kind] = (base + indication(weight * delta)).astype(np.float32)
        if slopes:  # the anomaly as it lies on the raw film, before any normalisation
            added[kind] = weight * delta
    from core.calibration_review import encode_origins

    calib_items = [it for it in (split.calibration or split.train) if it.mask_path is not None]
    calibration_okay, regions["calibration_okay"], where = patch_sampler(
        calib_items, seed=seed + 1, roi=roi).okay_with_roi(budget.n_calibration, rng=rng, geometries=True)
    slope = None
    if slopes:
        slope = {"calibration_okay": patch_slopes(calib_items, where, sigma=slope_sigma_px)}
        for name, geos in geometries.items():
            slope[name] = patch_slopes(test_items, geos, sigma=slope_sigma_px, anomalies=added.get(name))
    return PatchSets(calibration_okay, test_okay, test_defects, contrasts, synthetic,
                     regions if roi else None, encode_origins([it.name for it in calib_items], where),
                     centres, slope, float(slope_sigma_px) if slopes else None)


# --- training sources -----------------------------------------------------------------------------

def ood_perturbation_sources(name: str, train_items) -> list:
    """Perturbation sources of the OOD detector for the set ``"None"``, ``"D"`` or ``"SNI"``."""
    from core.perturbations import RealDefectPerturbations, SNIPerturbations

    if name == "None":
        return []
    if name == "D":
        masked = [it for it in train_items if it.mask is not None and it.mask.any()]
        return [RealDefectPerturbations.from_images([it.image for it in masked],
                                                    [it.mask for it in masked])]
    if name == "SNI":
        return [SNIPerturbations()]
    raise ValueError(f"unknown OOD perturbation set {name!r}; choose one of {', '.join(OOD_SETS)}")


def cnn_positive_sources(name: str, sampler) -> list:
    """Positive-patch sources of the CNN for ``"D"``, ``"D+SC"``, ``"D+SC+SPC"`` or ``"D+SNI"``.

    D draws real defect patches of the training radiographs; SC (circular indication), SPC (partial
    circle) and SNI insert the indication into okay training patches.
    """
    from core.perturbations import SNIPerturbations, SyntheticAnomalies, apply_perturbation

    def real(rng, n):
        return sampler.defect(n, rng=rng)[0]

    def inserted(source):
        def draw(rng, n):
            delta, weight = source.sample(rng, n)
            return apply_perturbation(sampler.okay(n, rng=rng), delta, weight)

        return draw

    parts = name.split("+")
    if parts[0] != "D" or name not in CNN_SETS:
        raise ValueError(f"unknown CNN training set {name!r}; choose one of {', '.join(CNN_SETS)}")
    make = {"SC": lambda: SyntheticAnomalies("circular_indication"),
            "SPC": lambda: SyntheticAnomalies("partial_circle"), "SNI": SNIPerturbations}
    return [real] + [inserted(make[p]()) for p in parts[1:]]


# --- one model ------------------------------------------------------------------------------------

@dataclass
class RunResult:
    """Numbers of one trained model (one training set, one seed)."""

    detector: str  # "ood" or "cnn"
    training_set: str
    seed: int
    steps: int
    train_seconds: float
    eval_seconds: float
    thresholds: dict
    fpr_calibration: float
    fpr_test: float
    tpr: dict = field(default_factory=dict)  # test set -> TPR at the operating point
    auc: dict = field(default_factory=dict)  # test set -> ROC AUC against the okay test patches
    notes: list = field(default_factory=list)
    tpr_by_zone: dict = field(default_factory=dict)  # synthetic kind -> zone -> {"tpr", "n"}

    @property
    def key(self) -> str:
        return run_key(self.detector, self.training_set, self.seed)


def run_key(detector: str, training_set: str, seed: int) -> str:
    return f"{detector}_{training_set.replace('+', '-')}_seed{seed}"


def _split_scores(score, patch_sets: PatchSets, *, with_regions: bool = False,
                  with_slopes: bool = False) -> dict:
    """Score the okay test patches and every test set in one call (one tf.function trace).

    ``score(patches)``, or ``score(patches, regions)`` with ``with_regions`` (None without ROI),
    ``score(patches, regions, slopes)`` with ``with_slopes`` too.
    """
    named = {"test_okay": patch_sets.test_okay, **patch_sets.test_sets()}
    patches = np.concatenate(list(named.values()))
    if with_regions:
        regions = None if patch_sets.regions is None else np.concatenate(
            [patch_sets.regions[name] for name in named])
        if with_slopes:
            values = score(patches, regions, np.concatenate([patch_sets.slopes[name] for name in named]))
        else:
            values = score(patches, regions)
    else:
        values = score(patches)
    bounds = np.cumsum([0] + [len(v) for v in named.values()])
    return {name: values[a:b] for name, a, b in zip(named, bounds[:-1], bounds[1:])}


def calibration_slope_bounds(patch_sets: PatchSets, quantiles=SLOPE_QUANTILES) -> tuple[float, ...]:
    """Slope zone bounds at ``quantiles`` of the calibration okay kernels' slopes (kernel centres in
    the weld region inside the aperture, ``core.residual.slope_bounds``)."""
    from core.residual import slope_bounds
    from core.sampler import aperture

    if patch_sets.slopes is None or not patch_sets.regions:
        raise ValueError("slope zones need weld regions and the film's slope over the patches "
                         "(build_patch_sets(..., roi=True, slopes=True))")
    return slope_bounds(aperture(patch_sets.slopes["calibration_okay"]),
                        aperture(patch_sets.regions["calibration_okay"]), quantiles)


def evaluate_ood(model, patch_sets: PatchSets, *, fpr: float, edge_band_px=EDGE_ZONES_PX,
                 zones: str = "distance", rule: str = "common"):
    """Score every set with the OOD detector and apply thresholds calibrated on training-side data.

    With weld regions each of the region's edge zones (``edge_band_px``: their bounds, a single
    band's width, or 0 for none) has its own pair of thresholds, as a scan has
    (``core.calibration``). ``zones="slope"`` splits the region by the raw film's slope instead
    (``patch_sets.slopes``; bounds :func:`calibration_slope_bounds`, ``edge_band_px`` unused).
    Regions given as label maps with a heat-affected zone (``core.roi.WeldROI.labels``) give that
    zone a pair of its own and measure the edge zones from the bead's edge, as the application
    calibrates (``core.residual.weld_zones``). ``rule`` is the calibration's
    (``core.calibration.calibrate``).

    Returns
    -------
    numbers : dict
        ``thresholds``, ``fpr_calibration``, ``fpr_test``, ``tpr`` and ``auc`` per test set.
    scores : dict of ndarray (N, 2)
        Raw per-patch scores, keys ``calibration_okay``, ``test_okay`` and every test set.
    """
    from core.scanning import patch_scores

    if zones not in ZONES:
        raise ValueError(f"unknown zones {zones!r}; choose one of {', '.join(ZONES)}")
    from core.residual import has_haz

    scoring = ({"slope_bounds": calibration_slope_bounds(patch_sets)} if zones == "slope"
               else {"edge_band_px": edge_band_px})
    if zones != "slope" and has_haz((patch_sets.regions or {}).get("calibration_okay")):
        scoring["haz"] = True
    return evaluate_residual_scores(
        lambda x, r, s=None: patch_scores(x, model, regions=r, slopes=s, **scoring), patch_sets,
        fpr=fpr, rule=rule, **scoring)


def evaluate_residual_scores(score, patch_sets: PatchSets, *, fpr: float, edge_band_px: int = 0,
                             calibration_scores=None, slope_bounds=(), slope_sigma_px=None,
                             haz: bool = False, rule: str = "common"):
    """:func:`evaluate_ood` for any ``score(patches, regions) -> (N, 2 + 2 * zones)`` of the residual tests.

    Columns: the pair over the weld region's interior, then one pair per edge zone
    (``edge_band_px``, recorded with the thresholds). ``calibration_scores`` replaces the scores
    of the calibration okay patches (thresholds from other okay patches, e.g. pooled over several
    films). With ``slope_bounds`` the zones are by the raw film's slope instead: ``score(patches,
    regions, slopes)`` with ``patch_sets.slopes``, the pair over the flattest part, then one per
    bound (``core.residual.slope_zones``), recorded with ``slope_sigma_px`` (default the sets').
    With ``haz`` the heat-affected zone's pair comes after the interior's (``core.residual.weld_zones``).

    ``regions`` is None when the patch sets have none. Used for the OOD detector and for reference
    detectors (a high-pass filter in place of the autoencoder, ``core.learning_curve``).
    """
    from core.calibration import calibrate

    regions = patch_sets.regions or {}
    slope_bounds = tuple(float(b) for b in slope_bounds)
    zoning = {"edge_band_px": edge_band_px, "haz": haz}
    if slope_bounds:
        if patch_sets.slopes is None or not regions:
            raise ValueError("slope zones need weld regions and the film's slope over the patches "
                             "(build_patch_sets(..., roi=True, slopes=True))")
        zoning = {"slope_bounds": slope_bounds,
                  "slope_sigma_px": slope_sigma_px or patch_sets.slope_sigma_px or SLOPE_SIGMA_PX}
    if calibration_scores is None:
        calibration_scores = score(patch_sets.calibration_okay, regions.get("calibration_okay"),
                                   *((patch_sets.slopes["calibration_okay"],) if slope_bounds else ()))
    scores = {"calibration_okay": np.asarray(calibration_scores)}
    scores.update(_split_scores(score, patch_sets, with_regions=True, with_slopes=bool(slope_bounds)))
    thr = calibrate(scores["calibration_okay"], fpr=fpr, rule=rule, **zoning)
    okay_combined = thr.combined(scores["test_okay"])
    numbers = {"thresholds": thr.to_dict(), "fpr_calibration": float(thr.fpr_achieved),
               "fpr_test": float(np.mean(thr.flagged(scores["test_okay"]))), "tpr": {}, "auc": {}}
    for name in patch_sets.test_sets():
        numbers["tpr"][name] = float(np.mean(thr.flagged(scores[name])))
        f, t, _ = roc_curve(okay_combined, thr.combined(scores[name]))
        numbers["auc"][name] = auc(f, t)
    by_zone = tpr_by_zone(patch_sets, thr, scores)
    if by_zone:
        numbers["tpr_by_zone"] = by_zone
    return numbers, scores


def tpr_by_zone(patch_sets: PatchSets, thr, scores: dict) -> dict:
    """TPR of each synthetic set by where its anomalies are centred: each edge zone, the interior.

    ``{kind: {zone: {"tpr", "n"}}}`` with zones named ``"0-32 px"``, ``"32-48 px"``, ...,
    ``"interior"`` (the thresholds' zones, ``thr.band_bounds``), and ``"outside"`` for a centre
    outside the region; empty without regions or recorded centres. With slope zones
    (``thr.slope_zones``) the zones are by the slope at the centre (``patch_sets.slopes``, the
    anomaly's own included): ``thr.zone_labels()`` such as ``"slope 0.0021-0.0046"``, then
    ``"interior"`` (the flattest part) and ``"outside"``.
    """
    from core.residual import weld_zones

    if not patch_sets.regions or not patch_sets.anomaly_centres:
        return {}
    slope_bounds = thr.slope_bounds
    if slope_bounds and patch_sets.slopes is None:
        raise ValueError("thresholds with slope zones need the film's slope over the patches")
    names = thr.zone_labels() + ["interior", "outside"]
    n_zones = len(names) - 2
    out = {}
    for kind, centres in patch_sets.anomaly_centres.items():
        region = patch_sets.regions[kind]
        idx = np.arange(len(centres))
        r, c = centres[:, 0], centres[:, 1]
        label = np.full(len(centres), n_zones)  # interior
        if slope_bounds:
            at = patch_sets.slopes[kind][idx, r, c]
            for z, b in enumerate(slope_bounds):  # increasing: the last bound reached wins
                label[at >= b] = z
        else:
            for z, zone in enumerate(weld_zones(region, thr.band_bounds, haz=thr.has_haz)):
                label[zone[idx, r, c]] = z
        label[~np.asarray(region, bool)[idx, r, c]] = n_zones + 1
        flagged = thr.flagged(scores[kind])
        out[kind] = {names[z]: {"tpr": float(np.mean(flagged[label == z])), "n": int(np.sum(label == z))}
                     for z in range(len(names)) if np.any(label == z)}
    return out


def evaluate_cnn(model, patch_sets: PatchSets, *, fpr: float):
    """Score every set with the CNN (logits) and threshold at ``fpr`` on the calibration okay patches."""
    from core.cnn import cnn_logits

    scores = {"calibration_okay": cnn_logits(model, patch_sets.calibration_okay)}
    scores.update(_split_scores(lambda x: cnn_logits(model, x), patch_sets))
    t = threshold_at_fpr(scores["calibration_okay"], fpr=fpr)
    numbers = {"thresholds": {"logit": t, "sigmoid": float(1.0 / (1.0 + np.exp(-t))),
                              "fpr_target": fpr, "n_okay": len(scores["calibration_okay"])},
               "fpr_calibration": rate_above(scores["calibration_okay"], t),
               "fpr_test": rate_above(scores["test_okay"], t), "tpr": {}, "auc": {}}
    for name in patch_sets.test_sets():
        numbers["tpr"][name] = rate_above(scores[name], t)
        f, tp, _ = roc_curve(scores["test_okay"], scores[name])
        numbers["auc"][name] = auc(f, tp)
    return numbers, scores


def train_ood(training_set: str, seed: int, budget: Budget, split: Split, *, out: Path,
              progress=None, roi: bool = True):
    """Train one OOD detector with ``core.training.train`` (saved to ``out``); return its bundle.

    Steps and batch come from the budget; learning rate, warm-up, loss weights and precision are
    ``core.training.TrainConfig``'s defaults, so the benchmark measures the recipe users train with.
    """
    from core.training import TrainConfig, train

    sources = ood_perturbation_sources(training_set, split.train)
    okay_sampler = patch_sampler(split.train, seed=seed, roi=roi)
    config = TrainConfig(steps=budget.ood_steps, batch=budget.ood_batch, seed=seed, out=out,
                         overwrite=True, images=[it.name for it in split.train],
                         perturbations=[] if training_set == "None" else [training_set],
                         name=f"benchmark {training_set} seed {seed}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return train(config, okay_sampler.okay, sources, progress=progress)


def train_cnn_model(training_set: str, seed: int, budget: Budget, split: Split, *, progress=None,
                    roi: bool = True):
    """Train one CNN classifier on ``training_set``; returns the keras model."""
    from core.cnn import CNNTrainConfig, train_cnn

    sampler = patch_sampler(split.train, seed=seed, roi=roi)
    config = CNNTrainConfig(steps=budget.cnn_steps, batch=budget.cnn_batch, seed=seed)
    return train_cnn(config, lambda rng, n: sampler.okay(n, rng=rng),
                     cnn_positive_sources(training_set, sampler), progress=progress)


# --- the whole run --------------------------------------------------------------------------------

def machine_description() -> dict:
    """What ran the benchmark (written into the report)."""
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        pass
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    except ImportError:
        info["tensorflow"] = None
    return info


def protocol_fingerprint(split: Split, budget: Budget, *, roi: bool = True) -> str:
    """Hash of what makes trained models and cached per-model results reusable.

    The split, budget, region, grading and sampling version; how a run was evaluated
    (``EVALUATION``) is stored with it apart from this.
    """
    blob = json.dumps({"split": split.to_dict(), "budget": asdict(budget), "data_seed": DATA_SEED,
                       "grades": GRADE_THRESHOLDS, "version": _SAMPLING_VERSION, "roi": roi},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_cached(runs_dir: Path, key: str, fingerprint: str):
    """``(result, scores, evaluation)`` of a stored run of the same protocol, or None.

    ``evaluation`` is the ``EVALUATION`` the run was evaluated with (None for runs stored before
    it was recorded); a caller evaluates again when it differs from the current one.
    """
    path = runs_dir / f"{key}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.pop("fingerprint", None) != fingerprint:
        return None
    evaluation = data.pop("evaluation", None)
    known = {f.name for f in fields(RunResult)}
    if any(k not in known for k in data):  # written by another version: evaluate again
        evaluation = None
    scores = dict(np.load(runs_dir / f"{key}.npz")) if (runs_dir / f"{key}.npz").is_file() else {}
    try:
        return RunResult(**{k: v for k, v in data.items() if k in known}), scores, evaluation
    except TypeError:  # a field missing: nothing to reuse
        return None


def _save_run(runs_dir: Path, result: RunResult, scores: dict, fingerprint: str) -> None:
    runs_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(runs_dir / f"{result.key}.npz", **scores)
    tmp = runs_dir / f"{result.key}.json.tmp"
    tmp.write_text(json.dumps({**asdict(result), "fingerprint": fingerprint, "evaluation": EVALUATION},
                              indent=1))
    tmp.replace(runs_dir / f"{result.key}.json")


def _reevaluate_ood(result: RunResult, model_path: Path, patch_sets: PatchSets, budget: Budget, log):
    """Evaluate a stored OOD model again with the current ``EVALUATION``; training figures are kept."""
    from core.modelfile import load_model

    t0 = time.time()
    numbers, scores = evaluate_ood(load_model(model_path).model, patch_sets, fpr=budget.fpr)
    fresh = RunResult(result.detector, result.training_set, result.seed, result.steps,
                      result.train_seconds, round(time.time() - t0, 1), **numbers, notes=result.notes)
    log(f"{fresh.key}: re-evaluated (protocol {PROTOCOL_VERSION}), {_rates(fresh)}")
    return fresh, scores


def _rates(result: RunResult) -> str:
    """``FPR test x %, TPR high .., ...``: one run's figures for the log."""
    return (f"FPR test {100 * result.fpr_test:.2f} %, TPR "
            + ", ".join(f"{k} {100 * v:.0f}" for k, v in result.tpr.items()))


def summarise(results: list[RunResult]) -> dict:
    """Mean and spread over seeds: ``{detector: {training_set: {test_set: SeedSummary}}}``."""
    table: dict = {}
    for r in results:
        for name, value in r.tpr.items():
            table.setdefault(r.detector, {}).setdefault(r.training_set, {}).setdefault(name, []).append(value)
    return {d: {s: {n: mean_spread(v) for n, v in sets.items()} for s, sets in by_set.items()}
            for d, by_set in table.items()}


def run_benchmark(data, out, *, budget: str | Budget = "small", seeds: int = 3,
                  ood_sets=OOD_SETS, cnn_sets=CNN_SETS, test_names=None, calibration_names=None,
                  roi: bool = True, command: str | None = None, log=print) -> dict:
    """Run the whole protocol on the dataset in ``data`` and write the report into ``out``.

    Parameters
    ----------
    data : str or Path
        A GDXray-layout folder or a folder of radiograph + ``_mask`` pairs (``core.datasets``).
    out : str or Path
        Output folder: ``report.md``, ``results.json``, ``figures/*.png``, ``runs/`` (per-model
        numbers and raw scores, reused on a restart), ``models/`` (every trained OOD model).
    budget : str or Budget
        ``"small"``, ``"full"`` or ``"tiny"`` (see ``BUDGETS``).
    seeds : int
        Models per training set (the paper's 3).
    ood_sets, cnn_sets : sequence of str
        Training sets to run (default: all of Tables 3 and 2).
    test_names, calibration_names : iterable of str, optional
        Override the split (see :func:`make_split`).
    roi : bool
        Draw and score patches in each radiograph's weld region (default), or whole radiographs.
    command : str, optional
        The command line, written in the report.
    log : callable
        Receives one line of progress text at a time.

    Returns
    -------
    dict
        Everything written to ``results.json``.
    """
    from core.datasets import load_dataset
    from core.report import write_report

    budget = BUDGETS[budget] if isinstance(budget, str) else budget
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    out = Path(out)
    runs_dir = out / "runs"
    started = time.time()
    dataset = load_dataset(data, include_unmasked=False)
    split = make_split(dataset, test_names=test_names, calibration_names=calibration_names)
    fingerprint = protocol_fingerprint(split, budget, roi=roi)
    log(f"split: train {[it.name for it in split.train]}, calibration "
        f"{[it.name for it in split.calibration]}, test {[it.name for it in split.test]}")
    t0 = time.time()
    patch_sets = build_patch_sets(split, budget, roi=roi)
    log(f"patch sets {patch_sets.counts()} in {time.time() - t0:.0f} s")

    results: list[RunResult] = []
    figure_scores: dict = {}
    jobs = [("ood", s) for s in ood_sets] + [("cnn", s) for s in cnn_sets]
    for detector, training_set in jobs:
        for seed in range(seeds):
            key = run_key(detector, training_set, seed)
            cached = _load_cached(runs_dir, key, fingerprint)
            model_path = out / "models" / f"{key}.keras"
            stale = cached is not None and cached[2] != EVALUATION
            if stale and detector == "ood" and model_path.is_file():  # only the evaluation changed
                result, scores = _reevaluate_ood(cached[0], model_path, patch_sets, budget, log)
                _save_run(runs_dir, result, scores, fingerprint)
            elif cached is not None and not stale and (key != _FIG11_KEY or model_path.is_file()):
                result, scores, _ = cached
                log(f"{key}: reused from {runs_dir}")
            else:
                result, scores = _run_one(detector, training_set, seed, budget, split, patch_sets,
                                          model_path, log, roi=roi)
                _save_run(runs_dir, result, scores, fingerprint)
            results.append(result)
            if detector == "ood" or key == "cnn_D-SNI_seed0":
                figure_scores[key] = scores
    summary = summarise(results)
    fig11_model = out / "models" / f"{_FIG11_KEY}.keras"
    report = {
        "command": command, "budget": asdict(budget), "seeds": seeds, "split": split.to_dict(),
        "fingerprint": fingerprint, "protocol": PROTOCOL_VERSION, "evaluation": EVALUATION,
        "machine": machine_description(),
        "region": ("weld region (core.roi.find_weld): patches centred in it, only kernels centred "
                   "in it scored" if roi else "whole radiographs (no weld region)"),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "wall_seconds": None, "patch_counts": patch_sets.counts(),
        "contrast": {"thresholds": {"high": GRADE_THRESHOLDS[0], "mid": GRADE_THRESHOLDS[1]},
                     "test_defect_contrasts": [round(float(c), 3) for c in patch_sets.contrasts]},
        "runs": [asdict(r) for r in results],
        "summary": {d: {s: {n: asdict(v) for n, v in sets.items()} for s, sets in by.items()}
                    for d, by in summary.items()},
        "paper": {"table2": PAPER_TABLE2, "table3": PAPER_TABLE3},
    }
    report["wall_seconds"] = round(time.time() - started, 1)
    write_report(out, report, patch_sets=patch_sets, figure_scores=figure_scores, split=split,
                 fig11_model=fig11_model if fig11_model.is_file() else None, fig11_roi=roi, log=log)
    report["wall_seconds"] = round(time.time() - started, 1)
    log(f"report written to {out / 'report.md'} after {report['wall_seconds']:.0f} s")
    return report


_FIG11_KEY = "ood_SNI_seed0"  # the model whose sliding-window picture is Figure 11


def _run_one(detector, training_set, seed, budget, split, patch_sets, model_path, log, *, roi=True):
    def progress(info):
        if info.get("step") == info.get("steps") or info.get("step", 0) % 50 == 0:
            loss = info.get("loss", info.get("total"))
            log(f"  {detector} {training_set} seed {seed}: step {info.get('step')}/{info.get('steps')}"
                + (f" loss {float(loss):.4g}" if loss is not None else ""))

    t0 = time.time()
    if detector == "ood":
        bundle = train_ood(training_set, seed, budget, split, out=model_path, progress=progress, roi=roi)
        t1 = time.time()
        numbers, scores = evaluate_ood(bundle.model, patch_sets, fpr=budget.fpr)
        steps = budget.ood_steps
    else:
        model = train_cnn_model(training_set, seed, budget, split, progress=progress, roi=roi)
        t1 = time.time()
        numbers, scores = evaluate_cnn(model, patch_sets, fpr=budget.fpr)
        steps = budget.cnn_steps
    t2 = time.time()
    result = RunResult(detector, training_set, seed, steps, round(t1 - t0, 1), round(t2 - t1, 1),
                       **numbers)
    log(f"{result.key}: trained {t1 - t0:.0f} s, evaluated {t2 - t1:.0f} s, {_rates(result)}")
    return result, scores
