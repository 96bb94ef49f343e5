"""The photosearch command line: one parser, one dispatcher.

`cli.library` holds the library commands (index, search, ...), `cli.training` the one training
parser (train, evaluate, compare-losses). `main(argv)` is callable from tests.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from engine.errors import PhotosearchError

# Python hands over the bytes of a file name (or argument) that are not UTF-8 as lone
# surrogates (U+DC80..U+DCFF: PEP 383); no strict encoder accepts them.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: object) -> str:
    """`text` safe to print under any locale: each byte of a name that is not UTF-8 shown
    as a \\xff escape (what `ls -b` and Python's repr show), never a UnicodeEncodeError
    and never the raw byte, which a terminal garbles."""
    return _LONE_SURROGATE.sub(_escape_surrogate, str(text))


def _escape_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def _safe_streams() -> None:
    """Characters the locale cannot encode (say 'é' under LANG=C with PYTHONIOENCODING=ascii)
    print as escapes instead of aborting the command half-way."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a closed or detached stream: leave it
                pass


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
        print(f"photosearch: error: {printable(exc)}", file=sys.stderr)
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
    _safe_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return dispatch(args)
