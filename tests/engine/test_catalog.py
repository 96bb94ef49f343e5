import sqlite3

import numpy as np
import pytest

from engine import catalog as catalog_mod
from engine.catalog import SCHEMA_VERSION, Catalog
from engine.errors import LibraryUnreadableError


def test_schema_wal_and_version(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    assert cat.schema_version == SCHEMA_VERSION
    assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = set(cat.db.table_names())
    assert {"folders", "photos", "embeddings", "caption_bank", "caption_embeddings"} <= tables
    cat.close()


def test_migrates_an_old_schema(tmp_path):
    db = tmp_path / "catalog.db"
    cat = Catalog.__new__(Catalog)
    # Build a version-1 database by hand, as an older release would have left it.
    conn = sqlite3.connect(db)
    import sqlite_utils

    catalog_mod.MIGRATIONS[0](sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO photos(path, status) VALUES ('/a.jpg', 'ok')")
    conn.commit()
    conn.close()
    cat = Catalog(db)
    assert cat.schema_version == SCHEMA_VERSION
    assert "sort_date" in cat.db["photos"].columns_dict
    assert cat.photo_by_path("/a.jpg") is not None
    cat.close()


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "catalog.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(LibraryUnreadableError, match="newer"):
        Catalog(db)


def test_garbage_database_is_a_clear_error(tmp_path):
    db = tmp_path / "catalog.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LibraryUnreadableError, match="cannot open"):
        Catalog(db)


def test_embeddings_roundtrip_and_generation(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    v = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    with cat.transaction() as conn:
        cat.put_embedding(conn, "h1", "m1", v)
        gen = cat.bump_generation(conn)
    assert gen == 1 and cat.generation == 1
    np.testing.assert_array_equal(cat.get_embedding("h1", "m1"), v)
    assert cat.get_embedding("h1", "other") is None
    assert cat.embedded_hashes("m1") == {"h1"}


def test_transaction_rolls_back(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    with pytest.raises(RuntimeError), cat.transaction() as conn:
        conn.execute("INSERT INTO photos(path, status) VALUES ('/x.jpg', 'ok')")
        raise RuntimeError("boom")
    assert cat.count_photos() == 0


def test_connections_are_per_thread(tmp_path):
    import threading

    cat = Catalog(tmp_path / "catalog.db")
    seen = []
    t = threading.Thread(target=lambda: seen.append(cat.conn))
    t.start()
    t.join()
    assert seen[0] is not cat.conn


def test_caption_bank(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    assert cat.add_captions(["a dog", "a dog", " ", "a cat"], "model") == 2
    assert cat.add_captions(["a dog", "my query"], "query") == 1
    missing = cat.captions_missing_embeddings("m")
    assert [c for _, c in missing] == ["a dog", "a cat", "my query"]
    cat.put_caption_embeddings("m", [i for i, _ in missing], np.eye(3, 8, dtype=np.float32))
    texts, mat = cat.caption_matrix("m")
    assert texts == ["a dog", "a cat", "my query"] and mat.shape == (3, 8)
    assert cat.captions_missing_embeddings("m") == []
