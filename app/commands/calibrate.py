"""``weldreview calibrate``: set a model's thresholds at a false-positive rate on held-out okay patches."""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_SEED = 1000  # the first held-out synthetic weld: training draws its own from --seed 0
DEFAULT_FPR = 0.001  # core.calibration.DEFAULT_FPR (not imported: --help stays fast)
DEFAULT_EDGE_BAND = "32,48"  # core.residual.EDGE_ZONES_PX as text (not imported: --help stays fast)
RULES = ("common", "tail")  # --rule: core.calibration.RULES (not imported: --help stays fast)
ZONES = ("distance", "slope")  # --zones: edge zones by distance from the region's edge, or by the film's slope


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="set a model's thresholds at a target false-positive rate from held-out okay weld",
        description="Score okay patches drawn from the weld region of held-out radiographs (never "
        "those the model was trained on) and store thresholds for the 9x9 mean and std tests in the "
        "model's metadata, chosen jointly so that at most the target fraction of okay patches is "
        "flagged. Patches are cut from the radiographs as the model sees them (background removed "
        "when it was trained with --background; weld regions, the bead and a heat-affected zone on "
        "each side as the application scans them, are found on the raw radiograph). "
        "Radiographs come from --data (defect masks keep patches clear of known defects; "
        "unmasked radiographs must be defect-free) and/or --synthetic N generated welds.",
    )
    p.add_argument("model", help="model file (.keras) to calibrate")
    p.add_argument("--data", metavar="DIR", help="folder of held-out radiographs (with masks where they have defects)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="generate N held-out synthetic welds")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="first seed of the synthetic welds and of the patch draws")
    p.add_argument("--fpr", type=float, default=DEFAULT_FPR, help="target patch-level false-positive rate (default 0.001)")
    p.add_argument("--patches", type=int, default=None, help="okay patches to score (default: 4.5 / fpr, so a review can exclude up to 1 in 9 "
                   "without lowering the false positives the target allows)")
    p.add_argument("--whole-image", action="store_true", help="draw patches from the whole image, not the weld region")
    p.add_argument("--zones", choices=ZONES, default="distance",
                   help="how the weld region is split into zones with thresholds of their own: distance "
                   "from the bead's edge, the heat-affected zone beside the bead a zone of its own "
                   "(default; --edge-band; docs/benchmark/notes.md, item 15), or slope: the raw film's slope after a "
                   "16 px Gaussian, split at the median and 80 %% quantile of the okay patches' kernel "
                   "slopes, so a bead's flank gets its own thresholds wherever it lies. Measured on "
                   "GDXray: docs/benchmark/notes.md, item 11")
    p.add_argument("--edge-band", default=None, metavar="PX[,PX...]",
                   help="with --zones distance, the bead's edge zones, each with its own thresholds: "
                   f"their outer bounds in px from the bead's edge (default {DEFAULT_EDGE_BAND}: 0-32 px, "
                   "where the bead's flank falls to the plate, and 32-48 px, where it bends; one number: "
                   "one band; 0: one pair for the whole region, heat-affected zone included). Measured on GDXray: "
                   "docs/benchmark/notes.md, item 8")
    p.add_argument("--rule", choices=RULES, default="common",
                   help="how the zones share the false positives the target allows: common, every zone's "
                   "thresholds at one quantile level of its okay scores (default), or tail, lowering first "
                   "the thresholds whose largest okay scores stand out from the rest (core.calibration). "
                   "Measured on GDXray, tail finds more faint anomalies but with one of two models flagged "
                   "ten times the target on films it was not calibrated on (docs/benchmark/notes.md, item 16)")
    r = p.add_argument_group(
        "review", "the okay patches that set the thresholds: list them, and (a supervisor, with a "
        "reason, recorded in the audit trail) exclude those that are not accepted weld, e.g. an "
        "indication the calibration film's mask misses; the thresholds are re-derived at once")
    r.add_argument("--review", action="store_true", help="list the okay patches nearest the thresholds")
    r.add_argument("--top", type=int, default=24, help="patches listed by --review (default 24)")
    r.add_argument("--exclude", type=int, nargs="+", metavar="I", help="exclude okay patches (their # in --review)")
    r.add_argument("--spot", action="store_true",
                   help="with --exclude: every okay patch over each given patch's strongest residual "
                   "(a scratch or pore lies in several; runs the model on the given patches)")
    r.add_argument("--include", type=int, nargs="+", metavar="I", help="put excluded okay patches back")
    r.add_argument("--reason", metavar="TEXT", help="why (required with --exclude / --include)")
    r.add_argument("--user", metavar="U", help="the supervisor (required with --exclude / --include)")
    r.add_argument("--db", metavar="FILE", help="the review database (default: the one in the weldreview home directory)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.review or args.exclude or args.include:
        return run_review(args)
    if not args.data and not args.synthetic:
        print("weldreview calibrate: give --data DIR and/or --synthetic N (or --review)", file=sys.stderr)
        return 2
    why = zones_error(args.zones, args.edge_band, args.whole_image)
    if why:
        print(f"weldreview calibrate: {why}", file=sys.stderr)
        return 2
    try:
        edge_band = None if args.zones == "slope" else edge_bounds(args.edge_band or DEFAULT_EDGE_BAND)
    except ValueError as exc:
        print(f"weldreview calibrate: --edge-band: {exc}", file=sys.stderr)
        return 2
    thr, pixel = calibrate_file(args.model, data=args.data, synthetic=args.synthetic, seed=args.seed,
                                fpr=args.fpr, patches=args.patches, whole_image=args.whole_image,
                                edge_band_px=edge_band, zones=args.zones, rule=args.rule)
    print(thresholds_line(thr, pixel))
    print(films_line(args.model))
    return 0


def films_line(model) -> str:
    """Each calibration film left out, flagged by the others' thresholds in force (core.film_check)."""
    from core.film_check import check_model, describe_checks
    from core.modelfile import read_metadata

    metadata = read_metadata(model)
    fpr = (metadata.get("thresholds") or {}).get("fpr_target", DEFAULT_FPR)
    return describe_checks(check_model(metadata), fpr)


def zones_error(zones: str, edge_band, whole_image: bool,
                names=("--zones slope", "--edge-band", "--whole-image")) -> str | None:
    """Why slope zones cannot go with the other options (named ``names``), or None: they take no
    edge zones and need the weld region."""
    if zones != "slope":
        return None
    slope, band, whole = names
    if edge_band is not None:
        return (f"{band} sets zones by distance from the weld region's edge, {slope} by the film's "
                "slope: give one or the other")
    if whole_image:
        return f"{slope} splits the weld region into zones; with {whole} there is none"
    return None


def edge_bounds(text) -> tuple[int, ...]:
    """``--edge-band`` as zone bounds: "32,48" -> (32, 48), "32" -> (32,), "0" -> ()."""
    from core.calibration import band_bounds

    try:
        bounds = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"give whole pixels separated by commas, e.g. 32,48 (got {text!r})") from None
    return () if bounds == (0,) else band_bounds(bounds)  # CalibrationError is a ValueError


def run_review(args) -> int:
    """``calibrate MODEL --review`` / ``--exclude I.. --reason R --user U`` / ``--include``."""
    from core import calibration_review as review
    from core.calibration import describe
    from core.errors import WeldreviewError
    from core.modelfile import read_metadata

    try:
        if args.exclude or args.include:
            if not args.user or not args.reason:
                print("weldreview calibrate: --exclude and --include need --user (a supervisor) and "
                      "--reason (both are recorded)", file=sys.stderr)
                return 2
            from core.store import Store

            change = review.exclude if args.exclude else review.include
            indices = args.exclude or args.include
            if args.exclude and args.spot:
                indices = spot_patches(args.model, args.exclude)
            with Store(args.db) as store:
                thr = change(args.model, indices, user=args.user, reason=args.reason, store=store)
            print(f"thresholds now: {describe(thr)} ({thr.n_okay} okay patches, achieved FPR "
                  f"{thr.fpr_achieved:.5f})")
            print(films_line(args.model))
        if args.review:
            metadata = read_metadata(args.model)
            print(review_table(metadata, args.top))
            print(films_line(args.model))
    except (WeldreviewError, ValueError, OSError) as exc:
        print(f"weldreview calibrate: {exc}", file=sys.stderr)
        return 1
    return 0


def spot_patches(model, indices) -> list[int]:
    """The okay patches over the strongest residual of each of ``indices`` (not yet excluded)."""
    from core.calibration_review import exclusions, review_patches
    from core.errors import CalibrationError
    from core.modelfile import load_model

    bundle = load_model(model)
    out = set()
    for item in review_patches(bundle, indices):
        if "error" in item:
            raise CalibrationError(f"patch {item['index']}: {item['error']}")
        row, col = item["spot"]
        print(f"patch {item['index']}: strongest residual at ({row:.0f}, {col:.0f}) on "
              f"{item['origin'].film}, inside {len(item['covering'])} okay patch(es)")
        out.update(item["covering"])
    return sorted(out - set(exclusions(bundle.metadata)))


def review_table(metadata: dict, top: int) -> str:
    """The ``--review`` listing: rank, patch #, score / threshold, scores, film and position."""
    from core.calibration import Thresholds
    from core.calibration_review import tail

    thr = Thresholds.from_dict(metadata["thresholds"]) if metadata.get("thresholds") else None
    rows = tail(metadata, top)
    head = f"{'rank':>4} {'#':>5} {'score/thr':>9} {'|mean|':>8} {'std':>8}"
    if thr is not None:
        for name in zone_columns(thr):
            head += f" {name + '|m|':>8} {name + (' std' if name == 'band' else ' sd'):>8}"
    lines = [head + "  film (row, col)  status"]
    for t in rows:
        cols = " ".join(f"{v:8.4f}" for v in t.scores)
        where = "(origin not recorded)" if t.origin is None else (
            f"{t.origin.film} ({t.origin.centre[0]:.0f}, {t.origin.centre[1]:.0f})")
        status = "" if t.excluded is None else (
            f"EXCLUDED by {t.excluded['user']}: {t.excluded['reason']}")
        lines.append(f"{t.rank:>4} {t.index:>5} {t.ratio:9.3f} {cols}  {where}  {status}")
    n_out = sum(1 for t in rows if t.excluded)
    lines.append(f"score/thr > 1: flagged at the thresholds in force; {n_out} of these excluded")
    if thr is not None and (thr.slope_zones or thr.has_haz):
        lines.append("zones: " + ", ".join(f"{name}: {label}" for name, label in
                                           zip(zone_columns(thr), thr.zone_labels()))
                     + (" (grey levels/px)" if thr.slope_zones else ""))
    return "\n".join(lines)


def zone_columns(thr) -> list[str]:
    """Short names of the thresholds' zones for the ``--review`` columns: ``band``, ``zone2``, ...
    for edge zones (after ``haz`` when the heat-affected zone has its own pair); ``s1``, ``s2``, ... for slope zones (the flattest, interior part has the first pair)."""
    if thr.slope_zones:
        return [f"s{k + 1}" for k in range(len(thr.slope_zones))]
    names = ["band" if k == 0 else f"zone{k + 1}" for k in range(len(thr.band_bounds))]
    return ["haz"] + names if thr.has_haz else names


def patch_count(fpr: float, patches: int | None = None) -> int:
    """Okay patches to score at ``fpr``: ``patches``, or 4.5 / fpr by default.

    4.5 / fpr, not a multiple of 1 / fpr: the false positives the target allows on n patches are
    ``floor(fpr * n)``, so with exactly 4 / fpr the first patch a supervisor excludes in the
    calibration review (core.calibration_review) would cut them from 4 to 3 and could raise the
    thresholds; with 4.5 / fpr up to one patch in nine can be excluded before that happens.

    Raises CalibrationError for an FPR outside (0, 1) or fewer patches than it needs (3 / fpr),
    so that a caller can refuse before any work (``weldreview train --calibrate-...``).
    """
    import numpy as np

    from core.calibration import min_okay_patches
    from core.errors import CalibrationError

    need = min_okay_patches(fpr)  # also checks the FPR
    n = patches or int(np.ceil(4.5 / fpr - 1e-9))
    if n < need:
        raise CalibrationError(
            f"{n} okay patches cannot support a false positive rate of {fpr:g}: at least "
            f"{need} are needed (3 / fpr)"
        )
    return n


def draw_okay_patches(metadata: dict, n: int, *, data=None, synthetic: int = 0, seed: int = DEFAULT_SEED,
                      whole_image: bool = False, slopes: bool = False, held_out=None, quiet: bool = False):
    """``n`` held-out okay patches as the model of ``metadata`` sees them.

    The radiographs of ``data`` (a folder, core.datasets layouts; defect masks keep patches clear
    of known defects, unmasked radiographs must be defect-free) and ``synthetic`` generated welds
    (seeds ``seed``, ``seed + 1``, ...) are normalised as the model was trained
    (core.normalise.model_input); weld regions are found on the raw radiographs, and patches are
    drawn from them (the whole image with ``whole_image``) with ``seed``. With ``slopes`` the raw
    radiographs' slope (``core.residual.slope_map``, as a scan computes it) is cut at the same
    places and returned fifth, for zones by slope (the draws are the same either way).
    ``held_out``, what :func:`_held_out` returned for the same sources, spares reading them again;
    ``quiet`` leaves out the line that says how many patches will be scored.

    Returns
    -------
    patches : ndarray (n, 192, 192) float32
    regions : ndarray (n, 192, 192) uint8, or None with ``whole_image``
        The weld region over each patch as a label map (``core.roi.WeldROI.labels``: 1 bead,
        2 heat-affected zone).
    pixel_size_um : float or None
        Of the first radiograph that states one.
    origins : dict
        Where each patch was cut (``core.calibration_review.encode_origins``): the radiograph's
        path or ``synthetic:SEED``, centre and orientation, for the calibration review.
    slopes : ndarray (n, 192, 192) float32
        Only with ``slopes``: the raw film's slope over each patch.
    """
    from core.calibration_review import encode_origins
    from core.normalise import model_input
    from core.residual import slope_map
    from core.sampler import PatchSampler

    images, masks, rois, pixel, sources = held_out or _held_out(data, synthetic, seed, whole_image)  # raw
    slope_maps = [slope_map(image) for image in images] if slopes else None  # of the raw film
    images = [model_input(image, metadata) for image in images]
    sampler = PatchSampler(images, masks, rois=rois, seed=seed)
    if not quiet:
        print(f"scoring {n} okay patches from {len(images)} radiographs ...", file=sys.stderr, flush=True)
    patches, regions, geometries = sampler.okay_with_roi(n, geometries=True)
    out = (patches, None if whole_image else regions, pixel, encode_origins(sources, geometries))
    return (*out, sampler.cut(slope_maps, geometries)) if slopes else out


def calibrate_file(model, *, data=None, synthetic: int = 0, seed: int = DEFAULT_SEED,
                   fpr: float = DEFAULT_FPR, patches: int | None = None, whole_image: bool = False,
                   edge_band_px=None, zones: str = "distance", progress=None, cancel=None,
                   rule: str = "common"):
    """Calibrate the model file ``model`` as ``weldreview calibrate`` does; ``(thresholds, pixel size)``.

    The thresholds are written to the model's metadata (core.calibration.calibrate_model, with
    the weld region's edge zones ``edge_band_px``, outer bounds in px, by default
    ``core.residual.EDGE_ZONES_PX``, unless ``whole_image``). With ``zones="slope"`` the zones are
    by the raw film's slope instead (``core.residual.slope_map``; bounds at
    ``core.residual.SLOPE_QUANTILES`` of the okay kernels' slopes), and ``edge_band_px`` must
    not be given. ``progress(done, total)`` and ``cancel()``
    go to the scoring (core.scanning.patch_scores: ``cancel`` ends it with ScanCancelled).
    """
    from core.calibration import calibrate_model
    from core.errors import CalibrationError
    from core.modelfile import read_metadata
    from core.residual import EDGE_ZONES_PX

    if zones not in ZONES:
        raise CalibrationError(f"zones are by {' or '.join(ZONES)}, not {zones!r}")
    why = zones_error(zones, edge_band_px, whole_image, names=("zones='slope'", "edge_band_px", "whole_image"))
    if why:
        raise CalibrationError(why)
    if edge_band_px is None:
        edge_band_px = EDGE_ZONES_PX
    n = patch_count(fpr, patches)
    metadata = read_metadata(model)  # the model being calibrated: how it sees a radiograph
    okay, regions, pixel, origins, *slopes = draw_okay_patches(
        metadata, n, data=data, synthetic=synthetic, seed=seed, whole_image=whole_image,
        slopes=zones == "slope")
    thr = calibrate_model(model, okay, fpr=fpr, regions=regions, origins=origins, edge_band_px=edge_band_px,
                          slopes=slopes[0] if slopes else None, progress=progress, cancel=cancel, rule=rule)
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


def accepted_radiographs(folder, *, say=None) -> list:
    """The radiographs of ``folder`` whose unmasked parts are accepted weld: GDXray's round-robin
    films with flaws no mask marks (``LabelledRadiograph.flaws_unmasked``) are left out, and
    ``say(text)`` is told which."""
    from core.datasets import load_dataset

    items = load_dataset(folder)
    flawed = [item.name for item in items if item.flaws_unmasked]
    if flawed and say is not None:
        say(f"skipping {len(flawed)} radiograph(s) known to hold flaws no mask marks ("
            f"{', '.join(flawed[:3])}{', ...' if len(flawed) > 3 else ''}: GDXray round-robin "
            "films); their defects would count as okay weld")
    return [item for item in items if not item.flaws_unmasked]


def _held_out(data, synthetic: int, seed: int, whole_image: bool):
    """Images, masks, weld regions, a pixel size and the sources (path or ``synthetic:SEED``)."""
    images, masks, rois, pixel, sources = [], [], [], None, []
    if data:
        from core.roi import WeldNotFoundError, find_weld

        for item in accepted_radiographs(data, say=lambda text: print(text, file=sys.stderr)):
            roi = None
            if not whole_image:
                try:
                    roi = find_weld(item.image, include_haz=True).labels()
                except WeldNotFoundError as exc:
                    print(f"skipping {item.name}: {exc}", file=sys.stderr)
                    continue
            images.append(item.image)
            masks.append(item.mask)
            rois.append(roi)
            sources.append(str(Path(item.path).resolve()))
            pixel = pixel or item.pixel_size_um
    for i in range(synthetic or 0):
        from core.imageio import normalise
        from core.synthetic import generate_weld

        weld = generate_weld(seed + i)
        images.append(normalise(weld.image, bits_stored=16)[0])
        masks.append(weld.mask)
        rois.append(None if whole_image else weld.region_labels())
        sources.append(f"synthetic:{seed + i}")
        pixel = pixel or weld.pixel_size_um
    if not images:
        from core.errors import CalibrationError

        raise CalibrationError("no held-out radiograph with a weld region to draw okay patches from")
    return images, masks, rois, pixel, sources
