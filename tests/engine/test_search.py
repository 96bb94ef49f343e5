import os
import subprocess
import sys
from datetime import datetime

import pytest
from PIL import Image

from engine.errors import (
    EmptyQueryError,
    LibraryLockedError,
    ModelMismatchError,
    PhotoNotInLibraryError,
)
from engine.library import Library
from engine.testing import FakeEmbedder
from tests.conftest import CountingEmbedder


@pytest.fixture
def lib(tmp_path, fake_embedder):
    library = Library.open(tmp_path / "lib", fake_embedder)
    yield library
    library.close()


def _dated(path, when):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = when.strftime("%Y:%m:%d %H:%M:%S")
    Image.new("RGB", (32, 32), "red").save(path, exif=exif.tobytes())


def test_text_search_ranks_by_colour(lib, make_image, tmp_path):
    red = make_image("red.jpg", "red")
    make_image("green.jpg", "green")
    make_image("blue.jpg", "blue")
    lib.add_folder(tmp_path / "photos")
    lib.index()
    result = lib.search_text("a red thing", top_k=2)
    assert [h.path for h in result.hits][:1] == [str(red)]
    assert len(result.hits) == 2 and result.hits[0].score >= result.hits[1].score
    hit = result.hits[0]
    assert (hit.width, hit.height, hit.status) == (64, 48, "ok") and hit.date is not None
    assert not result.weak and result.threshold == pytest.approx(0.2)
    with pytest.raises(EmptyQueryError):
        lib.search_text("   ")


def test_weak_flag_uses_embedder_threshold(tmp_path, make_image):
    emb = FakeEmbedder()
    emb.weak_match_threshold = 0.999
    make_image("red.jpg", "red")
    with Library.open(tmp_path / "lib", emb) as lib:
        lib.add_folder(tmp_path / "photos")
        lib.index()
        result = lib.search_text("red")
        assert result.weak and result.threshold == 0.999 and result.best_score < 0.999
        assert lib.search_text("red", top_k=0).weak  # nothing found is weak too


def test_folder_filter_falls_back_to_exact_search(lib, make_image, tmp_path):
    # 150 red photos crowd out the 3 blue-ish ones of folder B from an HNSW over-fetch.
    for i in range(150):
        make_image(f"A/r{i}.jpg", "red", size=(16, 16), seed=i)
    b = [make_image(f"B/b{i}.jpg", "blue", size=(16, 16), seed=i) for i in range(3)]
    lib.add_folder(tmp_path / "photos")
    lib.index()
    result = lib.search_text("red", top_k=5, folder=str(tmp_path / "photos" / "B"))
    assert sorted(h.path for h in result.hits) == sorted(map(str, b))


