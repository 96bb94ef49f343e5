"""The search box (with its "Similar to" chip), the filter row under it (only photos from
one folder, or taken between two dates) and the "Sort by" control."""

from __future__ import annotations

import html
import os
from datetime import datetime, time

from PySide6.QtCore import QDate, QEvent, Qt, Signal
from PySide6.QtGui import QKeyEvent, QPixmap
from PySide6.QtWidgets import (
    QAbstractButton,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDateEdit,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QToolButton,
    QWidget,
)

from engine.library import FolderInfo

Filters = tuple[str | None, datetime | None, datetime | None]  # folder, taken from, taken to


QUERY_SYNTAX_TIP = (
    "<b>Describe the photo you are looking for</b>, e.g. <i>a dog running on grass</i>."
    "<table cellspacing='4'>"
    "<tr><td><tt>dog beach -people</tt></td><td>like \u201cdog beach\u201d, away from people</td></tr>"
    "<tr><td><tt>\"red car\" +night</tt></td><td>a quoted phrase, plus a concept</td></tr>"
    "<tr><td><tt>-term</tt></td><td>rank photos with this lower</td></tr>"
    "<tr><td><tt>+term</tt></td><td>add this concept to the rest</td></tr>"
    "</table>"
    "Right-click a photo, choose <i>Find similar photos</i>, then type to refine it "
    "(\u201cthis photo, but at night\u201d). Leave the box empty to browse every photo, "
    "newest first."
)


class SearchBox(QLineEdit):
    """A large line edit; Down emits `down_pressed`, on which the window moves into the
    results, so the keyboard alone is enough: Ctrl+F, type, Down, arrows, Enter.
    Backspace in an empty box emits `backspace_empty` (drops the "Similar to" chip)."""

    down_pressed = Signal()
    backspace_empty = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText("Describe a photo, e.g. \u201ca dog running on grass\u201d")
        self.setToolTip(QUERY_SYNTAX_TIP)
        self.setClearButtonEnabled(True)
        self.setMinimumHeight(32)
        font = self.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.setFont(font)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Down:
            self.down_pressed.emit()
        if event.key() == Qt.Key.Key_Backspace and not self.text():
            self.backspace_empty.emit()
        super().keyPressEvent(event)


def restyle(widget: QWidget, event: QEvent, style: str) -> None:
    """Style sheets resolve palette(...) once; after a theme switch (light <-> dark while
    running) they must be resolved again. Setting the sheet sends palette changes of its
    own, which must not start this again."""
    if event.type() != QEvent.Type.PaletteChange or widget.property("_restyling"):
        return
    widget.setProperty("_restyling", True)
    try:
        widget.setStyleSheet("")
        widget.setStyleSheet(style)
    finally:
        widget.setProperty("_restyling", False)


SORT_STYLE = (
    "QToolButton { padding: 2px 8px; background: palette(button);"
    " color: palette(button-text); border: 1px solid palette(mid); border-radius: 3px; }"
    "QToolButton:checked { background: palette(highlight); color: palette(highlighted-text);"
    " border: 1px solid palette(highlight); }"
    "QToolButton:disabled { color: palette(mid); }"
    "QToolButton:checked:disabled { background: palette(mid); color: palette(window);"
    " border: 1px solid palette(mid); }"
)
CHIP_STYLE = (
    "#similarChip { border: 1px solid palette(highlight); border-radius: 13px;"
    " background: palette(base); }"
)


