import numpy as np
from PIL import Image

from engine.embedder import Embedder
from engine.testing import FakeEmbedder


def test_fake_embedder_is_an_embedder_with_unit_rows():
    emb = FakeEmbedder(dim=16)
    assert isinstance(emb, Embedder)
    imgs = [Image.new("RGB", (20, 10), c) for c in ("red", "green", "blue")]
    v = emb.embed_images(imgs)
    assert v.shape == (3, 16) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


def test_fake_embedder_colour_words_find_matching_images():
    emb = FakeEmbedder(dim=16)
    imgs = emb.embed_images([Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")])
    texts = emb.embed_texts(["a red thing", "green", "blue sky"])
    assert list((texts @ imgs.T).argmax(axis=1)) == [0, 1, 2]


def test_fake_embedder_is_deterministic():
    a = FakeEmbedder(dim=16, seed=3).embed_texts(["a dog on grass"])
    b = FakeEmbedder(dim=16, seed=3).embed_texts(["a dog on grass"])
    np.testing.assert_array_equal(a, b)
