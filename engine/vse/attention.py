"""Cross-modal attention (SCAN-style) for re-ranking the top K of the global answer.

The global model compares one vector per photo with one vector per description. Here the
description's words (MiniLM's last-layer token states, projected) attend over the photo's
regions (the backbone's last 7x7 grid pooled to 4x4 = 16 regions, projected), following SCAN
(Lee et al., "Stacked Cross Attention for Image-Text Matching", 2018):

    s_wr   = cos(word w, region r)
    a_wr   = softmax_r(lambda * s_wr)                  each word's attention over regions
    v_w    = sum_r a_wr * region_r                      the attended image vector of word w
    t2i    = pool_w cos(word_w, v_w)                    mean (or LogSumExp) over real words
    i2t    = the same with the roles swapped: each region attends over the words
    score  = global score + alpha * attention score     (attention = t2i, i2t or their mean)

Nothing here reads the catalog: the caller hands in word states and region codes. Region
features are stored after projection, int8 with one fp16 scale per region (`encode_regions`).
This is the torch side (training, the reference); engine/vse/attention_runtime.py is the same
score in numpy for search, with the storage format and the shipped weights' loader.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelLoadError

# the numpy side (no torch: the search path), re-exported here for training and tests
from engine.vse.attention_runtime import (  # noqa: F401
    DIRECTIONS,
    GRID_SIDE,
    POOLS,
    AttentionConfig,
    QueryReranker,
    decode_regions,
    encode_regions,
    pack_regions,
    region_bytes,
    rerank,
    unpack_regions,
)

FORMAT = "photosearch-attention/1"


def pool_grid(grid: torch.Tensor, side: int = GRID_SIDE) -> torch.Tensor:
    """(B, C, H, W) backbone map -> (B, side*side, C) region features (adaptive average pool)."""
    return F.adaptive_avg_pool2d(grid.float(), side).flatten(2).transpose(1, 2)


def strip_special(states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop MiniLM's [CLS] (first) and [SEP] (last real) token: they summarise the sentence,
    while attention is about words. A caption with no word left keeps its [SEP]."""
    mask = mask.clone()
    lengths = mask.sum(1)
    rows = torch.arange(len(mask))
    mask[rows, (lengths - 1).clamp(min=0)] = 0
    mask, states = mask[:, 1:].clone(), states[:, 1:]
    empty = mask.sum(1) == 0
    # only [CLS] [SEP] (an empty caption): keep [SEP] so the score stays defined
    mask[empty, 0] = 1
    return states, mask


