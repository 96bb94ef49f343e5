"""A lost or damaged catalog.db is reported (naming the file), never silently replaced by an
empty library, and `Library.repair` rebuilds what can be rebuilt."""

import json
import sqlite3

import pytest

from engine.catalog import FOLDER_BACKUP_FILE, Catalog
from engine.errors import LibraryUnreadableError
from engine.library import CATALOG_FILE, INDEX_FILE, Library
from tests.conftest import CountingEmbedder

PAGE = 4096


@pytest.fixture
def indexed(tmp_path, make_image, fake_embedder):
    """A library of 30 photos in two folders, closed (so the WAL is checkpointed)."""
    for i in range(20):
        make_image(f"a/p{i:02}.jpg", seed=i)
    for i in range(10):
        make_image(f"b/q{i:02}.jpg", seed=100 + i)
    lib_dir = tmp_path / "lib"
    with Library.open(lib_dir, fake_embedder) as lib:
        lib.add_folder(tmp_path / "photos" / "a")
        lib.add_folder(tmp_path / "photos" / "b")
        assert lib.index().indexed == 30
        lib.search_text("a purple balloon")  # remembered as a query
    return lib_dir


def _damage_table(db, table):
    """Overwrite the root page of `table`'s b-tree with garbage (same file size)."""
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * PAGE)
        f.write(b"\xa5" * PAGE)


@pytest.mark.parametrize("read_only", [False, True])
def test_an_empty_catalog_file_is_an_error_naming_it(indexed, fake_embedder, read_only):
    db = indexed / CATALOG_FILE
    db.write_bytes(b"")
    with pytest.raises(LibraryUnreadableError, match="empty") as err:
        Library.open(indexed, fake_embedder, read_only=read_only)
    assert str(db) in str(err.value) and "photosearch repair" in str(err.value)
    assert db.stat().st_size == 0  # not quietly turned into a new, empty library


def test_damage_in_the_photo_table_is_found_on_open(indexed, fake_embedder):
    _damage_table(indexed / CATALOG_FILE, "photos")
    with pytest.raises(LibraryUnreadableError, match="damaged") as err:
        Library.open(indexed, fake_embedder, read_only=True)
    assert str(indexed / CATALOG_FILE) in str(err.value)


def test_damage_among_the_vectors_is_found_by_the_full_check(indexed, fake_embedder):
    with Library.open(indexed, fake_embedder) as lib:
        assert lib.check_catalog() == []
    _damage_table(indexed / CATALOG_FILE, "embeddings")
    with Library.open(indexed, fake_embedder, read_only=True) as lib:  # open checks less
        assert lib.check_catalog() != []


def test_another_sqlite_file_is_not_taken_for_a_library(tmp_path, fake_embedder):
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    conn = sqlite3.connect(lib_dir / CATALOG_FILE)
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(LibraryUnreadableError, match="not a photosearch library"):
        Library.open(lib_dir, fake_embedder)


def test_the_folder_list_is_backed_up_beside_the_catalog(indexed, tmp_path, fake_embedder):
    backup = indexed / FOLDER_BACKUP_FILE
    folders = json.loads(backup.read_text())["folders"]
    assert folders == [str(tmp_path / "photos" / "a"), str(tmp_path / "photos" / "b")]
    with Library.open(indexed, fake_embedder) as lib:
        lib.remove_folder(tmp_path / "photos" / "b")
    assert json.loads(backup.read_text())["folders"] == [str(tmp_path / "photos" / "a")]
    backup.unlink()  # a library made before backups existed gets one on its next open
    Catalog(indexed / CATALOG_FILE).close()
    assert json.loads(backup.read_text())["folders"] == [str(tmp_path / "photos" / "a")]


def test_repair_of_an_empty_catalog_reindexes_the_backed_up_folders(indexed, tmp_path):
    (indexed / CATALOG_FILE).write_bytes(b"")
    emb = CountingEmbedder(dim=32)
    report = Library.repair(indexed, emb)
    assert report.damaged and report.folders_from == "backup"
    assert report.folders == [str(tmp_path / "photos" / "a"), str(tmp_path / "photos" / "b")]
    assert report.index.indexed == 30 and report.vectors_recovered == 0
    assert report.moved_to and (indexed / report.moved_to).exists()  # kept, not deleted
    with Library.open(indexed, emb, read_only=True) as lib:
        assert lib.status().photo_count == 30 and len(lib.folders()) == 2
        assert len(lib.search_text("red", top_k=5).hits) == 5


def test_repair_of_damaged_photo_rows_keeps_the_vectors(indexed, tmp_path):
    _damage_table(indexed / CATALOG_FILE, "photos")
    emb = CountingEmbedder(dim=32)
    report = Library.repair(indexed, emb)
    assert report.damaged and report.folders_from == "catalog+backup"
    assert report.vectors_recovered == 30 and report.index.indexed == 30
    assert emb.embedded == 0  # every vector came back from the damaged file
    with Library.open(indexed, emb) as lib:
        assert lib.status().photo_count == 30 and lib.check_catalog() == []
        assert lib.vector_index.count == 30
        queries = {c for _, c in lib.catalog.captions_missing_embeddings("no-such-model")}
        assert "a purple balloon" in queries
    assert (indexed / INDEX_FILE).exists()


def test_repair_leaves_a_healthy_library_alone(indexed, fake_embedder):
    before = (indexed / CATALOG_FILE).read_bytes()
    report = Library.repair(indexed, fake_embedder)
    assert not report.damaged and report.moved_to is None and report.index is None
    assert (indexed / CATALOG_FILE).read_bytes() == before
    assert report.to_json()["damaged"] is False
