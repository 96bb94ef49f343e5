"""Bridge from the engine's folder watcher (watchdog threads) to the GUI thread.

The engine's `FolderWatcher` calls back on its own thread with the paths that changed
(already debounced). We only re-emit them as a Qt signal; the window turns them into an
`IndexJob(paths)`, so indexing still happens in a worker and never in the watcher thread.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal

log = logging.getLogger(__name__)


class _Relay(QObject):
    changed = Signal(list)


class WatchBridge(QObject):
    """Owns one engine watcher; `paths_changed(list[str])` arrives on the GUI thread."""

    paths_changed = Signal(list)

    def __init__(self, parent: QObject | None = None, debounce_s: float = 1.0) -> None:
        super().__init__(parent)
        self.debounce_s = debounce_s
        self._watcher: Any = None
        self._folders: list[str] = []
        # The relay is emitted from watcher threads; the queued connection lands the paths
        # on the thread this bridge lives on (the GUI thread).
        self._relay = _Relay()
        self._relay.changed.connect(self.paths_changed.emit, Qt.ConnectionType.QueuedConnection)

    def _on_change(self, paths: Iterable[Any]) -> None:
        # Runs on a watcher thread: no Qt widgets here, only the signal.
        out = sorted({str(p) for p in paths})
        if out:
            log.debug("watcher: %d changed paths", len(out))
            self._relay.changed.emit(out)

    def set_folders(self, folders: list[str]) -> None:
        folders = sorted(set(folders))
        if folders == self._folders and self._watcher is not None:
            return
        self._folders = folders
        # Joining watchdog threads can take a moment; the GUI thread must not wait on it.
        self.stop(wait=False)
        if not folders:
            return
        try:
            self._watcher = _make_watcher([Path(f) for f in folders], self._on_change, self.debounce_s)
        except Exception:  # noqa: BLE001 - without a watcher the app still works (manual rescan)
            log.exception("could not start the folder watcher")
            self._watcher = None

    def stop(self, wait: bool = True) -> None:
        """Stop watching. `wait=False` joins the watchdog threads off the GUI thread."""
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return

        def _stop() -> None:
            try:
                watcher.stop()
            except Exception:  # noqa: BLE001
                log.exception("stopping the folder watcher failed")

        if wait:
            _stop()
        else:
            threading.Thread(target=_stop, name="ps-watch-stop", daemon=True).start()


def _make_watcher(folders: list[Path], callback: Any, debounce_s: float) -> Any:
    from engine.watcher import FolderWatcher

    params = inspect.signature(FolderWatcher).parameters
    kwargs: dict[str, Any] = {}
    for name in ("debounce_s", "debounce"):
        if name in params:
            kwargs[name] = debounce_s
    watcher = FolderWatcher(folders, callback, **kwargs)
    start = getattr(watcher, "start", None)
    if callable(start):
        start()
    return watcher
