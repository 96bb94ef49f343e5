"""photosearch entry point: `python main.py` opens the app, `python main.py COMMAND` runs the CLI."""

from __future__ import annotations

import sys

from cli import main

if __name__ == "__main__":
    sys.exit(main())
