"""The result grid: the view, a flat list model over search hits, and the delegate that
paints a cell.

The model holds plain `PhotoHit`s. Thumbnails are asked for only when the view asks for
an item's decoration, i.e. when it is about to paint it, so the cost of a result list is
the cost of what is on screen.
"""

from __future__ import annotations

import html
import logging
import os
from datetime import datetime
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QKeyEvent, QPainter, QPalette, QPen, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from desktop.thumbnails import ThumbnailLoader
from engine.library import PhotoHit

log = logging.getLogger(__name__)

PathRole = Qt.ItemDataRole.UserRole + 1
HitRole = Qt.ItemDataRole.UserRole + 2
# "loading", "ready" or "missing": lets the delegate choose the placeholder.
ThumbStateRole = Qt.ItemDataRole.UserRole + 3

_Index = QModelIndex | QPersistentModelIndex


def format_date(date: datetime | None) -> str:
    return date.strftime("%d %b %Y, %H:%M") if date else "date unknown"


class PhotoGridModel(QAbstractListModel):
    def __init__(self, loader: ThumbnailLoader, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.loader = loader
        self._hits: list[PhotoHit] = []
        self._row_of: dict[str, int] = {}
        loader.thumbnail_ready.connect(self._on_thumbnail_ready)

    # -- data ------------------------------------------------------------------------
    def set_hits(self, hits: list[PhotoHit]) -> None:
        """Replace the results; queued thumbnail requests for the old list are dropped."""
        self.loader.cancel_pending()
        self.beginResetModel()
        self._hits = list(hits)
        self._row_of = {h.path: i for i, h in enumerate(self._hits)}
        self.endResetModel()

    def hits(self) -> list[PhotoHit]:
        return list(self._hits)

    def hit(self, row: int) -> PhotoHit | None:
        return self._hits[row] if 0 <= row < len(self._hits) else None

    def row_of(self, path: str) -> int | None:
        return self._row_of.get(path)

    def paths(self) -> list[str]:
        return [h.path for h in self._hits]

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 - Qt signature
        return 0 if parent.isValid() else len(self._hits)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._hits):
            return None
        hit = self._hits[index.row()]
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
            return self._tooltip(hit)
        if role == Qt.ItemDataRole.AccessibleTextRole or role == Qt.ItemDataRole.DisplayRole:
            # Not painted (the delegate draws only the picture) but used by screen readers
            # and keyboard search.
            return os.path.basename(hit.path)
        if role == PathRole:
            return hit.path
        if role == HitRole:
            return hit
        return None

    @staticmethod
    def _tooltip(hit: PhotoHit) -> str:
        extra = "" if hit.status in ("ok", "") else f"<br><i>{html.escape(hit.status)}</i>"
        return (
            f"<b>{html.escape(os.path.basename(hit.path))}</b><br>"
            f"{html.escape(hit.path)}<br>"
            f"{format_date(hit.date)}<br>"
            f"match score {hit.score:.3f}{extra}"
        )

    def _on_thumbnail_ready(self, path: str) -> None:
        row = self._row_of.get(path)
        if row is not None:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])


class PhotoDelegate(QStyledItemDelegate):
    """Paints a square cell: the picture fitted inside, or a placeholder that says why not."""

    def __init__(self, parent: QWidget | None = None, thumb_size: int = 160) -> None:
        super().__init__(parent)
        self.thumb_size = thumb_size
        self.padding = 6
        # Set by the view to its grid cell (thumb + padding, widened to fill the row).
        self.cell_size = QSize()

    def set_thumb_size(self, px: int) -> None:
        self.thumb_size = px

    def sizeHint(self, option: QStyleOptionViewItem, index: _Index) -> QSize:
        if self.cell_size.isValid():
            return self.cell_size
        side = self.thumb_size + 2 * self.padding
        return QSize(side, side)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: _Index) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        pal: QPalette = option.palette
        cell = QRect(option.rect).adjusted(2, 2, -2, -2)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        hovered = bool(option.state & QStyle.StateFlag.State_MouseOver)
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
        painter.restore()

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
        # Single-pass layout: with uniform sizes 10,000 items lay out in milliseconds, and
        # batched layout would make the scroll bar grow while the user drags it.
        self.setUniformItemSizes(True)
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
