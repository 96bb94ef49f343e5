"""Large single-photo view: decoded (EXIF-rotated) in a worker, arrows step through results."""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QImage, QKeyEvent, QPixmap, QResizeEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from desktop.photo_grid import format_date
from desktop.tasks import TaskRunner
from desktop.thumbnails import decode_for_display
from engine.library import PhotoHit

log = logging.getLogger(__name__)

# Big enough for a 4K screen, small enough to decode a 50 MP photo in well under a second
# thanks to JPEG draft mode.
PREVIEW_MAX_PX = 2560


def load_preview_image(path: str, max_px: int = PREVIEW_MAX_PX) -> QImage | None:
    """Decode one photo for the preview (worker thread): EXIF orientation applied."""
    image = decode_for_display(path, max_px)
    if image is None:
        log.info("preview: cannot decode %s", path)
    return image


class _ImageLabel(QLabel):
    """A label that keeps its picture fitted to whatever space it gets."""

    def __init__(self) -> None:
        super().__init__()
        self._pix: QPixmap | None = None
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setMinimumSize(QSize(64, 64))

    def set_pixmap(self, pix: QPixmap | None, text: str = "") -> None:
        self._pix = pix
        if pix is None:
            self.setPixmap(QPixmap())
            self.setText(text)
        else:
            self.setText("")
            self._refit()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._refit()

    def _refit(self) -> None:
        if self._pix is None or self._pix.isNull():
            return
        ratio = self.devicePixelRatioF()
        # Enlarge small photos at most 2x: more than that looks blocky, while a postage
        # stamp in a big empty pane looks broken.
        target = self.size() * ratio
        target = target.boundedTo(self._pix.size() * 2)
        scaled = self._pix.scaled(
            target, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
        scaled.setDevicePixelRatio(ratio)
        self.setPixmap(scaled)


class PreviewPane(QWidget):
    """Shows hit number `row` of a list supplied by the window; emits `closed` on Esc."""

    closed = Signal()
    row_changed = Signal(int)

    def __init__(
        self,
        runner: TaskRunner,
        hits: Callable[[], list[PhotoHit]],
        parent: QWidget | None = None,
        not_loaded: Callable[[], int] = lambda: 0,
        load_more: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(parent)
        self.runner = runner
        self._hits = hits
        # browse mode holds the library page by page: the preview counts the photos still
        # to load and asks for the next page when stepped past the last loaded one
        self._not_loaded = not_loaded
        self._load_more = load_more
        self._pending_row: int | None = None
        self.row = -1
        self._generation = 0
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

        self.image = _ImageLabel()
        self.caption = QLabel()
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.caption.setWordWrap(True)
        self.position = QLabel()
        back = QPushButton("Back to results")
        back.setToolTip("Esc")
        back.clicked.connect(self.closed.emit)
        self.prev_btn = QPushButton("\u2190 Previous")
        self.prev_btn.clicked.connect(lambda: self.step(-1))
        self.next_btn = QPushButton("Next \u2192")
        self.next_btn.clicked.connect(lambda: self.step(1))
        for b in (back, self.prev_btn, self.next_btn):
            # Arrow keys and Esc belong to the pane, not to a focused button.
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)

        bar = QHBoxLayout()
        bar.addWidget(back)
        bar.addStretch(1)
        bar.addWidget(self.position)
        bar.addSpacing(12)
        bar.addWidget(self.prev_btn)
        bar.addWidget(self.next_btn)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(bar)
        layout.addWidget(self.image, 1)
        layout.addWidget(self.caption)

    def show_row(self, row: int) -> None:
        hits = self._hits()
        if not 0 <= row < len(hits):
            return
        self._pending_row = None
        self.row = row
        hit = hits[row]
        self._generation += 1
        gen = self._generation
        self.image.set_pixmap(None, "Loading\u2026")
        dims = f" &nbsp; {hit.width} \u00d7 {hit.height} px" if hit.width and hit.height else ""
        self.caption.setText(
            f"<b>{html.escape(os.path.basename(hit.path))}</b> &nbsp; {format_date(hit.date)}"
            f"{dims}<br>{html.escape(hit.path)}"
        )
        count = len(hits) + self._not_loaded()
        self.position.setText(f"{row + 1:,} of {count:,}")
        self.prev_btn.setEnabled(row > 0)
        self.next_btn.setEnabled(row < count - 1)
        self.row_changed.emit(row)
        path = hit.path
        self.runner.run_task(
            "preview",
            lambda _task: load_preview_image(path),
            on_result=lambda img: self._on_loaded(gen, img),
        )

    def step(self, delta: int) -> None:
        target = self.row + delta
        if target >= len(self._hits()) and self._not_loaded():
            self._pending_row = target
            self.position.setText("Loading\u2026")
            self._load_more()
            return
        self.show_row(target)

    def more_loaded(self) -> None:
        """A browse page arrived: show the photo the user stepped to, if it is there now."""
        if self._pending_row is not None and self._pending_row < len(self._hits()):
            self.show_row(self._pending_row)

    def _on_loaded(self, generation: int, img: QImage | None) -> None:
        if generation != self._generation:
            return  # the user already moved on
        if img is None:
            self.image.set_pixmap(None, "This photo cannot be opened (missing, offline or damaged).")
        else:
            self.image.set_pixmap(QPixmap.fromImage(img))

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key == Qt.Key.Key_Escape:
            self.closed.emit()
        elif key == Qt.Key.Key_Left:
            self.step(-1)
        elif key == Qt.Key.Key_Right:
            self.step(1)
        else:
            super().keyPressEvent(event)
