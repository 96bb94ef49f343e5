"""The result grid: the view, a flat list model over search hits, and the delegate that
paints a cell.

The model holds plain `PhotoHit`s (search hits, or browse pages fetched as the view
scrolls) arranged into rows: photos, near-duplicate groups folded into one badged cell,
and the "Less likely" divider before the weaker hits. Thumbnails are asked for only when the view asks for
an item's decoration, i.e. when it is about to paint it, so the cost of a result list is
the cost of what is on screen.
"""

from __future__ import annotations

import html
import logging
import os
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from PySide6.QtCore import (
    QAbstractItemModel,
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QFont,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPalette,
    QPen,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from desktop.strength import strength_text
from desktop.thumbnails import ThumbnailLoader
from engine.library import PhotoHit

log = logging.getLogger(__name__)

PathRole = Qt.ItemDataRole.UserRole + 1
HitRole = Qt.ItemDataRole.UserRole + 2
# "loading", "ready" or "missing": lets the delegate choose the placeholder.
ThumbStateRole = Qt.ItemDataRole.UserRole + 3
RowKindRole = Qt.ItemDataRole.UserRole + 4  # "photo" or "divider"
GroupCountRole = Qt.ItemDataRole.UserRole + 5  # photos in the group this row stands for; 0: none
GroupStateRole = Qt.ItemDataRole.UserRole + 6  # "", "folded", "expanded" or "member"

_Index = QModelIndex | QPersistentModelIndex


def format_date(date: datetime | None) -> str:
    return date.strftime("%d %b %Y, %H:%M") if date else "date unknown"


@dataclass(frozen=True)
class GridRow:
    """One cell of the grid: a photo, or the "Less likely" divider (`hit` None).

    A photo that stands for a group of near-duplicates has `group` (the group's paths,
    representative first) and `count`; a member shown under an expanded group has
    `member` set."""

    hit: PhotoHit | None
    group: tuple[str, ...] = ()
    member: bool = False

    @property
    def divider(self) -> bool:
        return self.hit is None

    @property
    def count(self) -> int:
        return len(self.group) if not self.member else 0


DIVIDER = GridRow(None)
DIVIDER_TEXT = "Less likely"


class PhotoGridModel(QAbstractListModel):
    """The grid's rows: search hits (confident ones, the divider, the weaker ones) or, in
    browse mode, the library page by page.

    Browse mode never holds the whole library: `canFetchMore`/`fetchMore` (called by the
    view as the user scrolls near the end) emit `page_wanted(offset)`, the session loads
    that page on the thread pool and hands it to `append_page`. Near-duplicate groups
    fold into their first photo unless the group is expanded or grouping is off."""

    page_wanted = Signal(int)  # source offset of the next browse page
    page_appended = Signal()  # a browse page arrived (even one that folded into groups)

    def __init__(self, loader: ThumbnailLoader, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.loader = loader
        self.mode: Literal["search", "browse"] = "search"
        self._source: list[PhotoHit] = []  # what the engine returned, in order
        self._confident: int | None = None
        self._total = 0  # browse: photos in the library (under the filters)
        self._fetching = False
        self._rows: list[GridRow] = []
        self._row_of: dict[str, int] = {}
        self._group_of: dict[str, tuple[str, ...]] = {}
        self._grouping = True
        self._expanded: set[str] = set()  # representative paths
        self._seen_groups: set[tuple[str, ...]] = set()
        self._divider_row: int | None = None
        loader.thumbnail_ready.connect(self._on_thumbnail_ready)

    # -- filling ---------------------------------------------------------------------
    def set_hits(
        self, hits: list[PhotoHit], confident: int | None = None, keep_expanded: bool = False
    ) -> None:
        """Search results; rows from `confident` on go under the "Less likely" divider.
        Queued thumbnail requests for the old list are dropped; a new list starts with
        every group folded (`keep_expanded`: a refresh of the same one)."""
        self.loader.cancel_pending()
        self.beginResetModel()
        if not keep_expanded:
            self._expanded.clear()
        self.mode = "search"
        self._source = list(hits)
        self._confident = confident
        self._total = len(self._source)
        self._fetching = False
        self._rebuild()
        self.endResetModel()

    def set_browse(
        self, total: int, first_page: list[PhotoHit], keep_expanded: bool = False
    ) -> None:
        """The whole library (`total` photos), newest first; more pages on demand."""
        self.loader.cancel_pending()
        self.beginResetModel()
        if not keep_expanded:
            self._expanded.clear()
        self.mode = "browse"
        self._source = list(first_page)
        self._confident = None
        self._total = max(total, len(self._source))
        self._fetching = False
        self._rebuild()
        self.endResetModel()

    def append_page(self, offset: int, hits: list[PhotoHit]) -> None:
        """A browse page that `page_wanted` asked for; a page for another offset (the list
        changed meanwhile) is ignored."""
        self._fetching = False
        if self.mode != "browse" or offset != len(self._source):
            return
        if not hits:
            self._total = len(self._source)  # the library shrank since the count
            return
        rows = self._rows_for(hits, start=len(self._source))
        self._source.extend(hits)
        if rows:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
            self._rows.extend(rows)
            self._index_rows(first)
            self.endInsertRows()
        self.page_appended.emit()

    def canFetchMore(self, parent: _Index = QModelIndex()) -> bool:  # noqa: B008 - Qt signature
        return (
            not parent.isValid()
            and self.mode == "browse"
            and not self._fetching
            and len(self._source) < self._total
        )

    def fetchMore(self, parent: _Index = QModelIndex()) -> None:  # noqa: B008 - Qt signature
        if self.canFetchMore(parent):
            self._fetching = True
            self.page_wanted.emit(len(self._source))

    # -- near-duplicates -------------------------------------------------------------
    def set_groups(self, groups: list[tuple[str, ...]]) -> None:
        """Near-duplicate groups (paths, representative first); rows are rebuilt."""
        self._group_of = {p: g for g in groups if len(g) > 1 for p in g}
        self._expanded &= {g[0] for g in groups}
        self._relayout()

    def set_grouping(self, on: bool) -> None:
        if on != self._grouping:
            self._grouping = on
            self._relayout()

    def grouping(self) -> bool:
        return self._grouping

    def toggle_group(self, row: int) -> bool:
        """Expand or fold the group shown at `row` (its first photo or a member); True
        if there was one."""
        r = self.row(row)
        if r is None or not r.group:
            return False
        key = r.group[0]
        if key in self._expanded:
            self._expanded.discard(key)
        else:
            self._expanded.add(key)
        self._relayout()
        return True

    def group_size(self, row: int) -> int:
        """Photos in the near-duplicate group shown at `row` (first photo or member); 0: none."""
        r = self.row(row)
        return len(r.group) if r is not None else 0

    def is_expanded(self, row: int) -> bool:
        r = self.row(row)
        return r is not None and bool(r.group) and r.group[0] in self._expanded

    def _relayout(self) -> None:
        self.beginResetModel()
        self._rebuild()
        self.endResetModel()

    def _rebuild(self) -> None:
        self._seen_groups = set()
        self._rows = self._rows_for(self._source, start=0)
        self._row_of = {}
        self._divider_row = None
        self._index_rows(0)

    def _index_rows(self, start: int) -> None:
        """`row_of` for rows from `start`: a folded group's members find its tile, so a
        selected photo that gets grouped stays selected."""
        for i in range(start, len(self._rows)):
            r = self._rows[i]
            if r.hit is None:
                self._divider_row = i
                continue
            self._row_of.setdefault(r.hit.path, i)
            if r.group and not r.member and r.group[0] not in self._expanded:
                for p in r.group:
                    self._row_of.setdefault(p, i)

    def _rows_for(self, hits: list[PhotoHit], start: int) -> list[GridRow]:
        """Rows for `hits` (source positions from `start`): the divider at the confident
        cut, one row per group (plus its members when expanded)."""
        rows: list[GridRow] = []
        cut = self._confident
        by_path = {h.path: h for h in self._source}
        by_path.update((h.path, h) for h in hits)
        for i, hit in enumerate(hits, start):
            if cut is not None and 0 < cut == i < self._total:
                rows.append(DIVIDER)
            group = self._group_of.get(hit.path) if self._grouping else None
            if group is None:
                rows.append(GridRow(hit))
                continue
            if group in self._seen_groups:
                continue  # folded into the group's first row
            self._seen_groups.add(group)
            # The tile sits where the group first appears and shows its representative
            # (the engine's pick: most pixels) when that one is in the list too.
            lead = by_path.get(group[0], hit)
            rows.append(GridRow(lead, group))
            if group[0] in self._expanded:
                for p in group:
                    if p != lead.path:
                        # A member not in this list (yet) is shown with the first one's
                        # details; its own thumbnail still loads by path.
                        rows.append(GridRow(by_path.get(p) or replace(hit, path=p), group, True))
        return rows

    # -- queries ---------------------------------------------------------------------
    def row(self, row: int) -> GridRow | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def hits(self) -> list[PhotoHit]:
        """The photos shown, in grid order (no divider): what the preview steps through."""
        return [r.hit for r in self._rows if r.hit is not None]

    def photos_not_loaded(self) -> int:
        """Browse: library photos whose page has not been fetched yet (0 for a search)."""
        return max(0, self._total - len(self._source)) if self.mode == "browse" else 0

    def hit(self, row: int) -> PhotoHit | None:
        r = self.row(row)
        return r.hit if r is not None else None

    def row_of(self, path: str) -> int | None:
        return self._row_of.get(path)

    def photo_number(self, row: int) -> int:
        """Position of the photo at grid `row` among `hits()`; -1 for the divider."""
        r = self.row(row)
        if r is None or r.hit is None:
            return -1
        d = self._divider_row
        return row - 1 if d is not None and row > d else row

    def row_of_photo(self, number: int) -> int:
        """Grid row of photo `number` of `hits()` (inverse of `photo_number`)."""
        d = self._divider_row
        return number + 1 if d is not None and number >= d else number

    def divider_row(self) -> int | None:
        return self._divider_row

    def paths(self) -> list[str]:
        return [h.path for h in self.hits()]

    def source(self) -> list[PhotoHit]:
        """The hits as the engine gave them (before grouping and the divider)."""
        return list(self._source)

    def confident(self) -> int | None:
        return self._confident

    def total(self) -> int:
        """Browse: photos under the filters; search: hits."""
        return self._total

    def loaded(self) -> int:
        return len(self._source)

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 - Qt signature
        return 0 if parent.isValid() else len(self._rows)

    def flags(self, index: _Index) -> Qt.ItemFlag:
        r = self.row(index.row()) if index.isValid() else None
        if r is not None and r.divider:
            return Qt.ItemFlag.NoItemFlags  # not selectable, not focusable
        return super().flags(index)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        r = self.row(index.row()) if index.isValid() else None
        if r is None:
            return None
        if role == RowKindRole:
            return "divider" if r.divider else "photo"
        if r.hit is None:
            if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
                return DIVIDER_TEXT
            if role == Qt.ItemDataRole.ToolTipRole:
                return "Photos below match the search less well"
            return None
        hit = r.hit
        if role == Qt.ItemDataRole.DecorationRole:
            known, pix = self.loader.cached(hit.path)
            if not known:
                self.loader.request(hit.path)
            return pix
        if role == ThumbStateRole:
            known, pix = self.loader.cached(hit.path)
            if not known:
                return "loading"
            return "ready" if pix is not None else "missing"
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(r)
        if role == Qt.ItemDataRole.AccessibleTextRole or role == Qt.ItemDataRole.DisplayRole:
            # Not painted (the delegate draws only the picture) but used by screen readers
            # and keyboard search.
            return os.path.basename(hit.path)
        if role == PathRole:
            return hit.path
        if role == HitRole:
            return hit
        if role == GroupCountRole:
            return r.count
        if role == GroupStateRole:
            if not r.group:
                return ""
            if r.member:
                return "member"
            return "expanded" if r.group[0] in self._expanded else "folded"
        return None

    def _tooltip(self, r: GridRow) -> str:
        hit = r.hit
        assert hit is not None
        extra = "" if hit.status in ("ok", "") else f"<br><i>{html.escape(hit.status)}</i>"
        lines = [
            f"<b>{html.escape(os.path.basename(hit.path))}</b>",
            html.escape(hit.path),
            format_date(hit.date),
        ]
        if self.mode == "search" and not r.member:
            lines.append(strength_text(hit.strength))
        if r.count:
            state = "click the badge to fold" if r.group[0] in self._expanded else "click the badge to show them"
            lines.append(f"{r.count} near-identical photos ({state})")
        return "<br>".join(line for line in lines if line) + extra

    def _on_thumbnail_ready(self, path: str) -> None:
        row = self._row_of.get(path)
        if row is not None:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])


