"""Finding photo files under a folder: extensions, hidden entries, symlink loops."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from .imaging import SUPPORTED_EXTENSIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanEntry:
    path: str  # absolute, as reached from the folder (symlinked dirs are not resolved)
    size: int
    mtime_ns: int


def is_photo_name(name: str) -> bool:
    if name.startswith("."):
        return False
    return os.path.splitext(name)[1].lower() in SUPPORTED_EXTENSIONS


def is_hidden_path(path: str, root: str) -> bool:
    """True if any component of `path` below `root` is hidden (dotfile or dot-dir)."""
    rel = os.path.relpath(path, root)
    return any(part.startswith(".") for part in rel.split(os.sep) if part not in ("", "."))


def scan_folder(root: str | os.PathLike[str]) -> Iterator[ScanEntry]:
    """Yield every photo under `root`, following directory symlinks at most once each.

    Dangling links, unreadable directories and files that vanish mid-walk are skipped
    (logged at debug level); a missing `root` yields nothing - callers check that first.
    """
    root = os.path.abspath(os.fspath(root))
    seen_dirs: set[str] = set()
    stack = [root]
    while stack:
        directory = stack.pop()
        real = os.path.realpath(directory)
        if real in seen_dirs:
            continue  # symlink loop or the same tree reached twice
        seen_dirs.add(real)
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            log.debug("cannot list %s: %s", directory, exc)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(entry.path)
                    continue
                if not is_photo_name(entry.name) or not entry.is_file(follow_symlinks=True):
                    continue
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:  # dangling link, vanished, permission
                log.debug("skipping %s: %s", entry.path, exc)
                continue
            yield ScanEntry(entry.path, st.st_size, st.st_mtime_ns)
