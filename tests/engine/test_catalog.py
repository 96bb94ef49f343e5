import os
import sqlite3
from datetime import datetime

import numpy as np
import pytest

from engine import catalog as catalog_mod
from engine.catalog import SCHEMA_VERSION, Catalog, PhotoFields, PhotoFilter
from engine.errors import LibraryUnreadableError


def test_schema_wal_and_version(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    assert cat.schema_version == SCHEMA_VERSION
    assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = cat.table_names()
    assert {"folders", "photos", "embeddings", "caption_bank", "caption_embeddings"} <= tables
    cat.close()


def test_migrates_an_old_schema(tmp_path):
    db = tmp_path / "catalog.db"
    cat = Catalog.__new__(Catalog)
    # Build a version-1 database by hand, as an older release would have left it.
    conn = sqlite3.connect(db)
    catalog_mod.MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO photos(path, status) VALUES ('/a.jpg', 'ok')")
    conn.commit()
    conn.close()
    cat = Catalog(db)
    assert cat.schema_version == SCHEMA_VERSION
    assert "sort_date" in cat.column_names("photos")
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
    with cat.write() as w:
        w.put_embedding("h1", "m1", v)
        gen = w.bump_generation()
    assert gen == 1 and cat.generation == 1
    np.testing.assert_array_equal(cat.get_embedding("h1", "m1"), v)
    assert cat.get_embedding("h1", "other") is None
    assert cat.embedded_hashes("m1") == {"h1"}


def test_transaction_rolls_back(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    folder_id = cat.add_folder("/f")
    with pytest.raises(RuntimeError), cat.write() as w:
        w.insert_photo(_fields("/f/x.jpg", folder_id))
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


def _fields(path, folder_id, digest="h", size=10, when=1_600_000_000.0, width=4):
    return PhotoFields(path, folder_id, size, int(when * 1e9), digest, width, 3, None, when)


def test_photo_lifecycle_writes(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    folder_id = cat.add_folder("/f")
    assert cat.add_folder("/f") == folder_id  # adding twice is a no-op
    with cat.write() as w:
        a = w.insert_photo(_fields("/f/a.jpg", folder_id, "ha"))
        b = w.insert_photo(_fields("/f/sub/b.jpg", folder_id, "hb"))
        w.record_failure("/f/bad.jpg", folder_id, 3, 5, "empty file (0 bytes)")
    assert cat.count_photos() == 3 and cat.failures() == [("/f/bad.jpg", "empty file (0 bytes)")]
    with cat.write() as w:
        # copied without decoding: width unknown, so it is taken from the row with those bytes
        assert w.known_dimensions("ha") == (4, 3, None)
        w.move_photo(a, _fields("/f/moved.jpg", folder_id, "ha", width=None))
        w.refresh_photo(b, folder_id, 99, 123)
    moved = cat.photo_by_path("/f/moved.jpg")
    assert moved.id == a and moved.width == 4 and cat.photo_by_path("/f/a.jpg") is None
    touched = cat.photo_by_path("/f/sub/b.jpg")
    assert (touched.size, touched.mtime_ns) == (99, 123)
    assert {r.path for r in cat.photos_under("/f/sub")} == {"/f/sub/b.jpg"}
    assert {r.path for r in cat.photos_under("/f/moved.jpg")} == {"/f/moved.jpg"}
    assert cat.photos_under("/f/su") == []  # a prefix of a name is not a folder
    assert [r.id for r in cat.photos_with_status("ok")] == [a, b]
    with cat.write() as w:
        w.mark_photos_offline([b])
    assert cat.count_photos("offline") == 1
    failed_id = cat.photos_with_status("failed")[0].id
    assert sorted(cat.forget_folder(folder_id)) == sorted([a, b, failed_id])
    assert cat.count_photos() == 0 and cat.folders() == []


def test_forget_folder_returns_its_photo_ids(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    keep, drop = cat.add_folder("/keep"), cat.add_folder("/drop")
    with cat.write() as w:
        kept = w.insert_photo(_fields("/keep/a.jpg", keep, "h1"))
        dropped = [w.insert_photo(_fields(f"/drop/{i}.jpg", drop, f"d{i}")) for i in range(3)]
    generation = cat.generation
    assert sorted(cat.forget_folder(drop)) == dropped
    assert cat.generation == generation + 1
    assert [f.path for f in cat.folders()] == ["/keep"]
    assert [r.id for r in cat.photos_with_status("ok")] == [kept]


def test_photo_filter_sql_agrees_with_python(tmp_path):
    """Exact (SQL) and post-HNSW (Python) filtering must pick the same photos."""
    cat = Catalog(tmp_path / "catalog.db")
    folder_id = cat.add_folder("/p")
    paths = ["/p/a/1.jpg", "/p/a/2.jpg", "/p/ab/3.jpg", "/p/a_b/4.jpg", "/p/a%/5.jpg", "/p/6.jpg"]
    rng = np.random.default_rng(0)
    with cat.write() as w:
        for i, path in enumerate(paths):
            when = datetime(2015 + i, 6, 1).timestamp()
            w.insert_photo(_fields(path, folder_id, f"h{i}", when=when))
            w.put_embedding(f"h{i}", "m", rng.standard_normal(4).astype(np.float32))
    filters = [
        PhotoFilter(),
        PhotoFilter(folder="/p/a"),
        PhotoFilter(folder="/p/a/"),
        PhotoFilter(folder="/p/a_b"),
        PhotoFilter(folder="/p/a%"),
        PhotoFilter(date_from=datetime(2017, 1, 1)),
        PhotoFilter(date_to=datetime(2016, 12, 31)),
        PhotoFilter(folder="/p", date_from=datetime(2016, 1, 1), date_to=datetime(2018, 12, 31)),
    ]
    rows = cat.photos_with_status("ok")
    for f in filters:
        ids, _ = cat.indexable_vectors("m", f)
        assert set(ids.tolist()) == {r.id for r in rows if f.matches(r)}, f
    by_path = lambda f: sorted(r.path for r in rows if f.matches(r))  # noqa: E731
    assert by_path(PhotoFilter(folder="/p/a")) == ["/p/a/1.jpg", "/p/a/2.jpg"]
    assert by_path(PhotoFilter(folder="/p/a_b")) == ["/p/a_b/4.jpg"]  # _ is no wildcard
    assert by_path(filters[-1]) == ["/p/a/2.jpg", "/p/a_b/4.jpg", "/p/ab/3.jpg"]


def test_photos_missing_embedding(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    folder_id = cat.add_folder("/p")
    with cat.write() as w:
        for i in range(3):
            w.insert_photo(_fields(f"/p/{i}.jpg", folder_id, f"h{i}"))
        w.put_embedding("h1", "new", np.ones(4, np.float32))
        w.put_embedding("h2", "old", np.ones(4, np.float32))
    assert [r.path for r in cat.photos_missing_embedding("new")] == ["/p/0.jpg", "/p/2.jpg"]


def test_undecodable_names_round_trip_and_match_folder_prefixes(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    odd_dir = os.fsdecode(b"/p/caf\xe9")
    folder_id = cat.add_folder("/p")
    names = ["/p/a.jpg", os.fsdecode(b"/p/\xff.jpg"), odd_dir + "/x.jpg", odd_dir + "/y.jpg"]
    with cat.write() as w:
        for i, path in enumerate(names):
            w.insert_photo(_fields(path, folder_id, f"h{i}"))
            w.put_embedding(f"h{i}", "m", np.ones(4, np.float32))
    assert [r.path for r in cat.photos_with_status("ok")] == names
    assert cat.photo_by_path(names[1]).path == names[1]
    assert sorted(r.path for r in cat.photos_under("/p")) == sorted(names)
    assert sorted(r.path for r in cat.photos_under(odd_dir)) == names[2:]
    for folder, expected in (("/p", names), (odd_dir, names[2:])):
        ids, _ = cat.indexable_vectors("m", PhotoFilter(folder=folder))
        assert sorted(cat.photos_by_ids(ids.tolist())[i].path for i in ids.tolist()) == sorted(expected)
    odd_folder = cat.add_folder(odd_dir)
    assert [f.path for f in cat.folders()] == ["/p", odd_dir] and odd_folder != folder_id
    assert cat.add_captions([os.fsdecode(b"\xff dog"), "a dog"], "query") == 1


def _bulk_library(cat, n, folder="/f"):
    """n photos with embeddings ('m', 8-d), sort_date = i seconds, id i + 1."""
    folder_id = cat.add_folder(folder)
    rng = np.random.default_rng(0)
    with cat.write() as w:
        w.insert_photos(
            (i + 1, PhotoFields(f"{folder}/{i:06}.jpg", folder_id, 1, i, f"h{i}", 4, 3, None, float(i)))
            for i in range(n)
        )
        w.put_embeddings("m", {f"h{i}": rng.standard_normal(8).astype(np.float32) for i in range(n)})


def test_browse_pages_newest_first_with_filters(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    _bulk_library(cat, 50)
    other = cat.add_folder("/g")
    with cat.write() as w:
        w.insert_photo(_fields("/g/old.jpg", other, "g1", when=5.5))
        w.insert_photo(_fields("/g/same.jpg", other, "g2", when=49.0))  # ties with /f/000049
        w.record_failure("/g/bad.jpg", other, 1, int(1e12), "broken")
    page = cat.browse(0, 4)
    assert [r.path for r in page] == ["/g/same.jpg", "/f/000049.jpg", "/f/000048.jpg", "/f/000047.jpg"]
    everything = [r.path for o in range(0, 60, 7) for r in cat.browse(o, 7)]
    assert len(everything) == 52 == cat.count_browsable() and len(set(everything)) == 52
    assert "/g/bad.jpg" not in everything  # failed files are not photos to show
    g = PhotoFilter(folder="/g")
    assert [r.path for r in cat.browse(0, 10, g)] == ["/g/same.jpg", "/g/old.jpg"]
    assert cat.count_browsable(g) == 2
    window = PhotoFilter(date_from=datetime.fromtimestamp(5), date_to=datetime.fromtimestamp(7))
    assert [r.path for r in cat.browse(0, 10, window)] == ["/f/000007.jpg", "/f/000006.jpg", "/g/old.jpg", "/f/000005.jpg"]
    assert cat.count_browsable(window) == 4 and cat.browse(100, 10) == []


def test_browse_walks_the_date_index_without_sorting(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    _bulk_library(cat, 10)
    plan = " ".join(
        str(r[-1])
        for r in cat._query(
            "EXPLAIN QUERY PLAN SELECT p.id FROM photos p WHERE p.status IN ('ok', 'offline') "
            "AND (1) ORDER BY p.sort_date DESC, p.id DESC LIMIT 100 OFFSET 0"
        )
    )
    assert "idx_photos_sort_date" in plan and "TEMP B-TREE" not in plan


def test_sample_vectors_spreads_over_the_library(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    _bulk_library(cat, 1000)
    sample = cat.sample_vectors("m", 100)
    assert sample.shape == (100, 8)
    assert cat.sample_vectors("other-model", 100).shape[0] == 0
    assert cat.sample_vectors("m", 5000).shape == (1000, 8)


def test_caption_bank_by_source(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    cat.add_captions(["a dog", "a cat"], "model")
    cat.add_captions(["my query"], "query")
    assert [c for _, c in cat.captions_missing_embeddings("m", "query")] == ["my query"]
    assert cat.count_captions_missing("m") == 3
    ids = [i for i, _ in cat.captions_missing_embeddings("m")]
    cat.put_caption_embeddings("m", ids, np.eye(3, 4, dtype=np.float32))
    texts, mat = cat.caption_matrix("m", "query")
    assert texts == ["my query"] and mat.shape == (1, 4) and cat.count_captions_missing("m") == 0


@pytest.mark.slow  # 100K rows inserted (~2 s)
def test_browse_pages_through_100k_photos(tmp_path):
    cat = Catalog(tmp_path / "catalog.db")
    folder_id = cat.add_folder("/f")
    n = 100_000
    order = np.random.default_rng(0).permutation(n)  # dates unrelated to row ids
    with cat.write() as w:
        w.insert_photos(
            (i + 1, PhotoFields(f"/f/{i:06}.jpg", folder_id, 1, 0, f"h{i}", 4, 3, None, float(order[i])))
            for i in range(n)
        )
    assert cat.count_browsable() == n
    newest = [r.sort_date for r in cat.browse(0, 100)]
    assert newest == [float(n - 1 - k) for k in range(100)]
    deepest = [r.sort_date for r in cat.browse(n - 100, 100)]
    assert deepest == [float(99 - k) for k in range(100)]
