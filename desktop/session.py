"""`LibrarySession`: the app's one owner of the library and of everything that runs on it.

It opens the `Library` (the model loads in a worker while the window is already up), owns
the task runner and the folder watcher, and does all the scheduling, so the window only
renders what the signals carry:

* one indexing pass at a time; watcher paths queue behind it, and a wanted full reconcile
  supersedes the queued paths;
* a model switch pauses indexing (both write vectors) and resumes it afterwards;
* every search gets a generation, and answers to older ones are dropped; an empty query
  browses the library (newest first), page by page as the grid asks for more;
* while indexing, the current search is re-run at most every `REQUERY_INTERVAL_MS`, so new
  photos show up without the grid jumping on every batch;
* captions: a model that ships its caption-bank vectors answers at once; otherwise the bank
  is embedded once, after the first full pass (never competing with it) or when the panel
  asks first, and the panel's request waits on that one preparation and shows its progress;
* near-duplicate groups are fetched after opening and after every indexing pass;
* status refreshes after every pass, folder change and re-query.

Threading rule: no `Library` method runs on the GUI thread. Every call is a task
(desktop/tasks.py) whose result comes back as a callback there, so the GUI thread never
waits on the model, the disk or SQLite. Signals carry plain data: engine dataclasses,
lists and strings.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from PySide6.QtCore import QObject, QTimer, Signal

from desktop.tasks import Task, TaskRunner
from desktop.watch import WatchBridge
from engine.embedder import Embedder
from engine.errors import ModelMismatchError
from engine.library import (
    FolderInfo,
    IndexProgress,
    IndexReport,
    Library,
    LibraryStatus,
    PhotoHit,
    SearchResult,
)

log = logging.getLogger(__name__)

# `factory(checkpoint)` loads a model, "" being the shipped default: `load_embedder` in the
# app, a FakeEmbedder maker in tests.
EmbedderFactory = Callable[[str], Embedder]

TOP_K = 1000
# Browse pages: a screenful is ~50 tiles; one page keeps a fast scroll ahead of the view.
BROWSE_PAGE = 400
REQUERY_INTERVAL_MS = 1500
# A watcher batch smaller than this is indexed without a progress bar or status message.
QUIET_BATCH = 20


@dataclass(frozen=True)
class SearchRequest:
    """What the grid asks for: photos matching a text (refined from `like_photo` if set),
    photos similar to one photo, or (`browse`) the whole library newest first."""

    kind: Literal["text", "similar", "browse"]
    query: str  # the text, the photo's path, or "" to browse
    top_k: int = TOP_K
    folder: str | None = None
    date_from: datetime | None = None
    date_to: datetime | None = None
    like_photo: str | None = None
    sort: Literal["relevance", "date"] = "relevance"


@dataclass(frozen=True)
class BrowsePage:
    """The first rows of the library under the filters, and how many there are in all."""

    total: int
    hits: list[PhotoHit]


@dataclass(frozen=True, eq=False)
class IndexRun:
    """One indexing pass: a full reconcile (`paths` None) or the watcher's changed paths.

    Compared by identity: a finished pass's callbacks are matched to the current one."""

    paths: tuple[str, ...] | None = None

    @property
    def full(self) -> bool:
        return self.paths is None

    @property
    def quiet(self) -> bool:
        """A handful of changed files: not worth a progress bar."""
        return self.paths is not None and len(self.paths) < QUIET_BATCH


# -- the work itself (worker threads) ------------------------------------------------------


def open_library(
    task: Task[tuple[Library, bool]], library_dir: Path, make_embedder: Callable[[], Embedder],
    rerank: bool | None = None,
) -> tuple[Library, bool]:
    """Load the model (slow: seconds) and open the library; True when it must re-embed.
    `rerank`: attention re-ranking on or off (None: the engine's default)."""
    embedder = make_embedder()
    task.raise_if_cancelled()
    try:
        return Library.open(library_dir, embedder, rerank=rerank), False
    except ModelMismatchError as exc:
        # The photos were embedded by another model (e.g. the shipped model was updated).
        # The app cannot ask which checkpoint that was, so it adopts the current one and the
        # start-up reconcile re-embeds; the old vectors stay stored.
        log.warning("%s; re-embedding with the current model", exc)
        return Library.open(library_dir, embedder, reembed=True, rerank=rerank), True


