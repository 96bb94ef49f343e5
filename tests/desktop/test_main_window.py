"""The window end to end: real Library + FakeEmbedder, offscreen Qt."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QListWidgetItem

from desktop.strength import strength_text
from engine.library import Library
from engine.testing import FakeEmbedder
from tests.desktop.conftest import SlowFakeEmbedder, wait_indexed, write_photo


def _indexed_window(make_window, qtbot, photos: Path, **kw):  # type: ignore[no-untyped-def]
    win = make_window(**kw)
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 8)
    return win


def _search(qtbot, win, text: str) -> None:  # type: ignore[no-untyped-def]
    """Type `text` and wait for its answer (the grid already shows the library before)."""
    answered: list[str] = []
    win.session.results_ready.connect(lambda req, _res, _refresh: answered.append(req.query))
    win.search.setFocus()
    win.search.clear()
    qtbot.keyClicks(win.search, text)
    qtbot.waitUntil(
        lambda: text in answered and win.session.last_request.query == text
        and not win.debounce.isActive() and win.model.mode == "search",
        timeout=10000,
    )
    qtbot.wait(50)


def _names(win, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [os.path.basename(p) for p in win.model.paths()[:n]]


def test_first_run_shows_welcome_then_indexes(make_window, qtbot, photos):
    win = make_window()
    qtbot.waitUntil(lambda: win.results.showing(win.results.welcome), timeout=5000)
    win.results.welcome.add_folder(str(photos))
    assert str(photos) in win.results.welcome.chosen()
    win.results.welcome.start.emit([str(photos)])
    wait_indexed(qtbot, win, 8)
    # With nothing typed, the grid shows the whole library, with its count.
    qtbot.waitUntil(lambda: len(win.model.paths()) == 8, timeout=5000)
    assert win.results.showing(win.grid)
    assert win.model.mode == "browse"
    assert win.result_count.text() == "8 photos"


def test_typing_a_query_fills_the_grid(make_window, qtbot, photos):
    win = _indexed_window(make_window, qtbot, photos)
    _search(qtbot, win, "red")
    assert win.results.showing(win.grid)
    assert sorted(_names(win, 2)) == ["red_0.jpg", "red_1.jpg"]
    assert not win.results.banner.isVisible()
    # Tooltip: path, date and a strength people can read, no raw score.
    tip = win.model.data(win.model.index(0), 3)  # ToolTipRole
    hit = win.model.hit(0)
    assert win.model.paths()[0] in tip and "score" not in tip
    assert strength_text(hit.strength) in tip and "match" in tip
    _search(qtbot, win, "blue")
    assert sorted(_names(win, 2)) == ["blue_0.jpg", "blue_1.jpg"]
    # Thumbnails come from the engine's cache through the worker pool.
    qtbot.waitUntil(lambda: win.loader.cached(win.model.paths()[0])[1] is not None, timeout=5000)
    # Clearing the box goes back to browsing the library.
    win.set_query("")
    qtbot.waitUntil(lambda: win.model.mode == "browse" and len(win.model.paths()) == 8, timeout=3000)
    assert win.result_count.text() == "8 photos"


def test_only_committed_queries_become_caption_suggestions(make_window, qtbot, photos):
    win = _indexed_window(make_window, qtbot, photos)
    _search(qtbot, win, "gre")
    _search(qtbot, win, "green")

    def bank() -> set[str]:
        return {c.caption for c in win.session.library.similar_captions(win.model.paths()[0], top_k=50)}

    assert "gre" not in bank() and "green" not in bank()
    qtbot.keyClick(win.search, "\r")
    qtbot.waitUntil(lambda: "green" in bank(), timeout=5000)
    assert "gre" not in bank()


def test_folder_filter(make_window, qtbot, photos, tmp_path):
    other = tmp_path / "other"
    write_photo(other / "red_other.jpg", (220, 30, 30), seed=99)
    win = make_window()
    win.add_folder(str(photos))
    win.add_folder(str(other))
    wait_indexed(qtbot, win, 9)
    _search(qtbot, win, "red")
    assert "red_other.jpg" in _names(win, 3)
    i = win.filter_bar.folder_combo.findData(str(photos.resolve()))
    assert i > 0
    win.filter_bar.folder_combo.setCurrentIndex(i)
    qtbot.waitUntil(lambda: "red_other.jpg" not in _names(win, 9), timeout=5000)
    assert len(win.model.paths()) == 8


def test_weak_match_shows_the_banner(make_window, qtbot, photos):
    def factory(_ckpt: str) -> FakeEmbedder:
        emb = FakeEmbedder()
        emb.weak_match_threshold = 1.5  # nothing can reach it: every result is weak
        return emb

    win = _indexed_window(make_window, qtbot, photos, factory=factory)
    _search(qtbot, win, "zebra submarine")
    qtbot.waitUntil(lambda: win.results.banner.isVisible(), timeout=5000)
    assert "No good match" in win.results.banner.text()
    assert len(win.model.paths()) == 8  # still shows the closest photos
    assert win.model.divider_row() is None  # nothing is confident, so nothing to divide


def test_context_menu_actions(make_window, qtbot, photos, monkeypatch):
    win = _indexed_window(make_window, qtbot, photos)
    for query in ("red", "green"):
        _search(qtbot, win, query)
        qtbot.keyClick(win.search, "\r")  # Enter commits the query to the caption bank
    win.results.select_row(0)
    path = win.model.paths()[0]
    assert os.path.basename(path).startswith("green")
    menu = win.build_context_menu()
    texts = [a.text().split("\t")[0] for a in menu.actions() if a.text()]
    assert {"Find similar captions", "Find similar photos", "Open", "Show in folder",
            "Copy path"} <= set(texts)

    urls: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda u: urls.append(u) or True))
    win.act_open.trigger()
    assert urls[-1].toLocalFile() == path
    win.act_show_folder.trigger()
    assert Path(urls[-1].toLocalFile()) == Path(path).parent

    win.act_copy.trigger()
    assert QGuiApplication.clipboard().text() == path

    win.loader.clear()  # the panel loads the picture itself when the grid has not
    win.act_captions.trigger()
    assert win.captions_panel.isVisible()
    qtbot.waitUntil(lambda: bool(win.captions_panel.captions()), timeout=5000)
    qtbot.waitUntil(win.captions_panel.has_picture, timeout=5000)
    caps = win.captions_panel.captions()
    assert caps[0] == "green"
    item: QListWidgetItem = win.captions_panel.list.item(1)
    win.captions_panel.list.itemClicked.emit(item)
    assert win.search.text() == item.data(0x0100)
    qtbot.waitUntil(lambda: win.session.last_request.query == win.search.text(), timeout=3000)

    win.results.select_row(0)
    qtbot.waitUntil(lambda: win.model.rowCount() > 0, timeout=3000)
    _search(qtbot, win, "green")
    win.results.select_row(0)
    source = win.current_path()
    win.act_similar.trigger()
    assert win.similar_chip.isVisible()
    assert os.path.basename(source) in win.similar_chip.label.text()
    qtbot.waitUntil(
        lambda: win.model.rowCount() > 0 and source not in win.model.paths(), timeout=5000
    )
    # The other green photo is the closest one.
    assert _names(win, 1)[0].startswith("green")


def test_keyboard_preview_and_shortcuts(make_window, qtbot, photos, monkeypatch):
    from PySide6.QtCore import Qt

    win = _indexed_window(make_window, qtbot, photos)
    _search(qtbot, win, "yellow")
    win.grid.setFocus()
    win.results.select_row(0)
    urls: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda u: urls.append(u) or True))
    qtbot.keyClick(win.grid, Qt.Key.Key_Return)
    assert urls and urls[-1].toLocalFile() == win.model.paths()[0]

    win.show_preview(0)
    assert win.results.showing(win.results.preview)
    qtbot.waitUntil(lambda: win.results.preview.image._pix is not None, timeout=5000)
    qtbot.keyClick(win.results.preview, Qt.Key.Key_Right)
    assert win.results.preview.row == 1
    qtbot.keyClick(win.results.preview, Qt.Key.Key_Left)
    assert win.results.preview.row == 0
    qtbot.keyClick(win.results.preview, Qt.Key.Key_Escape)
    assert win.results.showing(win.grid)

    win.search.setFocus()
    qtbot.keyClick(win.search, Qt.Key.Key_Down)
    assert win.grid.currentIndex().row() == 0

    win.grid.setFocus()
    win.act_find.trigger()
    assert win.search.hasFocus() or QGuiApplication.focusObject() is win.search


def test_adding_a_folder_starts_indexing_and_shows_progress(make_window, qtbot, tmp_path):
    folder = tmp_path / "many"
    for i in range(80):  # the engine embeds in batches of 32: 3 progress steps
        write_photo(folder / f"p{i:03d}.jpg", (200, 40 + i, 40), seed=i, size=32)
    win = make_window(factory=lambda _c: SlowFakeEmbedder(delay_s=0.03))
    qtbot.waitUntil(lambda: win.results.showing(win.results.welcome), timeout=5000)
    win.add_folder(str(folder))
    qtbot.waitUntil(lambda: win.session.is_indexing(), timeout=5000)
    qtbot.waitUntil(
        lambda: win.status.progress.isVisible() and win.status.progress.maximum() == 80
        and 0 < win.status.progress.value() < 80,
        timeout=10000,
    )
    assert "/ 80 photos" in win.status.text()
    wait_indexed(qtbot, win, 80, timeout=30000)
    assert not win.status.progress.isVisible()
    assert "80 photos indexed" in win.status.text()


def test_failures_are_counted_and_listed(make_window, qtbot, photos):
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    win = _indexed_window(make_window, qtbot, photos)
    qtbot.waitUntil(lambda: win.status.failures_btn.isVisible(), timeout=5000)
    assert "1" in win.status.failures_btn.text()
    win.status.failures_btn.click()
    qtbot.waitUntil(lambda: getattr(win, "failures_dialog", None) is not None, timeout=5000)
    table = win.failures_dialog.table
    assert table.rowCount() == 1 and table.item(0, 0).text().endswith("broken.jpg")
    assert table.item(0, 1).text()


def test_new_file_in_watched_folder_appears_in_results(make_window, qtbot, tmp_path):
    folder = tmp_path / "watched"
    write_photo(folder / "red_0.jpg", (220, 30, 30), seed=1)
    write_photo(folder / "green_0.jpg", (30, 200, 40), seed=2)
    win = make_window(watch=True)
    win.add_folder(str(folder))
    wait_indexed(qtbot, win, 2)
    _search(qtbot, win, "blue")
    assert not any("blue" in p for p in win.model.paths())
    qtbot.wait(300)  # let the observer settle before the change
    write_photo(folder / "blue_new.jpg", (30, 40, 220), seed=3)
    qtbot.waitUntil(lambda: _names(win, 1) == ["blue_new.jpg"], timeout=15000)


def test_switching_model_reembeds_and_search_keeps_working(make_window, qtbot, photos):
    win = _indexed_window(make_window, qtbot, photos)
    _search(qtbot, win, "red")
    assert win.session.library.embedder.model_id == "fake-32-0"
    win.session.switch_model("other")
    qtbot.waitUntil(lambda: not win.session.is_switching_model(), timeout=15000)
    assert win.session.library.embedder.model_id == "fake-other"
    assert win.session.model_id == "fake-other"
    assert win.settings.value("model/checkpoint") == "other"
    _search(qtbot, win, "green")
    assert sorted(_names(win, 2)) == ["green_0.jpg", "green_1.jpg"]


def test_quitting_mid_indexing_leaves_a_consistent_library(make_window, qtbot, tmp_path):
    folder = tmp_path / "hundred"
    for i in range(100):
        write_photo(folder / f"p{i:03d}.jpg", (i * 2, 100, 200 - i), seed=i, size=32)
    lib_dir = tmp_path / "lib100"
    win = make_window(factory=lambda _c: SlowFakeEmbedder(delay_s=0.02), library=lib_dir)
    win.add_folder(str(folder))
    qtbot.waitUntil(lambda: win.status.progress.value() >= 10, timeout=20000)
    win.close()  # mid-indexing
    assert win.session.library is None
    assert win.session.runner.pool.activeThreadCount() == 0

    emb = FakeEmbedder()
    lib = Library.open(lib_dir, emb)  # the lock was released
    try:
        cat = lib.catalog
        n = cat.count_indexable(emb.model_id)
        assert 0 < n < 100
        # Every photo recorded as indexed has its vector: no half-written batch.
        assert cat.count_photos("ok") == n
        assert lib.vector_index.count == n
        # The next start resumes where it stopped.
        report = lib.index()
        assert report.indexed + report.unchanged == 100
        assert lib.vector_index.count == cat.count_indexable(emb.model_id) == 100
        assert np.isfinite(lib.search_text("blue").best_score)
    finally:
        lib.close()


def test_window_appears_at_once_and_a_query_typed_while_loading_runs_later(qtbot, tmp_path):
    import threading

    from PySide6.QtCore import QSettings

    from desktop.main_window import MainWindow

    release = threading.Event()

    def slow_factory(_ckpt: str) -> FakeEmbedder:
        release.wait(10)  # the model "loads" until the test says so
        return FakeEmbedder()

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    win = MainWindow(tmp_path / "lib", slow_factory, settings, watch=False, error_dialogs=False)
    qtbot.addWidget(win)
    win.show()
    assert "Loading model" in win.status.text()
    qtbot.keyClicks(win.search, "red")
    qtbot.wait(400)  # past the debounce: the search waits for the library
    assert win.session.library is None
    release.set()
    with qtbot.waitSignal(win.search_done, timeout=10000):
        pass
    assert win.session.last_request.query == "red"
    win.shutdown()


def test_caption_bank_is_embedded_in_the_background_after_the_first_index(
    make_window, qtbot, photos, tmp_path
):
    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join(f"caption {i}" for i in range(300)))

    def factory(_checkpoint: str) -> FakeEmbedder:
        emb = FakeEmbedder()
        emb.caption_bank_path = str(bank)
        return emb

    win = _indexed_window(make_window, qtbot, photos, factory=factory)
    model_id = win.session.library.embedder.model_id
    qtbot.waitUntil(
        lambda: not win.session.library.catalog.captions_missing_embeddings(model_id), timeout=10000
    )


def test_a_model_that_cannot_load_is_explained_in_the_window(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from desktop.main_window import MainWindow
    from engine.errors import ModelLoadError

    def broken(_ckpt: str) -> FakeEmbedder:
        raise ModelLoadError("the default model /x/default_model.pt is missing")

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    win = MainWindow(tmp_path / "lib", broken, settings, watch=False, error_dialogs=False)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: "Could not open the library" in win.status.text(), timeout=5000)
    assert win.results.showing(win.results.message)
    assert win.results.message.text() == (
        "photosearch could not start:\nthe default model /x/default_model.pt is missing"
    )
    assert not win.status.progress.isVisible()
    win.shutdown()


def test_a_failed_model_switch_keeps_the_old_model_and_says_why(make_window, qtbot, photos):
    from engine.errors import ModelLoadError

    def factory(checkpoint: str) -> FakeEmbedder:
        if checkpoint == "/no/such.pt":
            raise ModelLoadError("model checkpoint not found: /no/such.pt")
        return FakeEmbedder()

    win = _indexed_window(make_window, qtbot, photos, factory=factory)
    win.session.switch_model("/no/such.pt")
    qtbot.waitUntil(lambda: not win.session.is_switching_model(), timeout=5000)
    assert win.status.text() == "Model not changed: model checkpoint not found: /no/such.pt"
    assert win.session.model_id == "fake-32-0" == win.session.library.embedder.model_id
    assert win.settings.value("model/checkpoint") in (None, "")
    _search(qtbot, win, "red")
    assert sorted(_names(win, 2)) == ["red_0.jpg", "red_1.jpg"]
