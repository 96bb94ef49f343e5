"""The main window: search box, filters, result grid, preview, captions panel, status bar.

Threading rule: this module never calls a `Library` method directly. Every call is a job
(desktop/jobs.py) whose result comes back as a queued signal, so the GUI thread never waits
on the model, the disk or SQLite.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime, time
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QDate,
    QEvent,
    QItemSelectionModel,
    QModelIndex,
    QProcess,
    QSettings,
    QSize,
    Qt,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDesktopServices,
    QGuiApplication,
    QKeyEvent,
    QKeySequence,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDateEdit,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop import settings_dialog as sd
from desktop.captions_panel import CaptionsPanel
from desktop.failures_dialog import FailuresDialog
from desktop.folders_dialog import FoldersDialog
from desktop.jobs import (
    CaptionsJob,
    FunctionJob,
    IndexJob,
    JobRunner,
    OpenLibraryJob,
    PrepareCaptionsJob,
    SearchJob,
    SearchRequest,
    StatusJob,
    SwitchModelJob,
    make_embedder,
)
from desktop.photo_grid_model import PathRole, PhotoDelegate, PhotoGridModel
from desktop.preview import PreviewPane
from desktop.thumbnails import ThumbnailLoader
from desktop.watch import WatchBridge
from desktop.welcome import WelcomePanel

log = logging.getLogger(__name__)

SEARCH_DEBOUNCE_MS = 250
# While indexing, the current query is re-run at most this often so new photos show up
# without the grid jumping on every batch.
REQUERY_INTERVAL_MS = 1500
TOP_K = 1000


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    if seconds < 45:
        return "less than a minute left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {max(1, minutes)} min left"
    h, m = divmod(minutes, 60)
    return f"about {h} h {m} min left" if m else f"about {h} h left"


def format_progress(done: int, total: int, eta_s: float | None) -> str:
    text = f"{done:,} / {total:,} photos"
    eta = format_eta(eta_s)
    return f"{text}, {eta}" if eta else text


class PhotoGridView(QListView):
    """Icon-mode list tuned for big result lists; Enter opens, Space previews."""

    open_requested = Signal(QModelIndex)
    preview_requested = Signal(QModelIndex)
    scrolled = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        # Uniform sizes: layout of 10,000 items without asking each one for its size hint.
        self.setUniformItemSizes(True)
        # Single-pass layout: with uniform sizes 10,000 items lay out in milliseconds, and
        # batched layout would make the scroll bar grow while the user drags it.
        self.setSpacing(2)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)
        self.setMouseTracking(True)  # hover highlight
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.verticalScrollBar().valueChanged.connect(lambda _v: self.scrolled.emit())

    def relayout_cells(self) -> None:
        """Stretch cells so whole columns fill the width (no ragged empty strip on the right)."""
        delegate = self.itemDelegate()
        if not isinstance(delegate, PhotoDelegate):
            return
        side = delegate.thumb_size + 2 * delegate.padding
        # Reserve the scroll bar's width even when hidden, else showing it re-flows the grid
        # and can flip back and forth.
        avail = self.width() - 2 * self.frameWidth() - self.verticalScrollBar().sizeHint().width() - 2
        columns = max(1, avail // side)
        cell = QSize(max(side, avail // columns), side)
        if cell != delegate.cell_size:
            delegate.cell_size = cell
            self.setGridSize(cell)

    def resizeEvent(self, event: QResizeEvent) -> None:
        self.relayout_cells()
        super().resizeEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        idx = self.currentIndex()
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and idx.isValid():
            self.open_requested.emit(idx)
            return
        if event.key() == Qt.Key.Key_Space and idx.isValid():
            self.preview_requested.emit(idx)
            return
        super().keyPressEvent(event)


class MainWindow(QMainWindow):
    """`embedder_factory(checkpoint)` loads a model ("" = the shipped default)."""

    library_opened = Signal()
    search_done = Signal()

    def __init__(
        self,
        library_dir: Path,
        embedder_factory: Callable[[str], Any] | None = None,
        settings: QSettings | None = None,
        watch: bool = True,
    ) -> None:
        super().__init__()
        self.library_dir = Path(library_dir)
        self.embedder_factory = embedder_factory or (lambda ckpt: make_embedder(ckpt or None))
        self.settings = settings or QSettings("photosearch", "photosearch")
        self.watch_enabled = watch
        self.lib: Any = None
        self.runner = JobRunner(self)
        self.loader = ThumbnailLoader(self)
        self.watch_bridge: WatchBridge | None = None
        self.folders: list[Any] = []
        self.photo_count = 0
        self.model_id: str | None = None
        self._closing = False
        self._captions_prepared = False
        self._search_when_open = False
        self._search_gen = 0
        self._last_request: SearchRequest | None = None
        self._similar_to: str | None = None
        self._index_job: IndexJob | None = None
        self._full_index_wanted = False
        self._pending_paths: set[str] = set()
        self._last_index_done = 0
        self._switch_job: SwitchModelJob | None = None
        self._folders_dialog: FoldersDialog | None = None
        self.last_result: Any = None
        self.failure_count = 0

        self.setWindowTitle("photosearch")
        self.resize(1180, 780)
        self._build_ui()
        self._build_actions()
        geom = self.settings.value("window/geometry")
        if geom is not None:
            self.restoreGeometry(geom)

        self._set_status("Loading model\u2026")
        self.progress.setRange(0, 0)  # busy indicator until the library is open
        self.progress.setVisible(True)
        self._show_message("Loading the matching model\u2026")
        ckpt = sd.checkpoint(self.settings)
        self._open_job = OpenLibraryJob(self.library_dir, lambda: self.embedder_factory(ckpt))
        self.runner.submit(
            self._open_job, on_finished=self._on_library_opened, on_failed=self._on_library_failed
        )

    # ------------------------------------------------------------------ UI construction
    def _build_ui(self) -> None:
        self.search = QLineEdit()
        self.search.setPlaceholderText("Describe a photo, e.g. \u201ca dog running on grass\u201d")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumHeight(32)
        f = self.search.font()
        f.setPointSizeF(f.pointSizeF() * 1.15)
        self.search.setFont(f)
        self.search.textEdited.connect(self._on_query_edited)
        self.search.returnPressed.connect(self._search_now)
        self.search.returnPressed.connect(self._remember_query)
        self.search.installEventFilter(self)

        self.folder_combo = QComboBox()
        self.folder_combo.setMinimumContentsLength(16)
        self.folder_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.folder_combo.addItem("All folders", None)
        self.folder_combo.setToolTip("Only show photos from this folder")
        self.folder_combo.currentIndexChanged.connect(lambda _i: self._schedule_search(0))
        self.date_check = QCheckBox("Taken between")
        self.date_from = QDateEdit()
        self.date_to = QDateEdit()
        today = QDate.currentDate()
        for edit, value in ((self.date_from, today.addYears(-1)), (self.date_to, today)):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("d MMM yyyy")
            edit.setDate(value)
            edit.setEnabled(False)
            edit.dateChanged.connect(lambda _d: self._schedule_search(0))
        self.date_check.toggled.connect(self._on_date_toggled)
        and_label = QLabel("and")

        self.folders_btn = QPushButton("Folders\u2026")
        self.folders_btn.clicked.connect(self.open_folders_dialog)
        self.settings_btn = QPushButton("Settings\u2026")
        self.settings_btn.clicked.connect(self.open_settings_dialog)

        top = QHBoxLayout()
        top.setSpacing(8)
        top.addWidget(self.search, 1)
        top.addWidget(self.folders_btn)
        top.addWidget(self.settings_btn)
        filters = QHBoxLayout()
        filters.setSpacing(8)
        filters.addWidget(QLabel("Folder"))
        filters.addWidget(self.folder_combo)
        filters.addSpacing(16)
        filters.addWidget(self.date_check)
        filters.addWidget(self.date_from)
        filters.addWidget(and_label)
        filters.addWidget(self.date_to)
        filters.addStretch(1)
        self.result_count = QLabel()
        self.result_count.setEnabled(False)
        filters.addWidget(self.result_count)

        self.banner = QLabel()
        self.banner.setObjectName("weakBanner")
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        self.banner.setStyleSheet(
            "#weakBanner { background: #fff4ce; color: #5c4400; border: 1px solid #e8c95a;"
            " border-radius: 6px; padding: 8px 12px; }"
        )
        self.similar_bar = QWidget()
        sb = QHBoxLayout(self.similar_bar)
        sb.setContentsMargins(0, 0, 0, 0)
        self.similar_label = QLabel()
        back = QPushButton("Back to text search")
        back.clicked.connect(self._leave_similar_mode)
        sb.addWidget(self.similar_label, 1)
        sb.addWidget(back)
        self.similar_bar.setVisible(False)

        # Results page: a message (loading, empty state, no results) or the grid.
        self.model = PhotoGridModel(self.loader, self)
        self.grid = PhotoGridView()
        self.delegate = PhotoDelegate(self.grid, sd.thumb_size(self.settings))
        self.grid.setItemDelegate(self.delegate)
        self.grid.relayout_cells()
        self.grid.setModel(self.model)
        self.grid.doubleClicked.connect(lambda idx: self.show_preview(idx.row()))
        self.grid.preview_requested.connect(lambda idx: self.show_preview(idx.row()))
        self.grid.open_requested.connect(lambda _idx: self.open_selected())
        self.grid.customContextMenuRequested.connect(self._show_context_menu)
        # Scrolling past thousands of items must not leave thousands of queued decodes.
        self.grid.scrolled.connect(self.loader.cancel_pending)
        self.message = QLabel()
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        mf = self.message.font()
        mf.setPointSizeF(mf.pointSizeF() * 1.3)
        self.message.setFont(mf)
        self.message.setEnabled(False)  # drawn in the palette's muted text colour

        self.welcome = WelcomePanel()
        self.welcome.start.connect(self._on_welcome_start)
        self.preview = PreviewPane(self.runner, self.model.hits)
        self.preview.closed.connect(self.close_preview)
        self.preview.row_changed.connect(self._select_row)

        self.pages = QStackedWidget()
        for w in (self.message, self.grid, self.preview, self.welcome):
            self.pages.addWidget(w)

        self.captions_panel = CaptionsPanel()
        self.captions_panel.caption_clicked.connect(self.set_query)
        self.captions_panel.close_requested.connect(lambda: self.captions_panel.setVisible(False))
        self.captions_panel.setVisible(False)

        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(12, 10, 6, 6)
        lv.setSpacing(8)
        lv.addLayout(top)
        lv.addLayout(filters)
        lv.addWidget(self.banner)
        lv.addWidget(self.similar_bar)
        lv.addWidget(self.pages, 1)
        self.splitter = QSplitter()
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.captions_panel)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        self.splitter.setChildrenCollapsible(False)
        self.setCentralWidget(self.splitter)

        # Status bar: message, progress, failures (clickable).
        self.status_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(False)
        self.progress.setVisible(False)
        self.failures_btn = QPushButton()
        self.failures_btn.setFlat(True)
        self.failures_btn.setCursor(Qt.CursorShape.PointingHandCursor)
        self.failures_btn.setToolTip("Show the photos that could not be read, and why")
        self.failures_btn.clicked.connect(self.show_failures)
        self.failures_btn.setVisible(False)
        sb_ = self.statusBar()
        sb_.addWidget(self.status_label, 1)
        sb_.addPermanentWidget(self.failures_btn)
        sb_.addPermanentWidget(self.progress)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.timeout.connect(self._search_now)
        self._requery = QTimer(self)
        self._requery.setSingleShot(True)
        self._requery.setInterval(REQUERY_INTERVAL_MS)
        self._requery.timeout.connect(self._refresh_after_batch)

    def _build_actions(self) -> None:
        def act(text: str, slot: Callable[[], Any], shortcut: Any = None, ctx_widget: QWidget | None = None) -> QAction:
            a = QAction(text, self)
            a.triggered.connect(lambda _checked=False: slot())
            if shortcut is not None:
                a.setShortcut(QKeySequence(shortcut))
            if ctx_widget is not None:
                # Ctrl+C in the search box must still copy text, so photo shortcuts live on
                # the grid only.
                a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                ctx_widget.addAction(a)
            return a

        self.act_captions = act("Find similar captions", self.find_similar_captions)
        self.act_similar = act("Find similar photos", self.find_similar_photos)
        # Enter and Space are handled by the grid itself (a real shortcut would fire in the
        # search box too); the text after the tab only shows the key in the menu.
        self.act_open = act("Open\tEnter", self.open_selected)
        self.act_show_folder = act("Show in folder", self.show_in_folder)
        self.act_copy = act("Copy path", self.copy_path, QKeySequence.StandardKey.Copy, self.grid)
        self.act_preview = act("Preview\tSpace", lambda: self.show_preview(self._current_row()))

        self.act_find = QAction("Search", self)
        self.act_find.setShortcut(QKeySequence.StandardKey.Find)
        self.act_find.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.act_find.triggered.connect(self.focus_search)
        self.addAction(self.act_find)

        menu = self.menuBar().addMenu("&Library")
        menu.addAction(self.act_find)
        a = menu.addAction("Watched &folders\u2026")
        a.triggered.connect(self.open_folders_dialog)
        a = menu.addAction("&Settings\u2026")
        a.triggered.connect(self.open_settings_dialog)
        a = menu.addAction("Show &failures\u2026")
        a.triggered.connect(self.show_failures)
        menu.addSeparator()
        a = menu.addAction("&Quit")
        a.setShortcut(QKeySequence.StandardKey.Quit)
        a.triggered.connect(self.close)
        photo = self.menuBar().addMenu("&Photo")
        for a in self.photo_actions():
            if a is None:
                photo.addSeparator()
            else:
                photo.addAction(a)
        photo.aboutToShow.connect(self._update_photo_actions)
        self._update_photo_actions()
        self.grid.selectionModel().currentChanged.connect(lambda *_: self._update_photo_actions())

    def photo_actions(self) -> list[QAction | None]:
        return [self.act_preview, self.act_captions, self.act_similar, None,
                self.act_open, self.act_show_folder, self.act_copy]

    # ------------------------------------------------------------------ library lifecycle
    def _on_library_opened(self, lib: Any) -> None:
        if self._closing:
            lib.close()
            return
        self.lib = lib
        self.loader.set_library(lib)
        self.model_id = getattr(lib.embedder, "model_id", None)
        self.progress.setVisible(False)
        self.progress.setRange(0, 100)
        self._set_status(
            "The model changed since the last run: re-reading every photo"
            if self._open_job.reembedding else "Ready"
        )
        self._refresh_status(first=True)
        self.library_opened.emit()
        if self._search_when_open:
            self._search_when_open = False
            self._search_now()

    def _on_library_failed(self, message: str) -> None:
        self.progress.setVisible(False)
        self._set_status("Could not open the library")
        self._show_message(f"photosearch could not start:\n{message}")
        if not self._closing and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
            QMessageBox.critical(self, "photosearch", f"photosearch could not start:\n\n{message}")

    def _refresh_status(self, first: bool = False) -> None:
        if self.lib is None:
            return
        self.runner.submit(StatusJob(self.lib), on_finished=lambda s, f=first: self._on_status(s, f))

    def _on_status(self, info: dict[str, Any], first: bool) -> None:
        if self._closing:
            return
        status, folders = info["status"], info["folders"]
        self.photo_count = int(getattr(status, "photo_count", 0))
        failures = getattr(status, "failures", 0)
        self.failure_count = failures if isinstance(failures, int) else len(failures or [])
        self._update_failures_button()
        self._set_folders(folders)
        if first:
            if not folders:
                self.pages.setCurrentWidget(self.welcome)
                self._set_status("Choose the folders to search")
                return
            self._start_watcher()
            self.start_index()
        if not self.search.text().strip() and self._similar_to is None:
            self._show_empty_state()

    def _set_folders(self, folders: list[Any]) -> None:
        self.folders = list(folders)
        current = self.folder_combo.currentData()
        self.folder_combo.blockSignals(True)
        self.folder_combo.clear()
        self.folder_combo.addItem("All folders", None)
        for info in self.folders:
            label = os.path.basename(info.path.rstrip("/\\")) or info.path
            if not info.online:
                label += " (offline)"
            self.folder_combo.addItem(label, info.path)
            self.folder_combo.setItemData(self.folder_combo.count() - 1, info.path, Qt.ItemDataRole.ToolTipRole)
        i = self.folder_combo.findData(current)
        self.folder_combo.setCurrentIndex(max(0, i))
        self.folder_combo.blockSignals(False)
        if self._folders_dialog is not None:
            self._folders_dialog.set_folders(self.folders)
        if self.watch_bridge is not None:
            self.watch_bridge.set_folders([f.path for f in self.folders])

    def _start_watcher(self) -> None:
        if not self.watch_enabled or self.watch_bridge is not None or self.lib is None:
            return
        self.watch_bridge = WatchBridge(self)
        self.watch_bridge.paths_changed.connect(self._on_paths_changed)
        self.watch_bridge.set_folders([f.path for f in self.folders])

    # ------------------------------------------------------------------ indexing
    def start_index(self) -> None:
        """Full reconcile of every folder, in the background; queued if one is running."""
        if self.lib is None:
            return
        if self._index_job is not None or self._switch_job is not None:
            self._full_index_wanted = True
            return
        self._run_index_job(IndexJob(self.lib))

    def _on_paths_changed(self, paths: list[str]) -> None:
        self._pending_paths.update(paths)
        if self._index_job is None and self._switch_job is None and self.lib is not None:
            self._run_pending_paths()

    def _run_pending_paths(self) -> None:
        paths, self._pending_paths = sorted(self._pending_paths), set()
        for p in paths:
            self.loader.invalidate(p)
        self._run_index_job(IndexJob(self.lib, [Path(p) for p in paths]), quiet=len(paths) < 20)

    def _run_index_job(self, job: IndexJob, quiet: bool = False) -> None:
        self._index_job = job
        self._last_index_done = 0
        if not quiet:
            self._set_status("Looking for photos\u2026")
            self.progress.setRange(0, 0)
            self.progress.setVisible(True)
        self.runner.submit(
            job,
            on_finished=lambda report, j=job: self._on_index_finished(j, report),
            on_failed=lambda msg, j=job: self._on_index_failed(j, msg),
            on_progress=lambda p, j=job, q=quiet: self._on_index_progress(j, p, q),
        )

    def _on_index_progress(self, job: IndexJob, p: Any, quiet: bool) -> None:
        if self._closing or job is not self._index_job:
            return
        if not quiet or p.total > 20:
            self.progress.setVisible(True)
            self.progress.setRange(0, max(1, p.total))
            self.progress.setValue(p.done)
            self._set_status("Indexing: " + format_progress(p.done, p.total, p.eta_s))
        if p.failed:
            self.failure_count = max(self.failure_count, int(p.failed))
            self._update_failures_button()
        if p.done > self._last_index_done:
            self._last_index_done = p.done
            # New photos are searchable now; show them, but not on every batch.
            if not self._requery.isActive():
                self._requery.start()

    def _on_index_finished(self, job: IndexJob, report: Any) -> None:
        if job is not self._index_job:
            return
        self._index_job = None
        if self._closing:
            return
        self.progress.setVisible(False)
        failed = len(getattr(report, "failed", []) or [])
        n_new = getattr(report, "indexed", 0)
        if job.paths is None:
            parts = [f"{self.photo_count_after(report):,} photos indexed"]
            if n_new:
                parts.append(f"{n_new:,} new")
            if failed:
                parts.append(f"{failed:,} could not be read")
            self._set_status(", ".join(parts))
        elif n_new:
            self._set_status(f"Added {n_new:,} new photo{'s' if n_new != 1 else ''}")
        self._refresh_after_batch()
        self._next_index_work()
        if job.paths is None and self._index_job is None and not self._captions_prepared:
            # After the first full pass, so it never competes with indexing for the CPU.
            self._captions_prepared = True
            self.runner.submit(PrepareCaptionsJob(self.lib))

    def photo_count_after(self, report: Any) -> int:
        return int(getattr(report, "indexed", 0)) + int(getattr(report, "unchanged", 0)) + int(
            getattr(report, "moved", 0)
        )

    def _on_index_failed(self, job: IndexJob, message: str) -> None:
        if job is not self._index_job:
            return
        self._index_job = None
        self.progress.setVisible(False)
        self._set_status(f"Indexing stopped: {message}")
        self._next_index_work()

    def _next_index_work(self) -> None:
        if self._closing or self.lib is None or self._switch_job is not None:
            return
        if self._full_index_wanted:
            self._full_index_wanted = False
            self._pending_paths.clear()  # a full reconcile covers them
            self._run_index_job(IndexJob(self.lib))
        elif self._pending_paths:
            self._run_pending_paths()

    def _refresh_after_batch(self) -> None:
        if self._closing or self.lib is None:
            return
        self._refresh_status()
        if self._last_request is not None and self.pages.currentWidget() is not self.preview:
            self._run_search(self._last_request, keep_view=True)

    # ------------------------------------------------------------------ searching
    def set_query(self, text: str) -> None:
        """Put `text` in the search box and search at once (captions panel, tests)."""
        self.search.setText(text)
        self._on_query_edited(text)
        self._search_now()

    def focus_search(self) -> None:
        if self.pages.currentWidget() is self.preview:
            self.close_preview()
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    def _on_query_edited(self, _text: str) -> None:
        if self._similar_to is not None:
            self._similar_to = None
            self.similar_bar.setVisible(False)
        self._schedule_search(SEARCH_DEBOUNCE_MS)

    def _on_date_toggled(self, on: bool) -> None:
        self.date_from.setEnabled(on)
        self.date_to.setEnabled(on)
        self._schedule_search(0)

    def _schedule_search(self, delay_ms: int) -> None:
        self._debounce.start(delay_ms)

    def _filters(self) -> tuple[str | None, datetime | None, datetime | None]:
        folder = self.folder_combo.currentData()
        if not self.date_check.isChecked():
            return folder, None, None
        d0 = self.date_from.date().toPython()
        d1 = self.date_to.date().toPython()
        if d1 < d0:
            d0, d1 = d1, d0
        # Whole days: "to 3 May" includes photos taken in the evening of 3 May.
        return folder, datetime.combine(d0, time.min), datetime.combine(d1, time.max)

    def _search_now(self) -> None:
        self._debounce.stop()
        if self._similar_to is not None:
            req = SearchRequest(0, "similar", self._similar_to, top_k=TOP_K)
            self._run_search(req)
            return
        query = self.search.text().strip()
        if not query:
            self._search_gen += 1  # drop answers still in flight
            self._last_request = None
            self.model.set_hits([])
            self.banner.setVisible(False)
            self.result_count.setText("")
            self._show_empty_state()
            return
        folder, d0, d1 = self._filters()
        self._run_search(SearchRequest(0, "text", query, TOP_K, folder, d0, d1))

    def _run_search(self, req: SearchRequest, keep_view: bool = False) -> None:
        self._last_request = req
        if self.lib is None:
            # The model is still loading; the search runs as soon as the library opens.
            self._search_when_open = True
            return
        self._search_gen += 1
        request = SearchRequest(self._search_gen, req.kind, req.query, req.top_k,
                                req.folder, req.date_from, req.date_to)
        self.runner.submit(
            SearchJob(self.lib, request),
            on_finished=lambda res, k=keep_view: self._on_search_done(res, k),
            on_failed=lambda msg, g=self._search_gen: self._on_search_failed(g, msg),
        )

    def _on_search_done(self, payload: tuple[SearchRequest, Any], keep_view: bool) -> None:
        request, result = payload
        if self._closing or request.generation != self._search_gen:
            return  # an older query answered late
        self.last_result = result
        hits = list(result.hits)
        if keep_view and [h.path for h in hits] == self.model.paths():
            self.search_done.emit()
            return  # nothing new: leave the grid (and its scroll position) alone
        selected = self.current_path()
        scroll = self.grid.verticalScrollBar().value()
        self.model.set_hits(hits)
        if keep_view:
            if selected is not None and (row := self.model.row_of(selected)) is not None:
                self._select_row(row, scroll=False)
            self.grid.verticalScrollBar().setValue(scroll)
        elif hits:
            self.grid.scrollToTop()
        self.banner.setText("No good match \u2014 showing the closest photos")
        self.banner.setVisible(bool(result.weak) and bool(hits))
        n = len(hits)
        self.result_count.setText(f"{n:,} photo{'s' if n != 1 else ''}" if n else "")
        if hits:
            if self.pages.currentWidget() is not self.preview:
                self.pages.setCurrentWidget(self.grid)
        elif request.kind == "text":
            self._show_message(
                "No photos match these filters." if self._filters() != (None, None, None)
                else ("No photos indexed yet \u2014 they appear here as indexing goes on."
                      if self.photo_count == 0 else "No photos found.")
            )
        self.search_done.emit()

    def _on_search_failed(self, generation: int, message: str) -> None:
        if generation != self._search_gen:
            return
        self._set_status(f"Search failed: {message}")
        self.search_done.emit()

    def _show_empty_state(self) -> None:
        if self.pages.currentWidget() in (self.welcome, self.preview):
            return
        if self.lib is None:
            return
        if self.photo_count:
            self._show_message(f"Type to search your {self.photo_count:,} photos")
        elif self._index_job is not None:
            self._show_message("Indexing your photos\u2026\nYou can search as soon as the first ones are in.")
        else:
            self._show_message("No photos yet.\nAdd a folder with Folders\u2026 to get started.")

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
        if self.pages.currentWidget() is not self.welcome:
            self.pages.setCurrentWidget(self.message)

    # ------------------------------------------------------------------ photo actions
    def _current_row(self) -> int:
        idx = self.grid.currentIndex()
        return idx.row() if idx.isValid() else -1

    def current_path(self) -> str | None:
        if self.pages.currentWidget() is self.preview and self.preview.row >= 0:
            hit = self.model.hit(self.preview.row)
            return hit.path if hit else None
        idx = self.grid.currentIndex()
        return idx.data(PathRole) if idx.isValid() else None

    def _select_row(self, row: int, scroll: bool = True) -> None:
        idx = self.model.index(row)
        if not idx.isValid():
            return
        self.grid.selectionModel().setCurrentIndex(
            idx, QItemSelectionModel.SelectionFlag.ClearAndSelect
        )
        if scroll:
            self.grid.scrollTo(idx)

    def _update_photo_actions(self) -> None:
        has = self.current_path() is not None
        for a in self.photo_actions():
            if a is not None:
                a.setEnabled(has)

    def _show_context_menu(self, pos: Any) -> None:
        idx = self.grid.indexAt(pos)
        if not idx.isValid():
            return
        self._select_row(idx.row(), scroll=False)
        self._update_photo_actions()
        self._remember_query()
        self.context_menu = self.build_context_menu()
        self.context_menu.popup(self.grid.viewport().mapToGlobal(pos))

    def _remember_query(self) -> None:
        # Only queries the user committed to (Enter, or acting on a result) become caption
        # suggestions; search-as-you-type would otherwise store every half-typed prefix.
        query = self.search.text().strip()
        if query and self.lib is not None and self._similar_to is None:
            self.runner.submit(FunctionJob("remember-query", lambda: self.lib.remember_query(query)))

    def build_context_menu(self) -> QMenu:
        menu = QMenu(self)
        for a in self.photo_actions():
            if a is None:
                menu.addSeparator()
            else:
                menu.addAction(a)
        return menu

    def find_similar_captions(self) -> None:
        path = self.current_path()
        if path is None or self.lib is None:
            return
        _known, pix = self.loader.cached(path)
        self.captions_panel.show_loading(path, pix)
        self.captions_panel.setVisible(True)
        self.runner.submit(
            CaptionsJob(self.lib, path),
            on_finished=lambda res: self.captions_panel.show_captions(*res),
            on_failed=lambda msg, p=path: self.captions_panel.show_error(p, msg),
            on_progress=lambda prog: self.captions_panel.show_progress(*prog),
        )

    def find_similar_photos(self) -> None:
        path = self.current_path()
        if path is None:
            return
        if self.pages.currentWidget() is self.preview:
            self.close_preview()
        self._similar_to = path
        self.similar_label.setText(f"Photos similar to <b>{os.path.basename(path)}</b>")
        self.similar_bar.setVisible(True)
        self.banner.setVisible(False)
        self._run_search(SearchRequest(0, "similar", path, top_k=TOP_K))

    def _leave_similar_mode(self) -> None:
        self._similar_to = None
        self.similar_bar.setVisible(False)
        self._search_now()

    def open_selected(self) -> None:
        path = self.current_path()
        if path is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(path))

    def show_in_folder(self) -> None:
        path = self.current_path()
        if path is None:
            return
        # Where the platform can, select the file in the file manager; elsewhere open its folder.
        if sys.platform == "darwin":
            QProcess.startDetached("open", ["-R", path])
        elif sys.platform == "win32":
            QProcess.startDetached("explorer", ["/select,", os.path.normpath(path)])
        else:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent)))

    def copy_path(self) -> None:
        path = self.current_path()
        if path is not None:
            QGuiApplication.clipboard().setText(path)
            self._set_status(f"Copied {path}", timeout_ms=3000)

    # ------------------------------------------------------------------ preview
    def show_preview(self, row: int) -> None:
        self._remember_query()
        if self.model.hit(row) is None:
            return
        self.pages.setCurrentWidget(self.preview)
        self.preview.show_row(row)
        self.preview.setFocus()

    def close_preview(self) -> None:
        row = self.preview.row
        self.pages.setCurrentWidget(self.grid if self.model.rowCount() else self.message)
        if row >= 0:
            self._select_row(row)
        self.grid.setFocus()

    # ------------------------------------------------------------------ folders
    def _on_welcome_start(self, folders: list[str]) -> None:
        self.pages.setCurrentWidget(self.message)
        self._show_message("Indexing your photos\u2026\nYou can search as soon as the first ones are in.")
        for f in folders:
            self.add_folder(f)

    def add_folder(self, path: str) -> None:
        if self.lib is None:
            return
        lib = self.lib

        def work() -> Any:
            lib.add_folder(Path(path))
            return lib.folders()

        self.runner.submit(
            FunctionJob("add-folder", work),
            on_finished=self._on_folder_added,
            on_failed=lambda msg: self._folder_error("add", path, msg),
        )

    def _on_folder_added(self, folders: list[Any]) -> None:
        if self._closing:
            return
        self._set_folders(folders)
        if self.pages.currentWidget() is self.welcome:
            self.pages.setCurrentWidget(self.message)
        self._start_watcher()
        self.start_index()

    def remove_folder(self, path: str) -> None:
        if self.lib is None:
            return
        lib = self.lib
        if self._index_job is not None:
            # Removing waits for the running indexing pass (the engine serialises them);
            # stop it so the folder goes away now, then reconcile what is left.
            self._index_job.cancel.set()
            self._full_index_wanted = True

        def work() -> Any:
            lib.remove_folder(Path(path))
            return lib.folders()

        self.runner.submit(
            FunctionJob("remove-folder", work),
            on_finished=self._on_folder_removed,
            on_failed=lambda msg: self._folder_error("remove", path, msg),
        )

    def _on_folder_removed(self, folders: list[Any]) -> None:
        if self._closing:
            return
        self._set_folders(folders)
        self._refresh_after_batch()

    def _folder_error(self, verb: str, path: str, message: str) -> None:
        self._set_status(f"Could not {verb} {path}: {message}")
        if self._folders_dialog is not None and self._folders_dialog.isVisible():
            QMessageBox.warning(self._folders_dialog, "Watched folders", message)

    def open_folders_dialog(self) -> FoldersDialog:
        if self._folders_dialog is None:
            self._folders_dialog = FoldersDialog(self)
            self._folders_dialog.add_requested.connect(self.add_folder)
            self._folders_dialog.remove_requested.connect(self.remove_folder)
        self._folders_dialog.set_folders(self.folders)
        self._folders_dialog.show()
        self._folders_dialog.raise_()
        self._refresh_status()
        return self._folders_dialog

    # ------------------------------------------------------------------ failures
    def _update_failures_button(self) -> None:
        n = self.failure_count
        self.failures_btn.setText(f"\u26a0 {n:,} could not be read")
        self.failures_btn.setVisible(n > 0)

    def show_failures(self) -> None:
        if self.lib is None:
            return
        self.runner.submit(FunctionJob("failures", self.lib.failures), on_finished=self._on_failures)

    def _on_failures(self, failures: list[tuple[str, str]]) -> None:
        if self._closing:
            return
        self.failures_dialog = FailuresDialog(list(failures), self)
        self.failures_dialog.show()

    # ------------------------------------------------------------------ settings / model
    def open_settings_dialog(self) -> None:
        dlg = sd.SettingsDialog(self.settings, self.model_id, self)
        old_ckpt = sd.checkpoint(self.settings)
        if dlg.exec() != sd.SettingsDialog.DialogCode.Accepted:
            return
        self.set_thumb_size(dlg.chosen_thumb_size())
        new_ckpt = dlg.chosen_checkpoint()
        if new_ckpt != old_ckpt:
            # A missing or broken file fails inside the job and is reported from there.
            self.switch_model(new_ckpt)

    def set_thumb_size(self, px: int) -> None:
        self.settings.setValue(sd.KEY_THUMB_SIZE, int(px))
        self.delegate.set_thumb_size(int(px))
        self.grid.relayout_cells()

    def switch_model(self, checkpoint: str) -> None:
        """Re-embed the library with another checkpoint in the background."""
        if self.lib is None or self._switch_job is not None:
            return
        if self._index_job is not None:
            # Re-embedding and indexing both write embeddings; let indexing finish first.
            self._index_job.cancel.set()
            self._full_index_wanted = True
        factory = self.embedder_factory
        job = SwitchModelJob(self.lib, lambda: factory(checkpoint))
        self._switch_job = job
        self._set_status("Loading the new model\u2026")
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.runner.submit(
            job,
            on_finished=lambda mid, c=checkpoint: self._on_model_switched(c, mid),
            on_failed=self._on_switch_failed,
            on_progress=self._on_switch_progress,
        )

    def _on_switch_progress(self, p: Any) -> None:
        if self._closing:
            return
        self.progress.setRange(0, max(1, p.total))
        self.progress.setValue(p.done)
        self._set_status("Switching model: " + format_progress(p.done, p.total, p.eta_s))

    def _on_model_switched(self, checkpoint: str, model_id: str) -> None:
        self._switch_job = None
        if self._closing:
            return
        self.settings.setValue(sd.KEY_CHECKPOINT, checkpoint)
        self.model_id = model_id
        self.progress.setVisible(False)
        self._set_status(f"Now using model {model_id}")
        if self._last_request is not None:
            self._run_search(self._last_request)
        self._next_index_work()
        self.runner.submit(PrepareCaptionsJob(self.lib))  # the new model needs its own bank vectors

    def _on_switch_failed(self, message: str) -> None:
        self._switch_job = None
        self.progress.setVisible(False)
        self._set_status(f"Model not changed: {message}")
        if os.environ.get("QT_QPA_PLATFORM") != "offscreen":
            QMessageBox.warning(self, "Settings", f"The model could not be changed:\n\n{message}")
        self._next_index_work()

    # ------------------------------------------------------------------ misc
    def eventFilter(self, obj: Any, event: Any) -> bool:
        # Down arrow in the search box jumps into the results, so the keyboard alone is
        # enough: Ctrl+F, type, Down, arrows, Enter.
        if (
            obj is self.search
            and event.type() == QEvent.Type.KeyPress
            and event.key() == Qt.Key.Key_Down
            and self.model.rowCount()
            and self.pages.currentWidget() is self.grid
        ):
            self.grid.setFocus()
            if not self.grid.currentIndex().isValid():
                self._select_row(0)
            return True
        return super().eventFilter(obj, event)

    def _set_status(self, text: str, timeout_ms: int = 0) -> None:
        if timeout_ms:
            self.statusBar().showMessage(text, timeout_ms)
        else:
            self.statusBar().clearMessage()
            self.status_label.setText(text)

    def status_text(self) -> str:
        return self.statusBar().currentMessage() or self.status_label.text()

    def is_indexing(self) -> bool:
        return self._index_job is not None

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self, timeout_ms: int = 15000) -> None:
        """Cancel every job, wait for the workers, close the library. Safe to call twice."""
        if self._closing:
            return
        self._closing = True
        self.settings.setValue("window/geometry", self.saveGeometry())
        self._debounce.stop()
        self._requery.stop()
        if self.watch_bridge is not None:
            self.watch_bridge.stop()
        self.loader.shutdown()
        self.runner.shutdown(timeout_ms)
        # A library opened while we were shutting down never reached _on_library_opened.
        for job in self.runner.active("open-library"):
            if job.result is not None and job.result is not self.lib:
                job.result.close()
        if self.lib is not None:
            try:
                self.lib.close()
            except Exception:  # noqa: BLE001 - quitting must not fail
                log.exception("closing the library failed")
            self.lib = None
        self.settings.sync()