class SimilarChip(QFrame):
    """ "Similar to: name.jpg ✕" before the search box: what the query refines."""

    cleared = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("similarChip")
        self.path: str | None = None
        self.thumb = QLabel()
        self.thumb.setFixedSize(22, 22)
        self.label = QLabel()
        self.close_btn = QToolButton()
        self.close_btn.setText("\u2715")
        self.close_btn.setAutoRaise(True)
        self.close_btn.setToolTip("Stop searching from this photo")
        self.close_btn.clicked.connect(self.cleared.emit)
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 2, 2, 2)
        row.setSpacing(4)
        row.addWidget(self.thumb)
        row.addWidget(self.label)
        row.addWidget(self.close_btn)
        self.setStyleSheet(CHIP_STYLE)
        self.setVisible(False)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        restyle(self, event, CHIP_STYLE)

    def set_path(self, path: str | None, pixmap: QPixmap | None = None) -> None:
        """Show the chip for `path` (with its thumbnail, if the grid has it), or hide it."""
        self.path = path
        if pixmap is not None and not pixmap.isNull():
            big = pixmap.scaled(22, 22, Qt.AspectRatioMode.KeepAspectRatioByExpanding,
                                Qt.TransformationMode.SmoothTransformation)
            # The middle square, like the grid's idea of the photo.
            self.thumb.setPixmap(big.copy((big.width() - 22) // 2, (big.height() - 22) // 2, 22, 22))
        else:
            self.thumb.clear()
        self.thumb.setVisible(pixmap is not None and not pixmap.isNull())
        if path is not None:
            self.label.setText(f"Similar to: <b>{html.escape(os.path.basename(path))}</b>")
            self.setToolTip(f"{path}\nType to refine: \u201cthis photo, but \u2026\u201d")
        self.setVisible(path is not None)


class SortControl(QWidget):
    """ "Sort by: Relevance | Date": how the confident matches are ordered."""

    changed = Signal(str)  # "relevance" or "date"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.group = QButtonGroup(self)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(QLabel("Sort by:"))
        row.addSpacing(6)
        self.buttons: dict[str, QToolButton] = {}
        for key, text, tip in (
            ("relevance", "Relevance", "Best matches first"),
            ("date", "Date", "The matches newest first"),
        ):
            b = QToolButton()
            b.setText(text)
            b.setToolTip(tip)
            b.setCheckable(True)
            self.group.addButton(b)
            self.buttons[key] = b
            row.addWidget(b)
        self.buttons["relevance"].setChecked(True)
        self.group.buttonToggled.connect(self._toggled)
        # The chosen one in the highlight colour: Fusion's pressed look is too faint on the
        # dark palette to tell which sort is on.
        self.setStyleSheet(SORT_STYLE)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        restyle(self, event, SORT_STYLE)

    def _toggled(self, button: QAbstractButton, on: bool) -> None:
        if on:
            self.changed.emit(self.value())

    def value(self) -> str:
        return "date" if self.buttons["date"].isChecked() else "relevance"

    def set_value(self, value: str) -> None:
        self.buttons["date" if value == "date" else "relevance"].setChecked(True)


class FilterBar(QWidget):
    """`changed` fires on every edit; `filters()` says what is chosen."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder_combo = QComboBox()
        self.folder_combo.setMinimumContentsLength(16)
        self.folder_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.folder_combo.addItem("All folders", None)
        self.folder_combo.setToolTip("Only show photos from this folder")
        self.folder_combo.currentIndexChanged.connect(lambda _i: self.changed.emit())
        self.date_check = QCheckBox("Taken between")
        self.date_from = QDateEdit()
        self.date_to = QDateEdit()
        today = QDate.currentDate()
        for edit, value in ((self.date_from, today.addYears(-1)), (self.date_to, today)):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("d MMM yyyy")
            edit.setDate(value)
            edit.setEnabled(False)
            edit.dateChanged.connect(lambda _d: self.changed.emit())
        self.date_check.toggled.connect(self._on_date_toggled)

        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(8)
        row.addWidget(QLabel("Folder"))
        row.addWidget(self.folder_combo)
        row.addSpacing(16)
        row.addWidget(self.date_check)
        row.addWidget(self.date_from)
        row.addWidget(QLabel("and"))
        row.addWidget(self.date_to)
        row.addStretch(1)

    def _on_date_toggled(self, on: bool) -> None:
        self.date_from.setEnabled(on)
        self.date_to.setEnabled(on)
        self.changed.emit()

    def set_folders(self, folders: list[FolderInfo]) -> None:
        """Offer these folders, keeping the current choice if it is still there."""
        current = self.folder_combo.currentData()
        self.folder_combo.blockSignals(True)
        self.folder_combo.clear()
        self.folder_combo.addItem("All folders", None)
        for info in folders:
            label = os.path.basename(info.path.rstrip("/\\")) or info.path
            if not info.online:
                label += " (offline)"
            self.folder_combo.addItem(label, info.path)
            self.folder_combo.setItemData(
                self.folder_combo.count() - 1, info.path, Qt.ItemDataRole.ToolTipRole
            )
        self.folder_combo.setCurrentIndex(max(0, self.folder_combo.findData(current)))
        self.folder_combo.blockSignals(False)

    def filters(self) -> Filters:
        folder = self.folder_combo.currentData()
        if not self.date_check.isChecked():
            return folder, None, None
        d0 = self.date_from.date().toPython()
        d1 = self.date_to.date().toPython()
        if d1 < d0:
            d0, d1 = d1, d0
        # Whole days: "to 3 May" includes photos taken in the evening of 3 May.
        return folder, datetime.combine(d0, time.min), datetime.combine(d1, time.max)

    def is_filtering(self) -> bool:
        return self.filters() != (None, None, None)
