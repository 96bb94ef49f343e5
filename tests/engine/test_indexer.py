import os
import shutil
import stat
import threading

import numpy as np
import pytest
from PIL import Image

from engine import imaging
from engine.catalog import Catalog
from engine.library import Library
from engine.testing import FakeEmbedder
from engine.vector_index import VectorIndex


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    return d


@pytest.fixture
def lib(tmp_path, photos, fake_embedder):
    library = Library.open(tmp_path / "lib", fake_embedder)
    library.add_folder(photos)
    yield library
    library.close()


def _consistent(lib):
    """Every ok/offline photo has a vector and the index holds exactly those photos."""
    cat = lib.catalog
    ids, _ = cat.indexable_vectors(lib.embedder.model_id)
    rows = cat.photos_with_status("ok", "offline")
    assert {r.id for r in rows} == set(ids.tolist())
    assert lib.vector_index.ids() == set(ids.tolist())


def test_new_unchanged_changed_deleted(lib, make_image, photos, fake_embedder):
    a = make_image("a.jpg", "red")
    make_image("sub/b.png", "green")
    c = make_image("c.jpg", "blue")
    r = lib.index()
    assert (r.indexed, r.unchanged, r.failed) == (3, 0, [])
    assert fake_embedder.embedded == 3
    r = lib.index()
    assert (r.indexed, r.unchanged) == (0, 3) and fake_embedder.embedded == 3

    make_image("a.jpg", "blue", seed=1)
    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r = lib.index()
    assert (r.indexed, r.unchanged) == (1, 2) and fake_embedder.embedded == 4
    assert lib.search_text("blue", top_k=1).hits[0].path in (str(a), str(c))

    c.unlink()
    r = lib.index()
    assert r.removed == 1 and lib.status().photo_count == 2
    _consistent(lib)


def test_touched_file_with_same_bytes_is_not_reembedded(lib, make_image, fake_embedder):
    a = make_image("a.jpg")
    lib.index()
    os.utime(a, (1, 1))
    r = lib.index()
    assert r.unchanged == 1 and fake_embedder.embedded == 1


def test_moved_and_renamed_files_are_not_reembedded(lib, make_image, photos, fake_embedder):
    a = make_image("a.jpg", "red")
    b = make_image("b.jpg", "green")
    lib.index()
    old_id = lib.catalog.photo_by_path(str(a)).id
    (photos / "new dir").mkdir()
    moved = photos / "new dir" / "renamed.jpg"
    a.rename(moved)
    b.rename(photos / "b2.jpg")
    r = lib.index()
    assert (r.moved, r.indexed, r.removed) == (2, 0, 0)
    assert fake_embedder.embedded == 2
    row = lib.catalog.photo_by_path(str(moved))
    assert row is not None and row.id == old_id
    assert lib.search_text("red", top_k=1).hits[0].path == str(moved)
    _consistent(lib)


