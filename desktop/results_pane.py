"""Everything under the filter row: the weak-match banner, the "similar to" bar, and one
page at a time: a message (loading, empty state, no results), the grid, the preview of one
photo, or the first-run welcome panel."""

from __future__ import annotations

import os

from PySide6.QtCore import QItemSelectionModel, QPoint, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QStackedWidget, QVBoxLayout, QWidget

from desktop.photo_grid import PathRole, PhotoDelegate, PhotoGridModel, PhotoGridView
from desktop.preview import PreviewPane
from desktop.tasks import TaskRunner
from desktop.thumbnails import ThumbnailLoader
from desktop.welcome import WelcomePanel
from engine.library import SearchResult

INDEXING_MESSAGE = "Indexing your photos\u2026\nYou can search as soon as the first ones are in."
BANNER_STYLE = (
    "#weakBanner { background: #fff4ce; color: #5c4400; border: 1px solid #e8c95a;"
    " border-radius: 6px; padding: 8px 12px; }"
)


class ResultsPane(QWidget):
    leave_similar = Signal()  # "Back to text search"
    open_requested = Signal()  # Enter on a photo
    preview_requested = Signal(int)  # double click or Space on a row
    context_menu_requested = Signal(QPoint)  # grid viewport coordinates, row already selected

    def __init__(
        self, loader: ThumbnailLoader, runner: TaskRunner, thumb_size: int, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.banner = QLabel("No good match \u2014 showing the closest photos")
        self.banner.setObjectName("weakBanner")
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        self.banner.setStyleSheet(BANNER_STYLE)
        self.similar_bar = QWidget()
        self.similar_label = QLabel()
        back = QPushButton("Back to text search")
        back.clicked.connect(self.leave_similar.emit)
        bar = QHBoxLayout(self.similar_bar)
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.similar_label, 1)
        bar.addWidget(back)
        self.similar_bar.setVisible(False)

        self.model = PhotoGridModel(loader, self)
        self.grid = PhotoGridView()
        self.delegate = PhotoDelegate(self.grid, thumb_size)
        self.grid.setItemDelegate(self.delegate)
        self.grid.relayout_cells()
        self.grid.setModel(self.model)
        self.grid.doubleClicked.connect(lambda idx: self.preview_requested.emit(idx.row()))
        self.grid.preview_requested.connect(lambda idx: self.preview_requested.emit(idx.row()))
        self.grid.open_requested.connect(lambda _idx: self.open_requested.emit())
        self.grid.customContextMenuRequested.connect(self._on_context_menu)
        # Scrolling past thousands of items must not leave thousands of queued decodes.
        self.grid.scrolled.connect(loader.cancel_pending)
        self.message = QLabel()
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        font = self.message.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        self.message.setFont(font)
        self.message.setEnabled(False)  # drawn in the palette's muted text colour
        self.welcome = WelcomePanel()
        self.preview = PreviewPane(runner, self.model.hits)
        self.preview.closed.connect(self.close_preview)
        self.preview.row_changed.connect(self.select_row)
        self.pages = QStackedWidget()
        for page in (self.message, self.grid, self.preview, self.welcome):
            self.pages.addWidget(page)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(self.banner)
        layout.addWidget(self.similar_bar)
        layout.addWidget(self.pages, 1)

    # -- pages -----------------------------------------------------------------------------

    def showing(self, page: QWidget) -> bool:
        return self.pages.currentWidget() is page

    def show_message(self, text: str) -> None:
        """Say `text` where the grid would be (the welcome panel stays until it is done)."""
        self.message.setText(text)
        if not self.showing(self.welcome):
            self.pages.setCurrentWidget(self.message)

    def show_welcome(self) -> None:
        self.pages.setCurrentWidget(self.welcome)

    def leave_welcome(self) -> None:
        if self.showing(self.welcome):
            self.pages.setCurrentWidget(self.message)

    def show_empty_state(self, photo_count: int, indexing: bool) -> None:
        """What an empty search box shows (not over the welcome panel or the preview)."""
        if self.showing(self.welcome) or self.showing(self.preview):
            return
        if photo_count:
            self.show_message(f"Type to search your {photo_count:,} photos")
        elif indexing:
            self.show_message(INDEXING_MESSAGE)
        else:
            self.show_message("No photos yet.\nAdd a folder with Folders\u2026 to get started.")

    def show_no_match(self, filtering: bool, photo_count: int) -> None:
        if filtering:
            self.show_message("No photos match these filters.")
        elif photo_count == 0:
            self.show_message("No photos indexed yet \u2014 they appear here as indexing goes on.")
        else:
            self.show_message("No photos found.")

    def show_preview(self, row: int) -> None:
        if self.model.hit(row) is None:
            return
        self.pages.setCurrentWidget(self.preview)
        self.preview.show_row(row)
        self.preview.setFocus()

    def close_preview(self) -> None:
        row = self.preview.row
        self.pages.setCurrentWidget(self.grid if self.model.rowCount() else self.message)
        if row >= 0:
            self.select_row(row)
        self.grid.setFocus()

    def enter_grid(self) -> None:
        """Move the keyboard focus into the results, if they are showing."""
        if self.model.rowCount() and self.showing(self.grid):
            self.grid.setFocus()
            if not self.grid.currentIndex().isValid():
                self.select_row(0)

    def show_similar_bar(self, path: str | None) -> None:
        """"Photos similar to NAME" above the grid, or (None) no such bar."""
        if path is not None:
            self.similar_label.setText(f"Photos similar to <b>{os.path.basename(path)}</b>")
            self.banner.setVisible(False)
        self.similar_bar.setVisible(path is not None)

    # -- results ---------------------------------------------------------------------------

    def show_result(self, result: SearchResult, keep_view: bool) -> bool:
        """Fill the grid; `keep_view` keeps the selection and scroll position (a re-run of
        the same search). False: nothing changed, so nothing was touched."""
        hits = list(result.hits)
        if keep_view and [h.path for h in hits] == self.model.paths():
            return False
        selected = self.current_path()
        scroll = self.grid.verticalScrollBar().value()
        self.model.set_hits(hits)
        if keep_view:
            if selected is not None and (row := self.model.row_of(selected)) is not None:
                self.select_row(row, scroll=False)
            self.grid.verticalScrollBar().setValue(scroll)
        elif hits:
            self.grid.scrollToTop()
        self.banner.setVisible(result.weak and bool(hits))
        if hits and not self.showing(self.preview):
            self.pages.setCurrentWidget(self.grid)
        return True

    def clear(self) -> None:
        self.model.set_hits([])
        self.banner.setVisible(False)

    # -- selection -------------------------------------------------------------------------

    def current_row(self) -> int:
        idx = self.grid.currentIndex()
        return idx.row() if idx.isValid() else -1

    def current_path(self) -> str | None:
        """The photo the actions apply to: the one previewed, else the grid's current one."""
        if self.showing(self.preview) and self.preview.row >= 0:
            hit = self.model.hit(self.preview.row)
            return hit.path if hit else None
        idx = self.grid.currentIndex()
        return idx.data(PathRole) if idx.isValid() else None

    def select_row(self, row: int, scroll: bool = True) -> None:
        idx = self.model.index(row)
        if not idx.isValid():
            return
        self.grid.selectionModel().setCurrentIndex(idx, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if scroll:
            self.grid.scrollTo(idx)

    def _on_context_menu(self, pos: QPoint) -> None:
        idx = self.grid.indexAt(pos)
        if idx.isValid():
            self.select_row(idx.row(), scroll=False)
            self.context_menu_requested.emit(pos)
