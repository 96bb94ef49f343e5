"""Honest result lists (issue 14): the match count, the "Less likely" divider before the
weaker hits, "Sort by: Relevance | Date" over the confident ones, strength instead of
scores, and the "Similar to" chip that text refines."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from PySide6.QtCore import QPoint, Qt

from desktop.photo_grid import GroupStateRole, PhotoDelegate, PhotoGridModel, RowKindRole
from desktop.strength import strength_dots, strength_text
from desktop.thumbnails import ThumbnailLoader
from engine.library import PhotoHit
from tests.desktop.conftest import COLOURS, wait_indexed, write_photo


def hit(i: int, strength: int = 2) -> PhotoHit:
    return PhotoHit(f"/p/{i}.jpg", 1.0 - i / 100, datetime(2020, 1, 1) + timedelta(days=i),
                    64, 64, "ok", strength)


def test_divider_sits_at_the_confident_cut_and_photo_numbers_skip_it(qtbot):
    model = PhotoGridModel(ThumbnailLoader())
    model.set_hits([hit(i) for i in range(10)], confident=4)
    assert model.rowCount() == 11
    assert model.divider_row() == 4
    assert model.data(model.index(4), RowKindRole) == "divider"
    assert model.data(model.index(4)) == "Less likely"
    assert not model.flags(model.index(4)) & Qt.ItemFlag.ItemIsSelectable
    assert model.paths() == [f"/p/{i}.jpg" for i in range(10)]
    assert [model.photo_number(r) for r in (0, 3, 4, 5, 10)] == [0, 3, -1, 4, 9]
    assert [model.row_of_photo(n) for n in (0, 3, 4, 9)] == [0, 3, 5, 10]
    # All confident, or none: no divider (the banner speaks for "none").
    for confident in (10, 0):
        model.set_hits([hit(i) for i in range(10)], confident=confident)
        assert model.divider_row() is None and model.rowCount() == 10


def test_tooltip_shows_strength_not_score(qtbot):
    model = PhotoGridModel(ThumbnailLoader())
    model.set_hits([hit(0, strength=3), hit(1, strength=1)], confident=1)
    tip = model.data(model.index(0), Qt.ItemDataRole.ToolTipRole)
    assert "\u25cf\u25cf\u25cf strong match" in tip and "score" not in tip
    assert "\u25cf\u25cb\u25cb weak match" in model.data(model.index(2), Qt.ItemDataRole.ToolTipRole)
    assert strength_dots(2) == "\u25cf\u25cf\u25cb" and strength_text(0) == ""
    # Browsing is not a search: no strength at all.
    model.set_browse(2, [hit(0, 0), hit(1, 0)])
    assert "match" not in model.data(model.index(0), Qt.ItemDataRole.ToolTipRole)


def test_near_duplicates_fold_into_one_badged_tile_and_a_badge_click_expands(qtbot):
    from desktop.photo_grid import PhotoGridView

    model = PhotoGridModel(ThumbnailLoader())
    view = PhotoGridView()
    view.setItemDelegate(PhotoDelegate(view, 128))
    view.setModel(model)
    view.group_toggled.connect(model.toggle_group)  # as the results pane does
    view.resize(900, 600)
    qtbot.addWidget(view)
    view.show()
    model.set_hits([hit(i) for i in range(8)], confident=8)
    group = ("/p/1.jpg", "/p/3.jpg", "/p/6.jpg")
    model.set_groups([group])
    assert model.paths() == ["/p/0.jpg", "/p/1.jpg", "/p/2.jpg", "/p/4.jpg", "/p/5.jpg", "/p/7.jpg"]
    row = model.row_of("/p/1.jpg")
    assert model.data(model.index(row), GroupStateRole) == "folded"
    # A folded member is found at its group's tile (a selected photo stays selected).
    assert model.row_of("/p/3.jpg") == model.row_of("/p/6.jpg") == row
    assert "3 near-identical photos" in model.data(model.index(row), Qt.ItemDataRole.ToolTipRole)
    # A click on the badge expands the group: its members follow the first one.
    rect = view.visualRect(model.index(row)).adjusted(2, 2, -2, -2)
    with qtbot.waitSignal(view.group_toggled, timeout=1000):
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton,
                         pos=PhotoDelegate.badge_rect(rect).center())
    assert model.paths()[1:4] == list(group)
    assert [model.data(model.index(r), GroupStateRole) for r in (1, 2, 3)] == [
        "expanded", "member", "member"]
    model.set_hits([hit(i) for i in range(8)], confident=8, keep_expanded=True)  # a refresh
    assert len(model.paths()) == 8
    model.toggle_group(2)  # from a member: folds again
    assert len(model.paths()) == 6
    model.toggle_group(row)
    model.set_hits([hit(i) for i in range(8)], confident=8)  # another list: folded again
    assert len(model.paths()) == 6
    # Grouping off: every photo on its own.
    model.set_grouping(False)
    assert len(model.paths()) == 8 and model.data(model.index(1), GroupStateRole) == ""
    # A click elsewhere on the tile only selects it.
    model.set_grouping(True)
    center = view.visualRect(model.index(row)).center()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(center.x() - 30, center.y() + 30))
    assert len(model.paths()) == 6 and view.currentIndex().row() == row


# -- through the window, on the real engine ----------------------------------------------


def _answer(qtbot, win, text: str):  # type: ignore[no-untyped-def]
    """Set the query and wait for the session's answer; returns the SearchResult."""
    with qtbot.waitSignal(win.session.results_ready, timeout=10000,
                          check_params_cb=lambda req, _r, _f: req.query == text) as blocker:
        win.set_query(text)
    qtbot.wait(30)
    return blocker.args[1]