class PhotoDelegate(QStyledItemDelegate):
    """Paints a cell: the picture fitted inside (or a placeholder that says why not), a
    count badge on a group of near-duplicates, or the full-width "Less likely" divider."""

    DIVIDER_HEIGHT = 34

    def __init__(self, parent: QWidget | None = None, thumb_size: int = 160) -> None:
        super().__init__(parent)
        self.thumb_size = thumb_size
        self.padding = 6
        # Set by the view: its cell (thumb + padding, widened to fill the row) and the
        # width a divider spans.
        self.cell_size = QSize()
        self.row_width = 0

    def set_thumb_size(self, px: int) -> None:
        self.thumb_size = px

    def sizeHint(self, option: QStyleOptionViewItem, index: _Index) -> QSize:
        if index.data(RowKindRole) == "divider":
            return QSize(max(1, self.row_width), self.DIVIDER_HEIGHT)
        if self.cell_size.isValid():
            return self.cell_size
        side = self.thumb_size + 2 * self.padding
        return QSize(side, side)

    @staticmethod
    def badge_rect(cell: QRect) -> QRect:
        """Where the count badge of a group sits in a cell (the view's click target)."""
        return QRect(cell.right() - 50, cell.top() + 8, 42, 24)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: _Index) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        pal: QPalette = option.palette
        if index.data(RowKindRole) == "divider":
            self._divider(painter, QRect(option.rect), pal, str(index.data() or ""))
            painter.restore()
            return
        cell = QRect(option.rect).adjusted(2, 2, -2, -2)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        hovered = bool(option.state & QStyle.StateFlag.State_MouseOver)
        group_state = index.data(GroupStateRole)
        if group_state in ("expanded", "member") and not selected:
            # An open group sits on a faint band, so its members read as one set.
            band = QColor(pal.color(QPalette.ColorRole.Highlight))
            band.setAlpha(35)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(band)
            painter.drawRoundedRect(cell, 6, 6)
        if selected or hovered:
            bg = QColor(pal.color(QPalette.ColorRole.Highlight))
            bg.setAlpha(200 if selected else 60)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(bg)
            painter.drawRoundedRect(cell, 6, 6)

        inner = cell.adjusted(self.padding - 2, self.padding - 2, -self.padding + 2, -self.padding + 2)
        pix = index.data(Qt.ItemDataRole.DecorationRole)
        if pix is not None and not pix.isNull():
            scaled = pix.size().scaled(inner.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, scaled.width(), scaled.height())
            target.moveCenter(inner.center())
            painter.drawPixmap(target, pix)
        else:
            state = index.data(ThumbStateRole)
            self._placeholder(painter, inner, pal, missing=(state == "missing"))
        count = index.data(GroupCountRole) or 0
        if count > 1:
            self._badge(painter, self.badge_rect(cell), count, expanded=group_state == "expanded")
        painter.restore()

    @staticmethod
    def _badge(painter: QPainter, rect: QRect, count: int, expanded: bool) -> None:
        """A dark pill: a little stack of two frames and the count when folded (no font
        has to carry a stack glyph), a minus and the count when open."""
        white = QColor(255, 255, 255)
        painter.setPen(QPen(QColor(255, 255, 255, 230), 1.2))
        painter.setBrush(QColor(20, 20, 24, 200))
        painter.drawRoundedRect(rect, 11, 11)
        f = QFont(painter.font())
        f.setBold(True)
        painter.setFont(f)
        icon = QRect(rect.left() + 7, rect.top() + 6, 12, 12)
        painter.setPen(QPen(white, 1.4))
        if expanded:
            y = icon.center().y()
            painter.drawLine(icon.left() + 1, y, icon.right() - 1, y)
        else:
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(icon.adjusted(3, 0, 0, -3))
            painter.setBrush(QColor(20, 20, 24))
            painter.drawRect(icon.adjusted(0, 3, -3, 0))
        painter.setPen(white)
        text = QRect(icon.right() + 2, rect.top(), rect.right() - icon.right() - 6, rect.height())
        painter.drawText(text, Qt.AlignmentFlag.AlignCenter, str(count))

    @staticmethod
    def _divider(painter: QPainter, rect: QRect, pal: QPalette, text: str) -> None:
        colour = QColor(pal.color(QPalette.ColorRole.PlaceholderText))
        f = QFont(painter.font())
        f.setBold(True)
        painter.setFont(f)
        metrics = painter.fontMetrics()
        text_w = metrics.horizontalAdvance(text) + 24
        mid = rect.center().y()
        painter.setPen(QPen(colour, 1))
        left = rect.left() + 8
        painter.drawLine(left, mid, left + 24, mid)
        painter.drawLine(left + 24 + text_w, mid, rect.right() - 8, mid)
        painter.drawText(
            QRect(left + 24, rect.top(), text_w, rect.height()), Qt.AlignmentFlag.AlignCenter, text
        )

    @staticmethod
    def _placeholder(painter: QPainter, rect: QRect, pal: QPalette, missing: bool) -> None:
        base = QColor(pal.color(QPalette.ColorRole.Mid))
        base.setAlpha(60 if not missing else 90)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(base)
        painter.drawRoundedRect(rect, 4, 4)
        if missing:
            # Offline drive, deleted or unreadable file: say so instead of an endless grey box.
            pen = QPen(pal.color(QPalette.ColorRole.PlaceholderText))
            painter.setPen(pen)
            f = painter.font()
            f.setPointSizeF(max(7.0, f.pointSizeF() * 0.9))
            painter.setFont(f)
            painter.drawText(
                rect, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, "Photo not\navailable"
            )


