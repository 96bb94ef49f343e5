"""The photosearch command line: one parser, one dispatcher.

`cli.library` holds the library commands (index, search, ...), `cli.training` the one training
parser (train, evaluate, compare-losses). `main(argv)` is callable from tests.
"""

from __future__ import annotations

import argparse
import logging
import sys

from engine.errors import PhotosearchError


def build_parser() -> argparse.ArgumentParser:
    from cli import library, training

    parser = argparse.ArgumentParser(
        prog="photosearch",
        description="Offline natural-language photo search. With no command, opens the app.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    library.register(sub)
    training.register(sub)
    return parser


def dispatch(args: argparse.Namespace) -> int:
    """Run a parsed command: user errors become one line on stderr, never a traceback."""
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except PhotosearchError as exc:
        print(f"photosearch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("photosearch: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """`photosearch COMMAND ...`; with no command, the desktop app."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from desktop.system_libs import missing_libraries_message

        problem = missing_libraries_message()
        if problem:
            print(problem, file=sys.stderr)
            return 2
        from desktop.app import run_app

        return run_app()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return dispatch(args)
