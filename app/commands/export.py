"""``weldreview export``: all decisions as CSV, or one radiograph's report as PDF (headless)."""

from __future__ import annotations

import argparse
import os


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export all decisions as CSV or a radiograph's report as PDF",
        description="Exports are recorded in the audit trail with the sha256 of the file "
        "written.",
    )
    p.add_argument("--db", metavar="FILE",
                   help="the database (default: the one in the weldreview home directory)")
    p.add_argument("--csv", metavar="OUT", help="write every decision to this CSV file")
    p.add_argument("--pdf", metavar="OUT", help="write the report of --radiograph to this PDF")
    p.add_argument("--radiograph", metavar="ID|PATH",
                   help="the radiograph of the PDF report: its id, file path or sha256")
    p.add_argument("--user", metavar="U", help="who exports (recorded in the audit trail)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.csv and not args.pdf:
        print("weldreview: error: give --csv OUT and/or --pdf OUT --radiograph ID|PATH")
        return 2
    if args.pdf and not args.radiograph:
        print("weldreview: error: --pdf needs --radiograph ID|PATH")
        return 2
    if args.db and not os.path.isfile(args.db):
        print(f"weldreview: error: {args.db}: no such database file")
        return 1
    from core.store import Store

    with Store(args.db) as store:
        if args.user:
            store.user(args.user)
        if args.csv:
            from core.export import export_csv

            result = export_csv(store, args.csv, user=args.user)
            print(f"wrote {result.rows} decisions to {result.path} (sha256 {result.sha256})")
        if args.pdf:
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
            from app.report import write_report

            try:
                radiograph = store.radiograph(args.radiograph)
            except ValueError as exc:
                print(f"weldreview: error: {exc}")
                return 1
            result = write_report(store, radiograph["id"], args.pdf, user=args.user)
            print(f"wrote the report of radiograph {radiograph['id']} ({result.rows} verdicts) "
                  f"to {result.path} (sha256 {result.sha256})")
    return 0