class PhotoGridView(QListView):
    """Icon-mode list tuned for big result lists; Enter opens, Space previews, a click on
    a group's badge expands or folds it."""

    open_requested = Signal(QModelIndex)
    preview_requested = Signal(QModelIndex)
    group_toggled = Signal(int)  # row
    scrolled = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        # Uniform sizes: layout of 100,000 items without asking each one for its size hint.
        # Single-pass layout: with uniform sizes 10,000 items lay out in milliseconds, and
        # batched layout would make the scroll bar grow while the user drags it. Only a
        # list with the full-width divider row lays out item by item (at most the search
        # top-k rows). No grid size: a grid would force the divider into one cell.
        self.setUniformItemSizes(True)
        self.setSpacing(0)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)
        self.setMouseTracking(True)  # hover highlight
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.verticalScrollBar().valueChanged.connect(lambda _v: self.scrolled.emit())

    def setModel(self, model: QAbstractItemModel | None) -> None:  # noqa: N802 - Qt name
        super().setModel(model)
        if isinstance(model, PhotoGridModel):
            model.modelReset.connect(self._choose_layout)
            self._choose_layout()

    def _choose_layout(self) -> None:
        model = self.model()
        uniform = not isinstance(model, PhotoGridModel) or model.divider_row() is None
        if uniform != self.uniformItemSizes():
            self.setUniformItemSizes(uniform)

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
        if cell != delegate.cell_size or delegate.row_width != cell.width() * columns:
            delegate.cell_size = cell
            delegate.row_width = cell.width() * columns
            # Uniform sizes cache one item's size; toggling the flag drops that cache.
            uniform = self.uniformItemSizes()
            self.setUniformItemSizes(not uniform)
            self.setUniformItemSizes(uniform)
            self.scheduleDelayedItemsLayout()

    def resizeEvent(self, event: QResizeEvent) -> None:
        self.relayout_cells()
        super().resizeEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        idx = self.indexAt(event.position().toPoint())
        if (
            event.button() == Qt.MouseButton.LeftButton
            and idx.isValid()
            and (idx.data(GroupCountRole) or 0) > 1
        ):
            cell = self.visualRect(idx).adjusted(2, 2, -2, -2)
            if PhotoDelegate.badge_rect(cell).contains(event.position().toPoint()):
                self.group_toggled.emit(idx.row())
                event.accept()
                return
        super().mouseReleaseEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        idx = self.currentIndex()
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and idx.isValid():
            self.open_requested.emit(idx)
            return
        if event.key() == Qt.Key.Key_Space and idx.isValid():
            self.preview_requested.emit(idx)
            return
        super().keyPressEvent(event)