def index_pass(task: Task[IndexReport], library: Library, run: IndexRun) -> IndexReport:
    def progress(p: IndexProgress) -> None:
        # The engine checks `cancel` between batches; raising here would skip its
        # per-batch commit, so progress is only forwarded.
        task.report(p, force=p.done >= p.total)

    if run.paths is None:
        return library.index(progress=progress, cancel=task.cancel)
    return library.index_paths([Path(p) for p in run.paths], progress=progress, cancel=task.cancel)


def run_search(library: Library, request: SearchRequest) -> SearchResult:
    if request.kind == "similar":
        return library.similar_photos(request.query, top_k=request.top_k, sort=request.sort)
    # Search-as-you-type: half-typed queries must not become caption suggestions.
    return library.search_text(
        request.query,
        top_k=request.top_k,
        folder=request.folder,
        date_from=request.date_from,
        date_to=request.date_to,
        remember=False,
        sort=request.sort,
        like_photo=request.like_photo,
    )


def browse_first_page(library: Library, request: SearchRequest, limit: int) -> BrowsePage:
    filters = {"folder": request.folder, "date_from": request.date_from, "date_to": request.date_to}
    hits = library.browse(0, limit, **filters)
    # Counted after the page, so a page longer than the count (photos added in between)
    # still shows; the model takes the larger.
    return BrowsePage(library.count_photos(**filters), hits)


def browse_page(library: Library, request: SearchRequest, offset: int, limit: int) -> list[PhotoHit]:
    return library.browse(
        offset, limit, folder=request.folder, date_from=request.date_from, date_to=request.date_to
    )


def prepare_bank(task: Task[bool], library: Library) -> bool:
    """Make the caption bank's vectors ready (nothing to do when the model ships them).

    Embedding chunk by chunk keeps it cancellable (quitting must not wait a minute) and
    lets the panel and the status bar show progress (whole percents). True: work was done."""
    if library.caption_bank_ready():
        return False

    def progress(fraction: float) -> None:
        task.raise_if_cancelled()  # stops the engine at the next chunk
        task.report(int(100 * fraction), force=fraction >= 1.0)

    library.prepare_caption_bank(progress=progress)
    return True


def switch_model(
    task: Task[str], library: Library, make_embedder: Callable[[], Embedder]
) -> str:
    """Load another checkpoint and re-embed every photo; searches keep the old model."""
    embedder = make_embedder()
    task.raise_if_cancelled()
    library.switch_model(
        embedder, progress=lambda p: task.report(p, force=p.done >= p.total), cancel=task.cancel
    )
    task.raise_if_cancelled()
    return embedder.model_id


# -- the session (GUI thread) --------------------------------------------------------------


