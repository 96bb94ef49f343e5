"""Stored caption-bank vectors (issue 14: captions at once)."""

import json

import numpy as np
import pytest

from engine.caption_store import (
    CaptionStore,
    bank_file_captions,
    quantize_rows,
    store_for_embedder,
    store_path_for,
    write_caption_store,
)
from engine.library import Library
from engine.testing import FakeEmbedder
from tests.conftest import CountingEmbedder


class TextCounter(CountingEmbedder):
    """Counts the texts that went through the text encoder."""

    texts = 0

    def embed_texts(self, texts):
        self.texts += len(texts)
        return super().embed_texts(texts)


def test_int8_rows_keep_scores_and_ranking():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 64)).astype(np.float32)
    x[:, :62] /= np.linalg.norm(x[:, :62], axis=1, keepdims=True)
    x[:, 62] = 1.0  # a bank-term column on another scale stays float32
    q, scale, tail = quantize_rows(x, 62)
    assert q.dtype == np.int8 and tail.shape == (500, 2)
    np.testing.assert_array_equal(tail, x[:, 62:])
    v = rng.standard_normal(64).astype(np.float32)
    store = CaptionStore({"model_id": "m"}, [str(i) for i in range(500)], q, scale, tail)
    exact = x @ v
    got = store.scores(v)
    assert np.abs(got - exact).max() < 0.02 * np.abs(exact).max()
    assert list(np.argsort(-got)[:5]) == list(np.argsort(-exact)[:5])
    np.testing.assert_allclose(store.vectors() @ v, got, rtol=1e-5, atol=1e-5)


def test_write_load_and_refuse_damage(tmp_path):
    caps = ["a dog", "two cats on a sofa", "ünïcode"]
    vecs = FakeEmbedder().embed_texts(caps)
    path = tmp_path / "m.captions.npz"
    meta = write_caption_store(path, "fake-32-0", caps, vecs)
    assert meta["count"] == 3 and meta["quantized_dims"] == 32
    store = CaptionStore.load(path)
    assert store.captions == caps and store.model_id == "fake-32-0" and store.dim == 32
    with np.load(path) as z:
        parts = dict(z)
    parts["meta"] = np.array(json.dumps({**meta, "captions_sha256": "0" * 64}))
    bad = tmp_path / "bad.captions.npz"
    np.savez(bad, **parts)
    with pytest.raises(ValueError, match="checksum"):
        CaptionStore.load(bad)
    with pytest.raises(ValueError, match="newlines"):
        write_caption_store(path, "m", ["a\nb"], vecs[:1])
    assert store_path_for(tmp_path / "default_model.pt").name == "default_model.captions.npz"


def _stored_bank(tmp_path, emb, captions):
    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join(captions) + "\n")
    store = tmp_path / "model.captions.npz"
    write_caption_store(store, emb.model_id, bank_file_captions(bank), FakeEmbedder().embed_texts(captions))
    emb.caption_bank_path = str(bank)
    emb.caption_store_path = store
    return bank, store


def test_captions_come_from_the_stored_bank_without_text_encoder_work(tmp_path, make_image):
    captions = [f"caption number {i}" for i in range(600)] + ["a red thing", "green grass"]
    emb = TextCounter()
    _stored_bank(tmp_path, emb, captions)
    red = make_image("red.jpg", "red")
    with Library.open(tmp_path / "lib", emb) as lib:
        lib.add_folder(tmp_path / "photos")
        lib.index()
        emb.texts = 0
        assert lib.caption_bank_ready()
        hits = lib.similar_captions(red, top_k=5)
        assert emb.texts == 0  # no caption went through the text encoder
        assert hits[0].caption == "a red thing" and hits[0].strength == 3
        # the same ranking as float32 vectors of every caption
        vec = lib.catalog.get_embedding(lib.photo(red).content_hash, emb.model_id)
        exact = FakeEmbedder().embed_texts(captions) @ vec
        assert [h.caption for h in hits] == [captions[j] for j in np.argsort(-exact)[:5]]
        # a committed query joins the suggestions from the vector its search computed
        lib.search_text("yellow bananas")
        emb.texts = 0
        assert "yellow bananas" in [c.caption for c in lib.similar_captions(red, top_k=700)]
        assert emb.texts == 0
        assert lib.catalog.captions_missing_embeddings(emb.model_id, "query") == []


def test_a_checkpoint_without_stored_bank_prepares_it_with_progress(tmp_path, make_image):
    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join(f"caption number {i}" for i in range(600)))
    emb = TextCounter()
    emb.caption_bank_path = str(bank)
    make_image("red.jpg", "red")
    with Library.open(tmp_path / "lib", emb) as lib:
        lib.add_folder(tmp_path / "photos")
        lib.index()
        assert not lib.caption_bank_ready()
        seen = []
        lib.prepare_caption_bank(seen.append)
        assert seen[0] == pytest.approx(256 / 600) and seen[-1] == 1.0 and seen == sorted(seen)
        assert lib.caption_bank_ready() and emb.texts == 600
    with Library.open(tmp_path / "lib2", _fresh(bank)) as other:
        with pytest.raises(KeyboardInterrupt):  # a cancelled preparation raises from progress
            other.prepare_caption_bank(_cancel)
        assert other.searcher.captions_to_embed(other.embedder) == 600 - 256  # first chunk kept


def _fresh(bank):
    emb = FakeEmbedder()
    emb.caption_bank_path = str(bank)
    return emb


def _cancel(fraction):
    raise KeyboardInterrupt


def test_a_store_for_another_model_or_bank_is_ignored(tmp_path):
    emb = FakeEmbedder()
    bank, store = _stored_bank(tmp_path, emb, ["a", "b"])
    assert store_for_embedder(emb) is not None
    other = FakeEmbedder(seed=3)
    other.caption_store_path, other.caption_bank_path = store, str(bank)
    assert store_for_embedder(other) is None  # model id differs
    bank.write_text("a\nb\nc\n")
    assert store_for_embedder(emb) is None  # the bank file changed since
    emb.caption_store_path = tmp_path / "missing.npz"
    assert store_for_embedder(emb) is None


@pytest.mark.slow  # imports torch to read the checkpoint
def test_the_shipped_model_ships_its_caption_vectors():
    import torch

    from engine import settings

    ckpt = torch.load(settings.DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)
    store = CaptionStore.load(store_path_for(settings.DEFAULT_CHECKPOINT))
    assert store.model_id == ckpt["model_id"]
    assert store.captions == bank_file_captions(settings.CAPTION_BANK)
    assert store.dim == ckpt["config"]["embed_dim"] + 2  # with the two bank-normalisation terms

    class Shipped:  # what load_embedder exposes, without loading the model
        checkpoint_path = settings.DEFAULT_CHECKPOINT
        caption_bank_path = settings.CAPTION_BANK
        model_id = ckpt["model_id"]
        dim = store.dim

    assert store_for_embedder(Shipped()) is not None
