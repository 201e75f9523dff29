"""``weldreview scan``: placeholder, filled in by its issue."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("scan", help="(not available yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    print("weldreview scan: not available yet")
    return 1
