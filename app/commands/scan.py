"""``weldreview scan``: flag what is unlike accepted weld in radiographs or patch stacks."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "scan",
        help="scan radiographs in their weld region (or a .npy stack of 192x192 patches) and "
        "report flagged regions",
        description="Scan radiographs with the out-of-distribution autoencoder. INPUT is a "
        "radiograph (TIFF, PNG, DICOM/DICONDE), a folder of them, or a .npy stack of 192x192 "
        "patches (one score row per patch). Like the review application, each radiograph is "
        "scanned in its weld region: the weld bead found on it plus a heat-affected zone on "
        "each side; flags outside that region are listed apart and not counted. Where no weld "
        "is found the whole image is scanned, with a warning; --whole-image scans the whole "
        "radiograph always. Exit status 0 when everything was scanned (flagged or not), 1 on "
        "any error.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="radiograph, folder or .npy stack")
    p.add_argument("--model", metavar="FILE", help="model file (default: the bundled model)")
    p.add_argument("--fpr", type=float, default=None,
                   help="patch-level false positive rate (default: the model's calibrated one)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="pixel size in micrometres when the file does not state it")
    p.add_argument("--whole-image", action="store_true",
                   help="scan the whole radiograph, not only the weld region (bead plus "
                   "heat-affected zone) found on it")
    p.add_argument("--json", metavar="OUT",
                   help="write thresholds, model hash, the region scanned and the regions as JSON")
    p.add_argument("--maps", metavar="OUT.npz", help="write the aligned maps (one file per image)")
    p.add_argument("--overlay", metavar="OUT.png",
                   help="write the radiograph with flagged kernels coloured (one file per image)")
    p.set_defaults(func=run)


def _progress_bar(label: str):
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        n = int(30 * done / max(total, 1))
        sys.stderr.write(f"\r{label[:40]:40s} [{'#' * n}{'.' * (30 - n)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _expand(inputs: list[str]):
    from core.imageio import IMAGE_SUFFIXES

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(f for f in path.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                yield ("error", path, "folder holds no radiographs (.tif, .png, .dcm)")
            for f in files:
                yield ("image", f, None)
        elif not path.exists():
            yield ("error", path, "no such file or folder")
        elif path.suffix.lower() == ".npy":
            yield ("stack", path, None)
        else:
            yield ("image", path, None)


def _out_path(template: str, stem: str, many: bool) -> Path:
    out = Path(template)
    return out.with_name(f"{out.stem}_{stem}{out.suffix}") if many else out


def run(args) -> int:
    import warnings

    from core.calibration import describe, expected_false_flags_per_metre
    from core.errors import ImageLoadError, ModelFileError, WeldreviewWarning
    from core.paths import default_model_path
    from core.scanning import resolve_thresholds

    model_path = Path(args.model) if args.model else default_model_path()
    if not model_path.exists():
        raise ModelFileError(
            f"{model_path}: no model file there; pass --model FILE or train one (weldreview train)"
        )
    try:
        from core.modelfile import load_model
    except ImportError:
        raise ModelFileError(f"{model_path}: model loading (core.modelfile) is not available") from None
    bundle = load_model(model_path)
    thr = resolve_thresholds(bundle, fpr=args.fpr)
    print(f"model {model_path.name} sha256 {str(bundle.sha256)[:12]}  thresholds: {describe(thr)} (patch FPR target {thr.fpr_target:g}, achieved "
          f"{thr.fpr_achieved:.3g} on {thr.n_okay} okay patches, 95% CI "
          f"{thr.fpr_ci[0]:.3g}-{thr.fpr_ci[1]:.3g})")
    items = list(_expand(args.inputs))
    n_images = sum(kind == "image" for kind, _, _ in items)
    report = {"model": {"path": str(model_path), "sha256": bundle.sha256},
              "thresholds": thr.to_dict(), "images": [], "patch_stacks": [], "errors": []}
    failed = False
    for kind, path, reason in items:
        if kind == "error":
            print(f"weldreview: error: {path}: {reason}", file=sys.stderr)
            report["errors"].append({"path": str(path), "error": reason})
            failed = True
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", WeldreviewWarning)
                if kind == "stack":
                    entry = _scan_stack(path, bundle, thr)
                else:
                    entry = _scan_one(path, bundle, thr, args, many=n_images > 1)
            for w in caught:
                print(f"weldreview: warning: {w.message}", file=sys.stderr)
        except ImageLoadError as exc:
            print(f"weldreview: error: {exc}", file=sys.stderr)
            report["errors"].append({"path": str(path), "error": str(exc)})
            failed = True
            continue
        if kind == "stack":
            report["patch_stacks"].append(entry)
        else:
            px = entry["pixel_size_um"]
            if px:
                per_m = expected_false_flags_per_metre(thr.fpr_target, px)
                entry["expected_false_flags_per_metre"] = per_m
                print(f"  operating point: about {per_m:.2g} false flags per metre of weld "
                      f"(patch FPR {thr.fpr_target:g}, {px:g} um pixels, one row of 156 px patches)")
            report["images"].append(entry)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


def _scan_one(path: Path, bundle, thr, args, *, many: bool) -> dict:
    import numpy as np

    from core.imageio import load_radiograph, write_png
    from core.overlay import render_overlay
    from core.scanning import scan_image

    rad = load_radiograph(path, pixel_size_um=args.pixel_size)
    weld, reason = None, None
    if args.whole_image:
        reason = "--whole-image"
    else:
        from core.roi import WeldNotFoundError, find_weld

        try:
            weld = find_weld(rad.image, include_haz=True)  # as the review application does
        except WeldNotFoundError as exc:
            reason = str(exc)
            print(f"weldreview: warning: {path}: no weld found ({exc}); scanned the whole image",
                  file=sys.stderr)
    result = scan_image(rad, bundle, thresholds=thr, roi=None if weld is None else weld.labels(),
                        progress=_progress_bar(path.name))
    regions = result.regions
    if regions:
        worst = regions[0]
        print(f"{path}: FLAGGED {len(regions)} region(s); worst severity {worst.severity:.2f} "
              f"({worst.tests}) at rows {worst.bbox[0]}-{worst.bbox[2]}, "
              f"cols {worst.bbox[1]}-{worst.bbox[3]}")
    else:
        print(f"{path}: clean (no kernel above the thresholds)")
    region = _region_entry(weld, reason, rad.image.shape)
    print(f"  {_describe_region(region)}")
    outside = result.outside_roi
    if outside:
        print(f"  {len(outside)} flagged region(s) outside the weld region, not counted")
    if args.maps:
        np.savez(
            _out_path(args.maps, path.stem, many), reconstruction=result.reconstruction,
            residual=result.residual, local_mean=result.local_mean, local_std=result.local_std,
            flags=result.flags, thresholds=np.array([thr.mean, thr.std]),
        )
    if args.overlay:
        rgb = render_overlay(rad.image, result.flags, result.local_mean, result.local_std,
                             thr.mean, thr.std)
        write_png(_out_path(args.overlay, path.stem, many), rgb)
    return {
        "path": str(path), "sha256": rad.sha256, "shape": list(rad.image.shape),
        "bit_depth": rad.bit_depth, "pixel_size_um": rad.pixel_size_um, "warnings": rad.warnings,
        "region": region, "flagged": bool(regions), "regions": [r.to_dict() for r in regions],
        "outside_region": [r.to_dict() for r in outside], "timings": result.timings,
    }


def _region_entry(weld, reason: str | None, shape) -> dict:
    """The region scanned, for the JSON report: the weld region found, or the whole image and why."""
    if weld is None:
        return {"kind": "whole image", "haz_margin_px": None,
                "area_px": int(shape[0]) * int(shape[1]), "reason": reason}
    return {"kind": "weld", "haz_margin_px": float(weld.haz_margin_px),
            "area_px": weld.area_px(), "reason": None}


def _describe_region(region: dict) -> str:
    """One line saying which region was scanned."""
    if region["kind"] != "weld":
        why = " (--whole-image)" if region["reason"] == "--whole-image" else " (no weld found)"
        return f"region: whole image{why}, {region['area_px']:,} px"
    margin = region["haz_margin_px"] or 0.0
    what = (f"bead + heat-affected zone (HAZ margin {margin:.0f} px each side)" if margin > 0
            else "bead")
    return f"weld region: {what}, {region['area_px']:,} px"


def _scan_stack(path: Path, bundle, thr) -> dict:
    import numpy as np

    from core.errors import ImageLoadError
    from core.imageio import normalise
    from core.model import PATCH
    from core.normalise import background_sigma
    from core.scanning import patch_scores

    try:
        stack = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises many kinds on bad files
        raise ImageLoadError(f"{path}: not a readable .npy array ({exc})") from None
    if stack.ndim != 3 or stack.shape[1:] != (PATCH, PATCH):
        raise ImageLoadError(f"{path}: expected a stack of shape (N, {PATCH}, {PATCH}), "
                             f"got {stack.shape}")
    sigma = background_sigma(bundle.metadata)
    if sigma is not None:  # the normalisation is of the whole radiograph, not of a patch
        raise ImageLoadError(f"{path}: the model was trained with background removal (sigma {sigma:g} px) "
                             "of whole radiographs; a stack of patches cannot be scored with it, scan "
                             "the radiographs instead")
    patches, _bits = normalise(stack, name=str(path))
    scores = patch_scores(patches, bundle.model, progress=_progress_bar(path.name))
    flagged = thr.flagged(scores)
    print(f"{path}: {len(scores)} patches, {int(flagged.sum())} flagged")
    print("patch\tmax_abs_mean\tmax_std\tflagged")
    for i, (s, f) in enumerate(zip(scores, flagged)):
        print(f"{i}\t{s[0]:.6g}\t{s[1]:.6g}\t{int(f)}")
    return {
        "path": str(path), "n_patches": int(len(scores)), "n_flagged": int(flagged.sum()),
        "scores": [[float(s[0]), float(s[1]), bool(f)] for s, f in zip(scores, flagged)],
    }
