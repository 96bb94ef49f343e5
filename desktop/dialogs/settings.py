"""Settings: which model checkpoint to use, attention re-ranking, and the thumbnail size.
Stored with QSettings."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

KEY_CHECKPOINT = "model/checkpoint"  # "" = the shipped default
KEY_THUMB_SIZE = "view/thumb_size"
KEY_RERANK = "search/rerank"  # unset: the engine's default ($PHOTOSEARCH_RERANK, else off)
THUMB_MIN, THUMB_MAX, THUMB_DEFAULT = 96, 256, 160


def engine_rerank_default() -> bool:
    from engine import settings as engine_settings

    return engine_settings.rerank_enabled(None)


def thumb_size(settings: QSettings) -> int:
    try:
        v = int(settings.value(KEY_THUMB_SIZE, THUMB_DEFAULT))
    except (TypeError, ValueError):
        v = THUMB_DEFAULT
    return max(THUMB_MIN, min(THUMB_MAX, v))


def checkpoint(settings: QSettings) -> str:
    return str(settings.value(KEY_CHECKPOINT, "") or "")


def rerank(settings: QSettings) -> bool | None:
    """The user's re-ranking choice, or None when they never made one."""
    value = settings.value(KEY_RERANK, None)
    if value is None or value == "":
        return None
    return str(value).lower() in ("true", "1", "yes")


class SettingsDialog(QDialog):
    def __init__(self, settings: QSettings, model_id: str | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.resize(520, 420)
        self.settings = settings

        model_box = QGroupBox("Matching model")
        self.default_radio = QRadioButton("Shipped default model")
        self.custom_radio = QRadioButton("Retrained checkpoint:")
        group = QButtonGroup(self)
        group.addButton(self.default_radio)
        group.addButton(self.custom_radio)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("Choose a .pt checkpoint file")
        browse = QPushButton("Browse\u2026")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.custom_radio)
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)
        in_use = model_id or "still loading\u2026"
        current = QLabel(f"In use now: {in_use}")
        current.setEnabled(False)
        note = QLabel(
            "Changing the model re-reads every photo in the background. Search keeps working "
            "with the current model until the new one is ready."
        )
        note.setWordWrap(True)
        mv = QVBoxLayout(model_box)
        mv.addWidget(self.default_radio)
        mv.addLayout(row)
        mv.addWidget(current)
        mv.addWidget(note)

        ckpt = checkpoint(settings)
        self.path_edit.setText(ckpt)
        (self.custom_radio if ckpt else self.default_radio).setChecked(True)
        self.path_edit.textEdited.connect(lambda _t: self.custom_radio.setChecked(True))

        search_box = QGroupBox("Search")
        self.rerank_check = QCheckBox("Re-rank the best matches with cross-modal attention")
        chosen = rerank(settings)
        self.rerank_check.setChecked(bool(chosen) if chosen is not None else engine_rerank_default())
        rerank_note = QLabel(
            "Words of the description are matched to regions of each photo, which puts the right "
            "photo first a little more often. It stores about 5 KB more per photo (about 480 MB "
            "for 100,000 photos) and adds a few milliseconds to each search. Takes effect the "
            "next time photosearch starts; photos indexed before are read again in the background."
        )
        rerank_note.setWordWrap(True)
        sv = QVBoxLayout(search_box)
        sv.addWidget(self.rerank_check)
        sv.addWidget(rerank_note)

        view_box = QGroupBox("Results grid")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(THUMB_MIN, THUMB_MAX)
        self.slider.setSingleStep(8)
        self.slider.setPageStep(32)
        self.slider.setValue(thumb_size(settings))
        self.size_label = QLabel()
        self.slider.valueChanged.connect(lambda v: self.size_label.setText(f"{v} px"))
        self.size_label.setText(f"{self.slider.value()} px")
        form = QFormLayout(view_box)
        srow = QHBoxLayout()
        srow.addWidget(self.slider, 1)
        srow.addWidget(self.size_label)
        form.addRow("Thumbnail size", srow)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(model_box)
        layout.addWidget(search_box)
        layout.addWidget(view_box)
        layout.addStretch(1)
        layout.addWidget(buttons)

    def chosen_checkpoint(self) -> str:
        return self.path_edit.text().strip() if self.custom_radio.isChecked() else ""

    def chosen_rerank(self) -> bool:
        return self.rerank_check.isChecked()

    def chosen_thumb_size(self) -> int:
        return self.slider.value()

    def _browse(self) -> None:
        start = self.path_edit.text() or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a model checkpoint", start, "Checkpoints (*.pt *.pth *.ckpt);;All files (*)"
        )
        if path:
            self.path_edit.setText(path)
            self.custom_radio.setChecked(True)
