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
    p.set_defaults(func=run)


def _sets(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def run(args) -> int:
    from core.benchmark import CNN_SETS, OOD_SETS, run_benchmark

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
        "--cnn-sets", ",".join(cnn_sets)))
    run_benchmark(args.data, args.out, budget=args.budget, seeds=args.seeds, ood_sets=ood_sets,
                  cnn_sets=cnn_sets, command=command, log=lambda line: print(line, flush=True))
    return 0
