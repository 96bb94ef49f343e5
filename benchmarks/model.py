"""Which embedder the benchmarks time: the shipped model, else the same architecture.

Until engine/assets/ holds the shipped checkpoint, the benchmarks build the default
`VSEConfig` network with the installed pretrained backbone and MiniLM (heads untrained),
save it as a checkpoint under benchmarks/work/ and load it through the engine's own
`load_embedder`, so the forward cost, thread settings and preprocessing are the real
ones even though the vectors are meaningless.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from engine.embedder import Embedder
from engine.errors import ModelLoadError
from engine.testing import FakeEmbedder

log = logging.getLogger(__name__)


@dataclass
class BenchModel:
    embedder: Embedder
    kind: str  # "shipped" | "fallback-architecture" | "fake"
    description: str
    load_s: float
    checkpoint: str | None


def fallback_checkpoint(work: Path) -> Path:
    """Default-architecture checkpoint with pretrained backbone (cached in work/)."""
    path = work / "fallback_model.pt"
    if path.exists():
        return path
    from engine.vse.checkpoint import save_checkpoint
    from engine.vse.model import VSEConfig, VSEModel

    log.info("building fallback model (default VSEConfig, package backbone) -> %s", path)
    model = VSEModel(VSEConfig(), backbone_weights="package")
    save_checkpoint(path, model, extra={"note": "benchmark fallback: heads untrained"})
    return path


def load_bench_model(work: Path, kind: str = "auto") -> BenchModel:
    """kind: 'auto' (shipped model if present, else fallback), 'fallback' or 'fake'."""
    if kind == "fake":
        return BenchModel(FakeEmbedder(dim=64), "fake", "FakeEmbedder(dim=64)", 0.0, None)
    from engine import settings
    from engine.embedder import load_embedder

    started = time.perf_counter()
    if kind == "auto":
        try:
            emb = load_embedder(None)
            return BenchModel(
                emb, "shipped", f"shipped model {emb.model_id}",
                time.perf_counter() - started, str(settings.DEFAULT_CHECKPOINT),
            )
        except ModelLoadError as exc:
            log.warning("shipped model unavailable (%s); using the fallback architecture", exc)
    path = fallback_checkpoint(work)
    started = time.perf_counter()
    emb = load_embedder(path)
    cfg = emb.model.config
    desc = (
        f"FALLBACK (no shipped checkpoint): {cfg.backbone} {cfg.image_size}px + "
        f"{cfg.text_encoder}, dim {cfg.embed_dim}, untrained heads"
    )
    return BenchModel(emb, "fallback-architecture", desc, time.perf_counter() - started, str(path))


class RekeyedEmbedder:
    """The real model under the synthetic libraries' model id.

    Synthetic libraries are cached across runs and must not be rebuilt whenever the
    shipped checkpoint changes, so they are stamped with a fixed model id; this wrapper
    gives `Library.open` that id while every model call goes to the real embedder.
    """

    def __init__(self, inner: Embedder, model_id: str, dim: int | None = None) -> None:
        self.inner = inner
        self.model_id = model_id
        self.dim = inner.dim if dim is None else dim
        if self.dim != inner.dim:
            raise ValueError(f"library dim {self.dim} != model dim {inner.dim}")

    def prepare_image(self, image):  # type: ignore[no-untyped-def]
        return self.inner.prepare_image(image)

    def embed_prepared(self, batch):  # type: ignore[no-untyped-def]
        return self.inner.embed_prepared(batch)

    def embed_images(self, images):  # type: ignore[no-untyped-def]
        return self.inner.embed_images(images)

    def embed_texts(self, texts):  # type: ignore[no-untyped-def]
        return self.inner.embed_texts(texts)

    def image_query(self, vector):  # type: ignore[no-untyped-def]
        return self.inner.image_query(vector)

    def text_query(self, vector):  # type: ignore[no-untyped-def]
        return self.inner.text_query(vector)
