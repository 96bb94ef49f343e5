"""The photos that could not be indexed, and why."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


class FailuresDialog(QDialog):
    def __init__(self, failures: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Photos that could not be read")
        self.resize(760, 380)
        n = len(failures)
        intro = QLabel(
            f"{n:,} file{'s' if n != 1 else ''} could not be indexed. "
            f"{'They are' if n != 1 else 'It is'} tried again whenever "
            f"{'they change' if n != 1 else 'it changes'} on disk."
            if n
            else "Every photo was read successfully."
        )
        intro.setWordWrap(True)
        self.table = QTableWidget(n, 2)
        self.table.setHorizontalHeaderLabels(["File", "Reason"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(False)
        for row, (path, reason) in enumerate(failures):
            p = QTableWidgetItem(path)
            p.setToolTip(path)
            r = QTableWidgetItem(reason)
            r.setToolTip(reason)
            self.table.setItem(row, 0, p)
            self.table.setItem(row, 1, r)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addWidget(buttons)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
