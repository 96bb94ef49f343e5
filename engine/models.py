"""Loading the matching model: the shipped default or a user-trained checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

from engine.errors import ModelLoadError
from engine.model.embedder import VSEEmbedder

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
DEFAULT_CHECKPOINT = ASSETS / "default_model.pt"
CAPTION_BANK = ASSETS / "caption_bank.txt"


def load_embedder(path: Path | str, device: str | None = None) -> VSEEmbedder:
    """A VSEEmbedder for a checkpoint file; ModelLoadError if missing or incompatible."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model checkpoint {path} does not exist")
    emb = VSEEmbedder(path, device=device, caption_bank_path=CAPTION_BANK if CAPTION_BANK.exists() else None)
    log.info("loaded model %s from %s", emb.model_id, path)
    return emb


def load_default_embedder(device: str | None = None) -> VSEEmbedder:
    """The model shipped in engine/assets/ (trained on Flickr8k-in-Flickr30K-train)."""
    if not DEFAULT_CHECKPOINT.exists():
        raise ModelLoadError(
            f"the default model {DEFAULT_CHECKPOINT} is missing; run `make default-model`"
        )
    return load_embedder(DEFAULT_CHECKPOINT, device=device)
