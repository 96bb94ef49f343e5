"""First-run panel: which folders should photosearch look at?"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QStandardPaths, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


def suggested_folders() -> list[Path]:
    """~/Pictures (or its localised XDG name) if it exists."""
    out = []
    loc = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    if loc and Path(loc).is_dir() and Path(loc) != Path.home():
        out.append(Path(loc))
    pictures = Path.home() / "Pictures"
    if pictures.is_dir() and pictures not in out:
        out.append(pictures)
    return out


class WelcomePanel(QWidget):
    """Lists suggested folders as checkboxes; `start` carries the folders chosen."""

    start = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        card = QFrame()
        card.setObjectName("welcomeCard")
        card.setFrameShape(QFrame.Shape.StyledPanel)
        card.setMaximumWidth(560)
        title = QLabel("<h2>Welcome to photosearch</h2>")
        text = QLabel(
            "Find any photo by describing it: \u201ca dog running on grass\u201d, "
            "\u201csunset over the sea\u201d. Choose the folders to search. Everything stays "
            "on this computer; indexing runs in the background and you can search right away."
        )
        text.setWordWrap(True)
        self.empty_hint = QLabel("No Pictures folder found. Add the folders that hold your photos.")
        self.empty_hint.setWordWrap(True)
        add = QPushButton("Add a folder\u2026")
        add.clicked.connect(self._choose)
        self.start_btn = QPushButton("Start indexing")
        self.start_btn.setDefault(True)
        self.start_btn.clicked.connect(self._start)
        self._boxes_layout = QVBoxLayout()
        self._boxes: list[QCheckBox] = []
        for folder in suggested_folders():
            self.add_folder(str(folder), checked=True)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addStretch(1)
        buttons.addWidget(self.start_btn)

        inner = QVBoxLayout(card)
        inner.setContentsMargins(24, 20, 24, 20)
        inner.setSpacing(12)
        inner.addWidget(title)
        inner.addWidget(text)
        inner.addWidget(self.empty_hint)
        inner.addLayout(self._boxes_layout)
        inner.addLayout(buttons)
        # Only once it has a parent: shown before that, it would open as its own window.
        self.empty_hint.setVisible(not self._boxes)

        outer = QVBoxLayout(self)
        outer.addStretch(1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card, 3)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)
        self._update()

    def add_folder(self, path: str, checked: bool = True) -> None:
        for box in self._boxes:
            if box.text() == path:
                box.setChecked(True)
                return
        box = QCheckBox(path)
        box.setChecked(checked)
        box.toggled.connect(self._update)
        self._boxes.append(box)
        self._boxes_layout.addWidget(box)
        self.empty_hint.setVisible(False)
        self._update()

    def chosen(self) -> list[str]:
        return [b.text() for b in self._boxes if b.isChecked()]

    def _update(self, *_args: object) -> None:
        self.start_btn.setEnabled(bool(self.chosen()))

    def _choose(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a folder with photos", str(Path.home()))
        if path:
            self.add_folder(path)

    def _start(self) -> None:
        self.start.emit(self.chosen())


