"""Grid view, model and delegate with lazy thumbnails, without a full indexing run."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt

from desktop.photo_grid import PhotoDelegate, PhotoGridModel, PhotoGridView, ThumbStateRole
from desktop.thumbnails import ThumbnailLoader
from engine.library import PhotoHit
from tests.desktop.conftest import write_photo


def photo_hit(path: str) -> PhotoHit:
    return PhotoHit(path=path, score=0.5, date=None, width=64, height=64, status="ok")


class NoCacheLibrary:
    """Stands in for Library.thumbnail_path when there is no engine thumbnail."""

    def __init__(self) -> None:
        self.calls = 0

    def thumbnail_path(self, path: str) -> None:
        self.calls += 1
        return None


def test_ten_thousand_results_load_only_visible_thumbnails(qtbot, tmp_path):
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
    hits = [photo_hit(str(tmp_path / f"missing_{i:05d}.jpg")) for i in range(10_000)]
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
    model.set_hits([photo_hit(str(photo))])
    idx = model.index(0)
    assert model.data(idx, ThumbStateRole) == "loading"
    model.data(idx, Qt.ItemDataRole.DecorationRole)  # the request
    with qtbot.waitSignal(model.dataChanged, timeout=5000):
        pass
    pix = model.data(idx, Qt.ItemDataRole.DecorationRole)
    assert pix is not None and pix.width() == 64
    loader.shutdown()