def _spread_dates(folder: Path) -> None:
    """File times (the photo date without EXIF) in reverse name order, a day apart."""
    names = sorted(os.listdir(folder))
    base = datetime(2021, 5, 1).timestamp()
    for i, name in enumerate(names):
        t = base + (len(names) - i) * 86400
        os.utime(folder / name, (t, t))


def _photos(tmp_path: Path) -> Path:
    folder = tmp_path / "many"
    seed = 0
    for name, rgb in COLOURS.items():
        for i in range(6):
            write_photo(folder / f"{name}_{i}.jpg", rgb, seed)
            seed += 1
    _spread_dates(folder)
    return folder


def test_a_search_says_how_many_match_divides_off_the_rest_and_sorts_by_date(
    make_window, qtbot, tmp_path
):
    win = make_window()
    win.add_folder(str(_photos(tmp_path)))
    wait_indexed(qtbot, win, 24)
    result = _answer(qtbot, win, "red")
    n = result.confident
    assert 0 < n < len(result.hits), "the fake embedder should separate red from the rest"
    assert win.result_count.text() == f"{n} match" + ("es" if n != 1 else "")
    assert win.model.divider_row() == n
    assert win.sort_control.isVisible()
    by_relevance = [h.path for h in result.hits]
    # Sort by date: the same confident matches, newest first; the rest as before.
    with qtbot.waitSignal(win.session.results_ready, timeout=5000) as blocker:
        win.sort_control.buttons["date"].click()
    assert blocker.args[0].sort == "date"
    dated = win.model.hits()
    assert {h.path for h in dated[:n]} == set(by_relevance[:n])
    stamps = [h.date.timestamp() for h in dated[:n]]
    assert stamps == sorted(stamps, reverse=True)
    assert stamps != [h.date.timestamp() for h in result.hits[:n]] or n == 1
    assert win.model.divider_row() == n
    assert win.settings.value("view/sort") == "date"
    # Browsing needs no sort control.
    win.set_query("")
    qtbot.waitUntil(lambda: win.model.mode == "browse", timeout=5000)
    assert not win.sort_control.isVisible()


def test_find_similar_shows_a_chip_and_typing_refines_from_that_photo(make_window, qtbot, photos):
    win = make_window()
    win.add_folder(str(photos))
    wait_indexed(qtbot, win, 8)
    _answer(qtbot, win, "green")
    win.results.select_row(0)
    source = win.current_path()
    with qtbot.waitSignal(win.session.results_ready, timeout=5000) as blocker:
        win.act_similar.trigger()
    assert blocker.args[0].kind == "similar"
    assert win.similar_chip.isVisible()
    assert win.similar_chip.label.text() == f"Similar to: <b>{os.path.basename(source)}</b>"
    assert win.search.text() == ""
    # Typing now searches "this photo, but ...".
    with qtbot.waitSignal(win.session.results_ready, timeout=5000) as blocker:
        win.search.setFocus()
        qtbot.keyClicks(win.search, "blue")
    request = blocker.args[0]
    assert request.kind == "text" and request.query == "blue" and request.like_photo == source
    assert win.similar_chip.isVisible()
    # The chip's x goes back to the text alone.
    with qtbot.waitSignal(win.session.results_ready, timeout=5000) as blocker:
        win.similar_chip.close_btn.click()
    assert blocker.args[0].like_photo is None and blocker.args[0].query == "blue"
    assert not win.similar_chip.isVisible()


def test_query_syntax_is_in_the_search_box_tooltip(make_window):
    win = make_window()
    tip = win.search.toolTip()
    for example in ("dog beach -people", "\"red car\" +night", "-term", "+term", "Find similar photos"):
        assert example in tip


def test_sort_control_follows_a_switch_to_the_dark_theme(qtbot, qapp):
    from desktop.app import dark_palette
    from desktop.search_bar import SortControl

    light = qapp.palette()
    control = SortControl()
    qtbot.addWidget(control)
    control.show()

    def date_button_brightness() -> int:
        b = control.buttons["date"]
        img = control.grab().toImage()
        return img.pixelColor(b.geometry().left() + 3, b.geometry().center().y()).lightness()

    assert date_button_brightness() > 180
    try:
        qapp.setPalette(dark_palette())
        qtbot.wait(20)
        # Without re-resolving the style sheet the button stays light on the dark window.
        assert date_button_brightness() < 120
    finally:
        qapp.setPalette(light)


def test_preview_in_browse_steps_past_the_loaded_page_into_the_next(qtbot):
    from desktop.preview import PreviewPane
    from desktop.tasks import TaskRunner

    model = PhotoGridModel(ThumbnailLoader())
    model.set_browse(1000, [hit(i, 0) for i in range(400)])
    runner = TaskRunner()
    preview = PreviewPane(runner, model.hits, not_loaded=model.photos_not_loaded,
                          load_more=model.fetchMore)
    qtbot.addWidget(preview)
    model.page_appended.connect(preview.more_loaded)
    wanted: list[int] = []
    model.page_wanted.connect(wanted.append)
    preview.show_row(399)
    # the count is the library's, not the loaded page's, and Next stays on at the page's end
    assert preview.position.text() == "400 of 1,000" and preview.next_btn.isEnabled()
    preview.step(1)
    assert wanted == [400] and preview.row == 399  # waits for the page, does not wrap or stop
    model.append_page(400, [hit(i, 0) for i in range(400, 800)])
    assert preview.row == 400 and preview.position.text() == "401 of 1,000"
    assert preview.caption.text().count("400.jpg") == 2  # name and path
    # a search has no pages to load: the last hit is the end
    model.set_hits([hit(i) for i in range(3)], confident=3)
    preview.show_row(2)
    assert preview.position.text() == "3 of 3" and not preview.next_btn.isEnabled()
    runner.pool.waitForDone(5000)
