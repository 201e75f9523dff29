"""``weldreview audit``: verify the tamper-evident trail, print it, manage users (headless)."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "audit",
        help="verify or print the audit trail; add and list users",
        description="The audit trail records every event (users, models, scans, verdicts, "
        "overrules, exports) in a hash chain; `verify` finds the first edited, deleted or "
        "reordered row.",
    )
    db_help = "the database (default: the one in the weldreview home directory)"
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    verify = sub.add_parser("verify", help="check the whole chain; exit 1 naming the first "
                            "broken row")
    verify.add_argument("--db", metavar="FILE", help=db_help)
    verify.add_argument(
        "--anchor", metavar="ID:HASH",
        help="a row id and hash noted earlier (printed by verify, recorded by exports): "
        "catches rows removed from the end or a rewritten chain")

    log = sub.add_parser("log", help="print the trail, oldest first")
    log.add_argument("--db", metavar="FILE", help=db_help)
    log.add_argument("--user", metavar="U", help="only events by this user")
    log.add_argument("--since", metavar="DATE", help="only events on or after this ISO date")
    log.add_argument("--until", metavar="DATE", help="only events up to this ISO date (inclusive)")
    log.add_argument("--event", metavar="EVENT", help="only this kind of event, e.g. 'overrule'")

    users = sub.add_parser("users", help="add or list users")
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = users_sub.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", choices=("interpreter", "supervisor"), required=True)
    add.add_argument("--by", metavar="U", help="the supervisor adding this user (recorded)")
    add.add_argument("--db", metavar="FILE", help=db_help)
    listing = users_sub.add_parser("list", help="list users and their roles")
    listing.add_argument("--db", metavar="FILE", help=db_help)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.audit_command == "verify":
        return _verify(args)
    from core.store import Store

    adding = args.audit_command == "users" and args.users_command == "add"
    if args.db and not adding and not _exists(args.db):
        print(f"weldreview: error: {args.db}: no such database file")
        return 1
    with Store(args.db) as store:
        if args.audit_command == "log":
            return _log(store, args)
        if args.users_command == "add":
            try:
                user = store.add_user(args.name, role=args.role, by=args.by)
            except ValueError as exc:
                print(f"weldreview: error: {exc}")
                return 1
            print(f"added {user.name} ({user.role})")
            return 0
        for user in store.users():
            print(f"{user.name}\t{user.role}")
        return 0


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_file()


def _verify(args) -> int:
    from pathlib import Path

    from core.audit import verify_chain
    from core.paths import database_path

    path = Path(args.db) if args.db else database_path()
    anchor = None
    if args.anchor:
        row, _, digest = args.anchor.partition(":")
        if not row.isdigit() or len(digest) != 64:
            print("weldreview: error: --anchor takes ROW:HASH, e.g. 42:3fa1...(64 hex digits)")
            return 2
        anchor = (int(row), digest)
    report = verify_chain(path, anchor=anchor)
    if report.ok:
        print(f"OK {path}: {report.message}")
        if report.head_id is not None:
            print(f"head: {report.head_id}:{report.head_hash}")
        return 0
    where = f" (first broken row: {report.first_broken_id})" if report.first_broken_id else ""
    print(f"BROKEN {path}: {report.message}{where}")
    return 1


def _log(store, args) -> int:
    rows = store.audit_log(user=args.user, since=args.since, until=args.until, event=args.event)
    for row in rows:
        details = json.dumps(row["details"], sort_keys=True, ensure_ascii=False)
        print(f"{row['id']:>6}  {row['time']}  {row['user'] or '-':<12}  {row['event']:<16}  "
              f"{details}")
    print(f"{len(rows)} event(s)")
    return 0
