"""A full disk: one clear error, the folders and every committed batch survive, and
searching keeps working read-only."""

import errno
import os
import re
import shutil
import subprocess

import pytest

from engine import imaging
from engine.errors import DiskFullError
from engine.library import Library
from tests.conftest import CountingEmbedder

MESSAGE = re.compile(r"^disk full: (\d+) photos indexed, free space and run index again$")


@pytest.fixture
def photos(tmp_path, make_image):
    for i in range(80):
        make_image(f"p{i:03}.jpg", seed=i)
    return tmp_path / "photos"


def _limit_catalog(lib, extra_pages):
    """SQLite's own 'database or disk is full' once the file grows by `extra_pages`."""
    conn = lib.catalog.conn  # the indexing thread's connection (this thread)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + extra_pages}")


def test_catalog_full_mid_pass_keeps_the_committed_batches(tmp_path, photos):
    emb = CountingEmbedder(dim=256)  # 1 KB a vector: 32 photos need ~10 pages
    lib_dir = tmp_path / "lib"
    with Library.open(lib_dir, emb) as lib:
        lib.add_folder(photos)
        _limit_catalog(lib, 14)
        with pytest.raises(DiskFullError) as err:
            lib.index()
        indexed = int(MESSAGE.match(str(err.value)).group(1))
        assert indexed == err.value.indexed == 32  # the first batch fitted, the second not
        assert lib.search_text("red", top_k=50).hits  # the open library still answers
    with Library.open(lib_dir, emb, read_only=True) as lib:  # "free space": a new connection
        assert [f.path for f in lib.folders()] == [str(photos)]
        assert lib.status().photo_count == 32 and lib.failures() == []
    with Library.open(lib_dir, emb) as lib:
        r = lib.index()
        assert r.indexed == 48 and r.unchanged == 32 and r.failed == []
        assert lib.vector_index.count == 80


def test_no_room_for_thumbnails_stops_the_pass_instead_of_failing_every_photo(
    tmp_path, photos, monkeypatch
):
    real_save = imaging.save_thumbnail
    saved = []

    def save(image, thumbs_dir, digest):
        if len(saved) >= 40:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(digest)
        return real_save(image, thumbs_dir, digest)

    monkeypatch.setattr(imaging, "save_thumbnail", save)
    with Library.open(tmp_path / "lib", CountingEmbedder(dim=32)) as lib:
        lib.add_folder(photos)
        with pytest.raises(DiskFullError, match=MESSAGE):
            lib.index()
        assert lib.failures() == []  # no photo blamed for the disk
        monkeypatch.setattr(imaging, "save_thumbnail", real_save)
        r = lib.index()
        assert r.indexed + r.unchanged == 80 and r.failed == []


def test_queries_are_not_stored_on_a_full_disk_but_search_answers(tmp_path, photos):
    with Library.open(tmp_path / "lib", CountingEmbedder(dim=32)) as lib:
        lib.add_folder(photos)
        lib.index()
        _limit_catalog(lib, 0)
        assert len(lib.search_text("a query that cannot be stored", top_k=5).hits) == 5


def _mount_tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def _fill(directory):
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_real_full_disk(tmp_path, photos):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "2m")
    try:
        lib_dir = disk / "lib"
        emb = CountingEmbedder(dim=256)
        with Library.open(lib_dir, emb) as lib:
            lib.add_folder(photos)
            lib.index()
        for i in range(40):
            shutil.copy(photos / "p000.jpg", photos / f"new{i:02}.jpg")
            with open(photos / f"new{i:02}.jpg", "ab") as f:
                f.write(bytes([i]))  # new content: a new vector, a new thumbnail
        # the disk fills up during a pass: one clear error, nothing lost
        with Library.open(lib_dir, emb) as lib:
            _fill(disk)
            with pytest.raises(DiskFullError, match=MESSAGE):
                lib.index()
        # and so does the next attempt, however far it gets
        with pytest.raises(DiskFullError, match="^disk full: "):
            with Library.open(lib_dir, emb) as lib:
                lib.index()
        # a read command still answers, and the folder list is intact
        with Library.open(lib_dir, emb, read_only=True) as lib:
            assert len(lib.search_text("red", top_k=5).hits) == 5
            assert [f.path for f in lib.folders()] == [str(photos)]
            assert lib.status().photo_count >= 80
        os.unlink(disk / "filler")
        with Library.open(lib_dir, emb) as lib:
            r = lib.index()
            assert r.failed == [] and lib.status().photo_count == 120
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_searching_a_cleanly_closed_library_on_a_full_disk(tmp_path, photos):
    """After a clean close SQLite has removed -wal and -shm, and a reader cannot create the
    -shm file again on a full disk ("disk I/O error"): it reads the main file instead."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "2m")
    try:
        lib_dir = disk / "lib"
        emb = CountingEmbedder(dim=32)
        with Library.open(lib_dir, emb) as lib:
            lib.add_folder(photos)
            lib.index()
        assert not (lib_dir / "catalog.db-shm").exists()
        _fill(disk)
        with Library.open(lib_dir, emb, read_only=True) as lib:
            assert len(lib.search_text("red", top_k=5).hits) == 5
            assert lib.status().photo_count == 80 and len(lib.folders()) == 1
        with pytest.raises(DiskFullError, match="^disk full: "), Library.open(lib_dir, emb):
            pass
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_reader_falls_back_when_sqlite_cannot_make_its_shm_file(tmp_path, photos, monkeypatch):
    """The same without root: SQLite's failure to create -shm is faked."""
    import sqlite3

    from engine.catalog import Catalog

    emb = CountingEmbedder(dim=32)
    with Library.open(tmp_path / "lib", emb) as lib:
        lib.add_folder(photos)
        lib.index()
    real = Catalog._connect_once

    def connect_once(self, immutable):
        if not immutable:
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, immutable)

    monkeypatch.setattr(Catalog, "_connect_once", connect_once)
    with Library.open(tmp_path / "lib", emb, read_only=True) as lib:
        assert len(lib.search_text("red", top_k=5).hits) == 5