def test_bad_files_are_recorded_with_reasons_and_retried_only_when_changed(
    lib, make_image, photos, monkeypatch, fake_embedder
):
    make_image("good.jpg")
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "page.jpg").write_text("<html><body>Not found</body></html>")
    (photos / "noise.png").write_bytes(os.urandom(3000))
    good = (photos / "good.jpg").read_bytes()
    (photos / "cut.jpg").write_bytes(good[: len(good) // 3])
    Image.new("1", (12000, 10000)).save(photos / "bomb.png")
    make_image("locked.jpg")
    if os.geteuid() != 0:
        os.chmod(photos / "locked.jpg", 0)
    else:  # root reads anything: simulate the permission error at open()
        real_open = open

        def fake_open(path, *a, **k):
            if str(path).endswith("locked.jpg"):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **k)

        monkeypatch.setattr(imaging, "open", fake_open, raising=False)

    r = lib.index()
    reasons = {os.path.basename(p): why for p, why in r.failed}
    assert reasons == {
        "empty.jpg": "empty file (0 bytes)",
        "page.jpg": "not an image (looks like text/HTML)",
        "noise.png": "not an image (unrecognised file format)",
        "cut.jpg": "truncated or corrupt image data",
        "bomb.png": "too large: 120 MP, the limit is 100 MP",
        "locked.jpg": "permission denied",
    }
    assert r.indexed == 1
    assert all(os.path.isabs(p) for p, _ in r.failed)
    assert len(lib.failures()) == 6 and lib.status().failures == 6

    calls = []
    real_decode = imaging.decode_image
    monkeypatch.setattr(imaging, "decode_image", lambda *a, **k: calls.append(a) or real_decode(*a, **k))
    r = lib.index()
    assert calls == [] and len(r.failed) == 6  # not retried: (size, mtime) unchanged

    shutil.copy(photos / "good.jpg", photos / "cut.jpg")
    os.utime(photos / "cut.jpg", (5, 5))
    r = lib.index()
    assert r.indexed == 1 and len(r.failed) == 5
    _consistent(lib)


def test_awkward_but_valid_images(lib, make_image, photos, tmp_path):
    make_image("ünïcödé 📷 photo.jpg", "red")
    make_image("UPPER.JPG", "green")
    make_image("cmyk.jpg", "blue", mode="CMYK")
    make_image("alpha.png", (255, 0, 0), mode="RGBA")
    make_image("pal.gif", "yellow", mode="P")
    make_image("tiff.TIFF", "white")
    make_image("x.webp", "red")
    make_image("x.bmp", "green")
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(photos / "sixteen.png")
    exif = Image.Exif()
    exif[274] = 8
    Image.new("RGB", (40, 20), "red").save(photos / "rotated.jpg", exif=exif.tobytes())
    Image.new("RGB", (6000, 4000), "blue").save(photos / "big.jpg", quality=60)
    (photos / "notes.txt").write_text("not a photo")
    r = lib.index()
    assert r.failed == [] and r.indexed == 11
    row = lib.catalog.photo_by_path(str(photos / "rotated.jpg"))
    assert (row.width, row.height) == (20, 40)
    big = lib.catalog.photo_by_path(str(photos / "big.jpg"))
    assert (big.width, big.height) == (6000, 4000)
    assert lib.thumbnail_path(photos / "big.jpg").exists()


def test_hidden_entries_symlink_loops_and_dangling_links(lib, make_image, photos):
    make_image("ok.jpg")
    make_image(".hidden.jpg")
    make_image(".cache/inside.jpg")
    make_image("deep/nested/x.png")
    os.symlink(photos, photos / "deep" / "loop")
    os.symlink(photos / "missing.jpg", photos / "dangling.jpg")
    (photos / "notes.txt").write_text("not a photo, passed over quietly")
    r = lib.index()
    assert r.indexed == 2
    reasons = {os.path.relpath(p, photos): why for p, why in r.failed}
    assert set(reasons) == {"deep/loop", "dangling.jpg"}
    assert reasons["deep/loop"].startswith("symbolic link loop")
    assert reasons["dangling.jpg"] == "broken symbolic link (its target is missing)"


def test_files_the_scan_cannot_index_are_failures_with_reasons(lib, make_image, photos):
    make_image("ok.jpg")
    os.mkfifo(photos / "pipe.jpg")
    os.symlink(photos / "self.jpg", photos / "self.jpg")  # a link to itself
    (photos / "camera.cr2").write_bytes(b"raw sensor data")
    expected = {
        "pipe.jpg": "not a regular file (a named pipe)",
        "self.jpg": "symbolic link loop",
        "camera.cr2": "unsupported format (.cr2)",
    }
    if os.geteuid() == 0:
        os.mknod(photos / "device.jpg", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        expected["device.jpg"] = "not a regular file (a device)"
    r = lib.index()
    assert r.indexed == 1
    assert {os.path.basename(p): why for p, why in r.failed} == expected
    assert {os.path.basename(p): why for p, why in lib.failures()} == expected
    assert lib.status().failures == len(expected)
    generation = lib.catalog.generation
    r = lib.index()  # the same again, and nothing rewritten
    assert len(r.failed) == len(expected) and lib.catalog.generation == generation
    # the watcher's path reports the pipe instead of blocking on it
    done = []
    worker = threading.Thread(target=lambda: done.append(lib.index_paths([photos / "pipe.jpg"])))
    worker.start()
    worker.join(20)
    assert not worker.is_alive() and done[0].failed == [(str(photos / "pipe.jpg"), expected["pipe.jpg"])]
    (photos / "pipe.jpg").unlink()
    r = lib.index()
    assert r.removed == 0 and len(r.failed) == len(expected) - 1
    assert "pipe.jpg" not in {os.path.basename(p) for p, _ in lib.failures()}


def test_photos_in_a_folder_that_cannot_be_listed_are_kept(lib, make_image, photos, monkeypatch):
    make_image("ok.jpg")
    make_image("private/a.jpg", seed=1)
    lib.index()
    import engine.scanner as scanner

    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path).endswith("private"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(scanner.os, "scandir", scandir)
    r = lib.index()
    assert r.removed == 0 and r.offline == 1
    assert [(os.path.basename(p), why) for p, why in r.failed] == [
        ("private", "cannot list folder (Permission denied)")
    ]
    monkeypatch.undo()
    r = lib.index()
    assert (r.unchanged, r.failed, r.offline) == (2, [], 0)


def test_unmounted_folder_goes_offline_and_comes_back_without_reembedding(
    lib, make_image, photos, tmp_path, fake_embedder
):
    for i in range(3):
        make_image(f"p{i}.jpg", seed=i)
    lib.index()
    away = tmp_path / "unplugged"
    photos.rename(away)
    r = lib.index()
    assert r.offline == 3 and r.removed == 0
    st = lib.status()
    assert st.offline_folders == [str(photos)] and st.offline_photos == 3 and st.photo_count == 3
    assert lib.search_text("red").hits[0].status == "offline"
    # an empty mount point looks the same as an absent drive
    photos.mkdir()
    assert lib.index().offline == 3
    photos.rmdir()
    away.rename(photos)
    r = lib.index()
    assert (r.unchanged, r.indexed, r.offline) == (3, 0, 0)
    assert fake_embedder.embedded == 3
    assert lib.status().offline_photos == 0 and lib.folders()[0].online
    _consistent(lib)


def test_index_paths_incremental(lib, make_image, photos, fake_embedder):
    a = make_image("a.jpg", "red")
    lib.index()
    b = make_image("b.jpg", "green")
    assert lib.index_paths([b]).indexed == 1
    new = photos / "moved.jpg"
    a.rename(new)
    r = lib.index_paths([a, new])
    assert (r.moved, r.indexed) == (1, 0) and fake_embedder.embedded == 2
    sub = photos / "sub"
    sub.mkdir()
    make_image("sub/c.jpg", "blue")
    assert lib.index_paths([sub]).indexed == 1
    shutil.rmtree(sub)
    assert lib.index_paths([sub]).removed == 1
    b.unlink()
    assert lib.index_paths([b]).removed == 1
    assert lib.index_paths([photos.parent / "elsewhere.jpg"]).indexed == 0
    _consistent(lib)


def test_progress_and_cancel(lib, make_image, fake_embedder):
    for i in range(80):
        make_image(f"p{i:03}.jpg", seed=i)
    seen = []
    cancel = threading.Event()

    def progress(p):
        seen.append(p)
        if p.done >= 40:
            cancel.set()

    r = lib.index(progress=progress, cancel=cancel)
    assert r.cancelled and r.indexed < 80
    assert seen[-1].total == 80 and seen[-1].current_path.endswith(".jpg")
    assert any(p.eta_s is not None for p in seen)
    _consistent(lib)
    r = lib.index()
    assert r.indexed + r.unchanged == 80 and not r.cancelled
    _consistent(lib)


def test_identical_files_in_one_pass_are_embedded_once(lib, make_image, photos, fake_embedder):
    a = make_image("a.jpg", seed=3)
    shutil.copy(a, photos / "copy.jpg")
    r = lib.index()
    assert r.indexed == 2 and fake_embedder.embedded == 1
    assert lib.status().photo_count == 2
    hits = lib.similar_photos(a, top_k=1).hits
    assert hits[0].path == str(photos / "copy.jpg") and hits[0].score == pytest.approx(1.0, abs=1e-5)
    _consistent(lib)


def test_copies_in_later_batches_reuse_the_first_vector(lib, make_image, photos, fake_embedder):
    from engine.indexer import Indexer

    original = make_image("a.jpg", seed=3)
    for i in range(3):
        shutil.copy(original, photos / f"copy{i}.jpg")
    make_image("other.jpg", seed=4)
    indexer = Indexer(
        lib.catalog, lib.vector_index, fake_embedder, lib.thumbs_dir, lambda: None, batch_size=1
    )
    r = indexer.reconcile()
    assert r.indexed == 5 and fake_embedder.embedded == 2
    assert lib.vector_index.count == 5
    _consistent(lib)


def _undecodable(parent, raw_name):
    """A path whose last part is the bytes `raw_name` (not valid UTF-8), or skip."""
    path = os.fsdecode(os.fsencode(str(parent)) + b"/" + raw_name)
    try:
        with open(path, "wb"):
            pass
        os.unlink(path)
    except (OSError, UnicodeError) as exc:
        pytest.skip(f"this filesystem refuses non-UTF-8 names: {exc}")
    return path


def test_names_that_are_not_utf8_are_indexed_losslessly(lib, make_image, photos):
    good = [make_image(f"good{i:02}.jpg", seed=i) for i in range(20)]
    odd = _undecodable(photos, b"\xff\xfe.jpg")
    make_image(odd, "blue", seed=50)
    latin1_dir = _undecodable(photos, b"caf\xe9")
    os.mkdir(latin1_dir)
    inside = make_image(os.path.join(latin1_dir, "x.jpg"), "green", seed=51)
    r = lib.index()
    assert r.failed == [] and r.indexed == 22
    assert lib.catalog.photo_by_path(odd) is not None
    paths = {h.path for h in lib.search_text("red", top_k=50).hits}
    assert {odd, str(inside), *map(str, good)} == paths
    assert all(os.path.exists(p) for p in paths)  # the bytes came back exactly
    assert lib.thumbnail_path(odd).exists()
    hits = lib.search_text("green", top_k=5, folder=latin1_dir).hits
    assert [h.path for h in hits] == [str(inside)]
    assert lib.index().unchanged == 22  # found again under the same stored name
    moved = _undecodable(photos, b"\xfe\xff moved.jpg")
    os.rename(odd, moved)
    r = lib.index_paths([odd, moved])
    assert (r.moved, r.indexed, r.removed) == (1, 0, 0)
    assert [f[0] for f in lib.failures()] == []
    shutil.rmtree(latin1_dir)
    assert lib.index_paths([latin1_dir]).removed == 1
    _consistent(lib)


class _OnnxLike(FakeEmbedder):
    """A fake that reports what OnnxEmbedder does: its runtime and image-session threads."""

    runtime = "onnx"

    def __init__(self, image_threads: int) -> None:
        super().__init__(dim=16)
        self.image_threads = image_threads


@pytest.mark.parametrize(
    ("cores", "torch_workers", "onnx_workers"),
    # torch: the model thread keeps cores - 1 (at most 4) decoders company; ONNX: decoding is the
    # bottleneck, so every core decodes except those the image session keeps (cores // 4, <= 4)
    [(1, 1, 1), (2, 1, 2), (4, 3, 4), (8, 4, 7), (16, 4, 13), (64, 4, 16)],
)
def test_decode_workers_follow_cores_and_runtime(cores, torch_workers, onnx_workers):
    from engine import settings
    from engine.indexer import decode_workers

    assert decode_workers(FakeEmbedder(dim=16), cores) == torch_workers
    assert decode_workers(None, cores) == torch_workers
    onnx = _OnnxLike(settings.inference_threads("image", cores))
    assert decode_workers(onnx, cores) == onnx_workers


def test_indexer_sizes_its_pool_for_the_embedder(tmp_path):
    from engine.indexer import Indexer, decode_workers

    catalog = Catalog(tmp_path / "c.db")
    try:
        index = VectorIndex(16, "m")
        onnx = _OnnxLike(1)
        assert Indexer(catalog, index, onnx, tmp_path, lambda: None).workers == decode_workers(onnx)
        assert Indexer(catalog, index, onnx, tmp_path, lambda: None, workers=3).workers == 3
    finally:
        catalog.close()
