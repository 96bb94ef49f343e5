"""Watching library folders and reporting changed paths, debounced.

`FolderWatcher(folders, on_change, debounce_s)` runs a watchdog observer per folder
(inotify/FSEvents/...; a `PollingObserver` when the native one cannot start, e.g. inotify
watch limits or network shares) and calls `on_change(paths)` on its own thread once no new
event has arrived for `debounce_s` - so a camera import of 500 files becomes one call.
The callback usually is `library.index_paths` (the CLI's `watch`) or a relay to a GUI job.
Moves report both the old and the new path, which lets the indexer re-point the row
instead of re-embedding. The caller runs a reconcile pass (`library.index()`) at start,
covering whatever changed while nothing was watching.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

DEFAULT_DEBOUNCE_S = 1.0
POLL_INTERVAL_S = 2.0


class _Handler(FileSystemEventHandler):
    def __init__(self, sink: Callable[[Iterable[str]], None]) -> None:
        self._sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (including our own decoding) are not changes
        paths = [os.fsdecode(event.src_path)]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(os.fsdecode(dest))
        self._sink(paths)


class FolderWatcher:
    def __init__(
        self,
        folders: Iterable[Path | str],
        on_change: Callable[[list[Path]], object],
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        force_polling: bool = False,
    ) -> None:
        self.folders = [Path(f) for f in folders]
        self.on_change = on_change
        self.debounce_s = debounce_s
        self.force_polling = force_polling
        self._observers: list[Observer] = []
        self._pending: set[str] = set()
        self._cond = threading.Condition()
        self._last_event = 0.0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        handler = _Handler(self._add)
        for folder in self.folders:
            if not folder.is_dir():
                log.warning("not watching %s: folder is missing", folder)
                continue
            self._observers.append(self._start_observer(folder, handler))
        self._thread = threading.Thread(target=self._debounce_loop, name="ps-watch", daemon=True)
        self._thread.start()

    def _start_observer(self, folder: Path, handler: _Handler) -> Observer:
        if not self.force_polling:
            observer = Observer()
            try:
                observer.schedule(handler, str(folder), recursive=True)
                observer.start()
                return observer
            except Exception as exc:  # noqa: BLE001 - any native failure -> polling
                log.warning("native watcher failed for %s (%s); polling instead", folder, exc)
                try:
                    observer.stop()
                except Exception:  # noqa: BLE001
                    pass
        observer = PollingObserver(timeout=POLL_INTERVAL_S)
        observer.schedule(handler, str(folder), recursive=True)
        observer.start()
        return observer

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for observer in self._observers:
            observer.stop()
        for observer in self._observers:
            observer.join(timeout=5)
        self._observers.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FolderWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- debouncing --------------------------------------------------------------------

    def _add(self, paths: Iterable[str]) -> None:
        with self._cond:
            self._pending.update(paths)
            self._last_event = time.monotonic()
            self._cond.notify_all()

    def _debounce_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                quiet_for = time.monotonic() - self._last_event
                if quiet_for < self.debounce_s:
                    self._cond.wait(self.debounce_s - quiet_for)
                    continue
                batch = sorted(self._pending)
                self._pending.clear()
            try:
                self.on_change([Path(p) for p in batch])
            except Exception:  # noqa: BLE001 - the watcher must outlive one failed pass
                log.exception("handling %d changed paths failed", len(batch))