def test_date_filter_uses_exif_then_mtime(lib, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _dated(folder / "2019.jpg", datetime(2019, 6, 1, 12))
    _dated(folder / "2022.jpg", datetime(2022, 6, 1, 12))
    Image.new("RGB", (32, 32), "red").save(folder / "nodate.jpg")
    os.utime(folder / "nodate.jpg", (datetime(2010, 1, 1).timestamp(),) * 2)
    lib.add_folder(folder)
    lib.index()
    names = lambda r: sorted(os.path.basename(h.path) for h in r.hits)  # noqa: E731
    assert names(lib.search_text("red", date_from=datetime(2021, 1, 1))) == ["2022.jpg"]
    assert names(lib.search_text("red", date_to=datetime(2020, 1, 1))) == ["2019.jpg", "nodate.jpg"]
    hits = lib.search_text("red", date_from=datetime(2019, 1, 1), date_to=datetime(2019, 12, 31)).hits
    assert [h.date for h in hits] == [datetime(2019, 6, 1, 12)]


def test_similar_photos_and_captions(tmp_path, make_image):
    bank = tmp_path / "bank.txt"
    bank.write_text("a red thing\ngreen grass\n\nblue sky\n")
    emb = FakeEmbedder()
    emb.caption_bank_path = str(bank)
    red = make_image("red.jpg", "red", seed=1)
    red2 = make_image("red2.jpg", "red", seed=2)
    make_image("green.jpg", "green")
    with Library.open(tmp_path / "lib", emb) as lib:
        lib.add_folder(tmp_path / "photos")
        lib.index()
        sim = lib.similar_photos(red, top_k=2)
        assert sim.hits[0].path == str(red2) and str(red) not in [h.path for h in sim.hits]
        caps = lib.similar_captions(red, top_k=3)
        assert caps[0].caption == "a red thing" and len(caps) == 3
        lib.search_text("yellow bananas")
        assert "yellow bananas" in [c.caption for c in lib.similar_captions(red, top_k=10)]
        # Search-as-you-type prefixes are not remembered; a committed query is.
        lib.search_text("purple pla", remember=False)
        assert "purple pla" not in [c.caption for c in lib.similar_captions(red, top_k=10)]
        lib.remember_query("purple plates")
        assert "purple plates" in [c.caption for c in lib.similar_captions(red, top_k=10)]
        with pytest.raises(PhotoNotInLibraryError):
            lib.similar_photos(tmp_path / "nope.jpg")


def test_second_writer_is_refused_but_reader_works(tmp_path, make_image, fake_embedder):
    make_image("red.jpg")
    with Library.open(tmp_path / "lib", fake_embedder) as lib:
        lib.add_folder(tmp_path / "photos")
        lib.index()
        with pytest.raises(LibraryLockedError, match="in use by another photosearch"):
            Library.open(tmp_path / "lib", fake_embedder)
        code = (
            "import sys; from engine.library import Library; from engine.testing import FakeEmbedder\n"
            "try:\n    Library.open(sys.argv[1], FakeEmbedder())\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "lib")], capture_output=True, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        ).stdout
        assert out.startswith("LibraryLockedError") and f"pid {os.getpid()}" in out
        with Library.open(tmp_path / "lib", fake_embedder, read_only=True) as reader:
            assert len(reader.search_text("red").hits) == 1
    Library.open(tmp_path / "lib", fake_embedder).close()  # released on close


def test_model_mismatch_and_reembed(tmp_path, make_image, fake_embedder):
    for i in range(3):
        make_image(f"p{i}.jpg", seed=i)
    with Library.open(tmp_path / "lib", fake_embedder) as lib:
        lib.add_folder(tmp_path / "photos")
        lib.index()
    other = CountingEmbedder(dim=48, seed=1)
    with pytest.raises(ModelMismatchError, match="--reembed"):
        Library.open(tmp_path / "lib", other)
    with Library.open(tmp_path / "lib", other, reembed=True) as lib:
        r = lib.index()
        assert r.indexed == 3 and other.embedded == 3
        assert lib.status().model_id == other.model_id and lib.status().photo_count == 3
        assert len(lib.search_text("red").hits) == 3
    # both models' vectors are stored now: switching back is free
    with Library.open(tmp_path / "lib", FakeEmbedder()) as lib:
        assert lib.status().photo_count == 3


def test_switch_model_keeps_old_model_for_searches_until_done(tmp_path, make_image, fake_embedder):
    for i in range(40):
        make_image(f"p{i}.jpg", seed=i)
    new = CountingEmbedder(dim=64, seed=7)
    with Library.open(tmp_path / "lib", fake_embedder) as lib:
        lib.add_folder(tmp_path / "photos")
        lib.index()
        during = []

        def progress(p):
            during.append((lib.embedder.model_id, len(lib.search_text("red").hits)))

        lib.switch_model(new, progress=progress)
        assert during and all(m == fake_embedder.model_id and n == 40 for m, n in during)
        assert lib.embedder is new and new.embedded == 40
        assert len(lib.search_text("red").hits) == 40
        assert lib.vector_index.dim == 64
    with Library.open(tmp_path / "lib", new) as lib:  # persisted
        assert lib.status().photo_count == 40


def test_remove_folder_and_thumbnails(lib, make_image, tmp_path):
    a = make_image("a.jpg")
    lib.add_folder(tmp_path / "photos")
    lib.index()
    thumb = lib.thumbnail_path(a)
    assert thumb is not None and thumb.exists()
    thumb.unlink()
    assert lib.thumbnail_path(a).exists()  # remade on demand
    lib.remove_folder(tmp_path / "photos")
    assert lib.status().photo_count == 0 and lib.folders() == [] and a.exists()
    assert lib.search_text("red").hits == []


def test_search_from_another_thread_while_indexing(lib, make_image, tmp_path):
    import threading

    for i in range(120):
        make_image(f"p{i:03}.jpg", "red", size=(24, 24), seed=i)
    lib.add_folder(tmp_path / "photos")
    errors, counts = [], []
    done = threading.Event()

    def searcher():
        while not done.is_set():
            try:
                counts.append(len(lib.search_text("red", top_k=10).hits))
            except Exception as exc:  # noqa: BLE001 - collected for the assert
                errors.append(exc)

    t = threading.Thread(target=searcher)
    t.start()
    try:
        lib.index()
    finally:
        done.set()
        t.join()
    assert errors == [] and counts
    assert len(lib.search_text("red", top_k=10).hits) == 10


def test_prepare_captions_embeds_the_bank_once_with_progress(tmp_path, make_image):
    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join(f"caption number {i}" for i in range(600)))
    emb = FakeEmbedder()
    emb.caption_bank_path = str(bank)
    make_image("red.jpg", "red")
    seen: list[tuple[int, int]] = []
    with Library.open(tmp_path / "lib", emb) as lib:
        assert lib.prepare_captions(progress=lambda d, t: seen.append((d, t))) == 600
        assert seen[-1] == (600, 600) and len(seen) == 3  # chunks of 256
        seen.clear()
        assert lib.prepare_captions(progress=lambda d, t: seen.append((d, t))) == 600
        assert seen == []  # already embedded for this model: nothing to do
