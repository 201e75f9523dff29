"""``weldreview train``: train the OOD autoencoder from the command line with a progress bar.

Okay patches come from radiographs with defect masks (``--data DIR``, read by
core.datasets.load_dataset), accepted radiographs with no defect (``--accepted DIR``: no masks
needed, every patch of their weld region is accepted weld) and/or generated welds (``--synthetic
N``, core.synthetic); patches are never taken from a ``--data`` radiograph without a mask.
Perturbation sets (``--perturbations``):

``D``      real defects cut from the masked radiographs (the synthetic welds' defects included)
``SNI``    synthetic natural image indications (paper, positive); ``SNI-signed`` with random sign
``synthetic`` the six synthetic anomaly types; or single kinds such as ``dogbone``

``--preset demo`` is the recipe of the bundled default model: 8 synthetic welds, perturbations
D (the defects of the synthetic welds) and SNI, batch 32, 700 steps with learning-rate warm-up
over 50 steps and a 30-minute budget (measured: about 24 patches/s with this pipeline on 2 CPU
cores with bfloat16, 2.7 s per step, so 700 steps take about 30 minutes; the budget stops it
earlier on a slower machine and the model is saved as it is).

``--background SIGMA`` removes the smooth background of every radiograph before patches are cut
(image minus its background estimate, plus 0.5; core.normalise); the model records it, and
calibrate and scan normalise the same way. ``--background-method``: ``twicing`` (the default) or
the plain ``gaussian`` estimate, which leaves a rounded bead's curvature in. Measured on real GDXray
films (docs/benchmark/report.md): on raw grey levels the model cannot reproduce the bright bead and
its residual measures brightness; with ``--background 24`` the residual finds the larger synthetic
anomaly types (circular hollow 84 %, raster 86 % at 0.1 % FPR, against at most 15 % without).
Background-removed texture is faint, so the network gets an input gain (``--gain``, 8 by default
with ``--background``; core.model): without it the latent died for good and the model output a
constant, leaving the normalisation alone to do the detecting. A resumed run keeps its
checkpoint's gain. ``--per-weight 0.25`` (weight of L_per and L_kern,per; the paper's is 1) ranked
the synthetic anomaly types better with background removal (docs/benchmark/notes.md, item 5).

Real radiographs give okay patches from their weld region only (core.roi.find_weld; the whole
radiograph when no weld is found), as the scan and the benchmark work.

``--accepted DIR`` takes a plant's accepted films as they are, with no masks: every patch of their
weld region is accepted weld. A GDXray folder's round-robin films with flaws but no masks are
skipped, as calibrate skips them.

Ctrl-C (or SIGTERM, as at logout) stops after the current step and writes a checkpoint;
``--resume`` continues it. ``--run DIR`` makes the run watchable: a status file there, and a STOP
file to stop it (core.training_runs; the application's Training runs window uses it).

``--calibrate-data DIR`` (held-out accepted radiographs, never the training ones) and/or
``--calibrate-synthetic N`` calibrate the model once training has finished (not when it is
stopped), exactly as ``weldreview calibrate MODEL --data DIR --synthetic N`` would (``--calibrate-fpr``,
``--calibrate-patches``, ``--calibrate-seed`` and ``--calibrate-zones`` are its ``--fpr``,
``--patches``, ``--seed`` and ``--zones``),
so the model can be used at once; a run's status says ``calibrating`` meanwhile, and a stop
request ends the calibration. A failed or stopped calibration leaves the model saved without
thresholds and the exit status is 3 (0: trained, and calibrated when asked; 1: an error; 2: bad
options; 130: stopped with a checkpoint).

``--validate-every STEPS`` (with the held-out radiographs above) measures the model every STEPS steps
and at the end on those radiographs, as core.validation does: thresholds calibrated on their okay
patches at ``--calibrate-fpr``, then the share of the paper's five synthetic anomaly types found
on their okay weld. The model saved is the best state so measured, which need not be the last
(training longer lost the thin types for one GDXray seed, docs/benchmark/notes.md item 12); the
command says which, and the checkpoint keeps the last state, which ``--resume`` trains on from.
A validation takes 25-35 s on 2 cores at the default FPR (5,000 patches); it counts towards
``--budget-min``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

PRESETS = {
    "demo": dict(synthetic=8, perturbations="D,SNI", steps=700, batch=32, budget_min=30.0, warmup=50),
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an autoencoder on okay welds with perturbations (Section 3.1 of the paper)",
        description=__doc__.split("\n\n", 1)[1].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="DIR", help="folder of radiographs with defect masks (GDXray layout or "
                   "<name>.<ext> + <name>_mask.<ext>)")
    p.add_argument("--accepted", metavar="DIR", help="folder of accepted radiographs with no defect (no masks "
                   "needed): okay patches from their whole weld region")
    p.add_argument("--synthetic", type=int, metavar="N", help="generate N synthetic weld radiographs")
    p.add_argument("--perturbations", metavar="SETS", help="comma-separated: D, SNI, SNI-signed, synthetic "
                   "or an anomaly kind (default: D,SNI)")
    p.add_argument("--steps", type=int, help="optimiser steps in total (default 1000)")
    p.add_argument("--batch", type=int, help="okay patches per step, as many perturbed (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--warmup", type=int, help="learning-rate warm-up steps (default 0)")
    p.add_argument("--budget-min", type=float, help="stop after this many minutes and save the model")
    p.add_argument("--loss", choices=("default", "paper"), default="default",
                   help="loss weights: per-pixel means with weighted kernel terms, or the paper's literal sums")
    p.add_argument("--precision", choices=("auto", "bfloat16", "off"), default="auto",
                   help="bfloat16 mixed precision (auto: where the CPU has it or a GPU is visible)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and draws (default 0)")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout fraction (default 0.12, the paper's); with --resume, 0 adds a final "
                        "phase without dropout, which closes the gap between training and inference")
    p.add_argument("--background", type=float, metavar="SIGMA",
                   help="remove the smooth background (SIGMA px; 24 measured) of each radiograph "
                        "before patches are cut; the model records it and calibrate/scan do the same. "
                        "Measured on real films: synthetic anomalies found at 0.1%% FPR rise from at "
                        "most 15%% to 84-86%% (circular hollow, raster); implies --gain 8")
    p.add_argument("--background-method", choices=("gaussian", "twicing"), default=None,
                   help="background estimate with --background (default twicing: the Gaussian leaves the "
                        "curvature of a rounded bead in the normalised image, core.normalise)")
    p.add_argument("--gain", type=float, default=None,
                   help="input gain of the network around grey level 0.5 (default 8 with --background, "
                        "else 1): background-removed texture is so faint that the latent dies without it "
                        "(core.model, 'Input gain')")
    p.add_argument("--per-weight", type=float, default=None, metavar="W",
                   help="weight of the perturbed terms L_per and L_kern,per (default 1, the paper's)")
    p.add_argument("--out", metavar="FILE", help="model file to write (.keras; default: the models folder)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint of --out (<out>.ckpt)")
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="STEPS",
                   help="write the checkpoint every STEPS steps (default 100; 0: only when stopped); a "
                        "killed run resumes from the last one")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a stored recipe (demo: the bundled model's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--run", metavar="DIR", help="training-run folder (core.training_runs): status.json is "
                   "written there as training goes, and creating DIR/STOP stops it with a checkpoint; "
                   "the application's Models > Training runs window starts runs this way")
    cal = p.add_argument_group(
        "calibration at the end",
        "calibrate the trained model as `weldreview calibrate` does, on held-out radiographs (never\n"
        "the training ones), once training has finished; a failed or stopped calibration leaves the\n"
        "model saved without thresholds and the exit status is 3")
    cal.add_argument("--calibrate-data", metavar="DIR", help="folder of held-out accepted radiographs (same "
                     "layouts as --data; masks where they have defects, unmasked ones must be defect-free); "
                     "not the --data folder")
    cal.add_argument("--calibrate-synthetic", type=int, metavar="N", help="calibrate on N held-out generated "
                     "welds (seeds from --calibrate-seed; must not overlap the training welds' seeds)")
    cal.add_argument("--calibrate-fpr", type=float, metavar="FPR",
                     help="target patch-level false-positive rate (calibrate's --fpr; default 0.001)")
    cal.add_argument("--calibrate-patches", type=int, metavar="N",
                     help="okay patches to score (calibrate's --patches; default 4.5 / fpr)")
    cal.add_argument("--calibrate-seed", type=int, metavar="SEED", help="first seed of the held-out "
                     "synthetic welds and of the patch draws (calibrate's --seed; default 1000)")
    cal.add_argument("--calibrate-zones", choices=("distance", "slope"), help="zones of the weld region "
                     "with thresholds of their own: by distance from its edge (default) or by the raw "
                     "film's slope (calibrate's --zones)")
    cal.add_argument("--validate-every", type=int, metavar="STEPS",
                     help="every STEPS steps and at the end, measure the model on the held-out radiographs "
                     "(the paper's five synthetic anomaly types added to their okay weld, at thresholds "
                     "calibrated on their okay patches at --calibrate-fpr) and save the best state instead "
                     "of the last (core.validation); the checkpoint keeps the last state for --resume")
    p.add_argument("--from-verdicts", action="store_true",
                   help="fine-tune the active model on the verdicts given (as `weldreview retrain --from-verdicts`)")
    p.set_defaults(func=run)


def _apply_preset(args) -> None:
    if not args.preset:
        return
    preset = PRESETS[args.preset]
    for key, value in preset.items():
        attr = {"warmup": "warmup", "budget_min": "budget_min"}.get(key, key)
        if getattr(args, attr, None) is None:
            setattr(args, attr, value)


def _radiographs(args, seed: int):
    """(names, images, masks, rois) from --data, --accepted and --synthetic; images float32 [0, 1]."""
    names, images, masks, rois = [], [], [], []
    from core.roi import WeldNotFoundError, find_weld

    for item in _real_radiographs(args):
        names.append(str(item.path))
        images.append(item.image)
        masks.append(item.mask)
        try:
            rois.append(find_weld(item.image).mask)
        except WeldNotFoundError:
            rois.append(None)  # patches from the whole radiograph
            _say(args, f"{item.path.name}: no weld region found; patches from the whole radiograph")
    for i in range(args.synthetic or 0):
        from core.imageio import normalise
        from core.synthetic import generate_weld

        weld = generate_weld(seed + i)
        image, _ = normalise(weld.image, bits_stored=16)
        names.append(f"synthetic:generate_weld(seed={seed + i})")
        images.append(image)
        masks.append(weld.mask)
        rois.append(weld.haz_mask if weld.haz_mask is not None else weld.weld_mask)
        _say(args, f"generated synthetic weld {i + 1}/{args.synthetic}")
    return names, images, masks, rois


def _real_radiographs(args, *, quiet: bool = False) -> list:
    """The radiographs of --data (those with a mask) and --accepted (all, masks optional); lists
    them, reads no pixels."""
    from core.datasets import load_dataset
    from core.errors import ImageLoadError

    items = []
    if args.data:
        try:
            items += load_dataset(args.data, include_unmasked=False)
        except ImageLoadError:
            unmasked = load_dataset(args.data)  # raises again when the folder holds no radiograph
            raise ImageLoadError(
                f"{args.data}: {len(unmasked)} radiograph(s) and none with a defect mask "
                f"({unmasked[0].name}{', ...' if len(unmasked) > 1 else ''}): --data takes okay patches "
                "beside marked defects only; give films with no defect as --accepted DIR") from None
    if args.accepted:
        from app.commands.calibrate import accepted_radiographs

        accepted = accepted_radiographs(args.accepted,
                                        say=None if quiet else lambda text: _say(args, f"--accepted: {text}"))
        if not accepted:
            raise ImageLoadError(f"{args.accepted}: no accepted radiograph left to train on (--accepted)")
        seen = {item.path.resolve() for item in items}
        items += [item for item in accepted if item.path.resolve() not in seen]
    return items


def _sources(spec: str, images, masks):
    from core.perturbations import ANOMALY_KINDS, RealDefectPerturbations, SNIPerturbations, SyntheticAnomalies

    sources = []
    for name in [s.strip() for s in spec.split(",") if s.strip()]:
        if name == "D":
            with_defects = [(im, m) for im, m in zip(images, masks) if m is not None and m.any()]
            if not with_defects:
                raise ValueError("perturbation set D needs radiographs with defect masks (--data or "
                                 "--synthetic); accepted films have no defects to cut: give --perturbations "
                                 "SNI (or another set) with --accepted alone")
            sources.append(RealDefectPerturbations.from_images(*zip(*with_defects)))
        elif name in ("SNI", "SNI-signed"):
            sources.append(SNIPerturbations(signed=name == "SNI-signed"))
        elif name == "synthetic":
            sources.extend(SyntheticAnomalies(kind) for kind in ANOMALY_KINDS)
        elif name in ANOMALY_KINDS:
            sources.append(SyntheticAnomalies(name))
        else:
            raise ValueError(f"unknown perturbation set {name!r}; use D, SNI, SNI-signed, synthetic or one of "
                             f"{', '.join(ANOMALY_KINDS)}")
    return sources


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


class ProgressBar:
    """One-line terminal progress: bar, step, loss terms, throughput and time left."""

    def __init__(self, stream=None, width: int = 24):
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_print = 0.0

    def __call__(self, p: dict) -> None:
        now = time.monotonic()
        done = p["step"] >= p["steps"]
        if not self.tty and not done and now - self.last_print < 10.0:
            return
        self.last_print = now
        frac = p["step"] / p["steps"]
        fill = int(self.width * frac)
        rate = p["samples_per_s"]
        left = (p["steps"] - p["step"]) * p["elapsed_s"] / max(p["step"], 1)
        line = (
            f"[{'#' * fill}{'.' * (self.width - fill)}] {p['step']}/{p['steps']} "
            f"loss {p['total']:.4g} (ok {p['ok']:.3g} per {p['per']:.3g} kern {p['kern_ok']:.3g}/"
            f"{p['kern_per']:.3g} reg {p['reg']:.2g}) {rate:.1f} samples/s ~{left / 60:.0f} min left"
        )
        end = "\n" if (done or not self.tty) else ""
        self.stream.write(("\r" + line.ljust(120) if self.tty else line) + end)
        self.stream.flush()


NOT_CALIBRATED = 3  # exit status: trained and saved, but the asked-for calibration failed or was stopped


def _wants_calibration(args) -> bool:
    return bool(getattr(args, "calibrate_data", None) or getattr(args, "calibrate_synthetic", None))


def _check_calibration(args) -> str | None:
    """Why the calibration options cannot work (checked before training, not hours later), or None."""
    if getattr(args, "checkpoint_every", 0) < 0:
        return f"--checkpoint-every must be a number of steps or 0, got {args.checkpoint_every}"
    every = getattr(args, "validate_every", None)
    if every is not None and every < 1:
        return f"--validate-every must be a number of steps, got {every}"
    if every is not None and not _wants_calibration(args):
        return "--validate-every needs --calibrate-data DIR and/or --calibrate-synthetic N (held-out " \
               "radiographs to validate on)"
    if not _wants_calibration(args):
        given = [f"--calibrate-{name}" for name in ("fpr", "patches", "seed", "zones")
                 if getattr(args, f"calibrate_{name}", None) is not None]
        if given or getattr(args, "calibrate_synthetic", None) is not None:  # --calibrate-synthetic 0
            return f"{', '.join(given) or '--calibrate-synthetic 0'} needs --calibrate-data DIR and/or " \
                   "--calibrate-synthetic N (held-out radiographs to calibrate on)"
        return None
    from app.commands.calibrate import DEFAULT_FPR, DEFAULT_SEED, patch_count
    from core.errors import WeldreviewError

    if args.calibrate_synthetic is not None and args.calibrate_synthetic < 0:
        return f"--calibrate-synthetic must be a number of welds, got {args.calibrate_synthetic}"
    try:
        patch_count(DEFAULT_FPR if args.calibrate_fpr is None else args.calibrate_fpr, args.calibrate_patches)
    except WeldreviewError as exc:
        return f"--calibrate-fpr/--calibrate-patches: {exc}"
    seed = DEFAULT_SEED if args.calibrate_seed is None else args.calibrate_seed
    if args.calibrate_synthetic and args.synthetic and \
            seed < args.seed + args.synthetic and args.seed < seed + args.calibrate_synthetic:
        return (f"the held-out synthetic welds (seeds {seed}..{seed + args.calibrate_synthetic - 1}, "
                f"--calibrate-seed) overlap the training welds (seeds {args.seed}.."
                f"{args.seed + args.synthetic - 1}, --seed): calibrate on welds the model never saw")
    if args.calibrate_data:
        from core.datasets import load_dataset

        folder = Path(args.calibrate_data).expanduser().resolve()
        held_out = "the thresholds must be set on held-out radiographs the model never saw, not on " \
                   "patches it has learned; give a folder of other accepted radiographs"
        for option in ("data", "accepted"):
            given = getattr(args, option, None)
            if given and folder == Path(given).expanduser().resolve():
                return f"--calibrate-data is the training folder --{option} ({folder}): {held_out}"
        try:
            calibration = {item.path.resolve() for item in load_dataset(folder)}  # lists, reads no pixels
        except WeldreviewError as exc:
            return f"--calibrate-data: {exc}"
        try:
            training = {item.path.resolve() for item in _real_radiographs(args, quiet=True)}
        except WeldreviewError:
            training = set()  # training says what is wrong with --data or --accepted when it reads it
        shared = sorted(calibration & training)
        if shared:
            return (f"--calibrate-data holds {len(shared)} of the training radiographs (--data, --accepted), "
                    f"{shared[0].name} among them: {held_out}")
    return None


def _calibrate(args, out: Path, status, cancel, trained: str) -> int:
    """Calibrate the freshly trained ``out`` as ``weldreview calibrate`` would; the exit status."""
    from app.commands.calibrate import DEFAULT_FPR, DEFAULT_SEED, calibrate_file, thresholds_line
    from core.calibration import describe
    from core.film_check import check_model, describe_checks, summary
    from core.modelfile import read_metadata

    sources = " and ".join(filter(None, [
        args.calibrate_data and f"the radiographs of {args.calibrate_data}",
        args.calibrate_synthetic and f"{args.calibrate_synthetic} held-out synthetic "
                                     f"weld{'s' if args.calibrate_synthetic > 1 else ''}"]))
    _say(args, f"calibrating {out.name} on {sources} ...")
    if status is not None:
        status.calibrating(f"{trained}; calibrating on {sources}")

    def progress(done, total):
        if status is not None:
            status.calibrating(f"{trained}; calibrating on {sources}: {done}/{total} okay patches scored",
                               force=False)

    try:
        thr, pixel = calibrate_file(
            out, data=args.calibrate_data, synthetic=args.calibrate_synthetic or 0,
            seed=DEFAULT_SEED if args.calibrate_seed is None else args.calibrate_seed,
            fpr=DEFAULT_FPR if args.calibrate_fpr is None else args.calibrate_fpr, patches=args.calibrate_patches,
            zones=getattr(args, "calibrate_zones", None) or "distance", progress=progress, cancel=cancel)
    except BaseException as exc:  # the model stays saved whatever went wrong; say why
        from core.scanning import ScanCancelled

        why = ("the calibration was stopped" if isinstance(exc, (ScanCancelled, KeyboardInterrupt))
               else f"the calibration failed ({type(exc).__name__}: {exc})")
        message = (f"{trained}. The model is not calibrated, because {why}; calibrate it on held-out "
                   f"radiographs with weldreview calibrate \"{out}\" --data FOLDER before scanning with it")
        if status is not None:
            status.finish("finished", message)
        print(f"weldreview train: {message}", file=sys.stderr)
        if not isinstance(exc, Exception) and not isinstance(exc, KeyboardInterrupt):
            raise  # SystemExit and the like
        return NOT_CALIBRATED
    line = thresholds_line(thr, pixel)
    checks = check_model(read_metadata(out))
    if status is not None:
        status.finish("finished", f"{trained}; calibrated on {sources}: thresholds {describe(thr)} "
                                  f"(target FPR {thr.fpr_target:g}, achieved {thr.fpr_achieved:.5f}, "
                                  f"{thr.n_okay} okay patches; {summary(checks)})")
    print(line)
    print(describe_checks(checks, thr.fpr_target))
    return 0


def _validation(args, sigma, method):
    """``validation(model)`` for core.training.train: core.validation on the held-out radiographs."""
    from functools import partial

    from app.commands.calibrate import DEFAULT_FPR, DEFAULT_SEED, _held_out, draw_okay_patches, patch_count
    from core.normalise import model_input, normalise_indication
    from core.validation import validate, validation_set

    fpr = DEFAULT_FPR if args.calibrate_fpr is None else args.calibrate_fpr
    seed = DEFAULT_SEED if args.calibrate_seed is None else args.calibrate_seed
    raw, masks, rois, pixel, sources = _held_out(args.calibrate_data, args.calibrate_synthetic or 0, seed, False)
    metadata = {"input": {"background_sigma": sigma, "background_method": method}} if sigma is not None else {}
    images = [model_input(image, metadata) for image in raw]  # as the model will see them, once
    # the very okay patches the calibration at the end draws: a state is measured at the thresholds
    # it would be given (fresh ones set other thresholds; notes item 12). The images are normalised
    # already, hence no metadata here.
    okay = draw_okay_patches({}, patch_count(fpr, args.calibrate_patches), seed=seed, quiet=True,
                             held_out=(images, masks, rois, pixel, sources))[:2]
    vset = validation_set(images, masks, rois, fpr=fpr, okay=okay,
                          indication=None if sigma is None else partial(normalise_indication, sigma=sigma,
                                                                        method=method))
    _say(args, f"validating every {args.validate_every} steps and at the end on {len(images)} held-out "
               f"radiographs: the calibration's {len(vset.okay)} okay patches set thresholds at FPR {fpr:g}, "
               f"{len(vset) - len(vset.okay)} synthetic anomalies ({', '.join(vset.anomalies)}) are looked for")
    return partial(validate, vset=vset)


def validation_line(record: dict, best: dict) -> str:
    """One validation as the command and a run's status say it."""
    types = ", ".join(f"{kind.replace('_', ' ')} {100 * rate:.0f}" for kind, rate in record["tpr"].items())
    return (f"validation at step {record['step']}: {100 * record['score']:.1f} % of the synthetic anomalies "
            f"found ({types}); best so far step {best['step']} ({100 * best['score']:.1f} %)")


