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


# -- query syntax, honest result lists, browse (issue 14) ----------------------------------

import numpy as np  # noqa: E402

from engine import settings  # noqa: E402
from engine.search import Cutoff, ParsedQuery, parse_query  # noqa: E402


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dog beach -people", ParsedQuery("dog beach", (), ("people",))),
        ('"red car" +night', ParsedQuery("red car", ("night",), ())),
        ('-"two people" +"at night" dog', ParsedQuery("dog", ("at night",), ("two people",))),
        ("a t-shirt x+y", ParsedQuery("a t-shirt x+y", (), ())),  # signs inside words
        ('dog "on the beach', ParsedQuery("dog on the beach", (), ())),  # unclosed quote
        ("dog - + -- \"\"", ParsedQuery("dog", (), ())),  # lone signs while typing
        ("dog -dog +night +night", ParsedQuery("dog", ("night",), ())),
        ("-people", ParsedQuery("", (), ("people",))),
        ("  ", ParsedQuery()),
    ],
)
def test_parse_query(text, expected):
    assert parse_query(text) == expected


def _colour_library(tmp_path, make_image, emb):
    colours = {"red": (230, 20, 20), "blue": (20, 20, 230), "green": (20, 230, 20),
               "purple": (200, 20, 200), "yellow": (230, 230, 20), "white": (240, 240, 240),
               "teal": (20, 200, 200), "orange": (240, 140, 20)}
    for name, rgb in colours.items():
        for i in range(4):
            make_image(f"{name}{i}.jpg", rgb, size=(24, 24), seed=i)
    lib = Library.open(tmp_path / "lib", emb)
    lib.add_folder(tmp_path / "photos")
    lib.index()
    return lib


def _reference_ranking(lib, emb, positives, negatives, photo=None, exclude=None):
    """Naive reference: every photo's vector from the catalog, each term embedded on its own,
    scores combined in numpy by the documented rule, sorted."""
    ids, vecs = lib.catalog.indexable_vectors(emb.model_id)
    rows = lib.catalog.photos_by_ids(int(i) for i in ids)
    pos = [vecs @ emb.text_query(emb.embed_texts([t])[0]) for t in positives]
    weights = [1.0] * len(pos)
    if photo is not None:
        pos.append(vecs @ emb.image_query(lib.catalog.get_embedding(photo.content_hash, emb.model_id)))
        weights.append(settings.LIKE_PHOTO_WEIGHT)
    score = sum(w * s for w, s in zip(weights, pos, strict=True)) / sum(weights)
    for t in negatives:
        score = score - settings.NEGATIVE_WEIGHT * (vecs @ emb.text_query(emb.embed_texts([t])[0]))
    order = np.argsort(-score, kind="stable")
    return [(rows[int(ids[j])].path, float(score[j])) for j in order if rows[int(ids[j])].path != exclude]


@pytest.mark.parametrize(
    ("query", "positives", "negatives"),
    [
        ("red -blue", ["red"], ["blue"]),
        ("white -green -red", ["white"], ["green", "red"]),
        ('"yellow thing" +blue', ["yellow thing", "blue"], []),
        ("green +blue -white", ["green", "blue"], ["white"]),
    ],
)
def test_negative_and_added_terms_match_a_naive_reference(tmp_path, make_image, query, positives, negatives):
    emb = FakeEmbedder()
    with _colour_library(tmp_path, make_image, emb) as lib:
        got = [(h.path, h.score) for h in lib.search_text(query, top_k=32).hits]
        want = _reference_ranking(lib, emb, positives, negatives)
        assert [p for p, _ in got] == [p for p, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-4)
        plain = [h.path for h in lib.search_text(" ".join(positives), top_k=32).hits]
        assert plain != [p for p, _ in got]  # the terms changed the ranking


def test_negative_term_ranks_away_from_it(tmp_path, make_image):
    emb = FakeEmbedder()
    with _colour_library(tmp_path, make_image, emb) as lib:
        # purple and white photos are both reddish-blue-ish; -blue pushes purple down
        names = lambda q: [os.path.basename(h.path)[:-5] for h in lib.search_text(q, top_k=32).hits]  # noqa: E731
        plain, minus = names("red"), names("red -blue")
        assert minus.index("purple") > plain.index("purple")
        assert all(n in ("blue", "teal") for n in minus[-8:])  # the bluest photos go last
        with pytest.raises(EmptyQueryError, match="not only terms to leave out"):
            lib.search_text("-blue")


