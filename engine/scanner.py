"""Finding photo files under a folder: extensions, hidden entries, symlink loops.

What is not indexed is either not a photo (a .txt, a hidden file: passed over quietly) or
a photo that cannot be read, which is reported as a `ScanSkip(path, reason)` through
`scan_folder(root, on_skip=...)` so that it lands in the failure list with the files that
failed to decode: a photo-named FIFO, device or socket, a broken link, a link loop, an
unsupported photo format (camera raw, JPEG XL, ...), a folder that cannot be listed.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from .imaging import PHOTO_LIKE_EXTENSIONS, SUPPORTED_EXTENSIONS, not_regular_file_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanEntry:
    path: str  # absolute, as reached from the folder (symlinked dirs are not resolved)
    size: int
    mtime_ns: int


class ScanSkip(NamedTuple):
    """A photo (or a folder of them) that the scan could not pass on, and why."""

    path: str
    reason: str


SkipFn = Callable[[ScanSkip], None]


def is_photo_name(name: str) -> bool:
    if name.startswith("."):
        return False
    return os.path.splitext(name)[1].lower() in SUPPORTED_EXTENSIONS


def looks_like_photo_name(name: str) -> bool:
    """A name a user would take for a photo, readable by photosearch or not."""
    if name.startswith("."):
        return False
    ext = os.path.splitext(name)[1].lower()
    return ext in SUPPORTED_EXTENSIONS or ext in PHOTO_LIKE_EXTENSIONS


def unsupported_reason(name: str) -> str | None:
    """'unsupported format (.cr2)' for a photo-like name photosearch cannot decode."""
    ext = os.path.splitext(name)[1].lower()
    if name.startswith(".") or ext not in PHOTO_LIKE_EXTENSIONS:
        return None
    return f"unsupported format ({ext})"


def is_hidden_path(path: str, root: str) -> bool:
    """True if any component of `path` below `root` is hidden (dotfile or dot-dir)."""
    rel = os.path.relpath(path, root)
    return any(part.startswith(".") for part in rel.split(os.sep) if part not in ("", "."))


def scan_folder(root: str | os.PathLike[str], on_skip: SkipFn | None = None) -> Iterator[ScanEntry]:
    """Yield every photo under `root`, following directory symlinks at most once each.

    Photos that cannot be indexed are passed to `on_skip` (see the module docstring);
    files that vanish mid-walk are not (they are gone, not broken). A missing `root`
    yields nothing - callers check that first.
    """
    root = os.path.abspath(os.fspath(root))
    skip = on_skip or _log_skip
    seen_dirs: dict[str, str] = {}  # real path -> the path it was first reached by
    stack = [root]
    while stack:
        directory = stack.pop()
        real = os.path.realpath(directory)
        if real in seen_dirs:
            if _is_within(os.path.realpath(os.path.dirname(directory)), real):
                skip(ScanSkip(directory, f"symbolic link loop (back to {seen_dirs[real]})"))
            else:  # the same tree linked twice: its photos are listed once, under the first
                log.debug("%s: same folder as %s, scanned once", directory, seen_dirs[real])
            continue
        seen_dirs[real] = directory
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # vanished mid-walk, or a missing root
                continue
            skip(ScanSkip(directory, f"cannot list folder ({exc.strerror or exc})"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(entry.path)
                    continue
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                reason = _stat_error_reason(entry, exc)
                if reason:
                    skip(ScanSkip(entry.path, reason))
                continue
            if not looks_like_photo_name(entry.name):
                continue
            if not stat.S_ISREG(st.st_mode):
                skip(ScanSkip(entry.path, not_regular_file_reason(st.st_mode)))
                continue
            reason = unsupported_reason(entry.name)
            if reason:
                skip(ScanSkip(entry.path, reason))
                continue
            yield ScanEntry(entry.path, st.st_size, st.st_mtime_ns)


def _stat_error_reason(entry: os.DirEntry[str], exc: OSError) -> str | None:
    if exc.errno == errno.ELOOP:  # a link that leads back to itself: always a mistake
        return "symbolic link loop"
    if not looks_like_photo_name(entry.name):
        return None
    if exc.errno == errno.ENOENT:
        if entry.is_symlink() and os.path.lexists(entry.path):
            return "broken symbolic link (its target is missing)"
        return None  # vanished during the scan
    if exc.errno == errno.EACCES:
        return "permission denied"
    return f"cannot read file information ({exc.strerror or exc})"


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _log_skip(skipped: ScanSkip) -> None:
    log.debug("skipping %s: %s", skipped.path, skipped.reason)
