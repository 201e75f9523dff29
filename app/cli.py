"""The ``weldreview`` command: the GUI without arguments, headless work in sub-commands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from app.commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weldreview",
        description="Review weld radiographs: an out-of-distribution autoencoder accepts what "
        "looks like accepted weld and queues only the rest for a human verdict. Without a "
        "sub-command the review application opens.",
    )
    parser.add_argument("--version", action="version", version="weldreview 0.1.0")
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="directory for the database and trained models "
        "(default: $WELDREVIEW_HOME, else the per-user data directory)",
    )
    parser.add_argument(
        "--demo", action="store_true", help="open the application on the bundled demo radiographs"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"app.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # TensorFlow's C++ start-up chatter (CUDA probing on CPU-only machines) is not for users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.home:
        os.environ["WELDREVIEW_HOME"] = os.path.abspath(os.path.expanduser(args.home))
    try:
        if args.command is None:
            from app.main import start_gui

            return start_gui([], demo=args.demo)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("weldreview: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into a message
        from core.errors import WeldreviewError

        if isinstance(exc, (WeldreviewError, OSError)):
            print(f"weldreview: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
