"""``weldreview retrain`` and ``weldreview models``: retraining from verdicts, model versions.

``retrain --from-verdicts`` turns the verdicts in force into training data (confirmed defects and
missed indications become perturbations, false alarms okay patches), fine-tunes the active model
on it (``--from-scratch``: a fresh one) within ``--budget`` minutes, calibrates it on held-back
okay patches and registers it as a new version. It is not activated: ``models qualify ID``
compares it with the active model, ``models activate ID --user SUPERVISOR`` activates it when it
qualified (or with ``--justification``), ``models rollback --user SUPERVISOR`` goes back.
The new version keeps the active model's input normalisation (``train --background``): every
patch it trains and calibrates on is cut from the background-removed whole radiograph.
"""

from __future__ import annotations

import argparse
import sys

DB_HELP = "the database (default: the one in the weldreview home directory)"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "retrain", help="fine-tune the active model on the verdicts given (a new model version)",
        description=__doc__.split("\n\n", 1)[1],
    )
    add_retrain_arguments(p)
    p.set_defaults(func=run_retrain)



def add_retrain_arguments(p) -> None:
    """Options of a retraining run (shared with ``weldreview train --from-verdicts``)."""
    p.add_argument("--from-verdicts", action="store_true", required=True,
                   help="train on the verdicts given (the only source for now)")
    p.add_argument("--budget", type=float, metavar="MIN", help="training minutes (default 6)")
    p.add_argument("--from-scratch", action="store_true", help="fresh weights instead of the active model's")
    p.add_argument("--steps", type=int, help="optimiser steps at most (default 400)")
    p.add_argument("--batch", type=int, default=16, help="okay patches per step (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fpr", type=float, help="calibration target (default: the active model's)")
    p.add_argument("--user", metavar="U", help="who starts it (recorded)")
    p.add_argument("--db", metavar="FILE", help=DB_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_retrain(args: argparse.Namespace) -> int:
    from core.retraining import DEFAULT_BUDGET_MIN, retrain
    from core.store import Store
    from core.training import TrainingCancelled

    bar = None
    if not args.quiet:
        from app.commands.train import ProgressBar

        bar = ProgressBar()

    def progress(p: dict) -> None:
        if "phase" in p:
            if not args.quiet:
                print(f"{p['phase']}...", file=sys.stderr, flush=True)
        elif bar is not None:
            bar(p)

    with Store(args.db) as store:
        try:
            result = retrain(
                store, user=args.user, budget_min=args.budget if args.budget is not None else DEFAULT_BUDGET_MIN,
                from_scratch=args.from_scratch, steps=args.steps, batch=args.batch, seed=args.seed,
                fpr=args.fpr, progress=progress,
            )
        except (ValueError, PermissionError) as exc:
            print(f"weldreview retrain: {exc}", file=sys.stderr)
            return 1
        except TrainingCancelled as exc:
            print(f"weldreview retrain: {exc}", file=sys.stderr)
            return 130
    thr = result.thresholds
    t = result.timings
    print(f"model {result.model_id}: {result.path} (sha256 {result.sha256[:12]}), parent "
          f"{(result.parent_sha256 or 'none')[:12]}, {len(result.entry_ids)} training entries; "
          f"calibrated FPR {thr.fpr_achieved:.4f} (target {thr.fpr_target:g}); "
          f"{t['total_s'] / 60:.1f} min ({t['train_s'] / 60:.1f} training). "
          f"Next: weldreview models qualify {result.model_id}")
    return 0


def run_from_train(args: argparse.Namespace) -> int:
    """``weldreview train --from-verdicts``: the same as ``retrain --from-verdicts`` with train's
    options (``--steps``, ``--batch``, ``--seed``, ``--lr``, ``--budget-min``, ``--quiet``)."""
    ns = argparse.Namespace(
        from_verdicts=True, budget=args.budget_min, from_scratch=False, steps=args.steps,
        batch=args.batch or 16, seed=args.seed, fpr=None, user=None, db=None, quiet=args.quiet,
    )
    return run_retrain(ns)
