"""The shipped model on the shipped runtime: its f30k8k_val rsum stays within 2 of torch's,
with int8 where docs/MODEL.md says it holds (built here from the shipped calibration)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from engine import settings
from engine.vse.inference import VSEEmbedder
from engine.vse.onnx_inference import load_onnx_embedder
from tests.conftest import shared_data

pytestmark = pytest.mark.slow


def naive_rsum(scores: np.ndarray, caption_image: list[int]) -> float:
    """R@1+5+10 both ways, by sorting each row (ties count against the model)."""
    n_img, n_cap = scores.shape
    total = 0.0
    for k in (1, 5, 10):
        hits = 0
        for i in range(n_img):
            own = [j for j in range(n_cap) if caption_image[j] == i]
            best = max(scores[i, j] for j in own)
            wrong_above = sum(1 for j in range(n_cap) if caption_image[j] != i and scores[i, j] >= best)
            hits += wrong_above < k
        total += 100.0 * hits / n_img
        hits = 0
        for j in range(n_cap):
            own = scores[caption_image[j], j]
            wrong_above = sum(1 for i in range(n_img) if i != caption_image[j] and scores[i, j] >= own)
            hits += wrong_above < k
        total += 100.0 * hits / n_cap
    return total


def test_shipped_runtime_rsum_within_2_of_torch(tmp_path, caplog):
    data = shared_data("f30k8k_val")
    rows = [json.loads(line) for line in (data / "captions.jsonl").read_text().splitlines() if line.strip()]
    captions = [c for r in rows for c in r["captions"]]
    caption_image = [i for i, r in enumerate(rows) for _ in r["captions"]]
    with caplog.at_level(logging.WARNING, logger="engine.vse.onnx_export"):
        onnx = load_onnx_embedder(settings.DEFAULT_CHECKPOINT, root=tmp_path / "onnx")
    torch_emb = VSEEmbedder(settings.DEFAULT_CHECKPOINT, device="cpu")
    assert onnx.model_id == torch_emb.model_id
    # the shipped ranges applied, unless this CPU's int8 kernels fail the self-check (AVX2
    # without VNNI saturates u8 x s8 sums): then fp32, and the figures below hold for it
    kernels_fail = "disagrees with fp32 on this machine" in caplog.text
    want_image = "fp32" if kernels_fail else "int8"
    assert onnx.precision == {"image": want_image, "text": "fp32"}, caplog.text

    def embed(emb):
        img = []
        for s in range(0, len(rows), 32):
            batch = []
            for r in rows[s : s + 32]:
                with Image.open(data / "images" / r["image"]) as im:
                    batch.append(emb.prepare_image(im))
            img.append(emb.embed_prepared(np.stack(batch)))
        txt = np.concatenate([emb.embed_texts(captions[s : s + 128]) for s in range(0, len(captions), 128)])
        return np.concatenate(img), txt

    img_o, txt_o = embed(onnx)
    img_t, txt_t = embed(torch_emb)
    d = onnx.embed_dim
    image_cos = (img_o[:, :d] * img_t[:, :d]).sum(1)
    text_cos = (txt_o[:, :d] * txt_t[:, :d]).sum(1)
    assert image_cos.mean() >= 0.99 and text_cos.mean() >= 0.9999
    rsum_onnx = naive_rsum(img_o @ txt_o.T, caption_image)
    rsum_torch = naive_rsum(img_t @ txt_t.T, caption_image)
    # the checkpoint's recorded val rsum is torch's (474.5)
    assert rsum_torch == pytest.approx(torch_emb.metrics["val"]["rsum"], abs=0.5)
    assert abs(rsum_onnx - rsum_torch) <= 2.0, (rsum_onnx, rsum_torch)