def chosen_line(training: dict) -> str | None:
    """What the saved model is when validation chose an earlier state than the last, else None."""
    v = training.get("validation")
    if not v or v["chosen_step"] == training["steps"]:
        return None
    return (f"saved the state of step {v['chosen_step']} (validation {100 * v['chosen_score']:.1f} %), not "
            f"the last, step {training['steps']} ({100 * v['last_score']:.1f} %)")


def _default_gain(sigma, resuming: Path | None) -> float:
    """The input gain when --gain is not given: a resumed run keeps its checkpoint's (runs started
    before the gain existed have 1), a new one takes 8 with background removal, else 1."""
    if resuming is not None:
        from core.training import checkpoint_config

        try:
            return float(checkpoint_config(resuming.with_suffix(".ckpt")).get("gain", 1.0))
        except (OSError, ValueError, AttributeError):
            pass  # no readable checkpoint: resuming fails with its own message
    from core.model import BACKGROUND_GAIN

    return BACKGROUND_GAIN if sigma is not None else 1.0


def run(args) -> int:
    sigma = getattr(args, "background", None)
    method = getattr(args, "background_method", None) or "twicing"
    if method != "twicing" and sigma is None:
        print("weldreview train: --background-method needs --background SIGMA", file=sys.stderr)
        return 2
    if sigma is not None and not sigma > 0:  # also rejects nan
        print(f"weldreview train: --background must be a positive number of pixels, got {sigma:g}",
              file=sys.stderr)
        return 2
    if getattr(args, "from_verdicts", False):
        if _wants_calibration(args) or getattr(args, "validate_every", None) is not None:
            print("weldreview train: --calibrate-data/--calibrate-synthetic/--validate-every do not apply to "
                  "--from-verdicts: it calibrates and qualifies the retrained model on held-back verdicts "
                  "itself", file=sys.stderr)
            return 2
        given = [f"--{name}" for name in ("data", "accepted", "synthetic") if getattr(args, name, None)]
        if given:
            print(f"weldreview train: --from-verdicts trains on the verdicts' patches in the store; "
                  f"{', '.join(given)} cannot be added to it", file=sys.stderr)
            return 2
        if sigma is not None:
            print("weldreview train: --background does not apply to --from-verdicts: the retrained "
                  "model keeps the normalisation of its parent (the active model)", file=sys.stderr)
            return 2
        from app.commands.retrain import run_from_train

        return run_from_train(args)
    _apply_preset(args)
    if not args.data and not args.accepted and not args.synthetic:
        print("weldreview train: give --data DIR, --accepted DIR and/or --synthetic N (or --preset demo)",
              file=sys.stderr)
        return 2
    problem = _check_calibration(args)
    if problem is not None:
        print(f"weldreview train: {problem}", file=sys.stderr)
        return 2
    from core.loss import LossWeights
    from core.model import DROPOUT
    from core.paths import models_dir
    from core.training import TrainConfig, TrainingCancelled, device_name, train

    out = Path(args.out) if args.out else models_dir() / f"model-seed{args.seed}.keras"
    gain = args.gain if args.gain is not None else _default_gain(sigma, out if args.resume else None)
    if not gain > 0 or (args.per_weight is not None and not args.per_weight >= 0):
        print("weldreview train: --gain must be positive and --per-weight not negative", file=sys.stderr)
        return 2
    if out.suffix != ".keras":
        print(f"weldreview train: --out must end in .keras, got {out.name}", file=sys.stderr)
        return 2
    spec = args.perturbations or "D,SNI"
    # weld regions come from the raw radiographs (_radiographs); the model sees normalised ones
    names, images, masks, rois = _radiographs(args, args.seed)
    if sigma is not None:
        from core.normalise import remove_background

        images = [remove_background(image, sigma, method) for image in images]
    from core.sampler import PatchSampler

    sampler = PatchSampler(images, masks, rois=rois, seed=args.seed)
    try:
        sources = _sources(spec, images, masks)
    except ValueError as exc:
        print(f"weldreview train: {exc}", file=sys.stderr)
        return 2
    weights = LossWeights.from_name(args.loss)
    if args.per_weight is not None:
        weights = weights.with_per_weight(args.per_weight)
    config = TrainConfig(
        steps=args.steps or 1000, batch=args.batch or 32, lr=args.lr, warmup_steps=args.warmup or 0,
        seed=args.seed, weights=weights, mixed_precision=args.precision, out=out, gain=gain,
        dropout=DROPOUT if args.dropout is None else args.dropout,
        budget_s=args.budget_min * 60 if args.budget_min else None, images=names,
        perturbations=[getattr(s, "name", type(s).__name__) for s in sources], overwrite=args.force,
        name=out.stem, background_sigma=sigma, background_method=method, validate_every=args.validate_every,
        checkpoint_every=args.checkpoint_every,
    )
    validation = None
    if args.validate_every:
        from core.errors import WeldreviewError

        try:
            validation = _validation(args, sigma, method)
        except WeldreviewError as exc:
            print(f"weldreview train: --validate-every: {exc}", file=sys.stderr)
            return 2
    resume = out.with_suffix(".ckpt") if args.resume else None
    normalised = "" if sigma is None else f" (background removed, sigma {sigma:g} px, {method}, gain {gain:g})"
    _say(args, f"training on {device_name()}: {len(images)} radiographs{normalised}, perturbations {spec}, "
               f"{config.steps} steps of {config.batch}+{config.batch} patches -> {out}")
    cancelled = {"flag": False}
    status = None
    if args.run:
        from core.training_runs import StatusWriter

        status = StatusWriter(args.run, model=out, budget_s=config.budget_s, steps=config.steps)

    def on_signal(signum, frame):
        if cancelled["flag"]:
            raise KeyboardInterrupt
        cancelled["flag"] = True
        print("\nstopping after this step (Ctrl-C again to abort)...", file=sys.stderr)

    said = {"step": None}

    def progress(p):
        if bar is not None:
            bar(p)
        if status is not None:
            status.progress(p)
        if "validation" in p and p["validation"]["step"] != said["step"]:
            said["step"] = p["validation"]["step"]
            _say(args, validation_line(p["validation"], p["best_validation"]))

    def cancel():
        return cancelled["flag"] or (status is not None and status.stop_requested())

    bar = None if args.quiet else ProgressBar()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:  # the handlers stay over the calibration too: a stop request ends it
        try:
            bundle = train(config, sampler.okay, sources, progress=progress, cancel=cancel,
                           resume_from=resume, validation=validation)
        except TrainingCancelled as exc:
            message = (f"stopped at step {exc.step}; continue with the same command and --resume "
                       f"(checkpoint {exc.checkpoint})")
            if status is not None:
                status.finish("stopped", message)
            print(f"weldreview train: {message}", file=sys.stderr)
            return 130
        except BaseException as exc:
            if status is not None:
                status.finish("failed", f"{type(exc).__name__}: {exc}")
            raise
        t = bundle.metadata["training"]
        message = (f"wrote {bundle.path} ({t['steps']} steps, {t['elapsed_s'] / 60:.1f} min, final loss "
                   f"{t['final_losses']['total']:.4g}, sha256 {bundle.sha256[:12]})")
        chosen = chosen_line(t)
        if chosen:
            message += f"; {chosen}"
        print(message, flush=True)
        from core.training import latent_warning

        warning = latent_warning(t)
        if warning:
            print(f"weldreview train: warning: {warning}", file=sys.stderr, flush=True)
            message += f"; warning: {warning}"
        if _wants_calibration(args):
            del bundle  # the calibration loads the saved model itself
            validation = None  # nor does it need the validation's patches held in memory
            return _calibrate(args, out, status, cancel, message)
        if status is not None:
            status.finish("finished", message)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
