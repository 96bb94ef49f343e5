"""Screenshots of the real app for review: `make screenshot` -> build/screenshots/*.png.

Runs the desktop app offscreen on ../shared/data/photos_sample with the shipped model,
in a fresh library under build/, indexes, types "a dog running on grass" and saves the
main window, the right-click menu and the captions panel. Falls back to the fake embedder
(with a warning, through $PHOTOSEARCH_EMBEDDER) only when no model is shipped yet.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QPoint, QSettings  # noqa: E402
from PySide6.QtGui import QPainter, QPixmap  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from desktop.app import create_app, dark_palette  # noqa: E402
from desktop.main_window import MainWindow  # noqa: E402
from engine import settings as engine_settings  # noqa: E402

log = logging.getLogger("screenshot")
QUERY = "a dog running on grass"


def wait_until(app: QApplication, cond: Callable[[], bool], timeout_s: float, what: str) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.02)
    log.warning("timed out after %.0f s waiting for %s", timeout_s, what)
    return False


def settle(app: QApplication, seconds: float = 0.3) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def grab_with_popup(window: QWidget, popup: QWidget | None) -> QPixmap:
    """Offscreen popups are separate windows: paint the menu onto the window's picture."""
    pix = window.grab()
    if popup is not None and popup.isVisible():
        painter = QPainter(pix)
        top_left = popup.mapToGlobal(QPoint(0, 0)) - window.mapToGlobal(QPoint(0, 0))
        painter.drawPixmap(top_left, popup.grab())
        painter.end()
    return pix


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", default=str(ROOT.parent / "shared" / "data" / "photos_sample" / "images"))
    ap.add_argument("--out", default=str(ROOT / "build" / "screenshots"))
    ap.add_argument("--query", default=QUERY)
    ap.add_argument("--dark", action="store_true", help="force the dark palette")
    ap.add_argument("--checkpoint", default="", help="a retrained checkpoint instead of the shipped model")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    photos = Path(args.photos)
    if not photos.is_dir():
        log.error("no photos at %s", photos)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lib_dir = ROOT / "build" / "screenshot-library"
    shutil.rmtree(lib_dir, ignore_errors=True)
    lib_dir.mkdir(parents=True)

    if not args.checkpoint and not engine_settings.DEFAULT_CHECKPOINT.is_file():
        # So the script still runs before `make default-model`: load_embedder's test hook.
        log.warning("WARNING: no shipped model at %s; using the FAKE embedder, so results "
                    "will not match the query", engine_settings.DEFAULT_CHECKPOINT)
        os.environ[engine_settings.EMBEDDER_ENV] = "fake"
    app = create_app([sys.argv[0]])
    if args.dark:
        app.setPalette(dark_palette())
    settings = QSettings(str(lib_dir / "settings.ini"), QSettings.Format.IniFormat)
    if args.checkpoint:
        settings.setValue("model/checkpoint", str(Path(args.checkpoint).resolve()))
    # No modal error boxes offscreen: a failure shows in the window, and in error.png.
    win = MainWindow(lib_dir / "library", settings=settings, error_dialogs=False)
    win.resize(1200, 800)
    win.show()
    shots: list[Path] = []

    def save(pix: QPixmap, name: str) -> None:
        path = out / name
        pix.save(str(path))
        shots.append(path)
        log.info("saved %s", path)

    settle(app, 0.2)
    save(win.grab(), "0_loading.png")
    opened = wait_until(
        app,
        lambda: win.session.library is not None or "Could not open" in win.status.text(),
        300,
        "the model to load",
    )
    if not opened or win.session.library is None:
        save(win.grab(), "error.png")
        return 1
    wait_until(app, lambda: win.results.showing(win.results.welcome), 10, "the welcome panel")
    win.results.welcome.add_folder(str(photos))
    settle(app, 0.3)
    save(win.grab(), "1_welcome.png")

    win.results.welcome.start.emit(win.results.welcome.chosen())
    wait_until(app, lambda: win.status.progress.isVisible() and win.status.progress.maximum() > 1, 60, "indexing to start")
    settle(app, 1.0)
    save(win.grab(), "2_indexing.png")
    wait_until(app, lambda: not win.session.is_indexing(), 900, "indexing to finish")
    settle(app, 2.0)
    win.search.setFocus()
    # Types like a user would, so the debounce and as-you-type path run for real.
    for ch in args.query:
        win.search.insert(ch)
        win.search.textEdited.emit(win.search.text())
        settle(app, 0.03)
    wait_until(app, lambda: win.model.rowCount() > 0, 60, "results")
    settle(app, 0.5)
    wait_until(app, lambda: win.loader.pending_count() == 0, 60, "thumbnails")
    settle(app, 0.5)
    save(win.grab(), "3_results.png")

    rect = win.grid.visualRect(win.model.index(0))
    win.grid.customContextMenuRequested.emit(rect.center())  # what a right click does
    settle(app, 0.5)
    save(grab_with_popup(win, win.context_menu), "4_context_menu.png")
    win.context_menu.close()

    win.act_captions.trigger()
    # The first request per model embeds the ~35K-caption bank: minutes on a busy CPU.
    wait_until(app, lambda: bool(win.captions_panel.captions()), 400, "captions")
    settle(app, 0.5)
    save(win.grab(), "5_captions.png")

    win.show_preview(0)
    settle(app, 0.3)
    wait_until(app, lambda: win.results.preview.image._pix is not None, 30, "the preview")
    settle(app, 0.3)
    save(win.grab(), "6_preview.png")
    win.results.close_preview()

    answered: list[bool] = []
    win.search_done.connect(lambda: answered.append(True))
    win.set_query("zzzz qqqq")
    # Text queries share the model with the caption bank still embedding in the background.
    wait_until(app, lambda: bool(answered), 120, "the second search")
    settle(app, 1.0)
    save(win.grab(), "7_other_query.png")

    win.close()
    print("\n".join(str(p) for p in shots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
