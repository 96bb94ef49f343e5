"""Everything under the filter row: the weak-match banner, and one page at a time: a
message (loading, empty state, no results), the grid, the preview of one photo, or the
first-run welcome panel.

Rows here are photo numbers (positions in `model.hits()`, what the preview steps
through); the grid's own rows also hold the "Less likely" divider, so the pane converts."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPoint, Qt, Signal
from PySide6.QtWidgets import QLabel, QStackedWidget, QVBoxLayout, QWidget

from desktop.photo_grid import PathRole, PhotoDelegate, PhotoGridModel, PhotoGridView
from desktop.preview import PreviewPane
from desktop.tasks import TaskRunner
from desktop.thumbnails import ThumbnailLoader
from desktop.welcome import WelcomePanel
from engine.library import PhotoHit, SearchResult

INDEXING_MESSAGE = "Indexing your photos\u2026\nYou can search as soon as the first ones are in."
BANNER_STYLE = (
    "#weakBanner { background: #fff4ce; color: #5c4400; border: 1px solid #e8c95a;"
    " border-radius: 6px; padding: 8px 12px; }"
)


class ResultsPane(QWidget):
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
        self.model = PhotoGridModel(loader, self)
        self.grid = PhotoGridView()
        self.delegate = PhotoDelegate(self.grid, thumb_size)
        self.grid.setItemDelegate(self.delegate)
        self.grid.relayout_cells()
        self.grid.setModel(self.model)
        self.grid.doubleClicked.connect(self._preview_index)
        self.grid.preview_requested.connect(self._preview_index)
        self.grid.group_toggled.connect(self.toggle_group)
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
        self.preview = PreviewPane(
            runner, self.model.hits,
            not_loaded=self.model.photos_not_loaded, load_more=self.model.fetchMore,
        )
        self.model.page_appended.connect(self.preview.more_loaded)
        self.preview.closed.connect(self.close_preview)
        self.preview.row_changed.connect(self.select_row)
        self.pages = QStackedWidget()
        for page in (self.message, self.grid, self.preview, self.welcome):
            self.pages.addWidget(page)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(self.banner)
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
        """What an empty search box shows until the library's photos are there to browse
        (not over the welcome panel or the preview)."""
        if self.showing(self.welcome) or self.showing(self.preview):
            return
        if photo_count:
            self.show_message(f"Loading your {photo_count:,} photos\u2026")
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

    def _preview_index(self, idx: QModelIndex) -> None:
        number = self.model.photo_number(idx.row())
        if number >= 0:
            self.preview_requested.emit(number)

    def show_preview(self, number: int) -> None:
        if not 0 <= number < len(self.model.hits()):
            return
        self.pages.setCurrentWidget(self.preview)
        self.preview.show_row(number)
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

    # -- results ---------------------------------------------------------------------------

    def show_result(self, result: SearchResult, keep_view: bool) -> bool:
        """Fill the grid; `keep_view` keeps the selection and scroll position (a re-run of
        the same search). False: nothing changed, so nothing was touched."""
        hits = list(result.hits)
        confident = result.confident
        if (
            keep_view
            and self.model.mode == "search"
            and confident == self.model.confident()
            and [h.path for h in hits] == [h.path for h in self.model.source()]
        ):
            return False
        self._refill(lambda: self.model.set_hits(hits, confident, keep_view), keep_view, bool(hits))
        self.banner.setVisible(result.weak and bool(hits))
        return True

    def show_browse(self, total: int, hits: list[PhotoHit], keep_view: bool) -> bool:
        """The library, newest first (`hits` its first rows, `total` in all); like
        `show_result`."""
        if (
            keep_view
            and self.model.mode == "browse"
            and total == self.model.total()
            and [h.path for h in hits] == [h.path for h in self.model.source()]
        ):
            return False
        self._refill(lambda: self.model.set_browse(total, hits, keep_view), keep_view, bool(hits))
        self.banner.setVisible(False)
        return True

    def _refill(self, fill: Callable[[], None], keep_view: bool, any_rows: bool) -> None:
        selected = self.current_path()
        scroll = self.grid.verticalScrollBar().value()
        fill()
        if keep_view:
            if selected is not None and (row := self.model.row_of(selected)) is not None:
                self.select_row(self.model.photo_number(row), scroll=False)
            self.grid.verticalScrollBar().setValue(scroll)
        elif any_rows:
            self.grid.scrollToTop()
        if any_rows and not self.showing(self.preview):
            self.pages.setCurrentWidget(self.grid)

    def toggle_group(self, row: int) -> None:
        """Expand or fold the near-duplicate group at grid `row`, keeping the view still."""
        self._keeping_view(lambda: self.model.toggle_group(row))

    def set_groups(self, groups: list[tuple[str, ...]]) -> None:
        self._keeping_view(lambda: self.model.set_groups(groups))

    def set_grouping(self, on: bool) -> None:
        self._keeping_view(lambda: self.model.set_grouping(on))

    def _keeping_view(self, change: Callable[[], object]) -> None:
        selected = self.current_path()
        scroll = self.grid.verticalScrollBar().value()
        change()
        if selected is not None and (r := self.model.row_of(selected)) is not None:
            self.select_row(self.model.photo_number(r), scroll=False)
        self.grid.verticalScrollBar().setValue(scroll)

    def clear(self) -> None:
        self.model.set_hits([])
        self.banner.setVisible(False)

    # -- selection -------------------------------------------------------------------------

    def current_row(self) -> int:
        """The current photo's number in `model.hits()`, or -1."""
        idx = self.grid.currentIndex()
        return self.model.photo_number(idx.row()) if idx.isValid() else -1

    def current_path(self) -> str | None:
        """The photo the actions apply to: the one previewed, else the grid's current one."""
        if self.showing(self.preview) and self.preview.row >= 0:
            hit = self.model.hit(self.preview.row)
            return hit.path if hit else None
        idx = self.grid.currentIndex()
        return idx.data(PathRole) if idx.isValid() else None

    def select_row(self, number: int, scroll: bool = True) -> None:
        """Make photo `number` (of `model.hits()`) the current one."""
        if number < 0:
            return
        idx = self.model.index(self.model.row_of_photo(number))
        if not idx.isValid() or self.model.hit(idx.row()) is None:
            return
        self.grid.selectionModel().setCurrentIndex(idx, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if scroll:
            self.grid.scrollTo(idx)

    def _on_context_menu(self, pos: QPoint) -> None:
        idx = self.grid.indexAt(pos)
        if idx.isValid() and self.model.hit(idx.row()) is not None:
            self.select_row(self.model.photo_number(idx.row()), scroll=False)
            self.context_menu_requested.emit(pos)