class LibrarySession(QObject):
    """All public methods and every signal: GUI thread. Call `open()` once signals are
    connected, `shutdown()` when quitting."""

    opened = Signal(bool)  # True: the model changed, every photo is being re-read
    open_failed = Signal(str)
    status_changed = Signal(object)  # LibraryStatus
    folders_changed = Signal(object)  # list[FolderInfo]
    folders_needed = Signal()  # the first status of a library without folders
    folder_failed = Signal(str, str, str)  # verb ("add"/"remove"), path, message
    files_changed = Signal(object)  # list[str] about to be re-indexed: cached pictures are stale
    index_started = Signal(object)  # IndexRun
    index_progress = Signal(object, object)  # IndexRun, IndexProgress
    index_finished = Signal(object, object)  # IndexRun, IndexReport
    index_failed = Signal(object, str)  # IndexRun, message
    # SearchRequest, SearchResult, refresh (a re-run of the same search: keep the view)
    results_ready = Signal(object, object, bool)
    # SearchRequest (kind "browse"), BrowsePage, refresh
    browse_ready = Signal(object, object, bool)
    browse_page_ready = Signal(object, int, object)  # SearchRequest, offset, list[PhotoHit]
    search_failed = Signal(str)
    duplicates_ready = Signal(object)  # list[tuple[str, ...]]: paths, representative first
    caption_bank_progress = Signal(int)  # percent (the background preparation)
    caption_bank_done = Signal(bool)  # True: it was prepared now (not shipped with the model)
    captions_progress = Signal(str, int)  # path, percent of the bank prepared
    captions_ready = Signal(str, object)  # path, list[CaptionHit]
    captions_failed = Signal(str, str)  # path, message
    failures_ready = Signal(object)  # list[(path, reason)]
    model_switch_started = Signal()
    model_switch_progress = Signal(object)  # IndexProgress
    model_switched = Signal(str, str)  # checkpoint, model id
    model_switch_failed = Signal(str)

    def __init__(
        self,
        library_dir: Path,
        embedder_factory: EmbedderFactory,
        watch: bool = True,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.library_dir = Path(library_dir)
        self.embedder_factory = embedder_factory
        self.watch_enabled = watch
        self.runner = TaskRunner(self)
        self.library: Library | None = None
        self.model_id: str | None = None
        self.photo_count = 0
        self.folders: list[FolderInfo] = []
        self.last_request: SearchRequest | None = None
        self.last_result: SearchResult | None = None
        self._closed = False
        # Committed queries wait here for a worker to store them. A caption lookup stores them
        # first, so a query the user just entered is among the suggestions; the list lock is
        # held only to swap the list (the GUI thread takes it), the write lock over the writes.
        self._to_remember: list[str] = []
        self._remember_list_lock = threading.Lock()
        self._remember_write_lock = threading.Lock()
        self._watch: WatchBridge | None = None
        self._index_run: IndexRun | None = None
        self._index_task: Task[IndexReport] | None = None
        self._last_index_done = 0
        self._full_index_wanted = False
        self._pending_paths: set[str] = set()
        self._switch_task: Task[str] | None = None
        self._search_generation = 0
        self._duplicates_generation = 0
        self._passes_started = 0
        self._search_when_open = False
        self._captions_prepared = False  # the after-first-pass preparation was started
        self._bank_ready = False
        self._bank_task: Task[bool] | None = None
        self._captions_wanted: tuple[str, int] | None = None  # path, top_k
        self._loaded_rows = 0  # browse rows the grid holds (a refresh re-reads them all)
        self._requery = QTimer(self)
        self._requery.setSingleShot(True)
        self._requery.setInterval(REQUERY_INTERVAL_MS)
        self._requery.timeout.connect(self.refresh)

    def _live(self, callback: Callable[..., None]) -> Callable[..., None]:
        """`callback`, except that it does nothing once the session is shut down."""

        def call(*args: Any) -> None:
            if not self._closed:
                callback(*args)

        return call

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, checkpoint: str, rerank: bool | None = None) -> None:
        factory = self.embedder_factory
        self.runner.run_task(
            "open-library",
            lambda task: open_library(task, self.library_dir, lambda: factory(checkpoint), rerank),
            on_result=self._on_opened,
            on_error=self._live(self.open_failed.emit),
        )

    def _on_opened(self, opened: tuple[Library, bool]) -> None:
        library, reembedding = opened
        if self._closed:
            library.close()
            return
        self.library = library
        self.model_id = library.embedder.model_id
        self.opened.emit(reembedding)
        self._request_status(first=True)
        self._check_bank()
        self.request_duplicates()
        if self._search_when_open:
            self._search_when_open = False
            if self.last_request is not None:
                self._run_search(self.last_request, refresh=False)

    def shutdown(self, timeout_ms: int = 15000) -> None:
        """Cancel every task, wait for the workers, close the library. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._requery.stop()
        if self._watch is not None:
            self._watch.stop()
        self.runner.shutdown(timeout_ms)
        # A library opened while we were shutting down never reached _on_opened.
        for task in self.runner.active("open-library"):
            if task.result is not None and task.result[0] is not self.library:
                task.result[0].close()
        if self.library is not None:
            try:
                self.library.close()
            except Exception:  # noqa: BLE001 - quitting must not fail
                log.exception("closing the library failed")
            self.library = None

    # -- status and folders ----------------------------------------------------------------

    def refresh_status(self) -> None:
        self._request_status(first=False)

    def _request_status(self, first: bool) -> None:
        library = self.library
        if library is None or self._closed:
            return
        self.runner.run_task(
            "status",
            lambda _task: library.status(),
            on_result=self._live(lambda status: self._on_status(status, first)),
        )

    def _on_status(self, status: LibraryStatus, first: bool) -> None:
        self.photo_count = status.photo_count
        self._set_folders(status.folders)
        if first and status.folders:
            self._start_watcher()
            # The start-up reconcile, unless a pass already began (a folder added before
            # this first status answered): a second full pass would only repeat it.
            if not self._passes_started:
                self.start_index()
        self.status_changed.emit(status)
        if first and not status.folders:
            self.folders_needed.emit()

    def refresh(self) -> None:
        """Status, and the current search again so new photos show up (keeping the view)."""
        if self._closed or self.library is None:
            return
        self.refresh_status()
        if self.last_request is not None:
            self._run_search(self.last_request, refresh=True)

    def _set_folders(self, folders: list[FolderInfo]) -> None:
        self.folders = list(folders)
        self.folders_changed.emit(self.folders)
        if self._watch is not None:
            self._watch.set_folders(f.path for f in self.folders)

    def _start_watcher(self) -> None:
        if not self.watch_enabled or self._watch is not None or self.library is None:
            return
        self._watch = WatchBridge(self)
        self._watch.paths_changed.connect(self.index_changed_paths)
        self._watch.set_folders(f.path for f in self.folders)

    def add_folder(self, path: str) -> None:
        library = self.library
        if library is None:
            return

        def add(_task: Task[list[FolderInfo]]) -> list[FolderInfo]:
            library.add_folder(Path(path))
            return library.folders()

        self.runner.run_task(
            "add-folder",
            add,
            on_result=self._live(self._on_folder_added),
            on_error=self._live(lambda message: self.folder_failed.emit("add", path, message)),
        )

    def _on_folder_added(self, folders: list[FolderInfo]) -> None:
        self._set_folders(folders)
        self._start_watcher()
        self.start_index()

    def remove_folder(self, path: str) -> None:
        library = self.library
        if library is None:
            return
        if self._index_task is not None:
            # Removing waits for the running indexing pass (the engine serialises them);
            # stop it so the folder goes away now, then reconcile what is left.
            self._index_task.cancel.set()
            self._full_index_wanted = True

        def remove(_task: Task[list[FolderInfo]]) -> list[FolderInfo]:
            library.remove_folder(Path(path))
            return library.folders()

        self.runner.run_task(
            "remove-folder",
            remove,
            on_result=self._live(self._on_folder_removed),
            on_error=self._live(lambda message: self.folder_failed.emit("remove", path, message)),
        )

    def _on_folder_removed(self, folders: list[FolderInfo]) -> None:
        self._set_folders(folders)
        self.refresh()

    def request_failures(self) -> None:
        library = self.library
        if library is not None:
            self.runner.run_task(
                "failures",
                lambda _task: library.failures(),
                on_result=self._live(self.failures_ready.emit),
            )

    # -- indexing --------------------------------------------------------------------------

    def is_indexing(self) -> bool:
        return self._index_run is not None

    def is_switching_model(self) -> bool:
        return self._switch_task is not None

    def start_index(self) -> None:
        """Full reconcile of every folder, in the background; queued if a pass is running."""
        if self.library is None:
            return
        if self._index_run is not None or self._switch_task is not None:
            self._full_index_wanted = True
            return
        self._run_index(IndexRun())

    def index_changed_paths(self, paths: list[str]) -> None:
        """Reconcile these created, changed, moved or deleted paths (the watcher's report):
        at once if nothing else runs, else in one pass after it."""
        self._pending_paths.update(paths)
        if self._index_run is None and self._switch_task is None and self.library is not None:
            self._run_pending_paths()

    def _run_pending_paths(self) -> None:
        paths, self._pending_paths = sorted(self._pending_paths), set()
        self.files_changed.emit(paths)
        self._run_index(IndexRun(tuple(paths)))

    def _run_index(self, run: IndexRun) -> None:
        library = self.library
        assert library is not None
        self._index_run = run
        self._passes_started += 1
        self._last_index_done = 0
        self.index_started.emit(run)
        self._index_task = self.runner.run_task(
            "index",
            lambda task: index_pass(task, library, run),
            on_result=lambda report: self._on_index_finished(run, report),
            on_error=lambda message: self._on_index_failed(run, message),
            on_progress=self._live(lambda p: self._on_index_progress(run, p)),
        )

    def _on_index_progress(self, run: IndexRun, progress: IndexProgress) -> None:
        if run is not self._index_run:
            return
        self.index_progress.emit(run, progress)
        if progress.done > self._last_index_done:
            self._last_index_done = progress.done
            # New photos are searchable now; show them, but not on every batch.
            if not self._requery.isActive():
                self._requery.start()

    def _on_index_finished(self, run: IndexRun, report: IndexReport) -> None:
        if run is not self._index_run:
            return
        self._index_run = self._index_task = None
        if self._closed:
            return
        self.index_finished.emit(run, report)
        self.refresh()
        # After every pass: the engine answers from memory when the library did not change,
        # and a pass that found nothing new may follow one whose groups were taken mid-way.
        self.request_duplicates()
        self._next_index_work()
        if run.full and self._index_run is None and not self._captions_prepared:
            # After the first full pass, so it never competes with indexing for the CPU.
            self._captions_prepared = True
            self._prepare_captions()

    def _on_index_failed(self, run: IndexRun, message: str) -> None:
        if run is not self._index_run:
            return
        self._index_run = self._index_task = None
        if self._closed:
            return
        self.index_failed.emit(run, message)
        self._next_index_work()

    def _next_index_work(self) -> None:
        if self._closed or self.library is None or self._switch_task is not None:
            return
        if self._full_index_wanted:
            self._full_index_wanted = False
            self._pending_paths.clear()  # a full reconcile covers them
            self._run_index(IndexRun())
        elif self._pending_paths:
            self._run_pending_paths()

    # -- searching -------------------------------------------------------------------------

    def search(self, request: SearchRequest) -> None:
        """Answers come as `results_ready` (`browse_ready` for kind "browse"); one typed
        while the model loads runs once the library is open."""
        self._loaded_rows = 0
        self._run_search(request, refresh=False)

    def _run_search(self, request: SearchRequest, refresh: bool) -> None:
        self.last_request = request
        library = self.library
        if library is None:
            self._search_when_open = True
            return
        self._search_generation += 1
        generation = self._search_generation
        if request.kind == "browse":
            # A refresh re-reads every row the grid holds, so the view can stay where it is.
            limit = max(BROWSE_PAGE, self._loaded_rows if refresh else 0)
            self.runner.run_task(
                "browse",
                lambda _task: browse_first_page(library, request, limit),
                on_result=self._live(
                    lambda page: self._on_browse_done(generation, request, page, refresh)
                ),
                on_error=self._live(lambda message: self._on_search_failed(generation, message)),
            )
            return
        self.runner.run_task(
            "search",
            lambda _task: run_search(library, request),
            on_result=self._live(
                lambda result: self._on_search_done(generation, request, result, refresh)
            ),
            on_error=self._live(lambda message: self._on_search_failed(generation, message)),
        )

    def _on_search_done(
        self, generation: int, request: SearchRequest, result: SearchResult, refresh: bool
    ) -> None:
        if generation != self._search_generation:
            return  # an older query answered late
        self.last_result = result
        self.results_ready.emit(request, result, refresh)

    def _on_browse_done(
        self, generation: int, request: SearchRequest, page: BrowsePage, refresh: bool
    ) -> None:
        if generation != self._search_generation:
            return
        self.last_result = None
        self._loaded_rows = len(page.hits)
        self.browse_ready.emit(request, page, refresh)

    def fetch_browse_page(self, offset: int) -> None:
        """The grid scrolled near the end of the rows it holds: load the next page (the
        answer comes as `browse_page_ready`, and is dropped if the list changed since)."""
        library, request = self.library, self.last_request
        if library is None or request is None or request.kind != "browse" or self._closed:
            return
        generation = self._search_generation
        self.runner.run_task(
            "browse-page",
            lambda _task: browse_page(library, request, offset, BROWSE_PAGE),
            on_result=self._live(
                lambda hits: self._on_browse_page(generation, request, offset, hits)
            ),
            on_error=self._live(lambda message: self._on_search_failed(generation, message)),
        )

    def _on_browse_page(
        self, generation: int, request: SearchRequest, offset: int, hits: list[PhotoHit]
    ) -> None:
        if generation != self._search_generation:
            return
        self._loaded_rows = max(self._loaded_rows, offset + len(hits))
        self.browse_page_ready.emit(request, offset, hits)

    def _on_search_failed(self, generation: int, message: str) -> None:
        if generation == self._search_generation:
            self.search_failed.emit(message)

    def remember_query(self, query: str) -> None:
        """Only queries the user committed to (Enter, or acting on a result) become caption
        suggestions; search-as-you-type would otherwise store every half-typed prefix."""
        library = self.library
        if query and library is not None:
            with self._remember_list_lock:
                self._to_remember.append(query)
            self.runner.run_task("remember-query", lambda _task: self._store_remembered(library))

    def _store_remembered(self, library: Library) -> None:
        """Worker side: store every committed query not stored yet (in the order entered)."""
        with self._remember_write_lock:
            with self._remember_list_lock:
                queries, self._to_remember = self._to_remember, []
            for query in queries:
                library.remember_query(query)

    # -- near-duplicates -------------------------------------------------------------------

    def request_duplicates(self) -> None:
        library = self.library
        if library is None or self._closed:
            return
        self._duplicates_generation += 1
        generation = self._duplicates_generation

        def answered(groups: list[tuple[str, ...]]) -> None:
            # Two requests may overlap (passes in a row); only the newest answer counts.
            if generation == self._duplicates_generation:
                self.duplicates_ready.emit(groups)

        self.runner.run_task(
            "duplicates",
            lambda _task: [tuple(g.paths) for g in library.duplicate_groups()],
            on_result=self._live(answered),
        )

    # -- captions --------------------------------------------------------------------------

    def find_captions(self, path: str, top_k: int = 10) -> None:
        """Captions for `path` as `captions_ready`. With the bank's vectors ready this is
        one lookup; otherwise it waits for the one preparation (started now if it is not
        running yet) and shows that preparation's progress as `captions_progress`."""
        library = self.library
        if library is None:
            return
        if not self._bank_ready:
            self._captions_wanted = (path, top_k)
            self._prepare_bank()
            return
        self._lookup_captions(path, top_k)

    def _lookup_captions(self, path: str, top_k: int) -> None:
        library = self.library
        if library is None:
            return
        def lookup(_task: Task[Any]) -> Any:
            self._store_remembered(library)
            return library.similar_captions(path, top_k=top_k)

        self.runner.run_task(
            "captions",
            lookup,
            on_result=self._live(lambda hits: self.captions_ready.emit(path, hits)),
            on_error=self._live(lambda message: self.captions_failed.emit(path, message)),
        )

    def _check_bank(self) -> None:
        """Is the bank ready (shipped with the model, or prepared on an earlier run)?"""
        library = self.library
        if library is None:
            return
        self.runner.run_task(
            "caption-bank-ready",
            lambda _task: library.caption_bank_ready(),
            on_result=self._live(self._on_bank_checked),
        )

    def _on_bank_checked(self, ready: bool) -> None:
        if ready and self._bank_task is None:
            self._bank_ready = True

    def _prepare_bank(self) -> None:
        """Embed the model's caption bank once, in the background, unless it is ready or
        being prepared; stops between chunks on cancel."""
        library = self.library
        if library is None or self._bank_ready or self._bank_task is not None:
            return
        self._bank_task = self.runner.run_task(
            "prepare-captions",
            lambda task: prepare_bank(task, library),
            on_result=self._live(self._on_bank_prepared),
            on_error=self._live(self._on_bank_failed),
            on_progress=self._live(self._on_bank_progress),
        )

    def _on_bank_progress(self, percent: int) -> None:
        self.caption_bank_progress.emit(percent)
        if self._captions_wanted is not None:
            self.captions_progress.emit(self._captions_wanted[0], percent)

    def _on_bank_prepared(self, worked: bool) -> None:
        self._bank_task = None
        self._bank_ready = True
        self.caption_bank_done.emit(worked)
        wanted, self._captions_wanted = self._captions_wanted, None
        if wanted is not None:
            self._lookup_captions(*wanted)

    def _on_bank_failed(self, message: str) -> None:
        self._bank_task = None
        wanted, self._captions_wanted = self._captions_wanted, None
        self.caption_bank_done.emit(False)
        if wanted is not None:
            self.captions_failed.emit(wanted[0], message)

    def _prepare_captions(self) -> None:
        """Ahead of time, so the first "Find similar captions" answers at once."""
        self._prepare_bank()

    # -- model switch ----------------------------------------------------------------------

    def switch_model(self, checkpoint: str) -> None:
        """Re-embed the library with another checkpoint in the background."""
        library = self.library
        if library is None or self._switch_task is not None:
            return
        if self._index_task is not None:
            # Re-embedding and indexing both write vectors; indexing resumes afterwards.
            self._index_task.cancel.set()
            self._full_index_wanted = True
        factory = self.embedder_factory
        self.model_switch_started.emit()
        self._switch_task = self.runner.run_task(
            "switch-model",
            lambda task: switch_model(task, library, lambda: factory(checkpoint)),
            on_result=lambda model_id: self._on_model_switched(checkpoint, model_id),
            on_error=self._on_switch_failed,
            on_progress=self._live(self.model_switch_progress.emit),
        )

    def _on_model_switched(self, checkpoint: str, model_id: str) -> None:
        self._switch_task = None
        if self._closed:
            return
        self.model_id = model_id
        self.model_switched.emit(checkpoint, model_id)
        if self.last_request is not None:
            self._run_search(self.last_request, refresh=False)
        self._next_index_work()
        self.request_duplicates()
        # The new model needs its own bank vectors.
        self._bank_ready = False
        self._prepare_captions()

    def _on_switch_failed(self, message: str) -> None:
        self._switch_task = None
        if self._closed:
            return
        self.model_switch_failed.emit(message)
        self._next_index_work()