class CrossAttention(nn.Module):
    """Projections into the shared space and the attention score of every image-text pair."""

    def __init__(self, config: AttentionConfig | None = None) -> None:
        super().__init__()
        self.config = config or AttentionConfig()
        c = self.config
        # LayerNorm first: the backbone's map is post-ReLU6 (non-negative, large spread)
        self.region_norm = nn.LayerNorm(c.region_dim)
        self.region_proj = nn.Linear(c.region_dim, c.dim)
        self.word_proj = nn.Linear(c.word_dim, c.dim)

    def regions(self, region_features: torch.Tensor) -> torch.Tensor:
        """(B, R, region_dim) pooled grid cells -> unit (B, R, dim): what a photo stores."""
        return F.normalize(self.region_proj(self.region_norm(region_features.float())), dim=-1)

    def words(self, states: torch.Tensor) -> torch.Tensor:
        """(B, L, word_dim) token states -> unit (B, L, dim)."""
        return F.normalize(self.word_proj(states.float()), dim=-1)

    def score(self, words: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """Attention scores (n_images, n_texts) of unit `words` (T, L, D) with `mask` (T, L)
        against unit `regions` (I, R, D), in the configured direction."""
        return attention_scores(words, mask, regions, self.config)

    def combined(self, global_scores: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
                 regions: torch.Tensor) -> torch.Tensor:
        """global (I, T) + alpha * attention (I, T)."""
        return global_scores + self.config.alpha * self.score(words, mask, regions)


def _pool(sims: torch.Tensor, valid: torch.Tensor, c: AttentionConfig) -> torch.Tensor:
    """Pool similarities over the last axis, counting only `valid` entries."""
    valid = valid.to(sims.dtype)
    n = valid.sum(-1).clamp(min=1.0)
    if c.pool == "mean":
        return (sims * valid).sum(-1) / n
    # (1/l) log mean exp(l * s): the mean of exp keeps it on the scale of a cosine
    z = (c.lambda_lse * sims).masked_fill(valid == 0, -math.inf)
    return (torch.logsumexp(z, dim=-1) - n.log()) / c.lambda_lse


def attention_scores(words: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor,
                     c: AttentionConfig) -> torch.Tensor:
    """(I, T) SCAN scores of unit word vectors (T, L, D) under `mask` (T, L) and unit region
    vectors (I, R, D).

    The attended vector v_w = sum_r a_wr x_r never needs to be built: cos(w, v_w) is
    (sum_r a_wr s_wr) / |v_w| and |v_w|^2 = a_w^T G a_w with G the regions' Gram matrix, so
    memory is (I, T, L, R) rather than (I, T, L, D)."""
    m = mask.to(torch.bool)
    s = torch.einsum("tld,ird->itlr", words, regions)  # cosines (both sides unit)
    out = []
    if c.direction in ("t2i", "both"):
        a = torch.softmax(c.lambda_softmax * s, dim=-1)  # each word over regions
        gram = regions @ regions.transpose(1, 2)  # (I, R, R)
        norm2 = (torch.einsum("itlr,irq->itlq", a, gram) * a).sum(-1)
        cos = (a * s).sum(-1) / norm2.clamp(min=1e-12).sqrt()  # (I, T, L)
        out.append(_pool(cos, m[None].expand_as(cos), c))
    if c.direction in ("i2t", "both"):
        z = (c.lambda_softmax * s).masked_fill(~m[None, :, :, None], -math.inf)
        a = torch.softmax(z, dim=2)  # each region over the real words
        gram = words @ words.transpose(1, 2)  # (T, L, L)
        norm2 = (torch.einsum("itlr,tlk->itkr", a, gram) * a).sum(2)
        cos = (a * s).sum(2) / norm2.clamp(min=1e-12).sqrt()  # (I, T, R)
        out.append(_pool(cos, torch.ones_like(cos, dtype=torch.bool), c))
    return out[0] if len(out) == 1 else (out[0] + out[1]) / 2


# ---------------------------------------------------------------- weights on disk


def save_attention(path: Path, module: CrossAttention, extra: dict | None = None) -> None:
    """Weights + config, readable with torch.load(weights_only=True)."""
    import json

    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    blob = {"format": FORMAT, "config": module.config.to_dict(), "state_dict": state,
            "extra": json.loads(json.dumps(extra or {}, default=str))}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def load_attention(path: Path) -> tuple[CrossAttention, dict]:
    """Rebuild a saved module (eval mode) and its `extra` record."""
    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"attention weights {path} do not exist") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelLoadError(f"{path} is not a photosearch attention file")
    module = CrossAttention(AttentionConfig.from_dict(blob["config"]))
    module.load_state_dict(blob["state_dict"])
    module.eval()
    return module, blob.get("extra", {})


def module_from_weights(weights: object) -> CrossAttention:
    """A torch module (eval mode) from shipped weights (attention_runtime.AttentionWeights)."""
    module = CrossAttention(weights.config)  # type: ignore[attr-defined]
    names = {k.replace(".", "_"): k for k in module.state_dict()}
    module.load_state_dict({names[n]: torch.from_numpy(a) for n, a in weights.arrays.items()})  # type: ignore[attr-defined]
    module.eval()
    return module


def export_weights(module: CrossAttention, path: Path, model_id: str, extra: dict | None = None) -> None:
    """The module as the plain .npz search loads without torch (attention_runtime.save_weights)."""
    from engine.vse.attention_runtime import save_weights

    arrays = {k.replace(".", "_"): v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    save_weights(path, arrays, module.config, model_id, extra)
