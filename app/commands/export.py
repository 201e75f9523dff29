"""``weldreview export``: placeholder, filled in by its issue."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="(not available yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    print("weldreview export: not available yet")
    return 1
