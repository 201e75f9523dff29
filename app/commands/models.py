"""``weldreview models``: model versions (list, qualify, activate, rollback) and the training set.

``models qualify ID`` compares a retrained candidate with the active model on held-back data
(TPR per set at the calibrated thresholds, the achieved FPR, Clopper-Pearson intervals);
``models activate ID --user SUPERVISOR`` activates it when it qualified (or with
``--justification``); ``models rollback --user SUPERVISOR`` activates the previous version;
``models entries`` / ``models exclude`` show and prune the training set made from verdicts.
"""

from __future__ import annotations

import argparse
import sys

from app.commands.retrain import DB_HELP


def add_parser(subparsers) -> None:
    m = subparsers.add_parser(
        "models", help="model versions: list, qualify, activate, rollback; the training set",
        description="Model versions with their provenance and qualification; activation and "
        "rollback by a supervisor; the training set made from verdicts.",
    )
    sub = m.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="every version: active, parent, training entries, qualification")
    ls.add_argument("--db", metavar="FILE", help=DB_HELP)
    q = sub.add_parser("qualify", help="compare a candidate with the active model on held-back data")
    q.add_argument("id", type=int, help="the candidate's model id (see `models list`)")
    q.add_argument("--user", metavar="U", help="who runs it (recorded)")
    q.add_argument("--n-okay", type=int, default=1000, help="held-back okay patches (default 1000)")
    q.add_argument("--n-synthetic", type=int, default=100, help="patches per synthetic type (default 100)")
    q.add_argument("--db", metavar="FILE", help=DB_HELP)
    a = sub.add_parser("activate", help="activate a version (supervisor; qualified or justified)")
    a.add_argument("id", type=int)
    a.add_argument("--user", metavar="U", required=True, help="the supervisor")
    a.add_argument("--justification", metavar="TEXT", help="needed when it did not qualify")
    a.add_argument("--db", metavar="FILE", help=DB_HELP)
    r = sub.add_parser("rollback", help="activate the previously active version (supervisor)")
    r.add_argument("--user", metavar="U", required=True, help="the supervisor")
    r.add_argument("--to", type=int, metavar="ID", help="a particular earlier version")
    r.add_argument("--justification", metavar="TEXT", help="why (recorded)")
    r.add_argument("--db", metavar="FILE", help=DB_HELP)
    e = sub.add_parser("entries", help="the training set made from verdicts")
    e.add_argument("--db", metavar="FILE", help=DB_HELP)
    x = sub.add_parser("exclude", help="exclude a training entry from future training (supervisor)")
    x.add_argument("entry", type=int)
    x.add_argument("--user", metavar="U", required=True)
    x.add_argument("--reason", metavar="TEXT", required=True)
    x.add_argument("--include", action="store_true", help="include it again instead")
    x.add_argument("--db", metavar="FILE", help=DB_HELP)
    m.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    from core.store import Store

    with Store(args.db) as store:
        try:
            return _MODELS[args.models_command](store, args)
        except (ValueError, PermissionError) as exc:
            print(f"weldreview models: {exc}", file=sys.stderr)
            return 1


def _list(store, args) -> int:
    from core.retraining import versions

    rows = versions(store)
    if not rows:
        print("no models registered")
    for v in rows:
        q = v["qualification"]
        qual = "not qualified" if q is None else ("qualified" if q["passed"] else "FAILED qualification")
        print(f"{'*' if v['active'] else ' '} {v['id']:>3}  {v['name'] or '-':<36} {v['sha256'][:12]}  "
              f"parent {(v['parent'] or '-')[:12]:<12}  entries {len(v['entry_ids']):>4}  {qual}")
    return 0


def _qualify(store, args) -> int:
    from core.qualification import qualify

    q = qualify(store, args.id, user=args.user, n_okay=args.n_okay, n_synthetic=args.n_synthetic)
    print(f"{'set':<30} {'n':>5}  {'candidate':>20}  {'active':>20}")
    for name, n, rate, ci, rrate, rci, worse in q.table():
        ref = "-" if rrate is None else f"{rrate:.3f} [{rci[0]:.3f}, {rci[1]:.3f}]"
        print(f"{name:<30} {n:>5}  {rate:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]  {ref:>20}{'  WORSE' if worse else ''}")
    print(f"{'PASSED' if q.passed else 'FAILED'}: {q.reason} (qualification {q.id})")
    return 0 if q.passed else 3


def _activate(store, args) -> int:
    from core.retraining import activate

    aid = activate(store, args.id, user=args.user, justification=args.justification)
    print(f"model {args.id} is active (activation {aid})")
    return 0


def _rollback(store, args) -> int:
    from core.retraining import rollback

    rollback(store, user=args.user, to=args.to, justification=args.justification)
    print(f"rolled back: model {store.active_model()['id']} is active")
    return 0


def _entries(store, args) -> int:
    from core import training_set as ts

    rows = ts.entries(store)
    if not rows:
        print("the training set is empty")
    for e in rows:
        state = f"EXCLUDED ({e.exclusion_reason})" if e.excluded else ""
        print(f"{e.id:>5}  {e.kind:<7} {e.split:<8} verdict {e.verdict_id:>5}  radiograph {e.radiograph_id:>4}  "
              f"bbox {list(e.bbox)}  {e.source:<26} {e.n_pixels:>6} px  {state}")
    return 0


def _exclude(store, args) -> int:
    from core import training_set as ts

    ts.set_excluded(store, args.entry, not args.include, user=args.user, reason=args.reason)
    print(f"training entry {args.entry} {'included' if args.include else 'excluded'}")
    return 0


_MODELS = {"list": _list, "qualify": _qualify, "activate": _activate, "rollback": _rollback,
           "entries": _entries, "exclude": _exclude}
