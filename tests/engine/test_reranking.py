"""Attention re-ranking in search (engine/reranking.py, engine/search.py, the catalog's region
codes): with a seeded fake embedder that also gives a backbone map and token states, and
small random attention weights, against a naive loop reference."""

from __future__ import annotations

import hashlib
import logging
import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from engine import settings
from engine.library import Library
from engine.reranking import Reranker, load_reranker
from engine.testing import FakeEmbedder
from engine.vse.attention_runtime import AttentionConfig, load_weights, save_weights, unpack_regions

REGION_DIM, WORD_DIM, DIM = 8, 6, 5
COLOURS = ["red", "green", "blue", "yellow", "white", (200, 120, 40), (90, 30, 160), (20, 160, 160)]


class AttentionFake(FakeEmbedder):
    """FakeEmbedder plus what re-ranking reads: a (N, 8, 4, 4) 'backbone map' from the 4x4
    thumbnail and seeded per-word 'token states' between [CLS] and [SEP]."""

    attention_outputs_version = 1

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        rng = np.random.default_rng(7)
        self._cells = rng.standard_normal((3, REGION_DIM)).astype(np.float32)
        self.text_passes = 0

    def embed_prepared_with_grid(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cells = np.asarray(batch, np.float32).reshape(len(batch), 16, 3)
        grid = np.maximum(cells @ self._cells, 0).reshape(len(batch), 4, 4, REGION_DIM).transpose(0, 3, 1, 2)
        return self.embed_prepared(batch), grid

    def _state(self, token: str) -> np.ndarray:
        digest = hashlib.sha256(f"state:{token}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little")).standard_normal(WORD_DIM)

    def embed_texts_with_states(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        self.text_passes += 1
        states = []
        for t in texts:
            words = re.findall(r"[a-z]+", t.lower())
            states.append(np.stack([self._state(w) for w in ["[CLS]", *words, "[SEP]"]]).astype(np.float32))
        return self.embed_texts(texts), states


def write_weights(path: Path, model_id: str, alpha: float = 2.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {
        "region_norm_weight": 1 + 0.1 * rng.standard_normal(REGION_DIM),
        "region_norm_bias": 0.1 * rng.standard_normal(REGION_DIM),
        "region_proj_weight": rng.standard_normal((DIM, REGION_DIM)),
        "region_proj_bias": 0.1 * rng.standard_normal(DIM),
        "word_proj_weight": rng.standard_normal((DIM, WORD_DIM)),
        "word_proj_bias": 0.1 * rng.standard_normal(DIM),
    }
    config = AttentionConfig(word_dim=WORD_DIM, region_dim=REGION_DIM, dim=DIM, alpha=alpha, direction="both")
    save_weights(path, arrays, config, model_id)
    return path


@pytest.fixture
def weights(tmp_path, monkeypatch) -> Path:
    path = write_weights(tmp_path / "attention.npz", AttentionFake(dim=32).model_id)
    monkeypatch.setattr(settings, "ATTENTION_WEIGHTS", path)
    monkeypatch.delenv(settings.RERANK_ENV, raising=False)
    return path


@pytest.fixture
def photos(make_image) -> Path:
    for i in range(24):
        make_image(f"p{i:02d}.png", colour=COLOURS[i % len(COLOURS)], size=(32, 24), seed=i)
    return make_image("p00.png").parent


def _index(lib_dir: Path, folder: Path, rerank: bool) -> None:
    with Library.open(lib_dir, AttentionFake(dim=32), rerank=rerank) as lib:
        lib.add_folder(folder)
        lib.index()


# ------------------------------------------------------------------ the naive reference


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def naive_attention(words: list[np.ndarray], regions: list[np.ndarray], lam: float) -> float:
    """SCAN 'both' with mean pooling, written out: each word attends over the regions, each
    region over the words; cosines with the attended vectors, averaged; the two averaged."""

    def one_way(queries: list[np.ndarray], keys: list[np.ndarray]) -> float:
        total = 0.0
        for q in queries:
            sims = [float(q @ k) for k in keys]
            top = max(sims)
            e = [math.exp(lam * (s - top)) for s in sims]
            a = [x / sum(e) for x in e]
            attended = sum(w * k for w, k in zip(a, keys, strict=True))
            total += float(q @ _unit(attended))
        return total / len(queries)

    return (one_way(words, regions) + one_way(regions, words)) / 2


def naive_words(states: np.ndarray, w: dict[str, np.ndarray]) -> list[np.ndarray]:
    inner = states[1:-1]  # [CLS] and [SEP] dropped
    return [_unit(s @ w["word_proj_weight"].T + w["word_proj_bias"]) for s in inner]


# ------------------------------------------------------------------ tests


def test_region_codes_are_stored_by_hash_and_model_and_survive_a_move(tmp_path, weights, photos):
    lib_dir = tmp_path / "lib"
    _index(lib_dir, photos, rerank=True)
    with Library.open(lib_dir, AttentionFake(dim=32), rerank=True) as lib:
        reranker = lib._reranker(lib.embedder)
        assert reranker is not None and lib.reranking
        cat = lib.catalog
        assert cat.count_region_codes(lib.embedder.model_id, reranker.attention_id) == 24
        row = cat.photo_by_path(str(photos / "p03.png"))
        blob = cat.region_codes_for_hash(row.content_hash, lib.embedder.model_id, reranker.attention_id)
        assert len(blob) == 16 * DIM + 2 * 16
        regions = unpack_regions(blob, 16, DIM)
        assert np.allclose(np.linalg.norm(regions, axis=1), 1.0, atol=0.02)  # unit, int8
        # other model, other weights: nothing
        assert cat.region_codes_for_hash(row.content_hash, "other-model", reranker.attention_id) is None
        assert cat.region_codes_for_hash(row.content_hash, lib.embedder.model_id, "att-other") is None
        assert reranker.attention_id.endswith(".v1")
    moved = photos / "sub" / "p03-moved.png"
    moved.parent.mkdir()
    shutil.move(photos / "p03.png", moved)
    with Library.open(lib_dir, AttentionFake(dim=32), rerank=True) as lib:
        report = lib.index()
        assert report.moved == 1 and report.indexed == 0
        new_row = lib.catalog.photo_by_path(str(moved))
        reranker = lib._reranker(lib.embedder)
        got = lib.catalog.region_codes_for_photos([new_row.id], lib.embedder.model_id, reranker.attention_id)
        assert got == {new_row.id: blob}


def test_codes_are_computed_only_when_the_option_is_on(tmp_path, weights, photos):
    lib_dir = tmp_path / "lib"
    _index(lib_dir, photos, rerank=False)
    with Library.open(lib_dir, AttentionFake(dim=32), read_only=True) as lib:
        assert not lib.rerank and not lib.catalog.has_region_codes_table()


def test_text_search_reranks_the_top_k_as_the_naive_reference(tmp_path, weights, photos):
    lib_dir = tmp_path / "lib"
    _index(lib_dir, photos, rerank=True)
    query = "red dog on grass"
    with Library.open(lib_dir, AttentionFake(dim=32), read_only=True, rerank=False) as lib:
        plain = lib.search_text(query, top_k=24, remember=False)
    with Library.open(lib_dir, AttentionFake(dim=32), read_only=True, rerank=True) as lib:
        emb = lib.embedder
        reranked = lib.search_text(query, top_k=24, remember=False)
        assert emb.text_passes == 1  # the vector and the states came from one text pass
        reranker = lib._reranker(emb)
        w = load_weights(weights, emb.model_id).arrays
        words = naive_words(emb.embed_texts_with_states([query])[1][0], w)
        ids = {h.path: lib.catalog.photo_by_path(h.path).id for h in plain.hits}
        blobs = lib.catalog.region_codes_for_photos(ids.values(), emb.model_id, reranker.attention_id)
    combined = {
        h.path: h.score + 2.0 * naive_attention(words, list(unpack_regions(blobs[ids[h.path]], 16, DIM)), 10.0)
        for h in plain.hits
    }
    expected = sorted(combined, key=lambda p: -combined[p])
    assert [h.path for h in reranked.hits] == expected
    assert expected != [h.path for h in plain.hits]  # the weights do change the order here
    # hits keep their own global scores; the confident count and per-place strengths stay
    by_path = {h.path: h.score for h in plain.hits}
    assert all(abs(h.score - by_path[h.path]) < 1e-6 for h in reranked.hits)
    assert reranked.confident == plain.confident
    assert [h.strength for h in reranked.hits] == [h.strength for h in plain.hits]


def test_photos_without_codes_keep_their_global_places(tmp_path, weights, photos, make_image):
    lib_dir = tmp_path / "lib"
    _index(lib_dir, photos, rerank=False)  # indexed before the option: no codes
    added = [make_image(f"p{i:02d}.png", colour=COLOURS[i % len(COLOURS)], size=(32, 24), seed=i)
             for i in range(24, 32)]
    with Library.open(lib_dir, AttentionFake(dim=32), rerank=True) as lib:
        lib.index_paths(added)  # the watcher's path: only the 8 new photos get codes
        assert lib.catalog.count_region_codes(lib.embedder.model_id, lib._reranker(lib.embedder).attention_id) == 8
    with Library.open(lib_dir, AttentionFake(dim=32), read_only=True, rerank=False) as lib:
        plain = [h.path for h in lib.search_text("red dog", top_k=32, remember=False).hits]
    with Library.open(lib_dir, AttentionFake(dim=32), read_only=True, rerank=True) as lib:
        reranked = [h.path for h in lib.search_text("red dog", top_k=32, remember=False).hits]
    new = {str(photos / f"p{i:02d}.png") for i in range(24, 32)}
    assert sorted(reranked) == sorted(plain)
    for place, (a, b) in enumerate(zip(plain, reranked, strict=True)):
        if a not in new:
            assert b == a, f"place {place}: a photo without codes moved"
    assert [p for p in reranked if p in new] != [p for p in plain if p in new]


def test_a_full_pass_with_the_option_on_fills_in_codes_of_earlier_photos(tmp_path, weights, photos):
    lib_dir = tmp_path / "lib"
    _index(lib_dir, photos, rerank=False)
    with Library.open(lib_dir, AttentionFake(dim=32), rerank=True) as lib:
        before = lib.catalog.indexable_vectors(lib.embedder.model_id)[1]
        report = lib.index()
        assert report.indexed == 0 and report.unchanged == 24  # no photo re-indexed
        attention_id = lib._reranker(lib.embedder).attention_id
        assert lib.catalog.count_region_codes(lib.embedder.model_id, attention_id) == 24
        assert lib.catalog.photos_missing_region_codes(lib.embedder.model_id, attention_id) == []
        assert np.array_equal(before, lib.catalog.indexable_vectors(lib.embedder.model_id)[1])


def test_option_off_gives_identical_results(tmp_path, weights, photos, monkeypatch):
    on_dir, off_dir = tmp_path / "on", tmp_path / "off"
    _index(on_dir, photos, rerank=True)
    _index(off_dir, photos, rerank=False)
    queries = ["red", "green grass", "a blue car -red", "yellow +white"]
    results = []
    for lib_dir in (on_dir, off_dir):
        with Library.open(lib_dir, AttentionFake(dim=32), read_only=True) as lib:  # default: off
            assert not lib.rerank
            results.append([
                [(h.path, h.score, h.strength) for h in lib.search_text(q, top_k=10, remember=False).hits]
                for q in queries
            ] + [[(c.caption, c.score) for c in lib.similar_captions(photos / "p01.png")]])
    assert results[0] == results[1]
    monkeypatch.setenv(settings.RERANK_ENV, "1")
    assert settings.rerank_enabled() and not settings.rerank_enabled(False)


def test_weights_for_another_model_are_ignored_with_a_warning(tmp_path, monkeypatch, photos, caplog):
    path = write_weights(tmp_path / "attention.npz", "vse-some-other-model")
    monkeypatch.setattr(settings, "ATTENTION_WEIGHTS", path)
    with caplog.at_level(logging.WARNING, logger="engine.vse.attention_runtime"):
        assert load_reranker(AttentionFake(dim=32)) is None
    assert "vse-some-other-model" in caplog.text and "ignored" in caplog.text
    lib_dir = tmp_path / "lib"
    _index(lib_dir, photos, rerank=True)
    with Library.open(lib_dir, AttentionFake(dim=32), read_only=True, rerank=True) as lib:
        assert not lib.reranking and not lib.catalog.has_region_codes_table()
        on = [h.path for h in lib.search_text("red dog", remember=False).hits]
    with Library.open(lib_dir, AttentionFake(dim=32), read_only=True, rerank=False) as lib:
        assert on == [h.path for h in lib.search_text("red dog", remember=False).hits]


def test_an_embedder_without_the_inputs_has_no_reranker(weights, caplog):
    plain = FakeEmbedder(dim=32, model_id=AttentionFake(dim=32).model_id)
    with caplog.at_level(logging.WARNING):
        assert load_reranker(plain) is None
    assert "ONNX" in caplog.text


def test_similar_captions_reranks_like_the_naive_reference(tmp_path, weights, photos):
    lib_dir = tmp_path / "lib"
    _index(lib_dir, photos, rerank=True)
    captions = ["red dog", "a green field", "blue sky over the sea", "yellow taxi", "white snow",
                "a red and white boat", "green trees by a blue lake", "people on a yellow beach"]
    with Library.open(lib_dir, AttentionFake(dim=32)) as lib:
        for c in captions:
            lib.remember_query(c)
    photo = photos / "p00.png"
    with Library.open(lib_dir, AttentionFake(dim=32), read_only=True, rerank=False) as lib:
        plain = lib.similar_captions(photo, top_k=8)
    with Library.open(lib_dir, AttentionFake(dim=32), read_only=True, rerank=True) as lib:
        emb = lib.embedder
        reranked = lib.similar_captions(photo, top_k=8)
        reranker: Reranker = lib._reranker(emb)
        row = lib.catalog.photo_by_path(str(photo))
        regions = list(unpack_regions(
            lib.catalog.region_codes_for_hash(row.content_hash, emb.model_id, reranker.attention_id), 16, DIM))
    w = load_weights(weights, emb.model_id).arrays
    states = dict(zip(captions, emb.embed_texts_with_states(captions)[1], strict=True))
    combined = {c.caption: c.score + 2.0 * naive_attention(naive_words(states[c.caption], w), regions, 10.0)
                for c in plain}
    assert [c.caption for c in reranked] == sorted(combined, key=lambda c: -combined[c])
    assert [c.caption for c in reranked] != [c.caption for c in plain]
    assert [c.strength for c in reranked] == [c.strength for c in plain]
