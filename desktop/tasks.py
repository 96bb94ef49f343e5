"""Background work: `TaskRunner.run_task` runs a callable on a thread pool and delivers its
result, error and progress to callbacks on the GUI thread (Picard's `run_task`).

The callable receives its `Task`, through which it reports progress (throttled) and sees
cancellation. Callbacks are relayed through a QObject that lives on the GUI thread with a
queued connection, so they always run there whichever thread finished the work. Payloads
are plain data (engine dataclasses, lists, strings, QImage), never widgets or QPixmaps.

The runner keeps a Python reference to every live task (PySide would otherwise let a
running QRunnable's wrapper be collected) and cancels and waits for them all on quit.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot

from engine.errors import PhotosearchError

log = logging.getLogger(__name__)

T = TypeVar("T")
# The indexer may call back once per photo; a queued callback per photo floods the event
# loop on a big first index, so progress is passed on at most this often.
PROGRESS_INTERVAL_S = 0.1


class TaskCancelled(Exception):
    """Raised inside a task once its cancel event is set; ends it without a callback."""


class _Relay(QObject):
    """Lives on the GUI thread; `deliver` emitted from any thread calls back on it."""

    deliver = Signal(object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.deliver.connect(self._call, Qt.ConnectionType.QueuedConnection)

    @Slot(object, object)
    def _call(self, callback: Callable[[Any], None], payload: Any) -> None:
        callback(payload)


class Task(QRunnable, Generic[T]):
    """One run of `fn(task)`; made by `TaskRunner.run_task`."""

    def __init__(
        self,
        name: str,
        fn: Callable[[Task[T]], T],
        relay: _Relay,
        on_result: Callable[[T], None] | None,
        on_error: Callable[[str], None] | None,
        on_progress: Callable[[Any], None] | None,
        on_done: Callable[[Task[T]], None],
    ) -> None:
        super().__init__()
        # The runner keeps the reference; Qt must not delete the runnable under PySide.
        self.setAutoDelete(False)
        self.name = name
        self.cancel = threading.Event()
        self.result: T | None = None
        self.error: str | None = None
        self._fn = fn
        self._relay = relay
        self._on_result = on_result
        self._on_error = on_error
        self._on_progress = on_progress
        self._on_done = on_done
        self._last_progress = 0.0

    def raise_if_cancelled(self) -> None:
        if self.cancel.is_set():
            raise TaskCancelled()

    def report(self, payload: Any, force: bool = False) -> None:
        """Progress for `on_progress`; dropped if the last one was under 0.1 s ago, unless
        `force` (a final 'done' must always arrive)."""
        if self._on_progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_INTERVAL_S:
            self._last_progress = now
            self._send(self._on_progress, payload)

    def run(self) -> None:
        # No check of `cancel` before starting: `fn` decides what cancelling means (an index
        # pass still returns its report, which the session needs to schedule the next one).
        try:
            self.result = self._fn(self)
            if self._on_result is not None:
                self._send(self._on_result, self.result)
        except TaskCancelled:
            log.debug("%s cancelled", self.name)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the GUI as text
            self.error = str(exc) or type(exc).__name__
            if not isinstance(exc, PhotosearchError):
                log.error("%s failed:\n%s", self.name, traceback.format_exc())
            if self._on_error is not None:
                self._send(self._on_error, self.error)
        finally:
            self._send(lambda _none: self._on_done(self), None)

    def _send(self, callback: Callable[[Any], None], payload: Any) -> None:
        try:
            self._relay.deliver.emit(callback, payload)
        except RuntimeError:
            # The GUI side was torn down at exit while this task finished.
            log.debug("%s finished after the window was closed", self.name)


class TaskRunner(QObject):
    """Owns the worker pool and every live task, so quitting can cancel and wait for all."""

    def __init__(self, parent: QObject | None = None, max_threads: int = 4) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        # Index, model switch, search and small queries may all be in flight at once; each
        # is mostly waiting on numpy/torch/SQLite, which release the GIL.
        self.pool.setMaxThreadCount(max_threads)
        self._relay = _Relay(self)
        self._tasks: set[Task[Any]] = set()
        self._lock = threading.Lock()

    def run_task(
        self,
        name: str,
        fn: Callable[[Task[T]], T],
        on_result: Callable[[T], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_progress: Callable[[Any], None] | None = None,
    ) -> Task[T]:
        """Run `fn(task)` on the pool; the callbacks run on the GUI thread. A cancelled task
        (`task.cancel` set, and `fn` raising `TaskCancelled`) calls none of them."""
        task: Task[T] = Task(name, fn, self._relay, on_result, on_error, on_progress, self._forget)
        with self._lock:
            self._tasks.add(task)
        self.pool.start(task)
        return task

    def _forget(self, task: Task[Any]) -> None:
        with self._lock:
            self._tasks.discard(task)

    def active(self, name: str | None = None) -> list[Task[Any]]:
        with self._lock:
            return [t for t in self._tasks if name is None or t.name == name]

    def cancel_all(self) -> None:
        for task in self.active():
            task.cancel.set()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel everything and wait; True if every worker stopped in time."""
        self.cancel_all()
        self.pool.clear()  # tasks not started yet are dropped outright
        ok = self.pool.waitForDone(timeout_ms)
        if not ok:
            log.warning("background tasks still running after %d ms", timeout_ms)
        return ok
