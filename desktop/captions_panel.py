"""Side panel: the captions from the caption bank that best describe one photo."""

from __future__ import annotations

import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.strength import strength_dots, strength_text
from engine.library import CaptionHit


class CaptionsPanel(QWidget):
    caption_clicked = Signal(str)
    close_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path: str | None = None
        self.setMinimumWidth(240)
        title = QLabel("<b>Similar captions</b>")
        close = QToolButton()
        close.setText("\u2715")
        close.setToolTip("Close the captions panel")
        close.setAutoRaise(True)
        close.clicked.connect(self.close_requested.emit)
        head = QHBoxLayout()
        head.addWidget(title)
        head.addStretch(1)
        head.addWidget(close)

        self.thumb = QLabel()
        self.thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.thumb.setFixedHeight(150)
        self.subject = QLabel()
        self.subject.setWordWrap(True)
        self.subject.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint = QLabel("Click a caption to search with it.")
        self.hint.setWordWrap(True)
        self.hint.setEnabled(False)  # greyed: a hint, not content
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setAlternatingRowColors(True)
        self.list.setSpacing(2)
        self.list.itemActivated.connect(self._activated)
        self.list.itemClicked.connect(self._activated)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.setSpacing(6)
        layout.addLayout(head)
        layout.addWidget(self.thumb)
        layout.addWidget(self.subject)
        layout.addWidget(self.hint)
        layout.addWidget(self.list, 1)

    def show_loading(self, path: str, pixmap: QPixmap | None = None) -> None:
        self.path = path
        self.subject.setText(os.path.basename(path))
        self.subject.setToolTip(path)
        self.set_picture(pixmap)
        self.list.clear()
        self.list.addItem(QListWidgetItem("Finding captions\u2026"))
        self.list.item(0).setFlags(Qt.ItemFlag.NoItemFlags)

    def set_picture(self, pixmap: QPixmap | None) -> None:
        if pixmap is not None and not pixmap.isNull():
            self.thumb.setPixmap(
                pixmap.scaled(220, 150, Qt.AspectRatioMode.KeepAspectRatio,
                              Qt.TransformationMode.SmoothTransformation)
            )
        else:
            self.thumb.clear()

    def has_picture(self) -> bool:
        pix = self.thumb.pixmap()
        return pix is not None and not pix.isNull()

    def show_progress(self, path: str, percent: int) -> None:
        """A model without stored caption vectors embeds its bank once; say so, with
        progress, instead of leaving "Finding captions..." up for minutes."""
        if path != self.path or self.list.count() != 1 or self.captions():
            return
        self.list.item(0).setText(f"Preparing caption suggestions\u2026 {percent}%")
        self.list.item(0).setToolTip(
            "This model came without its caption vectors; they are computed once."
        )

    def show_captions(self, path: str, hits: list[CaptionHit]) -> None:
        if path != self.path:
            return  # an answer for a photo the user no longer looks at
        self.list.clear()
        if not hits:
            item = QListWidgetItem("No captions available for this photo.")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.list.addItem(item)
            return
        for hit in hits:
            # The dots lead, so the column of them reads at a glance; the words are in
            # the tooltip.
            item = QListWidgetItem(f"{strength_dots(hit.strength)}  {hit.caption}")
            item.setData(Qt.ItemDataRole.UserRole, hit.caption)
            item.setToolTip(
                f"{strength_text(hit.strength)}\nClick to search for \u201c{hit.caption}\u201d"
            )
            self.list.addItem(item)

    def show_error(self, path: str, message: str) -> None:
        if path != self.path:
            return
        self.list.clear()
        item = QListWidgetItem(f"Could not find captions: {message}")
        item.setFlags(Qt.ItemFlag.NoItemFlags)
        self.list.addItem(item)

    def captions(self) -> list[str]:
        out = []
        for i in range(self.list.count()):
            cap = self.list.item(i).data(Qt.ItemDataRole.UserRole)
            if cap:
                out.append(cap)
        return out

    def _activated(self, item: QListWidgetItem) -> None:
        cap = item.data(Qt.ItemDataRole.UserRole)
        if cap:
            self.caption_clicked.emit(str(cap))
