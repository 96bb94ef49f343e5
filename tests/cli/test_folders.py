"""`photosearch folders` lists the library's folders; `remove-folder` forgets one (issue 11 #4:
a folder deleted for good otherwise stays offline forever)."""

import json
import shutil

import pytest

from cli import main
from engine.library import Library
from engine.testing import FakeEmbedder


@pytest.fixture
def library(tmp_path, make_image, monkeypatch):
    monkeypatch.setenv("PHOTOSEARCH_EMBEDDER", "fake")
    make_image("red.png", "red")
    make_image("green.png", "green")
    make_image(tmp_path / "trips" / "blue.png", "blue")
    lib = tmp_path / "lib"
    with Library.open(lib, FakeEmbedder()) as library:
        library.add_folder(tmp_path / "photos")
        library.add_folder(tmp_path / "trips")
        library.index()
    return lib


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _folders(capsys, lib):
    rc, out, err = _run(capsys, "folders", "--library", lib, "--json")
    assert rc == 0, err
    return {f["path"]: f for f in json.loads(out)}


def test_folders_lists_path_state_and_count(capsys, library, tmp_path):
    folders = _folders(capsys, library)
    photos, trips = str(tmp_path / "photos"), str(tmp_path / "trips")
    assert set(folders) == {photos, trips}
    assert folders[photos]["online"] is True and folders[photos]["photo_count"] == 2
    assert folders[trips]["photo_count"] == 1
    assert set(folders[photos]) == {"path", "online", "photo_count", "offline_since"}

    shutil.rmtree(tmp_path / "trips")  # deleted for good - looks like an unplugged drive
    with Library.open(library, FakeEmbedder()) as lib:
        lib.index()
    folders = _folders(capsys, library)
    assert folders[trips]["online"] is False and folders[trips]["photo_count"] == 1
    rc, out, _ = _run(capsys, "folders", "--library", library)
    line = next(x for x in out.splitlines() if x.startswith(trips))
    assert rc == 0 and "OFFLINE" in line and "1 photos" in line


def test_remove_folder_forgets_it_and_its_photos(capsys, library, tmp_path):
    trips = tmp_path / "trips"
    shutil.rmtree(trips)
    rc, out, err = _run(capsys, "remove-folder", "--library", library, trips)
    assert rc == 0, err
    assert str(trips) in out and "1 photos forgotten" in out
    assert set(_folders(capsys, library)) == {str(tmp_path / "photos")}
    rc, out, _ = _run(capsys, "search", "--library", library, "blue", "--json")
    assert rc == 0 and all("trips" not in h["path"] for h in json.loads(out))
    assert len(json.loads(out)) == 2


def test_remove_folder_errors_are_one_line(capsys, library, tmp_path):
    rc, _, err = _run(capsys, "remove-folder", "--library", library, tmp_path / "nope")
    assert rc == 2 and err.startswith("photosearch: error: folder is not in the library")
    assert len(err.strip().splitlines()) == 1
    with Library.open(library, FakeEmbedder()):  # another writer holds the library
        rc, _, err = _run(capsys, "remove-folder", "--library", library, tmp_path / "trips")
    assert rc == 2 and "in use by another photosearch" in err
    assert len(_folders(capsys, library)) == 2


def test_offline_since_is_shown_when_the_engine_records_it():
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    from cli.library import _folder_state

    since = (datetime.now() - timedelta(days=3, hours=1)).replace(second=0, microsecond=0)
    for value in (since, since.timestamp(), since.isoformat()):  # whichever the engine keeps
        folder = SimpleNamespace(online=False, offline_since=value)
        assert _folder_state(folder) == f"OFFLINE since {since:%Y-%m-%d %H:%M}, 3 days"
    hour_ago = SimpleNamespace(online=False, offline_since=datetime.now() - timedelta(minutes=90))
    assert _folder_state(hour_ago).endswith(", 1 h")
    assert _folder_state(SimpleNamespace(online=False)) == "OFFLINE"
    assert _folder_state(SimpleNamespace(online=True, offline_since=None)) == "online"
