"""photosearch entry point.

`python main.py` (or `photosearch`) with no arguments opens the desktop app;
`python main.py COMMAND ...` runs the command line. The command line is assembled here,
not in engine/, because its commands come from engine/ (library) and training/
(train, evaluate, compare-losses), and engine/ must not import training/.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from engine import cli as engine_cli
    from training import cli as training_cli

    parser = argparse.ArgumentParser(
        prog="photosearch",
        description="Offline natural-language photo search. With no command, opens the app.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    engine_cli.register(sub)
    training_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from desktop.app import run_app

        return run_app()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from engine.cli import dispatch

    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
