"""``weldreview benchmark``: reproduce the paper's Tables 2 and 3 on a labelled dataset."""

from __future__ import annotations

import shlex
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "benchmark",
        help="measure the OOD detector and the supervised CNN on labelled radiographs",
        description="Train the OOD detector (perturbation sets None, D, SNI) and the supervised CNN "
        "(D, D+SC, D+SC+SPC, D+SNI), several seeds each, on the training radiographs of DIR, and "
        "report the TPR at 0.1%% FPR on graded real defects and synthetic OOD test sets in the layout "
        "of the paper's Tables 2 and 3, with figures. An interrupted run resumes from OUT/runs.",
    )
    p.add_argument("--data", required=True, metavar="DIR",
                   help="GDXray-layout folder (W0001/W0002[/W0003]) or radiograph + <stem>_mask pairs")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: report.md, results.json, figures/, runs/, models/")
    p.add_argument("--budget", choices=("small", "full", "tiny"), default="small",
                   help="small: about 45 min on 2 CPU cores (few steps, fewer patches); full: paper "
                   "scale, for a GPU; tiny: smoke test whose numbers mean nothing (default: small)")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="models per training set (default: 3, as in the paper)")
    p.add_argument("--ood-sets", default="None,D,SNI", metavar="LIST",
                   help="OOD perturbation sets to run, comma-separated (default: None,D,SNI)")
    p.add_argument("--cnn-sets", default="D,D+SC,D+SC+SPC,D+SNI", metavar="LIST",
                   help="CNN training sets to run, comma-separated; empty for none "
                   "(default: D,D+SC,D+SC+SPC,D+SNI)")
    p.add_argument("--zones", choices=("distance", "slope"), default="distance",
                   help="zones of the weld region with thresholds of their own: distance from its edge "
                   "(0-32, 32-48 px; protocol version 3, the default) or the raw film's slope (quantiles "
                   "0.5, 0.8 of the calibration okay kernels' slopes, Gaussian 16 px). slope only "
                   "re-evaluates a curve's stored models (--curve ... --reevaluate), stored as the curve "
                   "<label>_slope-zones; the tables refuse it")
    p.add_argument("--whole-image", action="store_true",
                   help="draw and score patches anywhere on the radiographs instead of only in the "
                   "weld region found by core.roi (the paper's setting; for comparison)")
    curve = p.add_argument_group(
        "learning curve", "train one OOD detector for a CPU budget and evaluate it along the way "
        "(TPR at 0.1%% FPR against training minutes), instead of the tables; the report in OUT "
        "shows the curve, and the weld region's before/after effect on the last model")
    curve.add_argument("--curve", metavar="MINUTES",
                       help="training minutes at which to evaluate, comma-separated, e.g. 5,10,20,40")
    curve.add_argument("--curve-set", default="SNI", metavar="SET",
                       help="perturbation set of the curve's model: None, D or SNI (default: SNI)")
    curve.add_argument("--signed-sni", action="store_true",
                       help="SNI regions darker or brighter at random (the paper's are all brighter)")
    curve.add_argument("--dropout", type=float, default=0.0,
                       help="dropout of the curve's model (default 0; the paper's 0.12 opens a gap "
                       "between training and inference, see docs/default_model.md)")
    curve.add_argument("--seed", type=int, default=0, help="seed of the curve's model (default 0)")
    curve.add_argument("--background", type=float, default=None, metavar="SIGMA",
                       help="normalise the input by removing the background (Gaussian of SIGMA px, "
                       "core.normalise) before the model (default: raw grey levels, the paper's)")
    curve.add_argument("--background-method", choices=("gaussian", "twicing"), default="gaussian",
                       help="background estimate with --background (twicing: free of the Gaussian's "
                       "bias on curved grey levels, core.normalise)")
    curve.add_argument("--gain", type=float, default=1.0,
                       help="input gain of the curve's model (core.model, 'Input gain'; default 1, the "
                       "paper's network; 8 keeps the latent of a --background model alive)")
    curve.add_argument("--per-weight", type=float, default=1.0, metavar="W",
                       help="weight of L_per and L_kern,per in the curve's loss (default 1, the paper's)")
    curve.add_argument("--reevaluate", action="store_true",
                       help="do not train: evaluate the models an earlier --curve run of the same recipe "
                       "left in OUT/curve/ with the current protocol")
    curve.add_argument("--extend", action="store_true",
                       help="continue the curve's model from its checkpoint to the --curve minutes "
                       "(beyond its last point); the points join the stored curve")
    p.set_defaults(func=run)


