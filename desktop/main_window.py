"""The main window: search box, filters, result grid, preview, captions panel, status bar.

An empty search box browses the whole library, newest first; a query shows its confident
matches ("23 matches"), then the weaker ones under a "Less likely" divider. "Find similar
photos" puts a "Similar to" chip in the search bar, and text typed then refines from that
photo.

It composes the widgets, turns actions into `LibrarySession` calls and renders what the
session's signals carry. It never calls the library and schedules nothing itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QPoint, QProcess, QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from desktop.captions_panel import CaptionsPanel
from desktop.dialogs import settings as prefs
from desktop.dialogs.failures import FailuresDialog
from desktop.dialogs.folders import FoldersDialog
from desktop.icon import app_icon
from desktop.results_pane import INDEXING_MESSAGE, ResultsPane
from desktop.search_bar import FilterBar, SearchBox, SimilarChip, SortControl
from desktop.session import BrowsePage, EmbedderFactory, LibrarySession, SearchRequest
from desktop.status_bar import StatusBar, plural
from desktop.thumbnails import ThumbnailLoader
from engine.embedder import load_embedder
from engine.library import FolderInfo, LibraryStatus, SearchResult

SEARCH_DEBOUNCE_MS = 250
KEY_GROUP_DUPLICATES = "view/group_duplicates"
KEY_SORT = "view/sort"


class MainWindow(QMainWindow):
    """`embedder_factory(checkpoint)` loads a model ("" = the shipped default); tests pass
    `error_dialogs=False` so that a failure is reported in the status bar only."""

    search_done = Signal()

    def __init__(
        self,
        library_dir: Path,
        embedder_factory: EmbedderFactory = load_embedder,
        settings: QSettings | None = None,
        watch: bool = True,
        error_dialogs: bool = True,
    ) -> None:
        super().__init__()
        self.settings = settings or QSettings("photosearch", "photosearch")
        self.error_dialogs = error_dialogs
        self.session = LibrarySession(Path(library_dir), embedder_factory, watch=watch, parent=self)
        self.loader = ThumbnailLoader(self)
        self._closing = False
        self._similar_to: str | None = None
        self._folders_dialog: FoldersDialog | None = None
        self.failures_dialog: FailuresDialog | None = None
        self.context_menu: QMenu | None = None

        self.setWindowTitle("photosearch")
        self.setWindowIcon(app_icon())
        self.resize(1180, 780)
        self._build_ui()
        self._build_actions()
        self._connect_session()
        geom = self.settings.value("window/geometry")
        if geom is not None:
            self.restoreGeometry(geom)

        self.status.show_busy("Loading model\u2026")  # until the library is open
        self.results.show_message("Loading the matching model\u2026")
        self.session.open(prefs.checkpoint(self.settings), prefs.rerank(self.settings))

    # ------------------------------------------------------------------ UI construction
    def _build_ui(self) -> None:
        self.search = SearchBox()
        self.search.textEdited.connect(self._on_query_edited)
        self.search.returnPressed.connect(self._search_now)
        self.search.returnPressed.connect(self._remember_query)
        self.search.backspace_empty.connect(self.clear_similar)
        self.similar_chip = SimilarChip()
        self.similar_chip.cleared.connect(self.clear_similar)
        self.sort_control = SortControl()
        self.sort_control.set_value(str(self.settings.value(KEY_SORT, "relevance")))
        self.sort_control.changed.connect(self._on_sort_changed)
        self.sort_control.setVisible(False)
        self.filter_bar = FilterBar()
        self.filter_bar.changed.connect(lambda: self.debounce.start(0))
        self.folders_btn = QPushButton("Folders\u2026")
        self.folders_btn.clicked.connect(self.open_folders_dialog)
        self.settings_btn = QPushButton("Settings\u2026")
        self.settings_btn.clicked.connect(self.open_settings_dialog)
        # "23 matches" / "12,345 photos": read at a glance, so not greyed out.
        self.result_count = QLabel()
        font = self.result_count.font()
        font.setBold(True)
        self.result_count.setFont(font)

        self.results = ResultsPane(self.loader, self.session.runner, prefs.thumb_size(self.settings))
        self.results.open_requested.connect(self.open_selected)
        self.results.preview_requested.connect(self.show_preview)
        self.results.context_menu_requested.connect(self._show_context_menu)
        self.results.welcome.start.connect(self._on_welcome_start)
        self.search.down_pressed.connect(self.results.enter_grid)
        self.grid, self.model = self.results.grid, self.results.model
        self.model.set_grouping(self._setting_bool(KEY_GROUP_DUPLICATES, True))
        self.captions_panel = CaptionsPanel()
        self.captions_panel.caption_clicked.connect(self.set_query)
        self.captions_panel.close_requested.connect(lambda: self.captions_panel.setVisible(False))
        self.captions_panel.setVisible(False)

        top = QHBoxLayout()
        top.setSpacing(8)
        for widget, stretch in (
            (self.similar_chip, 0), (self.search, 1), (self.folders_btn, 0), (self.settings_btn, 0)
        ):
            top.addWidget(widget, stretch)
        filters = QHBoxLayout()
        filters.addWidget(self.filter_bar, 1)
        filters.addWidget(self.sort_control)
        filters.addSpacing(12)
        filters.addWidget(self.result_count)
        left = QWidget()
        column = QVBoxLayout(left)
        column.setContentsMargins(12, 10, 6, 6)
        column.setSpacing(8)
        column.addLayout(top)
        column.addLayout(filters)
        column.addWidget(self.results, 1)
        self.splitter = QSplitter()
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.captions_panel)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        self.splitter.setChildrenCollapsible(False)
        self.setCentralWidget(self.splitter)
        self.status = StatusBar()
        self.status.failures_clicked.connect(self.show_failures)
        self.setStatusBar(self.status)

        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.timeout.connect(self._search_now)

    def _build_actions(self) -> None:
        def act(text: str, slot: Callable[[], object], shortcut: QKeySequence.StandardKey | None = None) -> QAction:
            a = QAction(text, self)
            a.triggered.connect(lambda _checked=False: slot())
            if shortcut is not None:
                a.setShortcut(QKeySequence(shortcut))
                # Ctrl+C in the search box must still copy text, so photo shortcuts live on
                # the grid only.
                a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                self.grid.addAction(a)
            return a

        self.act_captions = act("Find similar captions", self.find_similar_captions)
        self.act_similar = act("Find similar photos", self.find_similar_photos)
        # Enter and Space are handled by the grid itself (a real shortcut would fire in the
        # search box too); the text after the tab only shows the key in the menu.
        self.act_open = act("Open\tEnter", self.open_selected)
        self.act_show_folder = act("Show in folder", self.show_in_folder)
        self.act_copy = act("Copy path", self.copy_path, QKeySequence.StandardKey.Copy)
        self.act_preview = act("Preview\tSpace", lambda: self.show_preview(self.results.current_row()))
        self.act_group_open = act("Show near-identical photos", self.toggle_current_group)

        self.act_find = QAction("Search", self)
        self.act_find.setShortcut(QKeySequence.StandardKey.Find)
        self.act_find.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.act_find.triggered.connect(self.focus_search)
        self.addAction(self.act_find)

        menu = self.menuBar().addMenu("&Library")
        menu.addAction(self.act_find)
        menu.addAction("Watched &folders\u2026").triggered.connect(self.open_folders_dialog)
        menu.addAction("&Settings\u2026").triggered.connect(self.open_settings_dialog)
        menu.addAction("Show &failures\u2026").triggered.connect(self.show_failures)
        menu.addSeparator()
        quit_action = menu.addAction("&Quit")
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        view = self.menuBar().addMenu("&View")
        self.act_group = view.addAction("&Group near-identical photos")
        self.act_group.setCheckable(True)
        self.act_group.setChecked(self.model.grouping())
        self.act_group.setToolTip("Show burst shots, edited copies and resized exports as one tile")
        self.act_group.toggled.connect(self.set_grouping)
        photo = self.menuBar().addMenu("&Photo")
        self._add_photo_actions(photo)
        photo.aboutToShow.connect(self._update_photo_actions)
        self._update_photo_actions()
        self.grid.selectionModel().currentChanged.connect(lambda *_: self._update_photo_actions())

    def photo_actions(self) -> list[QAction | None]:
        return [self.act_preview, self.act_captions, self.act_similar, self.act_group_open, None,
                self.act_open, self.act_show_folder, self.act_copy]

    def _add_photo_actions(self, menu: QMenu) -> None:
        for a in self.photo_actions():
            if a is None:
                menu.addSeparator()
            else:
                menu.addAction(a)

    def _connect_session(self) -> None:
        s = self.session
        s.opened.connect(self._on_opened)
        s.open_failed.connect(self._on_open_failed)
        s.status_changed.connect(self._on_status)
        s.folders_changed.connect(self._on_folders_changed)
        s.folders_needed.connect(self._on_folders_needed)
        s.folder_failed.connect(self._on_folder_failed)
        s.files_changed.connect(self.loader.invalidate)
        self.loader.thumbnail_ready.connect(self._on_thumbnail)  # the next paint shows the new content
        s.index_started.connect(lambda run: self.status.show_index_started(run.quiet))
        s.index_progress.connect(lambda run, p: self.status.show_index_progress(p, run.quiet))
        s.index_finished.connect(lambda run, report: self.status.show_index_report(report, run.full))
        s.index_failed.connect(lambda _run, m: self.status.show_done(f"Indexing stopped: {m}"))
        s.results_ready.connect(self._on_results)
        s.browse_ready.connect(self._on_browse)
        s.browse_page_ready.connect(lambda _req, offset, hits: self.model.append_page(offset, hits))
        self.model.page_wanted.connect(s.fetch_browse_page)
        s.duplicates_ready.connect(self._on_duplicates)
        s.caption_bank_progress.connect(self.status.show_bank_progress)
        s.caption_bank_done.connect(self.status.show_bank_done)
        s.search_failed.connect(self._on_search_failed)
        s.captions_progress.connect(self.captions_panel.show_progress)
        s.captions_ready.connect(self.captions_panel.show_captions)
        s.captions_failed.connect(self.captions_panel.show_error)
        s.failures_ready.connect(self._on_failures)
        s.model_switch_started.connect(lambda: self.status.show_busy("Loading the new model\u2026"))
        s.model_switch_progress.connect(lambda p: self.status.show_progress("Switching model", p))
        s.model_switched.connect(self._on_model_switched)
        s.model_switch_failed.connect(self._on_switch_failed)

    # ------------------------------------------------------------------ session: library
    def _on_opened(self, reembedding: bool) -> None:
        assert self.session.library is not None
        self.loader.set_library(self.session.library)
        self.status.show_done(
            "The model changed since the last run: re-reading every photo" if reembedding else "Ready"
        )

    def _on_open_failed(self, message: str) -> None:
        self.status.show_done("Could not open the library")
        self.results.show_message(f"photosearch could not start:\n{message}")
        if self.error_dialogs:
            QMessageBox.critical(self, "photosearch", f"photosearch could not start:\n\n{message}")

    def _on_status(self, status: LibraryStatus) -> None:
        self.status.set_failures(status.failures)
        last = self.session.last_request
        if not self.search.text().strip() and self._similar_to is None:
            if last is None or last.kind != "browse":
                self._search_now()  # browse the library
            elif not self.model.rowCount():
                self._show_empty_state()

    def _on_folders_changed(self, folders: list[FolderInfo]) -> None:
        self.filter_bar.set_folders(folders)
        if self._folders_dialog is not None:
            self._folders_dialog.set_folders(folders)
        if folders:
            self.results.leave_welcome()

    def _on_folders_needed(self) -> None:
        self.results.show_welcome()
        self.status.set_text("Choose the folders to search")

    # ------------------------------------------------------------------ searching
    def set_query(self, text: str) -> None:
        """Put `text` in the search box and search at once (captions panel, tests)."""
        self.search.setText(text)
        self._on_query_edited(text)
        self._search_now()

    def focus_search(self) -> None:
        if self.results.showing(self.results.preview):
            self.results.close_preview()
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    def _on_query_edited(self, _text: str) -> None:
        # Text typed with the "Similar to" chip up refines from that photo.
        self.debounce.start(SEARCH_DEBOUNCE_MS)

    def current_request(self) -> SearchRequest:
        """What the search bar asks for now: text (from the chip's photo, if any), the
        chip's photo alone, or (empty box) the whole library."""
        query = self.search.text().strip()
        folder, d0, d1 = self.filter_bar.filters()
        sort = self.sort_control.value()
        if query:
            return SearchRequest(
                "text", query, folder=folder, date_from=d0, date_to=d1,
                like_photo=self._similar_to, sort=sort,  # type: ignore[arg-type]
            )
        if self._similar_to is not None:
            return SearchRequest("similar", self._similar_to, sort=sort)  # type: ignore[arg-type]
        return SearchRequest("browse", "", folder=folder, date_from=d0, date_to=d1)

    def _search_now(self) -> None:
        self.debounce.stop()
        request = self.current_request()
        self.sort_control.setVisible(request.kind != "browse")
        self.session.search(request)

    def _on_sort_changed(self, value: str) -> None:
        self.settings.setValue(KEY_SORT, value)
        if self.session.last_request is not None and self.session.last_request.kind != "browse":
            self._search_now()

    def _on_results(self, request: SearchRequest, result: SearchResult, refresh: bool) -> None:
        if refresh and self.results.showing(self.results.preview):
            return  # the preview steps through the rows it shows; keep them still
        if not self.results.show_result(result, keep_view=refresh):
            self.search_done.emit()
            return  # nothing new: the grid (and its scroll position) is left alone
        n = len(result.hits)
        # Sorting orders the confident matches; with none there is nothing to sort.
        self.sort_control.setEnabled(result.confident > 0 or request.sort == "date")
        if request.kind == "similar" and result.confident:
            self.result_count.setText(plural(result.confident, "similar photo"))
        elif result.weak or not result.confident:
            self.result_count.setText("")  # the weak-match banner says it
        else:
            n_conf = result.confident
            self.result_count.setText(f"{n_conf:,} {'match' if n_conf == 1 else 'matches'}")
        self.result_count.setToolTip(
            f"{result.confident:,} confident, {n - result.confident:,} less likely" if n else ""
        )
        if not n and request.kind == "text":
            self.results.show_no_match(self.filter_bar.is_filtering(), self.session.photo_count)
        self.search_done.emit()

    def _on_browse(self, request: SearchRequest, page: BrowsePage, refresh: bool) -> None:
        if refresh and self.results.showing(self.results.preview):
            return
        changed = self.results.show_browse(page.total, page.hits, keep_view=refresh)
        self.result_count.setText(plural(page.total, "photo") if page.total else "")
        self.result_count.setToolTip("Every photo, newest first" if page.total else "")
        if changed and not page.total:
            if self.filter_bar.is_filtering():
                self.results.show_no_match(True, self.session.photo_count)
            else:
                self.results.show_empty_state(0, self.session.is_indexing())
        self.search_done.emit()

    def _on_duplicates(self, groups: list[tuple[str, ...]]) -> None:
        self.results.set_groups(groups)

    def set_grouping(self, on: bool) -> None:
        """Near-identical photos as one tile with a count badge, or each on its own."""
        self.settings.setValue(KEY_GROUP_DUPLICATES, bool(on))
        self.results.set_grouping(bool(on))
        if self.act_group.isChecked() != bool(on):
            self.act_group.setChecked(bool(on))

    def _setting_bool(self, key: str, default: bool) -> bool:
        value = self.settings.value(key, default)
        return value if isinstance(value, bool) else str(value).lower() in ("true", "1")

    def _on_search_failed(self, message: str) -> None:
        self.status.set_text(f"Search failed: {message}")
        self.search_done.emit()

    def _show_empty_state(self) -> None:
        if self.session.library is not None:
            self.results.show_empty_state(self.session.photo_count, self.session.is_indexing())

    def _remember_query(self) -> None:
        if self._similar_to is None:
            self.session.remember_query(self.search.text().strip())

    # ------------------------------------------------------------------ photo actions
    def current_path(self) -> str | None:
        return self.results.current_path()

    def _update_photo_actions(self) -> None:
        has = self.current_path() is not None
        for a in self.photo_actions():
            if a is not None:
                a.setEnabled(has)
        idx = self.grid.currentIndex()
        count = self.model.group_size(idx.row()) if idx.isValid() else 0
        self.act_group_open.setVisible(count > 1)
        self.act_group_open.setText(
            "Fold near-identical photos" if self.model.is_expanded(idx.row())
            else f"Show {count} near-identical photos"
        )

    def toggle_current_group(self) -> None:
        idx = self.grid.currentIndex()
        if idx.isValid():
            self.results.toggle_group(idx.row())

    def _show_context_menu(self, pos: QPoint) -> None:
        self._update_photo_actions()
        self._remember_query()
        self.context_menu = self.build_context_menu()
        self.context_menu.popup(self.grid.viewport().mapToGlobal(pos))

    def build_context_menu(self) -> QMenu:
        menu = QMenu(self)
        self._add_photo_actions(menu)
        return menu

    def find_similar_captions(self) -> None:
        path = self.current_path()
        if path is None or self.session.library is None:
            return
        known, pix = self.loader.cached(path)
        if not known:
            self.loader.request(path)  # the panel picks it up in _on_thumbnail
        self.captions_panel.show_loading(path, pix)
        self.captions_panel.setVisible(True)
        self.session.find_captions(path)

    def _on_thumbnail(self, path: str) -> None:
        """A thumbnail arrived: the captions panel may be waiting for its picture."""
        if path == self.captions_panel.path and not self.captions_panel.has_picture():
            self.captions_panel.set_picture(self.loader.cached(path)[1])

    def find_similar_photos(self) -> None:
        path = self.current_path()
        if path is None:
            return
        if self.results.showing(self.results.preview):
            self.results.close_preview()
        self._similar_to = path
        self.similar_chip.set_path(path, self.loader.cached(path)[1])
        # The photo alone first; what is typed next refines from it.
        self.search.clear()
        self.search.setFocus(Qt.FocusReason.OtherFocusReason)
        self._search_now()

    def clear_similar(self) -> None:
        """Drop the "Similar to" chip: the text alone again (or browsing)."""
        if self._similar_to is None:
            return
        self._similar_to = None
        self.similar_chip.set_path(None)
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
            self.status.set_text(f"Copied {path}", timeout_ms=3000)

    def show_preview(self, number: int) -> None:
        """Preview photo `number` of the grid's photos (the divider does not count)."""
        self._remember_query()
        self.results.show_preview(number)

    # ------------------------------------------------------------------ folders, failures
    def _on_welcome_start(self, folders: list[str]) -> None:
        self.results.leave_welcome()
        self.results.show_message(INDEXING_MESSAGE)
        for f in folders:
            self.add_folder(f)

    def add_folder(self, path: str) -> None:
        self.session.add_folder(path)

    def _on_folder_failed(self, verb: str, path: str, message: str) -> None:
        self.status.set_text(f"Could not {verb} {path}: {message}")
        dialog = self._folders_dialog
        if self.error_dialogs and dialog is not None and dialog.isVisible():
            QMessageBox.warning(dialog, "Watched folders", message)

    def open_folders_dialog(self) -> FoldersDialog:
        if self._folders_dialog is None:
            self._folders_dialog = FoldersDialog(self)
            self._folders_dialog.add_requested.connect(self.session.add_folder)
            self._folders_dialog.remove_requested.connect(self.session.remove_folder)
        self._folders_dialog.set_folders(self.session.folders)
        self._folders_dialog.show()
        self._folders_dialog.raise_()
        self.session.refresh_status()
        return self._folders_dialog

    def show_failures(self) -> None:
        self.session.request_failures()

    def _on_failures(self, failures: list[tuple[str, str]]) -> None:
        self.failures_dialog = FailuresDialog(list(failures), self)
        self.failures_dialog.show()

    # ------------------------------------------------------------------ settings, model
    def open_settings_dialog(self) -> None:
        dlg = prefs.SettingsDialog(self.settings, self.session.model_id, self)
        old_checkpoint = prefs.checkpoint(self.settings)
        if dlg.exec() != prefs.SettingsDialog.DialogCode.Accepted:
            return
        self.set_thumb_size(dlg.chosen_thumb_size())
        rerank_now = prefs.rerank(self.settings)
        if rerank_now is None:
            rerank_now = prefs.engine_rerank_default()
        if dlg.chosen_rerank() != rerank_now:
            self.settings.setValue(prefs.KEY_RERANK, dlg.chosen_rerank())
            self.status.show_done("Re-ranking " + ("on" if dlg.chosen_rerank() else "off")
                                  + " from the next start of photosearch")
        if dlg.chosen_checkpoint() != old_checkpoint:
            # A missing or broken file fails inside the task and is reported from there.
            self.session.switch_model(dlg.chosen_checkpoint())

    def set_thumb_size(self, px: int) -> None:
        self.settings.setValue(prefs.KEY_THUMB_SIZE, int(px))
        self.results.delegate.set_thumb_size(int(px))
        self.grid.relayout_cells()

    def _on_model_switched(self, checkpoint: str, model_id: str) -> None:
        self.settings.setValue(prefs.KEY_CHECKPOINT, checkpoint)
        self.status.show_done(f"Now using model {model_id}")

    def _on_switch_failed(self, message: str) -> None:
        self.status.show_done(f"Model not changed: {message}")
        if self.error_dialogs:
            QMessageBox.warning(self, "Settings", f"The model could not be changed:\n\n{message}")

    # ------------------------------------------------------------------ quitting
    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self, timeout_ms: int = 15000) -> None:
        """Cancel every task, wait for the workers, close the library. Safe to call twice."""
        if self._closing:
            return
        self._closing = True
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.debounce.stop()
        self.loader.shutdown()
        self.session.shutdown(timeout_ms)
        self.settings.sync()
