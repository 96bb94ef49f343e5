"""`photosearch repair` rebuilds a lost or damaged catalog (the command the engine's errors
name), and `status` runs the full catalog check (issue 11 #5)."""

import json
import sqlite3

import pytest

from cli import main
from engine.library import CATALOG_FILE, Library
from engine.testing import FakeEmbedder

PAGE = 4096


@pytest.fixture
def library(tmp_path, make_image, monkeypatch):
    monkeypatch.setenv("PHOTOSEARCH_EMBEDDER", "fake")
    for i in range(6):
        make_image(f"p{i}.png", seed=i)
    make_image(tmp_path / "trips" / "blue.png", "blue")
    lib = tmp_path / "lib"
    with Library.open(lib, FakeEmbedder()) as library:
        library.add_folder(tmp_path / "photos")
        library.add_folder(tmp_path / "trips")
        assert library.index().indexed == 7
    return lib


def _run(capsys, *args):
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def _damage_table(db, table):
    """Overwrite the root page of `table`'s b-tree with garbage (same file size)."""
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * PAGE)
        f.write(b"\xa5" * PAGE)


def test_repair_rebuilds_an_emptied_catalog_from_the_folder_backup(capsys, library, tmp_path):
    (library / CATALOG_FILE).write_bytes(b"")
    rc, _, err = _run(capsys, "search", "--library", library, "red")
    assert rc == 2 and f"photosearch repair --library {library}" in err
    rc, out, err = _run(capsys, "repair", "--library", library)
    assert rc == 0, err
    assert "repaired the catalog" in out and "2 folder(s) restored from the folders.json backup" in out
    assert "indexed 7," in out
    assert list(library.glob("catalog.db.damaged-*"))  # kept, never deleted
    rc, out, _ = _run(capsys, "folders", "--library", library, "--json")
    assert rc == 0 and {f["path"] for f in json.loads(out)} == {
        str(tmp_path / "photos"), str(tmp_path / "trips")
    }
    rc, out, _ = _run(capsys, "search", "--library", library, "blue", "--json")
    assert rc == 0 and len(json.loads(out)) == 7


def test_repair_json_and_a_healthy_catalog_left_alone(capsys, library):
    rc, out, _ = _run(capsys, "repair", "--library", library)
    assert rc == 0 and "healthy; nothing to repair" in out
    assert not list(library.glob("catalog.db.damaged-*"))
    _damage_table(library / CATALOG_FILE, "photos")
    rc, out, err = _run(capsys, "repair", "--library", library, "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["damaged"] and "is damaged" in report["problem"]
    assert "rebuild it with" not in report["problem"]
    assert report["vectors_recovered"] == 7
    assert report["index"]["indexed"] == 7


def test_repair_errors_are_one_line(capsys, library, tmp_path):
    rc, _, err = _run(capsys, "repair", "--library", tmp_path / "nowhere")
    assert rc == 2 and err.strip() == f"photosearch: error: no library at {tmp_path / 'nowhere'}"
    with Library.open(library, FakeEmbedder()):  # another process is writing
        rc, _, err = _run(capsys, "repair", "--library", library)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "in use by another photosearch process" in lines[0]


def test_status_runs_the_full_catalog_check(capsys, library):
    rc, out, _ = _run(capsys, "status", "--library", library)
    assert rc == 0 and "catalog:  ok" in out.splitlines()
    rc, out, _ = _run(capsys, "status", "--library", library, "--json")
    assert json.loads(out)["catalog_problems"] == []
    # Damage among the vectors passes the open-time check (small tables only).
    _damage_table(library / CATALOG_FILE, "embeddings")
    rc, out, err = _run(capsys, "status", "--library", library)
    assert rc == 0, err
    line = next(x for x in out.splitlines() if x.startswith("catalog:"))
    assert line.startswith("catalog:  DAMAGED (") and line.endswith(
        f"rebuild it with: photosearch repair --library {library}"
    )
    rc, out, _ = _run(capsys, "status", "--library", library, "--json")
    assert rc == 0 and json.loads(out)["catalog_problems"] != []
