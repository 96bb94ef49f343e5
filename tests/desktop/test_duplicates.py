"""Near-identical photos in the window (issue 14 "Duplicates grouped"): generated copies
of one photo (resized, re-encoded, cropped a few percent, brighter) show as one tile with
a count badge, the badge expands the group, and View > Group near-identical photos turns
grouping off. The real engine groups them (Library.duplicate_groups, FakeEmbedder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from PySide6.QtCore import Qt

from desktop.photo_grid import GroupCountRole, GroupStateRole, PhotoDelegate
from tests.desktop.conftest import wait_indexed


def _scene(seed: int, size: int = 160) -> Image.Image:
    """A photo-like picture: blocks of colour in a layout of its own, plus noise."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    arr = np.kron(cells, np.ones((size // 4, size // 4, 1), np.uint8)).astype(np.int16)
    arr += rng.integers(-12, 12, arr.shape).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def make_library(folder: Path) -> tuple[Path, list[Path]]:
    """Five distinct photos, and four copies of the first one; returns the original and its
    copies."""
    folder.mkdir(parents=True)
    for i in range(5):
        _scene(100 + i).save(folder / f"distinct_{i}.jpg", quality=92)
    original = folder / "distinct_0.jpg"
    im = Image.open(original).convert("RGB")
    w, h = im.size
    copies = {
        "resized": im.resize((w // 2, h // 2)),
        "reencoded": im,
        "cropped": im.crop((int(w * 0.03), int(h * 0.03), int(w * 0.97), int(h * 0.97))),
        "brighter": ImageEnhance.Brightness(im).enhance(1.06),
    }
    paths = []
    for name, variant in copies.items():
        p = folder / f"copy_{name}.jpg"
        variant.save(p, quality=70 if name == "reencoded" else 90)
        paths.append(p)
    return original, paths


def _group_rows(win) -> list[int]:  # type: ignore[no-untyped-def]
    m = win.model
    return [r for r in range(m.rowCount()) if (m.data(m.index(r), GroupCountRole) or 0) > 1]


def test_copies_show_as_one_badged_tile_that_expands_and_grouping_can_be_turned_off(
    make_window, qtbot, tmp_path
):
    original, copies = make_library(tmp_path / "photos")
    win = make_window(group_duplicates=True)
    win.add_folder(str(original.parent))
    wait_indexed(qtbot, win, 9)
    qtbot.waitUntil(lambda: win.model.mode == "browse" and len(_group_rows(win)) == 1, timeout=10000)
    # Browse: the five copies are one tile; the four distinct photos their own.
    assert win.model.total() == 9 and len(win.model.paths()) == 5
    row = _group_rows(win)[0]
    group = {str(p.resolve()) for p in (original, *copies)}
    assert win.model.data(win.model.index(row), GroupCountRole) == 5
    assert win.model.hit(row).path in group
    assert not set(win.model.paths()) - group - {
        str((original.parent / f"distinct_{i}.jpg").resolve()) for i in range(1, 5)}

    # A click on the badge expands the group in place.
    win.grid.scrollToTop()
    cell = win.grid.visualRect(win.model.index(row)).adjusted(2, 2, -2, -2)
    qtbot.mouseClick(win.grid.viewport(), Qt.MouseButton.LeftButton,
                     pos=PhotoDelegate.badge_rect(cell).center())
    assert len(win.model.paths()) == 9
    assert set(win.model.paths()[row:row + 5]) == group
    assert win.model.data(win.model.index(row), GroupStateRole) == "expanded"
    # The context menu offers the same.
    win.results.select_row(win.model.photo_number(row))
    win._update_photo_actions()
    assert win.act_group_open.isVisible() and win.act_group_open.text() == "Fold near-identical photos"
    win.act_group_open.trigger()
    assert len(win.model.paths()) == 5

    # The toggle turns grouping off (and is remembered).
    win.act_group.setChecked(False)
    assert len(win.model.paths()) == 9 and not _group_rows(win)
    assert win.settings.value("view/group_duplicates") in (False, "false")
    win.act_group.setChecked(True)
    assert len(win.model.paths()) == 5

    # Searches group too.
    win.set_query("anything")
    qtbot.waitUntil(lambda: win.model.mode == "search" and len(_group_rows(win)) == 1, timeout=5000)
    assert len(win.model.paths()) == 5
