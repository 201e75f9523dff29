"""``weldreview audit``: placeholder, filled in by its issue."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("audit", help="(not available yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    print("weldreview audit: not available yet")
    return 1
