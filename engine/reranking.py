"""Attention re-ranking for search (an option, off by default: docs/MODEL.md
"Cross-modal attention").

The global model scores one vector per photo against one per text; the re-ranker reorders the
top K of that answer by global + alpha * attention, the attention score comparing the text's
words (MiniLM's last-layer token states) with the photo's 16 stored regions
(engine/vse/attention_runtime.py). It needs, from the embedder, the backbone's last map of each
photo at indexing and the token states of each text (the same passes that make the vectors):
`OnnxEmbedder.embed_prepared_with_grid` / `embed_texts_with_states`. Photos indexed without
region codes (before the option was on, or by another runtime) keep their global order.

Torch-free: the search path runs on ONNX Runtime and numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from . import settings
from .vse.attention_runtime import AttentionWeights, load_weights, strip_special

log = logging.getLogger(__name__)


@runtime_checkable
class AttentionInputs(Protocol):
    """What an embedder offers for re-ranking, besides the Embedder protocol."""

    model_id: str
    # names how the map and states are taken out of the model (OnnxEmbedder: the rule that
    # picks the graph outputs); part of the stored codes' key, so a new rule re-computes them
    attention_outputs_version: int

    def embed_prepared_with_grid(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`embed_prepared`'s vectors (N, dim) and the backbone's last maps (N, C, H, W)."""
        ...

    def embed_texts_with_states(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """`embed_texts`'s vectors and each text's token states (L_i, word_dim) with [CLS] and
        [SEP], or None where the text has no usable states."""
        ...


class Reranker:
    """The attention weights of one model, with the embedder that feeds them."""

    def __init__(self, weights: AttentionWeights, embedder: AttentionInputs, k: int | None = None,
                 caption_k: int | None = None) -> None:
        self.weights = weights
        self.embedder = embedder
        self.k = int(k if k is not None else settings.RERANK_K)  # photos of a text query
        self.caption_k = int(caption_k if caption_k is not None else settings.RERANK_CAPTIONS_K)
        self.scorer = weights.query_reranker()

    @property
    def model_id(self) -> str:
        return self.weights.model_id

    @property
    def attention_id(self) -> str:
        """Which stored codes fit: these weights, over maps taken out by this rule."""
        return f"{self.weights.attention_id}.v{self.embedder.attention_outputs_version}"

    @property
    def alpha(self) -> float:
        return float(self.weights.config.alpha)

    # -- indexing

    def embed_prepared(self, batch: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
        """Vectors and packed region codes of prepared photos, from one image pass."""
        vectors, grid = self.embedder.embed_prepared_with_grid(batch)
        if grid.ndim != 4 or grid.shape[1] != self.weights.config.region_dim:
            raise ValueError(f"backbone map of shape {grid.shape}, the attention weights expect "
                             f"{self.weights.config.region_dim} channels")
        return vectors, self.weights.region_blobs(grid)

    # -- texts

    def text_states(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Vectors and word states ([CLS]/[SEP] dropped) of texts, from one text pass."""
        vectors, states = self.embedder.embed_texts_with_states(list(texts))
        return vectors, [None if s is None else strip_special(s) for s in states]

    # -- scoring

    def photo_scores(self, word_states: Sequence[np.ndarray], blobs: Sequence[bytes]) -> np.ndarray:
        """Attention score (K,) of each photo (packed codes) for a query: the mean over its
        terms (each term's words, [CLS]/[SEP] dropped) of the configured score."""
        regions = self.weights.unpack_many(list(blobs))
        scores = [self.scorer.scores(self.scorer.words(s), regions) for s in word_states]
        return np.mean(scores, axis=0)

    def caption_scores(self, blob: bytes, caption_states: Sequence[np.ndarray]) -> np.ndarray:
        """Attention score of one photo (packed codes) against each caption's word states."""
        regions = self.weights.unpack(blob)[None]
        return np.array([float(self.scorer.scores(self.scorer.words(s), regions)[0]) for s in caption_states])

    def reorder(self, global_scores: np.ndarray, attention: dict[int, float]) -> list[int]:
        """Positions 0..K-1 of a global answer (best first) after re-ranking: candidates with an
        attention score (position -> score) are sorted by global + alpha * attention among
        the positions they hold; the others keep theirs (their global order)."""
        order = list(range(len(global_scores)))
        have = sorted(attention)
        if len(have) < 2:
            return order
        combined = np.array([float(global_scores[p]) + self.alpha * attention[p] for p in have])
        ranked = [have[j] for j in np.argsort(-combined, kind="stable")]
        for slot, p in zip(have, ranked, strict=True):
            order[slot] = p
        return order


def load_reranker(embedder: object, path: Path | None = None, k: int | None = None) -> Reranker | None:
    """The re-ranker for this embedder's model, or None (logged): no weights for the model, or
    an embedder that cannot give the backbone map and token states (the torch runtime, the
    fake embedder of tests)."""
    model_id = str(getattr(embedder, "model_id", ""))
    weights = load_weights(Path(path) if path is not None else settings.ATTENTION_WEIGHTS, model_id)
    if weights is None:
        return None
    if not isinstance(embedder, AttentionInputs):
        log.warning("attention re-ranking needs the ONNX Runtime embedder (%s has no region or "
                    "token-state outputs): off", type(embedder).__name__)
        return None
    return Reranker(weights, embedder, k)
