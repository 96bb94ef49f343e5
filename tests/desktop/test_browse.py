"""Browse mode: the whole library in the grid, newest first, loaded page by page through
the model (issue 14 "Browse"), on a 100K-photo catalog built in bulk."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from desktop.session import BROWSE_PAGE, LibrarySession
from engine.catalog import Catalog, PhotoFields
from engine.library import CATALOG_FILE

N = 100_000
BASE_T = 1_500_000_000.0  # 2017-07-14


@pytest.fixture(scope="module")
def big_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, str]:
    """catalog.db with N photos (no files, no vectors) whose dates are shuffled against
    their ids, so "newest first" is not insertion order. The first 1,000 ids lie in a
    second folder."""
    lib_dir = tmp_path_factory.mktemp("big") / "library"
    lib_dir.mkdir()
    root = str(lib_dir.parent / "photos")
    other = str(lib_dir.parent / "other")
    dates = BASE_T + np.random.default_rng(5).permutation(N).astype(np.float64) * 60.0
    catalog = Catalog(lib_dir / CATALOG_FILE)
    try:
        main_id = catalog.add_folder(root)
        other_id = catalog.add_folder(other)

        def rows():  # type: ignore[no-untyped-def]
            for i in range(N):
                in_other = i < 1000
                folder, fid = (other, other_id) if in_other else (root, main_id)
                yield i + 1, PhotoFields(
                    path=f"{folder}/p{i:06d}.jpg", folder_id=fid, size=1000,
                    mtime_ns=int(dates[i] * 1e9), content_hash=f"{i:040x}", width=64,
                    height=48, taken_at=None, sort_date=float(dates[i]),
                )

        with catalog.write() as w:
            w.insert_photos(rows())
    finally:
        catalog.close()
    return lib_dir, dates, other


@pytest.fixture
def browse_window(make_window, monkeypatch, big_library):  # type: ignore[no-untyped-def]
    # The rows point at no files: an indexing pass would only mark them offline.
    monkeypatch.setattr(LibrarySession, "start_index", lambda self: None)
    lib_dir, _dates, _other = big_library
    return make_window(library=lib_dir)


def _dates(win) -> list[float]:  # type: ignore[no-untyped-def]
    return [h.date.timestamp() for h in win.model.hits()]


@pytest.mark.slow
def test_100k_photos_open_on_the_first_page_newest_first_and_grow_on_scroll(
    browse_window, qtbot, big_library
):
    win = browse_window
    _lib, dates, _other = big_library
    qtbot.waitUntil(lambda: win.model.mode == "browse" and win.model.rowCount() > 0, timeout=10000)
    assert win.results.showing(win.grid)
    # One page, not 100K items up front; the count says how many there are.
    assert win.model.rowCount() == BROWSE_PAGE
    assert win.model.total() == N
    assert win.result_count.text() == "100,000 photos"
    order = np.sort(dates)[::-1]
    assert _dates(win) == pytest.approx(list(order[:BROWSE_PAGE]))
    # Scrolling to the end asks for the next page through canFetchMore/fetchMore.
    for pages in (2, 3):
        win.grid.scrollToBottom()
        qtbot.waitUntil(lambda p=pages: win.model.rowCount() == p * BROWSE_PAGE, timeout=5000)
    assert _dates(win) == pytest.approx(list(order[: 3 * BROWSE_PAGE]))
    assert len(set(win.model.paths())) == 3 * BROWSE_PAGE  # no page twice
    # The view laid out only what it holds.
    assert win.grid.verticalScrollBar().maximum() < 3 * BROWSE_PAGE * 200


@pytest.mark.slow
def test_browse_applies_the_folder_and_date_filters(browse_window, qtbot, big_library):
    win = browse_window
    _lib, dates, other = big_library
    qtbot.waitUntil(lambda: win.model.total() == N, timeout=10000)
    i = win.filter_bar.folder_combo.findData(other)
    assert i > 0
    win.filter_bar.folder_combo.setCurrentIndex(i)
    qtbot.waitUntil(lambda: win.model.total() == 1000, timeout=5000)
    assert all(p.startswith(other + "/") for p in win.model.paths())
    assert _dates(win) == sorted(_dates(win), reverse=True)
    assert win.result_count.text() == "1,000 photos"

    win.filter_bar.folder_combo.setCurrentIndex(0)
    # Whole days, as the filter bar gives them: 1 to 3 Jan of the first year's dates.
    lo = datetime.fromtimestamp(BASE_T).replace(hour=0, minute=0, second=0)
    from PySide6.QtCore import QDate

    win.filter_bar.date_from.setDate(QDate(lo.year, lo.month, lo.day))
    win.filter_bar.date_to.setDate(QDate(lo.year, lo.month, lo.day).addDays(2))
    win.filter_bar.date_check.setChecked(True)
    _folder, d0, d1 = win.filter_bar.filters()
    expected = int(((dates >= d0.timestamp()) & (dates <= d1.timestamp())).sum())
    assert 0 < expected < N
    qtbot.waitUntil(lambda: win.model.total() == expected, timeout=5000)
    assert all(d0.timestamp() <= d <= d1.timestamp() for d in _dates(win))


@pytest.mark.slow
def test_first_page_of_100k_arrives_quickly(browse_window, qtbot):
    """Not the benchmark (make bench measures it): a guard against loading everything."""
    from desktop.session import SearchRequest

    win = browse_window
    qtbot.waitUntil(lambda: win.model.total() == N, timeout=10000)
    t0 = time.perf_counter()
    with qtbot.waitSignal(win.session.browse_ready, timeout=5000) as blocker:
        win.session.search(SearchRequest("browse", ""))
    elapsed = time.perf_counter() - t0
    _request, page, _refresh = blocker.args
    assert page.total == N and len(page.hits) == BROWSE_PAGE
    assert elapsed < 2.0, f"first browse page took {elapsed:.2f} s"


def test_photos_show_up_in_the_grid_while_the_first_index_runs(make_window, qtbot, tmp_path):
    from tests.desktop.conftest import SlowFakeEmbedder, write_photo

    folder = tmp_path / "many"
    for i in range(96):  # batches of 32: the first ones are browsable before the last
        write_photo(folder / f"p{i:03d}.jpg", (200, 40 + i, 40), seed=i, size=32)
    win = make_window(factory=lambda _c: SlowFakeEmbedder(delay_s=0.03))
    win.add_folder(str(folder))
    qtbot.waitUntil(lambda: win.session.is_indexing(), timeout=5000)
    qtbot.waitUntil(lambda: win.model.mode == "browse" and 0 < len(win.model.paths()), timeout=15000)
    assert win.session.is_indexing()
    assert win.results.showing(win.grid)
    qtbot.waitUntil(lambda: not win.session.is_indexing(), timeout=30000)
    qtbot.waitUntil(lambda: len(win.model.paths()) == 96, timeout=10000)
    assert win.result_count.text() == "96 photos"
