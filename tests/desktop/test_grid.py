"""Grid model, lazy thumbnails and dialogs without a full indexing run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QSettings, Qt

from desktop.photo_grid_model import PhotoDelegate, PhotoGridModel, ThumbStateRole
from desktop.thumbnails import ThumbnailLoader
from tests.desktop.conftest import write_photo


@dataclass
class Hit:
    path: str
    score: float = 0.5
    date: datetime | None = None
    width: int = 64
    height: int = 64
    status: str = "ok"


class NoCacheLibrary:
    """Stands in for Library.thumbnail_path when there is no engine thumbnail."""

    def __init__(self) -> None:
        self.calls = 0

    def thumbnail_path(self, path: str) -> None:
        self.calls += 1
        return None


def test_ten_thousand_results_load_only_visible_thumbnails(qtbot, tmp_path):
    from desktop.main_window import PhotoGridView

    loader = ThumbnailLoader()
    lib = NoCacheLibrary()
    loader.set_library(lib)
    model = PhotoGridModel(loader)
    view = PhotoGridView()
    view.setItemDelegate(PhotoDelegate(view, 128))
    view.setModel(model)
    view.resize(900, 600)
    qtbot.addWidget(view)
    view.show()
    hits = [Hit(str(tmp_path / f"missing_{i:05d}.jpg")) for i in range(10_000)]
    t0 = time.perf_counter()
    model.set_hits(hits)
    view.doItemsLayout()  # what the next paint would do
    assert time.perf_counter() - t0 < 1.0
    # Only what is on screen was asked for, not 10,000 decodes.
    qtbot.waitUntil(lambda: lib.calls > 0 and loader.pending_count() == 0, timeout=5000)
    first = lib.calls
    assert first < 200
    view.scrollToBottom()
    qtbot.waitUntil(lambda: lib.calls > first and loader.pending_count() == 0, timeout=5000)
    assert lib.calls < 400
    # Files that cannot be read get the "not available" placeholder, not an endless spinner.
    last = model.index(9_999)
    qtbot.waitUntil(lambda: model.data(last, ThumbStateRole) == "missing", timeout=5000)
    loader.shutdown()


def test_thumbnail_is_decoded_from_the_original_when_not_cached(qtbot, tmp_path):
    photo = write_photo(tmp_path / "a.jpg", (200, 10, 10))
    loader = ThumbnailLoader()
    loader.set_library(NoCacheLibrary())
    model = PhotoGridModel(loader)
    model.set_hits([Hit(str(photo))])
    idx = model.index(0)
    assert model.data(idx, ThumbStateRole) == "loading"
    model.data(idx, Qt.ItemDataRole.DecorationRole)  # the request
    with qtbot.waitSignal(model.dataChanged, timeout=5000):
        pass
    pix = model.data(idx, Qt.ItemDataRole.DecorationRole)
    assert pix is not None and pix.width() == 64
    loader.shutdown()


def test_folders_dialog_adds_and_removes(make_window, qtbot, photos, monkeypatch):
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    from tests.desktop.conftest import wait_indexed

    win = make_window()
    dlg = win.open_folders_dialog()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(photos)))
    dlg.add_btn.click()
    wait_indexed(qtbot, win, 8)
    qtbot.waitUntil(lambda: dlg.folder_paths() == [str(photos.resolve())], timeout=5000)
    win.set_query("red")
    qtbot.waitUntil(lambda: win.model.rowCount() == 8, timeout=5000)

    dlg.select_path(str(photos.resolve()))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes))
    dlg.remove_btn.click()
    qtbot.waitUntil(lambda: dlg.folder_paths() == [], timeout=5000)
    qtbot.waitUntil(lambda: win.model.rowCount() == 0, timeout=5000)
    assert Path(photos / "red_0.jpg").exists()  # files are never deleted


def test_thumbnail_size_setting_persists(make_window, tmp_path):
    win = make_window()
    win.set_thumb_size(200)
    assert win.delegate.thumb_size == 200
    win.shutdown()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    assert int(settings.value("view/thumb_size")) == 200


def test_preview_applies_exif_orientation(tmp_path):
    from PIL import Image

    from desktop.preview import load_preview_image

    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("RGB", (40, 20), (200, 0, 0)).save(path, exif=exif)
    img = load_preview_image(str(path))
    assert img is not None and (img.width(), img.height()) == (20, 40)
    assert load_preview_image(str(tmp_path / "gone.jpg")) is None


def test_no_display_gives_advice_instead_of_a_qt_abort():
    import sys

    from desktop.app import missing_display_message

    if not sys.platform.startswith("linux"):
        return
    assert "no display found" in missing_display_message({})
    assert missing_display_message({"DISPLAY": ":0"}) is None
    assert missing_display_message({"QT_QPA_PLATFORM": "offscreen"}) is None


def test_captions_job_reports_bank_progress_and_stops_on_cancel(qtbot):
    from desktop.jobs import CaptionsJob

    class Lib:
        def __init__(self) -> None:
            self.chunks = 0

        def prepare_captions(self, progress):
            for done in range(256, 2049, 256):
                self.chunks += 1
                progress(done, 2048)
            return 2048

        def similar_captions(self, path, top_k):
            return ["a caption"]

    lib = Lib()
    job = CaptionsJob(lib, "/p.jpg")
    seen = []
    job.signals.progress.connect(seen.append)
    job.run()
    assert job.result == ("/p.jpg", ["a caption"])
    qtbot.waitUntil(lambda: ("/p.jpg", 2048, 2048) in seen, timeout=2000)

    lib2 = Lib()
    job2 = CaptionsJob(lib2, "/p.jpg")
    job2.signals.progress.connect(lambda _p: job2.cancel.set())  # quit during the first chunk
    job2.run()
    assert job2.result is None and lib2.chunks <= 2  # stopped at the next chunk boundary
