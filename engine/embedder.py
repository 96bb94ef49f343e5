"""The one interface the rest of the engine needs from a matching model.

The indexer splits image embedding in two so that the cheap, per-image part
(`prepare_image`: resize, crop, normalise) runs in decode worker threads while
the expensive part (`embed_prepared`) runs in batches on the model thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from engine import settings
from engine.errors import ModelLoadError, PhotosearchError

log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    """Maps images and texts into one space compared by inner product (unit vectors, except
    that a model may append score terms, see `image_query`)."""

    model_id: str
    dim: int

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        """Turn one decoded RGB image into the model's input array (thread-safe)."""
        ...

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Embed a stack of `prepare_image` outputs: (n, d) float32, unit rows."""
        ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, d) float32, L2-normalised."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32, L2-normalised."""
        ...

    def image_query(self, vector: np.ndarray) -> np.ndarray:
        """Turn a stored image vector into the query that finds similar photos."""
        ...

    def text_query(self, vector: np.ndarray) -> np.ndarray:
        """Turn an `embed_texts` row into the query that finds photos."""
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def load_embedder(
    spec: str | Path | None = None, device: str | None = None, runtime: str | None = None
) -> Embedder:
    """The one way to get an embedder.

    `spec` is a checkpoint path, or None for the shipped default model. `runtime` is 'onnx'
    (the default: ONNX Runtime graphs derived from the checkpoint and cached, see
    engine/vse/onnx_inference.py) or 'torch'; None reads $PHOTOSEARCH_RUNTIME. When the ONNX
    graphs cannot be built or loaded, the model runs on torch, with a warning.
    `$PHOTOSEARCH_EMBEDDER=fake` overrides everything with the model-free `FakeEmbedder`
    (tests and benchmarks only). Any failure is a `ModelLoadError` with a sentence for the user.
    """
    override = settings.embedder_override()
    if override == "fake":
        from engine.testing import FakeEmbedder

        return FakeEmbedder()
    if override:
        raise ModelLoadError(f"{settings.EMBEDDER_ENV}={override!r} is not known (only 'fake' is)")
    runtime = (runtime or settings.inference_runtime()).lower()
    if runtime not in settings.RUNTIMES:
        raise ModelLoadError(
            f"{settings.RUNTIME_ENV}={runtime!r} is not known (choose {' or '.join(settings.RUNTIMES)})"
        )
    if spec is None or str(spec) == "":
        path = settings.DEFAULT_CHECKPOINT
        if not path.is_file():
            raise ModelLoadError(f"the default model {path} is missing; run `make default-model`")
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"model checkpoint not found: {path.absolute()}")
    bank = settings.CAPTION_BANK if settings.CAPTION_BANK.exists() else None
    embedder: Embedder | None = None
    if runtime == "onnx":
        embedder = _load_onnx(path, device, bank)
    if embedder is None:
        try:
            from engine.vse.inference import VSEEmbedder

            embedder = VSEEmbedder(path, device=device, caption_bank_path=bank)
        except PhotosearchError:
            raise
        except Exception as exc:  # noqa: BLE001 - any load failure is one line for the user
            raise ModelLoadError(f"could not load the model {path}: {exc}") from exc
    log.info("loaded model %s from %s (%s)", embedder.model_id, path, getattr(embedder, "runtime", "torch"))
    return embedder


def _load_onnx(path: Path, device: str | None, bank: Path | None) -> Embedder | None:
    """The ONNX Runtime embedder, or None (logged) when the model has to run on torch."""
    from engine.vse.onnx_inference import OnnxUnsupported, load_onnx_embedder, use_cuda

    try:
        if device is not None and str(device).startswith("cuda") and not use_cuda(device):
            log.info("onnxruntime-gpu is not installed: the model runs on torch for %s", device)
            return None
        return load_onnx_embedder(path, device=device, caption_bank_path=bank)
    except ModelLoadError:
        raise  # the checkpoint itself is unreadable: torch could not load it either
    except OnnxUnsupported as exc:
        log.info("model %s runs on torch: %s", path, exc)
    except Exception as exc:  # noqa: BLE001 - any failure of the fast path falls back
        log.warning("ONNX Runtime unavailable for %s (%s); running the model on torch", path, exc)
    return None
