"""VSEEmbedder: the real `Embedder` (engine/embedder.py) backed by a trained VSE checkpoint."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.settings import DEFAULT_WEAK_MATCH_THRESHOLD
from engine.vse.checkpoint import load_checkpoint
from engine.vse.multilingual import DEFAULT_HEAD, embed_routed, load_multilingual_tower
from engine.vse.preprocess import prepare_eval

log = logging.getLogger(__name__)



def _sensible_threads() -> int:
    # Leave a core for the GUI and decode workers; more than 4 threads gains little for
    # these small batches.
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class VSEEmbedder:
    """Images and texts into the model's joint space as float32 rows whose inner products are
    the model's scores: unit vectors, plus two bank-normalisation terms when the checkpoint
    has them (`VSEModel.image_vectors`).

    CPU by default (CUDA + fp16 autocast when a GPU is present and `device` allows it).
    `prepare_image` is pure numpy/PIL and thread-safe; model calls are serialised by a lock
    so the indexer thread and a search thread can share one embedder.
    """

    def __init__(
        self,
        checkpoint: Path | str,
        device: str | None = None,
        threads: int | None = None,
        caption_bank_path: Path | None = None,
    ) -> None:
        self.checkpoint_path = Path(checkpoint)
        model, ckpt = load_checkpoint(self.checkpoint_path)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(threads or _sensible_threads())
        self.model = model.to(self.device).eval()
        self.model_id: str = ckpt["model_id"]
        # with bank normalisation the stored vectors carry two extra score terms (see vse.py)
        self.dim: int = int(model.joint_dim)
        self.metrics = ckpt.get("metrics", {})
        calib = ckpt.get("calibration") or {}
        self.weak_match_threshold: float = float(
            calib.get("weak_match_threshold", DEFAULT_WEAK_MATCH_THRESHOLD)
        )
        self.caption_bank_path: Path | None = caption_bank_path
        # queries in other languages: a USE tower into this model's space, or None (English only)
        self.multilingual = load_multilingual_tower(
            DEFAULT_HEAD, self.model_id, int(model.config.embed_dim), caption_bank_path
        )
        bb = model.img.backbone
        self._mean, self._std, self._size = bb.mean, bb.std, model.config.image_size
        self._lock = threading.Lock()

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        return prepare_eval(image, self._mean, self._std, self._size)

    @torch.no_grad()
    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        with self._lock, torch.autocast(self.device.type, enabled=self.device.type == "cuda", dtype=torch.float16):
            out = self.model.embed_images(x)
        return self._joint(self.model.image_vectors, out)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_prepared(np.stack([self.prepare_image(im) for im in images]))

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock, torch.autocast(self.device.type, enabled=self.device.type == "cuda", dtype=torch.float16):
            out = embed_routed(self.model, self.multilingual, texts)
        return self._joint(self.model.text_vectors, out)

    def _joint(self, to_vectors, unit: torch.Tensor) -> np.ndarray:  # type: ignore[no-untyped-def]
        # renormalise in float32 (autocast may have produced fp16), then add the bank terms
        with self._lock:
            return to_vectors(F.normalize(unit.float(), dim=-1)).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def text_query(self, vector: np.ndarray) -> np.ndarray:
        """An `embed_texts` row as the query that searches photos (VSEModel.as_text_queries)."""
        return self.model.as_text_queries(torch.from_numpy(np.asarray(vector, np.float32))).numpy()

    @torch.no_grad()
    def image_query(self, vector: np.ndarray) -> np.ndarray:
        """A stored photo vector as the query for photos like it (VSEModel.as_image_queries)."""
        return self.model.as_image_queries(torch.from_numpy(np.asarray(vector, np.float32))).numpy()
