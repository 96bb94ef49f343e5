"""photosearch entry point: `python main.py` opens the app, `python main.py COMMAND` runs the CLI."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from engine.cli import run_cli

    return run_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
