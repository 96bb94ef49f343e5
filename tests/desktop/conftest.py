"""Desktop tests: the real Library with FakeEmbedder, the real window, offscreen Qt."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from engine.testing import FakeEmbedder  # noqa: E402

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
}


def write_photo(path: Path, rgb: tuple[int, int, int], seed: int = 0, size: int = 64) -> Path:
    """A mostly-one-colour JPEG with a little noise, so every file has its own content."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb, np.int16) + rng.integers(-25, 25, (size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), "RGB").save(path, quality=90)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Two photos per colour (red, green, blue, yellow) in tmp_path/photos."""
    folder = tmp_path / "photos"
    seed = 0
    for name, rgb in COLOURS.items():
        for i in range(2):
            write_photo(folder / f"{name}_{i}.jpg", rgb, seed)
            seed += 1
    return folder


class SlowFakeEmbedder(FakeEmbedder):
    """FakeEmbedder that takes `delay_s` per image, so tests can act mid-indexing."""

    def __init__(self, delay_s: float = 0.02, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.delay_s = delay_s

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s * len(batch))
        return super().embed_prepared(batch)


def fake_factory(checkpoint: str) -> FakeEmbedder:
    """"" -> the default fake model; "other" -> a different fake model (switch-model test)."""
    if checkpoint == "other":
        return FakeEmbedder(seed=7, model_id="fake-other")
    return FakeEmbedder()


@pytest.fixture
def make_window(qtbot, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Builds a MainWindow on a library in tmp_path and waits until the library is open."""
    from PySide6.QtCore import QSettings

    from desktop.main_window import MainWindow

    windows: list[MainWindow] = []

    def make(
        factory: Callable[[str], object] = fake_factory,
        watch: bool = False,
        library: Path | None = None,
        group_duplicates: bool = False,
    ) -> MainWindow:
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
        # The fixture's same-colour photos are near-identical to the fake model, so most
        # tests count photos with grouping off; the duplicate tests turn it on.
        settings.setValue("view/group_duplicates", group_duplicates)
        win = MainWindow(
            library or tmp_path / "library", factory, settings, watch=watch, error_dialogs=False
        )
        qtbot.addWidget(win)
        win.show()
        windows.append(win)
        qtbot.waitUntil(lambda: win.session.library is not None, timeout=15000)
        return win

    yield make
    for win in windows:
        win.shutdown()


def wait_indexed(qtbot, win, count: int, timeout: int = 15000) -> None:  # type: ignore[no-untyped-def]
    qtbot.waitUntil(
        lambda: not win.session.is_indexing() and win.session.photo_count == count, timeout=timeout
    )
