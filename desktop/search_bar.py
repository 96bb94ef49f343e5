"""The search box, and the filter row under it: only photos from one folder, or taken
between two dates."""

from __future__ import annotations

import os
from datetime import datetime, time

from PySide6.QtCore import QDate, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDateEdit,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QWidget,
)

from engine.library import FolderInfo

Filters = tuple[str | None, datetime | None, datetime | None]  # folder, taken from, taken to


class SearchBox(QLineEdit):
    """A large line edit; Down emits `down_pressed`, on which the window moves into the
    results, so the keyboard alone is enough: Ctrl+F, type, Down, arrows, Enter."""

    down_pressed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText("Describe a photo, e.g. \u201ca dog running on grass\u201d")
        self.setClearButtonEnabled(True)
        self.setMinimumHeight(32)
        font = self.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.setFont(font)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Down:
            self.down_pressed.emit()
        super().keyPressEvent(event)


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
