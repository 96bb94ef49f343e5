"""Bridge from the engine's folder watcher (watchdog threads) to the GUI thread.

The engine's `FolderWatcher` calls back on its own thread with the paths that changed
(already debounced). We only re-emit them as a Qt signal; the session turns them into an
index task, so indexing still happens in a worker and never in the watcher thread.

Starting a watcher walks the folder tree (inotify adds a watch per directory, polling takes
a first snapshot) and stopping one joins threads, so both happen on a helper thread: the
GUI thread never waits on the disk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal

from engine.watcher import DEFAULT_DEBOUNCE_S, FolderWatcher

log = logging.getLogger(__name__)


class _Relay(QObject):
    changed = Signal(list)


def _stop_quietly(watcher: FolderWatcher) -> None:
    try:
        watcher.stop()
    except Exception:  # noqa: BLE001 - quitting or re-watching must not fail on this
        log.exception("stopping the folder watcher failed")


class WatchBridge(QObject):
    """Owns one engine watcher; `paths_changed(list[str])` arrives on the GUI thread."""

    paths_changed = Signal(list)

    def __init__(self, parent: QObject | None = None, debounce_s: float = DEFAULT_DEBOUNCE_S) -> None:
        super().__init__(parent)
        self.debounce_s = debounce_s
        self._folders: list[str] | None = None
        # Guards the watcher and generation, which helper threads set while starting one.
        self._lock = threading.Lock()
        self._watcher: FolderWatcher | None = None
        self._generation = 0
        self._closed = False
        self._helpers: list[threading.Thread] = []
        # The relay is emitted from watcher threads; the queued connection lands the paths
        # on the thread this bridge lives on (the GUI thread).
        self._relay = _Relay()
        self._relay.changed.connect(self.paths_changed.emit, Qt.ConnectionType.QueuedConnection)

    def _on_change(self, paths: Iterable[Path], generation: int) -> None:
        # Runs on a watcher thread: no Qt widgets here, only the signal.
        with self._lock:
            if generation != self._generation or self._closed:
                return  # a replaced watcher that had not stopped yet
        out = sorted({str(p) for p in paths})
        if out:
            log.debug("watcher: %d changed paths", len(out))
            self._relay.changed.emit(out)

    def set_folders(self, folders: Iterable[str]) -> None:
        """Watch exactly these folders (the old watcher is replaced off the GUI thread)."""
        wanted = sorted(set(folders))
        if wanted == self._folders:
            return
        self._folders = wanted
        with self._lock:
            if self._closed:
                return
            self._generation += 1
            generation = self._generation
            old, self._watcher = self._watcher, None
        helper = threading.Thread(
            target=self._replace, args=(old, wanted, generation), name="ps-watch-start", daemon=True
        )
        self._helpers = [t for t in self._helpers if t.is_alive()] + [helper]
        helper.start()

    def _replace(self, old: FolderWatcher | None, folders: list[str], generation: int) -> None:
        # Helper thread.
        if old is not None:
            _stop_quietly(old)
        if not folders:
            return
        watcher = FolderWatcher(
            [Path(f) for f in folders],
            lambda paths: self._on_change(paths, generation),
            debounce_s=self.debounce_s,
        )
        try:
            watcher.start()
        except Exception:  # noqa: BLE001 - without a watcher the app still works (restart rescans)
            log.exception("could not start the folder watcher")
            _stop_quietly(watcher)
            return
        with self._lock:
            if generation == self._generation and not self._closed:
                self._watcher = watcher
                return
        _stop_quietly(watcher)  # superseded (or quitting) while it started

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop watching for good and wait for the helper threads (quitting only)."""
        with self._lock:
            self._closed = True
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            _stop_quietly(watcher)
        for helper in self._helpers:
            helper.join(timeout_s)
        self._helpers.clear()
