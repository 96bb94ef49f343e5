"""Watched folders: add and remove. The dialog only asks; the session does the work."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.library import FolderInfo


def folder_label(info: FolderInfo) -> str:
    count = f"{info.photo_count:,} photo{'s' if info.photo_count != 1 else ''}"
    state = "" if info.online else "  \u2014  offline (drive not connected?)"
    return f"{info.path}\n    {count}{state}"


class FoldersDialog(QDialog):
    add_requested = Signal(str)
    remove_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Watched folders")
        self.resize(560, 360)
        intro = QLabel(
            "photosearch indexes the photos in these folders and keeps up with changes "
            "while it runs. Removing a folder only forgets its photos; the files stay."
        )
        intro.setWordWrap(True)
        self.list = QListWidget()
        self.list.setAlternatingRowColors(True)
        self.list.currentItemChanged.connect(self._update_buttons)
        self.add_btn = QPushButton("Add folder\u2026")
        self.add_btn.clicked.connect(self._choose_folder)
        self.remove_btn = QPushButton("Remove")
        self.remove_btn.clicked.connect(lambda: self._remove_selected())
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_btn)
        buttons.addWidget(self.remove_btn)
        buttons.addStretch(1)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self._update_buttons()

    def set_folders(self, folders: list[FolderInfo]) -> None:
        current = self.selected_path()
        self.list.clear()
        for info in folders:
            item = QListWidgetItem(folder_label(info))
            item.setData(Qt.ItemDataRole.UserRole, info.path)
            self.list.addItem(item)
            if info.path == current:
                self.list.setCurrentItem(item)
        if not folders:
            item = QListWidgetItem("No folders yet. Add one to start indexing.")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.list.addItem(item)
        self._update_buttons()

    def folder_paths(self) -> list[str]:
        out = []
        for i in range(self.list.count()):
            p = self.list.item(i).data(Qt.ItemDataRole.UserRole)
            if p:
                out.append(p)
        return out

    def selected_path(self) -> str | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def select_path(self, path: str) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == path:
                self.list.setCurrentRow(i)

    def _update_buttons(self, *_args: object) -> None:
        self.remove_btn.setEnabled(bool(self.selected_path()))

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add a folder to watch", str(Path.home()))
        if path:
            self.add_requested.emit(path)

    def _remove_selected(self, confirm: bool = True) -> None:
        path = self.selected_path()
        if not path:
            return
        if confirm:
            answer = QMessageBox.question(
                self,
                "Remove folder",
                f"Stop watching {path}?\n\nIts photos disappear from search results. "
                "No files are deleted.",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.remove_requested.emit(path)