def _sets(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _minutes(text: str) -> list[float] | None:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        return None
    ok = values and values[0] > 0 and all(b > a for a, b in zip(values, values[1:]))
    return values if ok else None


def run_curve(args) -> int:
    from core.benchmark import OOD_SETS
    from core.learning_curve import Recipe, run_learning_curve

    minutes = _minutes(args.curve)
    if minutes is None:
        print(f"weldreview benchmark: --curve wants increasing positive minutes such as 5,10,20, "
              f"got {args.curve!r}", file=sys.stderr)
        return 2
    if args.curve_set not in OOD_SETS:
        print(f"weldreview benchmark: unknown --curve-set {args.curve_set!r}; choose one of "
              f"{', '.join(OOD_SETS)}", file=sys.stderr)
        return 2
    if args.background is not None and args.background <= 0:
        print("weldreview benchmark: --background must be a positive sigma in px", file=sys.stderr)
        return 2
    if not args.gain > 0 or not args.per_weight >= 0:
        print("weldreview benchmark: --gain must be positive and --per-weight not negative", file=sys.stderr)
        return 2
    recipe = Recipe(training_set=args.curve_set, signed_sni=args.signed_sni, dropout=args.dropout,
                    seed=args.seed, background_sigma=args.background,
                    background_method=args.background_method, gain=args.gain, per_weight=args.per_weight)
    command = " ".join(shlex.quote(a) for a in (
        "weldreview", "benchmark", "--data", str(args.data), "--out", str(args.out), "--budget",
        args.budget, "--curve", args.curve, "--curve-set", args.curve_set, "--dropout",
        f"{args.dropout:g}", "--seed", str(args.seed)) + (("--signed-sni",) if args.signed_sni else ())
        + (("--background", f"{args.background:g}", "--background-method", args.background_method)
           if args.background else ())
        + (("--gain", f"{args.gain:g}") if args.gain != 1.0 else ())
        + (("--per-weight", f"{args.per_weight:g}") if args.per_weight != 1.0 else ()))
    if args.reevaluate and args.extend:
        print("weldreview benchmark: --reevaluate and --extend exclude each other", file=sys.stderr)
        return 2
    if args.zones == "slope" and not args.reevaluate:
        print("weldreview benchmark: --zones slope re-evaluates the stored models of a curve: add "
              "--reevaluate (curves are trained with the default distance zones)", file=sys.stderr)
        return 2
    command += " --reevaluate" if args.reevaluate else " --extend" if args.extend else ""
    command += " --zones slope" if args.zones == "slope" else ""
    try:
        run_learning_curve(args.data, args.out, minutes=minutes, recipe=recipe, budget=args.budget,
                           command=command, reevaluate=args.reevaluate, extend=args.extend,
                           zones=args.zones, log=lambda line: print(line, flush=True))
    except (FileNotFoundError, ValueError) as exc:
        print(f"weldreview benchmark: {exc}", file=sys.stderr)
        return 2
    return 0


def run(args) -> int:
    from core.benchmark import CNN_SETS, OOD_SETS, run_benchmark

    if args.curve:
        return run_curve(args)
    if args.zones != "distance":
        print("weldreview benchmark: --zones slope is for learning curves (--curve ... --reevaluate); "
              "the tables are protocol version 3, with the distance zones: re-evaluating them would "
              "overwrite their runs in OUT/runs and train the CNNs again", file=sys.stderr)
        return 2
    ood_sets, cnn_sets = _sets(args.ood_sets), _sets(args.cnn_sets)
    bad = [s for s in ood_sets if s not in OOD_SETS] + [s for s in cnn_sets if s not in CNN_SETS]
    if bad:
        print(f"weldreview benchmark: unknown training set(s) {', '.join(bad)}; OOD sets are "
              f"{', '.join(OOD_SETS)}, CNN sets {', '.join(CNN_SETS)}", file=sys.stderr)
        return 2
    if args.seeds < 1:
        print("weldreview benchmark: --seeds must be at least 1", file=sys.stderr)
        return 2
    command = " ".join(shlex.quote(a) for a in (
        "weldreview", "benchmark", "--data", str(args.data), "--out", str(args.out),
        "--budget", args.budget, "--seeds", str(args.seeds), "--ood-sets", ",".join(ood_sets),
        "--cnn-sets", ",".join(cnn_sets)) + (("--whole-image",) if args.whole_image else ()))
    run_benchmark(args.data, args.out, budget=args.budget, seeds=args.seeds, ood_sets=ood_sets,
                  cnn_sets=cnn_sets, roi=not args.whole_image, command=command, log=lambda line: print(line, flush=True))
    return 0
