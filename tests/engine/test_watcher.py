import time

import pytest

from engine.library import Library
from engine.watcher import FolderWatcher


def _wait_for(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("polling", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_created_moved_deleted_files_are_indexed(tmp_path, make_image, fake_embedder, polling):
    photos = tmp_path / "photos"
    make_image("first.jpg", "red")
    calls = []
    with Library.open(tmp_path / "lib", fake_embedder) as lib:
        lib.add_folder(photos)
        lib.index()  # the reconcile pass callers run at start

        def on_change(paths):
            calls.append(paths)
            lib.index_paths(paths)

        with FolderWatcher([photos], on_change, debounce_s=0.3, force_polling=polling):
            time.sleep(0.2)
            new = make_image("new.jpg", "blue")
            assert _wait_for(lambda: lib.catalog.photo_by_path(str(new)) is not None)
            moved = photos / "moved.jpg"
            new.rename(moved)
            assert _wait_for(lambda: lib.catalog.photo_by_path(str(moved)) is not None)
            assert lib.catalog.photo_by_path(str(new)) is None
            assert fake_embedder.embedded == 2  # the move was not re-embedded
            (photos / "first.jpg").unlink()
            assert _wait_for(lambda: lib.status().photo_count == 1)
        assert calls and all(isinstance(c, list) for c in calls)


def test_events_are_debounced(tmp_path, make_image):
    photos = tmp_path / "photos"
    photos.mkdir()
    calls = []
    with FolderWatcher([photos], calls.append, debounce_s=0.5):
        time.sleep(0.2)
        for i in range(20):
            make_image(f"burst{i}.jpg")
        assert _wait_for(lambda: calls)
        time.sleep(0.8)
    assert len(calls) <= 2
    assert len({p.name for c in calls for p in c} & {f"burst{i}.jpg" for i in range(20)}) == 20