def test_like_photo_refines_from_a_photo(tmp_path, make_image):
    emb = FakeEmbedder()
    with _colour_library(tmp_path, make_image, emb) as lib:
        photo = tmp_path / "photos" / "purple0.jpg"
        row = lib.photo(photo)
        got = lib.search_text("blue", top_k=31, like_photo=photo)
        want = _reference_ranking(lib, emb, ["blue"], [], photo=row, exclude=str(photo))
        assert [h.path for h in got.hits] == [p for p, _ in want]
        assert str(photo) not in [h.path for h in got.hits]
        # the text moves the photo's neighbours towards it
        only_photo = [h.path for h in lib.search_text("", top_k=31, like_photo=photo).hits]
        assert only_photo == [h.path for h in lib.similar_photos(photo, top_k=31).hits]
        assert only_photo != [h.path for h in got.hits]
        assert "blue" not in [c.caption for c in lib.similar_captions(photo, top_k=50)]  # not remembered


def test_cutoff_rule_on_hand_made_scores():
    rng = np.random.default_rng(0)
    gallery = rng.normal(0.0, 0.1, 1000)
    mean, std = float(gallery.mean()), float(gallery.std())
    cut = Cutoff.for_scores(0.6, gallery)
    assert cut.confident_min == pytest.approx(max(mean + settings.CONFIDENT_Z * std, 0.6 - settings.CONFIDENT_GAP * std))
    assert cut.strong_min == pytest.approx(max(mean + settings.STRONG_Z * std, 0.6 - settings.STRONG_GAP * std))
    assert [cut.strength(s) for s in (0.6, cut.strong_min - 1e-6, cut.confident_min, cut.confident_min - 1e-6)] == [3, 2, 2, 1]
    # a best hit that barely stands out still counts; a weak query has no confident match
    low = Cutoff.for_scores(mean + 0.5 * std, gallery)
    assert low.strength(mean + 0.5 * std) == 3
    none = Cutoff.for_scores(0.6, gallery, weak_min=0.7)
    assert none.strength(0.6) == 1
    tiny = Cutoff.for_scores(0.3, np.array([0.3, 0.1]), weak_min=0.2)
    assert [tiny.strength(s) for s in (0.3, 0.25, 0.1)] == [3, 2, 1]


def test_confident_count_strength_and_date_sort(tmp_path, make_image):
    emb = FakeEmbedder()
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):  # red photos, dated 2016..2021 in shuffled order
        year = 2016 + (i * 5) % 6
        _dated(folder / f"red{year}.jpg", datetime(year, 3, 1))
    for i in range(40):
        make_image(f"other{i}.jpg", ("blue", "green", "white", "yellow")[i % 4], seed=i)
    with Library.open(tmp_path / "lib", emb) as lib:
        lib.add_folder(folder)
        lib.index()
        result = lib.search_text("red", top_k=30)
        assert result.confident == 6 and not result.weak
        assert all(h.strength >= 2 for h in result.hits[:6]) and all(h.strength == 1 for h in result.hits[6:])
        assert result.hits[0].to_json()["strength"] == result.hits[0].strength
        by_date = lib.search_text("red", top_k=30, sort="date")
        assert by_date.confident == 6 and by_date.sort == "date"
        assert [h.date.year for h in by_date.hits[:6]] == [2021, 2020, 2019, 2018, 2017, 2016]
        assert [h.path for h in by_date.hits[6:]] == [h.path for h in result.hits[6:]]
        with pytest.raises(ValueError):
            lib.search_text("red", sort="colour")
        emb.weak_match_threshold = 5.0
        weak = lib.search_text("red", top_k=30)
        assert weak.weak and weak.confident == 0 and {h.strength for h in weak.hits} == {1}


def test_browse_and_count_through_the_library(tmp_path, make_image):
    emb = FakeEmbedder()
    folder = tmp_path / "photos"
    folder.mkdir()
    for year in (2015, 2019, 2017):
        _dated(folder / f"y{year}.jpg", datetime(year, 1, 1))
    make_image("sub/a.jpg")
    os.utime(folder / "sub" / "a.jpg", (datetime(2018, 1, 1).timestamp(),) * 2)
    with Library.open(tmp_path / "lib", emb) as lib:
        lib.add_folder(folder)
        lib.index()
        assert [os.path.basename(h.path) for h in lib.browse(0, 10)] == ["y2019.jpg", "a.jpg", "y2017.jpg", "y2015.jpg"]
        assert [os.path.basename(h.path) for h in lib.browse(1, 2)] == ["a.jpg", "y2017.jpg"]
        assert lib.count_photos() == 4 and lib.count_photos(folder=str(folder / "sub")) == 1
        assert lib.count_photos(date_from=datetime(2016, 1, 1), date_to=datetime(2018, 6, 1)) == 2
        hit = lib.browse(0, 1, folder=str(folder / "sub"))[0]
        assert hit.strength == 0 and hit.date.year == 2018 and hit.width == 64
