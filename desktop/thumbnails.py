"""Lazy thumbnail loading for the grid.

Workers in their own QThreadPool ask the engine for the cached thumbnail file and build a
QImage (QImage, unlike QPixmap, may be made off the GUI thread). The GUI thread turns it
into a QPixmap and keeps it in a small LRU cache. Only items the view actually paints are
requested; scrolling or a new result list drops the queued requests for items that went
out of sight, so 10,000 results cost no more than the ~50 visible ones.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtGui import QImage, QPixmap

from engine.imaging import ImageDecodeError, decode_image
from engine.library import Library

log = logging.getLogger(__name__)

# The engine's cache holds ~256 px JPEGs; we keep them at that size and let the delegate
# scale down, so the thumbnail size slider never needs a reload.
THUMB_PX = 256


def load_thumbnail_image(lib: Library, path: str, max_px: int = THUMB_PX) -> QImage | None:
    """Build the grid image for one photo (worker thread). None: nothing could be read."""
    thumb = None
    try:
        thumb = lib.thumbnail_path(path)
    except Exception:  # noqa: BLE001 - a missing cache entry only means "decode the original"
        log.debug("thumbnail_path failed for %s", path, exc_info=True)
    if thumb is not None and Path(thumb).is_file():
        img = QImage(str(thumb))
        if not img.isNull():
            return _fit(img, max_px)
    return _decode_original(path, max_px)


def decode_for_display(path: str, max_px: int) -> QImage | None:
    """A photo as a QImage at most `max_px` on its longer side (worker threads only).

    Goes through the engine's decoder so what the grid and the preview show matches what
    was indexed: EXIF orientation, CMYK/16-bit/alpha to RGB, JPEG draft mode."""
    try:
        image = decode_image(path, target_size=max_px).image
        image.thumbnail((max_px, max_px))
        return pil_to_qimage(image)
    except (ImageDecodeError, OSError):  # unreadable file: the placeholder says so
        log.debug("cannot decode %s", path, exc_info=True)
        return None


def _decode_original(path: str, max_px: int) -> QImage | None:
    # Slow path: the engine has not made a thumbnail (not indexed yet, or it failed).
    if not Path(path).is_file():
        return None
    return decode_for_display(path, max_px)


def pil_to_qimage(im: Image.Image) -> QImage:
    """Copy a PIL RGB image into a QImage that owns its pixels."""
    im = im.convert("RGB")
    data = im.tobytes("raw", "RGB")
    qimg = QImage(data, im.width, im.height, im.width * 3, QImage.Format.Format_RGB888)
    # QImage does not own `data`; copy before the bytes go away.
    return qimg.copy()


def _fit(img: QImage, max_px: int) -> QImage:
    if img.width() <= max_px and img.height() <= max_px:
        return img
    return img.scaled(
        max_px, max_px, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )


class _Signals(QObject):
    loaded = Signal(object)  # the finished _ThumbTask (path, generation, image)


class _ThumbTask(QRunnable):
    def __init__(self, loader: ThumbnailLoader, lib: Library, path: str, generation: int) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.loader = loader
        self.lib = lib
        self.path = path
        self.generation = generation
        self.image: QImage | None = None
        self.skipped = False

    def run(self) -> None:
        # A stale task (the view moved on) finishes at once: it never touches the disk.
        if self.loader.is_stale(self.generation):
            self.skipped = True
        else:
            self.image = load_thumbnail_image(self.lib, self.path)
        self.loader._signals.loaded.emit(self)


class ThumbnailLoader(QObject):
    """Requests, cancels and caches thumbnails. All public methods: GUI thread only."""

    thumbnail_ready = Signal(str)

    def __init__(self, parent: QObject | None = None, cache_size: int = 800, threads: int = 2) -> None:
        super().__init__(parent)
        self.lib: Library | None = None
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._cache: OrderedDict[str, QPixmap | None] = OrderedDict()
        self._cache_size = cache_size
        self._pending: dict[str, _ThumbTask] = {}
        # Every started task stays referenced here until it reports back: PySide must not
        # collect the Python side of a runnable that a worker thread is still running.
        self._live: set[_ThumbTask] = set()
        self._generation = 0
        self._gen_lock = threading.Lock()
        self._signals = _Signals()
        self._signals.loaded.connect(self._on_loaded, Qt.ConnectionType.QueuedConnection)

    def set_library(self, lib: Library) -> None:
        self.lib = lib
        self.clear()

    def is_stale(self, generation: int) -> bool:
        with self._gen_lock:
            return generation != self._generation

    def cached(self, path: str) -> tuple[bool, QPixmap | None]:
        """(known, pixmap): known with None pixmap means the photo cannot be shown."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return True, self._cache[path]
        return False, None

    def request(self, path: str) -> None:
        if self.lib is None or path in self._pending or path in self._cache:
            return
        with self._gen_lock:
            gen = self._generation
        task = _ThumbTask(self, self.lib, path, gen)
        self._pending[path] = task
        self._live.add(task)
        self.pool.start(task)

    def cancel_pending(self) -> None:
        """Forget queued requests (the visible items will ask again when they repaint)."""
        with self._gen_lock:
            self._generation += 1
        # Tasks not started yet are removed; running ones finish and report as stale.
        for task in list(self._pending.values()):
            if self.pool.tryTake(task):
                self._live.discard(task)
        self._pending.clear()

    def invalidate(self, paths: Iterable[str]) -> None:
        """Drop these photos (changed on disk, or indexed) so the next paint reloads them."""
        for path in paths:
            self._cache.pop(path, None)

    def clear(self) -> None:
        self.cancel_pending()
        self._cache.clear()

    def shutdown(self, timeout_ms: int = 3000) -> None:
        self.cancel_pending()
        self.pool.clear()
        self.pool.waitForDone(timeout_ms)

    def pending_count(self) -> int:
        return len(self._pending)

    def _on_loaded(self, task: _ThumbTask) -> None:
        self._live.discard(task)
        path, img = task.path, task.image
        if self._pending.get(path) is task:
            del self._pending[path]
        if task.skipped:
            # The view may have painted this item while the request was queued; tell it,
            # so a still-visible item repaints and asks again instead of staying grey.
            self.thumbnail_ready.emit(path)
            return
        # A finished load is kept even if it is stale: the work is done and the photo is
        # likely to scroll back into view.
        pix = QPixmap.fromImage(img) if img is not None and not img.isNull() else None
        self._cache[path] = pix
        self._cache.move_to_end(path)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        self.thumbnail_ready.emit(path)
