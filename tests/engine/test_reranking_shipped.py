"""The shipped model on ONNX Runtime gives what attention re-ranking reads, from the same
passes as its vectors, and the shipped attention weights are for it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine import settings
from engine.reranking import load_reranker
from engine.vse.attention_runtime import load_weights, pool_grid, region_bytes
from engine.vse.checkpoint import load_checkpoint
from engine.vse.onnx_inference import load_onnx_embedder
from tests.conftest import shared_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx():
    return load_onnx_embedder(settings.DEFAULT_CHECKPOINT)  # the user cache: built once


def test_extra_outputs_leave_the_vectors_unchanged_and_match_torch(onnx):
    data = shared_data("f30k8k_val")
    rows = [json.loads(line) for line in (data / "captions.jsonl").read_text().splitlines()[:3]]
    batch = []
    for r in rows:
        with Image.open(data / "images" / r["image"]) as im:
            batch.append(onnx.prepare_image(im))
    batch = np.stack(batch)
    vectors, grid = onnx.embed_prepared_with_grid(batch)
    assert np.array_equal(vectors, onnx.embed_prepared(batch))  # the same node, same values
    assert grid.shape == (3, 1280, 7, 7)
    model, _ = load_checkpoint(settings.DEFAULT_CHECKPOINT)
    model.eval()
    with torch.no_grad():
        ref = model.img.backbone(torch.from_numpy(batch))[0].numpy()
    # the int8 graph's map against torch's fp32 one, per pooled region
    a, b = pool_grid(grid), pool_grid(ref)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 0.9, cos.min()

    texts = ["a dog runs on the beach", "two men"]
    tv, states = onnx.embed_texts_with_states(texts)
    assert np.allclose(tv, onnx.embed_texts(texts), atol=1e-6)
    tok = model.txt.tokenize(texts)
    with torch.no_grad():
        hidden = model.txt.bert(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
    for i, n in enumerate(tok["attention_mask"].sum(1).tolist()):
        assert states[i].shape == (n, 384)
        assert np.allclose(states[i], hidden[i, :n].numpy(), atol=1e-4)


def test_shipped_weights_are_for_the_shipped_model(onnx):
    weights = load_weights(settings.ATTENTION_WEIGHTS, onnx.model_id)
    assert weights is not None and weights.meta["model_id"] == onnx.model_id
    reranker = load_reranker(onnx)
    assert reranker is not None and reranker.k == settings.RERANK_K
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(2, 3, 224, 224)).astype(np.float32)
    _, blobs = reranker.embed_prepared(pixels)
    assert [len(b) for b in blobs] == [region_bytes(16, weights.config.dim)] * 2
