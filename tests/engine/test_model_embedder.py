import numpy as np
import pytest
import torch
from PIL import Image

from engine.embedder import Embedder
from engine.vse.checkpoint import save_checkpoint
from engine.vse.inference import VSEEmbedder
from engine.vse.model import VSEConfig, VSEModel


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    torch.manual_seed(0)
    model = VSEModel(VSEConfig(backbone="mobilenet_v2", text_encoder="minilm", embed_dim=24))
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, model, calibration={"weak_match_threshold": 0.31})
    return VSEEmbedder(path, device="cpu", threads=1)


def test_vse_embedder_implements_the_protocol(embedder):
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 24 and embedder.model_id.startswith("vse-")
    assert embedder.weak_match_threshold == pytest.approx(0.31)
    images = [Image.new("RGB", (300, 200), "red"), Image.new("L", (50, 80), 128)]
    v = embedder.embed_images(images)
    assert v.shape == (2, 24) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    t = embedder.embed_texts(["a red car", "two dogs playing in the snow", ""])
    assert t.shape == (3, 24) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-5)
    assert embedder.embed_texts([]).shape == (0, 24)
    assert embedder.embed_images([]).shape == (0, 24)


def test_prepare_then_embed_equals_embed_images(embedder):
    im = Image.new("RGB", (320, 240), (10, 200, 30))
    arr = embedder.prepare_image(im)
    assert arr.shape == (3, 224, 224) and arr.dtype == np.float32
    np.testing.assert_allclose(embedder.embed_prepared(arr[None]), embedder.embed_images([im]), atol=1e-5)
