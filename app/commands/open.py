"""``weldreview open``: start the review application on radiographs or a folder."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "open",
        help="open the review application on radiographs or a folder (the default command)",
        description="Open the review application. Without paths, it opens empty; "
        "with --demo, on the bundled demo radiographs and the default model.",
    )
    p.add_argument("paths", nargs="*", help="radiographs (TIFF, PNG, DICONDE) or a folder of them")
    p.add_argument("--demo", action="store_true", help="open the bundled demo radiographs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.main import start_gui

    return start_gui(list(args.paths), demo=args.demo)
