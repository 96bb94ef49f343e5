"""Background jobs: every call into the engine runs here, never on the GUI thread.

Each job is a QRunnable with a small QObject of signals. The signals object is created on
the GUI thread, so a signal emitted from the worker is queued and its slots run on the GUI
thread. Payloads are plain data (engine dataclasses, lists, strings), never Qt widgets.

`JobRunner` owns the thread pools, keeps a Python reference to every live job (PySide would
otherwise let a running QRunnable's wrapper be collected) and cancels them all on quit.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from engine.embedder import Embedder, load_embedder

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a job when its cancel event is set; not reported as an error."""


class JobSignals(QObject):
    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str)
    # Emitted last, whatever happened, so the runner can drop its reference.
    done = Signal()


class Job(QRunnable):
    """Base class: subclasses implement `work()`; `report()` sends progress to the GUI."""

    name = "job"
    # Progress signals are throttled: the indexer may call back once per photo and a queued
    # signal per photo floods the event loop on a big first index.
    progress_interval_s = 0.1

    def __init__(self) -> None:
        super().__init__()
        # We keep our own reference (JobRunner) instead of letting Qt delete the runnable.
        self.setAutoDelete(False)
        self.signals = JobSignals()
        self.cancel = threading.Event()
        self._last_progress = 0.0
        self.result: Any = None
        self.error: str | None = None

    def work(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def report(self, payload: Any, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= self.progress_interval_s:
            self._last_progress = now
            self.signals.progress.emit(payload)

    def run(self) -> None:
        try:
            if self.cancel.is_set():
                raise JobCancelled()
            self.result = self.work()
            self.signals.finished.emit(self.result)
        except JobCancelled:
            log.debug("%s cancelled", self.name)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the GUI as text
            self.error = str(exc) or type(exc).__name__
            if not _is_user_error(exc):
                log.error("%s failed:\n%s", self.name, traceback.format_exc())
            self.signals.failed.emit(self.error)
        finally:
            try:
                self.signals.done.emit()
            except RuntimeError:
                # The receiver side was torn down at exit while this job finished.
                log.debug("%s finished after its signals were deleted", self.name)


def _is_user_error(exc: BaseException) -> bool:
    try:
        from engine.errors import PhotosearchError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, PhotosearchError)


class FunctionJob(Job):
    """Runs one callable; for the small one-off library calls (folders, failures, ...)."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.name = name
        self._fn = fn

    def work(self) -> Any:
        return self._fn()


def make_embedder(checkpoint: str | None = None) -> Embedder:
    """The model named by settings (None or '' = the shipped default)."""
    return load_embedder(checkpoint or None)


class OpenLibraryJob(Job):
    """Loads the model (slow: seconds) and opens the library; the window is already up."""

    name = "open-library"

    def __init__(self, library_dir: Path, embedder_factory: Callable[[], Any]) -> None:
        super().__init__()
        self.library_dir = library_dir
        self.embedder_factory = embedder_factory
        self.reembedding = False

    def work(self) -> Any:
        from engine.library import Library

        embedder = self.embedder_factory()
        if self.cancel.is_set():
            raise JobCancelled()
        self.library_dir.mkdir(parents=True, exist_ok=True)
        from engine.errors import ModelMismatchError

        try:
            return Library.open(self.library_dir, embedder)
        except ModelMismatchError as exc:
            # The photos were embedded by another model (e.g. the shipped model was
            # updated). The app cannot ask which checkpoint that was, so it adopts the
            # current one and the start-up reconcile re-embeds; old vectors stay stored.
            log.warning("%s; re-embedding with the current model", exc)
            self.reembedding = True
            return Library.open(self.library_dir, embedder, reembed=True)


class IndexJob(Job):
    """Full reconcile (`paths is None`) or the watcher's incremental path list."""

    name = "index"

    def __init__(self, lib: Any, paths: Iterable[Path] | None = None) -> None:
        super().__init__()
        self.lib = lib
        self.paths = None if paths is None else [Path(p) for p in paths]

    def work(self) -> Any:
        def progress(p: Any) -> None:
            # The engine checks `cancel` between batches; raising here would skip its
            # per-batch commit, so we only forward progress.
            self.report(p, force=p.done >= p.total)

        if self.paths is None:
            return self.lib.index(progress=progress, cancel=self.cancel)
        return self.lib.index_paths(self.paths, progress=progress, cancel=self.cancel)


@dataclass
class SearchRequest:
    """What the grid asked for; `generation` lets the window drop answers to old queries."""

    generation: int
    kind: str  # "text" or "similar"
    query: str
    top_k: int = 1000
    folder: str | None = None
    date_from: datetime | None = None
    date_to: datetime | None = None


class SearchJob(Job):
    name = "search"

    def __init__(self, lib: Any, request: SearchRequest) -> None:
        super().__init__()
        self.lib = lib
        self.request = request

    def work(self) -> Any:
        r = self.request
        if r.kind == "similar":
            result = self.lib.similar_photos(r.query, top_k=r.top_k)
        else:
            result = self.lib.search_text(
                r.query, top_k=r.top_k, folder=r.folder, date_from=r.date_from,
                date_to=r.date_to, remember=False,
            )
        return (r, result)


class CaptionsJob(Job):
    name = "captions"

    def __init__(self, lib: Any, path: str, top_k: int = 10) -> None:
        super().__init__()
        self.lib = lib
        self.path = path
        self.top_k = top_k

    def work(self) -> Any:
        # Embedding the bank first, chunk by chunk, keeps a first-time request cancellable
        # (quit must not wait a minute) and lets the panel show progress.
        def progress(done: int, total: int) -> None:
            if self.cancel.is_set():
                raise JobCancelled()
            self.report((self.path, done, total), force=done >= total)

        self.lib.prepare_captions(progress=progress)
        return (self.path, self.lib.similar_captions(self.path, top_k=self.top_k))


class PrepareCaptionsJob(Job):
    """Embeds the model's caption bank ahead of time, so the first "Find similar captions"
    answers at once instead of after a minute of CPU; stops between chunks on cancel."""

    name = "prepare-captions"

    def __init__(self, lib: Any) -> None:
        super().__init__()
        self.lib = lib

    def work(self) -> Any:
        def progress(done: int, total: int) -> None:
            if self.cancel.is_set():
                raise JobCancelled()
            self.report((done, total), force=done >= total)

        return self.lib.prepare_captions(progress=progress)


class StatusJob(Job):
    """Everything the status bar, filters and welcome panel need, in one trip to SQLite."""

    name = "status"

    def __init__(self, lib: Any) -> None:
        super().__init__()
        self.lib = lib

    def work(self) -> Any:
        return {"status": self.lib.status(), "folders": self.lib.folders()}


class SwitchModelJob(Job):
    """Loads another checkpoint and re-embeds every photo; searches keep using the old model."""

    name = "switch-model"

    def __init__(self, lib: Any, embedder_factory: Callable[[], Any]) -> None:
        super().__init__()
        self.lib = lib
        self.embedder_factory = embedder_factory

    def work(self) -> Any:
        embedder = self.embedder_factory()
        if self.cancel.is_set():
            raise JobCancelled()
        self.lib.switch_model(
            embedder, progress=lambda p: self.report(p, force=p.done >= p.total), cancel=self.cancel
        )
        if self.cancel.is_set():
            raise JobCancelled()
        return embedder.model_id


class JobRunner(QObject):
    """Owns the worker pool and every live job, so quitting can cancel and wait for all."""

    def __init__(self, parent: QObject | None = None, max_threads: int = 4) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        # Index, model switch, search and small queries may all be in flight at once; each
        # is mostly waiting on numpy/torch/SQLite which release the GIL.
        self.pool.setMaxThreadCount(max_threads)
        self._jobs: set[Job] = set()
        self._lock = threading.Lock()

    def submit(
        self,
        job: Job,
        on_finished: Callable[[Any], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
        on_progress: Callable[[Any], None] | None = None,
    ) -> Job:
        if on_finished is not None:
            job.signals.finished.connect(on_finished)
        if on_failed is not None:
            job.signals.failed.connect(on_failed)
        if on_progress is not None:
            job.signals.progress.connect(on_progress)
        job.signals.done.connect(lambda j=job: self._forget(j))
        with self._lock:
            self._jobs.add(job)
        self.pool.start(job)
        return job

    def _forget(self, job: Job) -> None:
        with self._lock:
            self._jobs.discard(job)

    def active(self, name: str | None = None) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs if name is None or j.name == name]

    def cancel_all(self) -> None:
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.cancel.set()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel everything and wait; True if every worker stopped in time."""
        self.cancel_all()
        # Jobs not started yet are dropped outright.
        self.pool.clear()
        ok = self.pool.waitForDone(timeout_ms)
        if not ok:
            log.warning("background jobs still running after %d ms", timeout_ms)
        return ok
