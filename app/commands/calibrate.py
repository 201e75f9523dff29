"""``weldreview calibrate``: set a model's thresholds at a false-positive rate on held-out okay patches."""

from __future__ import annotations

import sys


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
    p.add_argument("--seed", type=int, default=1000, help="first seed of the synthetic welds and of the patch draws")
    p.add_argument("--fpr", type=float, default=0.001, help="target patch-level false-positive rate (default 0.001)")
    p.add_argument("--patches", type=int, default=None, help="okay patches to score (default: 4 / fpr)")
    p.add_argument("--whole-image", action="store_true", help="draw patches from the whole image, not the weld region")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from core.calibration import (calibrate_model, describe, expected_false_flags_per_metre,
                                  min_okay_patches)
    from core.errors import CalibrationError, WeldreviewError
    from core.modelfile import read_metadata
    from core.normalise import model_input
    from core.sampler import PatchSampler

    if not args.data and not args.synthetic:
        print("weldreview calibrate: give --data DIR and/or --synthetic N", file=sys.stderr)
        return 2
    n = args.patches or int(np.ceil(4 / args.fpr))
    if n < min_okay_patches(args.fpr):
        raise CalibrationError(
            f"{n} okay patches cannot support a false positive rate of {args.fpr:g}: at least "
            f"{min_okay_patches(args.fpr)} are needed (3 / fpr)"
        )
    metadata = read_metadata(args.model)  # the model being calibrated: how it sees a radiograph
    images, masks, rois, pixel = _held_out(args)  # weld regions from the raw radiographs
    images = [model_input(image, metadata) for image in images]
    sampler = PatchSampler(images, masks, rois=rois, seed=args.seed)
    print(f"scoring {n} okay patches from {len(images)} radiographs ...", file=sys.stderr, flush=True)
    patches, regions = sampler.okay_with_roi(n)
    thr = calibrate_model(args.model, patches, fpr=args.fpr, regions=None if args.whole_image else regions)
    lo, hi = thr.fpr_ci
    per_m = expected_false_flags_per_metre(args.fpr, pixel or 40.0)
    print(
        f"thresholds: {describe(thr)} (target FPR {thr.fpr_target:g}, "
        f"achieved {thr.fpr_achieved:.5f}, 95% CI [{lo:.5f}, {hi:.5f}], {thr.n_okay} okay patches); "
        f"about {per_m:.2f} false flags per metre of weld at {pixel or 40.0:g} um/px"
    )
    return 0


def _held_out(args):
    """Images, masks, weld regions and a pixel size of the held-out radiographs."""
    images, masks, rois, pixel = [], [], [], None
    if args.data:
        from core.datasets import load_dataset
        from core.roi import WeldNotFoundError, find_weld

        for item in load_dataset(args.data):
            roi = None
            if not args.whole_image:
                try:
                    roi = find_weld(item.image, include_haz=True).mask
                except WeldNotFoundError as exc:
                    print(f"skipping {item.name}: {exc}", file=sys.stderr)
                    continue
            images.append(item.image)
            masks.append(item.mask)
            rois.append(roi)
            pixel = pixel or item.pixel_size_um
    for i in range(args.synthetic):
        from core.imageio import normalise
        from core.synthetic import generate_weld

        weld = generate_weld(args.seed + i)
        images.append(normalise(weld.image, bits_stored=16)[0])
        masks.append(weld.mask)
        rois.append(None if args.whole_image else weld.haz_mask)
        pixel = pixel or weld.pixel_size_um
    if not images:
        from core.errors import CalibrationError

        raise CalibrationError("no held-out radiograph with a weld region to draw okay patches from")
    return images, masks, rois, pixel
