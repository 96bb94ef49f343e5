"""Test doubles for the engine: a deterministic embedder that needs no model."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from engine.embedder import l2_normalize

# Colour words get fixed directions so tests can state which photo a query must find.
FAKE_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
}


class FakeEmbedder:
    """Deterministic, model-free embedder for tests and benchmarks of the plumbing.

    An image maps to its mean colour (first 3 dims, centred) plus a small seeded
    projection of a 4x4 thumbnail, so a mostly-red photo lands near the text "red".
    Other words map to seeded random directions, so any query gets a stable vector.
    """

    def __init__(self, dim: int = 32, seed: int = 0, model_id: str | None = None) -> None:
        if dim < 8:
            raise ValueError("FakeEmbedder needs dim >= 8")
        self.dim = dim
        self.seed = seed
        self.model_id = model_id or f"fake-{dim}-{seed}"
        rng = np.random.default_rng(seed)
        self._proj = rng.standard_normal((4 * 4 * 3, dim - 3)).astype(np.float32) * 0.05

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        small = image.convert("RGB").resize((4, 4), Image.Resampling.BILINEAR)
        return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)
        mean_rgb = batch.reshape(len(batch), 16, 3).mean(axis=1)
        colour = mean_rgb - mean_rgb.mean(axis=1, keepdims=True) * 0.5
        detail = (batch - 0.5) @ self._proj
        return l2_normalize(np.concatenate([colour, detail], axis=1))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_prepared(np.stack([self.prepare_image(im) for im in images]))

    def _word_vector(self, word: str) -> np.ndarray:
        if word in FAKE_COLOURS:
            rgb = np.asarray(FAKE_COLOURS[word], np.float32)
            v = np.zeros(self.dim, np.float32)
            v[:3] = rgb - rgb.mean() * 0.5
            return v
        digest = hashlib.sha256(f"{self.seed}:{word}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return rng.standard_normal(self.dim).astype(np.float32) * 0.1

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"[a-z]+", text.lower()) or [""]
            out[i] = sum(self._word_vector(w) for w in words)
        return l2_normalize(out)

    def image_query(self, vector: np.ndarray) -> np.ndarray:
        return np.asarray(vector, dtype=np.float32)

    def text_query(self, vector: np.ndarray) -> np.ndarray:
        return np.asarray(vector, dtype=np.float32)
