"""``weldreview train``: placeholder, filled in by its issue."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="(not available yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    print("weldreview train: not available yet")
    return 1
