"""Defaults and paths: the one place that reads photosearch's environment variables.

Everything a user or a test can point elsewhere lives here, so the command line, the app and
the benchmarks agree on where the library is and which model to load.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "photosearch"

ASSETS_DIR = Path(__file__).parent / "assets"
DEFAULT_CHECKPOINT = ASSETS_DIR / "default_model.pt"
CAPTION_BANK = ASSETS_DIR / "caption_bank.txt"

# PHOTOSEARCH_LIBRARY: where the library lives when --library is not given (CLI and app).
LIBRARY_ENV = "PHOTOSEARCH_LIBRARY"
# PHOTOSEARCH_EMBEDDER=fake: the model-free FakeEmbedder, a hook for tests and benchmarks only.
EMBEDDER_ENV = "PHOTOSEARCH_EMBEDDER"
# PHOTOSEARCH_DEBUG=1: debug logging in the app.
DEBUG_ENV = "PHOTOSEARCH_DEBUG"

# Used when a model states no calibrated threshold of its own. Inner products of unit vectors:
# for VSE-style models a relevant photo typically scores 0.3-0.6 against its query and
# unrelated ones 0.0-0.2, so 0.2 flags only queries with nothing like them.
DEFAULT_WEAK_MATCH_THRESHOLD = 0.2


def default_library_dir() -> Path:
    """$PHOTOSEARCH_LIBRARY, else the per-user data dir (~/.local/share/photosearch/library)."""
    env = os.environ.get(LIBRARY_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME)) / "library"


def user_cache_dir() -> Path:
    """Derived files that can be rebuilt at any time (exported inference graphs, ...)."""
    return Path(platformdirs.user_cache_dir(APP_NAME))


def embedder_override() -> str:
    """The value of $PHOTOSEARCH_EMBEDDER, lower-cased ('' when unset)."""
    return os.environ.get(EMBEDDER_ENV, "").strip().lower()
