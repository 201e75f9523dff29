"""``weldreview calibrate``: set a model's thresholds at a false-positive rate on held-out okay patches."""

from __future__ import annotations

import sys

DEFAULT_SEED = 1000  # the first held-out synthetic weld: training draws its own from --seed 0
DEFAULT_FPR = 0.001  # core.calibration.DEFAULT_FPR (not imported: --help stays fast)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="set a model's thresholds at a target false-positive rate from held-out okay weld",
        description="Score okay patches drawn from the weld region of held-out radiographs (never "
        "those the model was trained on) and store thresholds for the 9x9 mean and std tests in the "
        "model's metadata, chosen jointly so that at most the target fraction of okay patches is "
        "flagged. Patches are cut from the radiographs as the model sees them (background removed "
        "when it was trained with --background; weld regions are found on the raw radiograph). "
        "Radiographs come from --data (defect masks keep patches clear of known defects; "
        "unmasked radiographs must be defect-free) and/or --synthetic N generated welds.",
    )
    p.add_argument("model", help="model file (.keras) to calibrate")
    p.add_argument("--data", metavar="DIR", help="folder of held-out radiographs (with masks where they have defects)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="generate N held-out synthetic welds")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="first seed of the synthetic welds and of the patch draws")
    p.add_argument("--fpr", type=float, default=DEFAULT_FPR, help="target patch-level false-positive rate (default 0.001)")
    p.add_argument("--patches", type=int, default=None, help="okay patches to score (default: 4 / fpr)")
    p.add_argument("--whole-image", action="store_true", help="draw patches from the whole image, not the weld region")
    p.set_defaults(func=run)


def run(args) -> int:
    if not args.data and not args.synthetic:
        print("weldreview calibrate: give --data DIR and/or --synthetic N", file=sys.stderr)
        return 2
    thr, pixel = calibrate_file(args.model, data=args.data, synthetic=args.synthetic, seed=args.seed,
                                fpr=args.fpr, patches=args.patches, whole_image=args.whole_image)
    print(thresholds_line(thr, pixel))
    return 0


def patch_count(fpr: float, patches: int | None = None) -> int:
    """Okay patches to score at ``fpr``: ``patches``, or 4 / fpr by default.

    Raises CalibrationError for an FPR outside (0, 1) or fewer patches than it needs (3 / fpr),
    so that a caller can refuse before any work (``weldreview train --calibrate-...``).
    """
    import numpy as np

    from core.calibration import min_okay_patches
    from core.errors import CalibrationError

    need = min_okay_patches(fpr)  # also checks the FPR
    n = patches or int(np.ceil(4 / fpr))
    if n < need:
        raise CalibrationError(
            f"{n} okay patches cannot support a false positive rate of {fpr:g}: at least "
            f"{need} are needed (3 / fpr)"
        )
    return n


def draw_okay_patches(metadata: dict, n: int, *, data=None, synthetic: int = 0, seed: int = DEFAULT_SEED,
                      whole_image: bool = False):
    """``n`` held-out okay patches as the model of ``metadata`` sees them.

    The radiographs of ``data`` (a folder, core.datasets layouts; defect masks keep patches clear
    of known defects, unmasked radiographs must be defect-free) and ``synthetic`` generated welds
    (seeds ``seed``, ``seed + 1``, ...) are normalised as the model was trained
    (core.normalise.model_input); weld regions are found on the raw radiographs, and patches are
    drawn from them (the whole image with ``whole_image``) with ``seed``.

    Returns
    -------
    patches : ndarray (n, 192, 192) float32
    regions : ndarray (n, 192, 192) bool, or None with ``whole_image``
    pixel_size_um : float or None
        Of the first radiograph that states one.
    """
    from core.normalise import model_input
    from core.sampler import PatchSampler

    images, masks, rois, pixel = _held_out(data, synthetic, seed, whole_image)  # raw: weld regions
    images = [model_input(image, metadata) for image in images]
    sampler = PatchSampler(images, masks, rois=rois, seed=seed)
    print(f"scoring {n} okay patches from {len(images)} radiographs ...", file=sys.stderr, flush=True)
    patches, regions = sampler.okay_with_roi(n)
    return patches, None if whole_image else regions, pixel


def calibrate_file(model, *, data=None, synthetic: int = 0, seed: int = DEFAULT_SEED,
                   fpr: float = DEFAULT_FPR, patches: int | None = None, whole_image: bool = False,
                   progress=None, cancel=None):
    """Calibrate the model file ``model`` as ``weldreview calibrate`` does; ``(thresholds, pixel size)``.

    The thresholds are written to the model's metadata (core.calibration.calibrate_model, with
    the weld region's edge band unless ``whole_image``). ``progress(done, total)`` and ``cancel()``
    go to the scoring (core.scanning.patch_scores: ``cancel`` ends it with ScanCancelled).
    """
    from core.calibration import calibrate_model
    from core.modelfile import read_metadata

    n = patch_count(fpr, patches)
    metadata = read_metadata(model)  # the model being calibrated: how it sees a radiograph
    okay, regions, pixel = draw_okay_patches(metadata, n, data=data, synthetic=synthetic, seed=seed,
                                             whole_image=whole_image)
    thr = calibrate_model(model, okay, fpr=fpr, regions=regions, progress=progress, cancel=cancel)
    return thr, pixel


def thresholds_line(thr, pixel_size_um: float | None) -> str:
    """The line ``weldreview calibrate`` prints: thresholds, achieved FPR, false flags per metre."""
    from core.calibration import describe, expected_false_flags_per_metre

    lo, hi = thr.fpr_ci
    pixel = pixel_size_um or 40.0
    per_m = expected_false_flags_per_metre(thr.fpr_target, pixel)
    return (
        f"thresholds: {describe(thr)} (target FPR {thr.fpr_target:g}, "
        f"achieved {thr.fpr_achieved:.5f}, 95% CI [{lo:.5f}, {hi:.5f}], {thr.n_okay} okay patches); "
        f"about {per_m:.2f} false flags per metre of weld at {pixel:g} um/px"
    )


def _held_out(data, synthetic: int, seed: int, whole_image: bool):
    """Images, masks, weld regions and a pixel size of the held-out radiographs."""
    images, masks, rois, pixel = [], [], [], None
    if data:
        from core.datasets import load_dataset
        from core.roi import WeldNotFoundError, find_weld

        for item in load_dataset(data):
            roi = None
            if not whole_image:
                try:
                    roi = find_weld(item.image, include_haz=True).mask
                except WeldNotFoundError as exc:
                    print(f"skipping {item.name}: {exc}", file=sys.stderr)
                    continue
            images.append(item.image)
            masks.append(item.mask)
            rois.append(roi)
            pixel = pixel or item.pixel_size_um
    for i in range(synthetic or 0):
        from core.imageio import normalise
        from core.synthetic import generate_weld

        weld = generate_weld(seed + i)
        images.append(normalise(weld.image, bits_stored=16)[0])
        masks.append(weld.mask)
        rois.append(None if whole_image else weld.haz_mask)
        pixel = pixel or weld.pixel_size_um
    if not images:
        from core.errors import CalibrationError

        raise CalibrationError("no held-out radiograph with a weld region to draw okay patches from")
    return images, masks, rois, pixel
