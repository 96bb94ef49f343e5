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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelLoadError

GRID_SIDE = 4  # the 7x7 grid is average-pooled to 4x4 (overlapping windows of 2-3 cells)
DIRECTIONS = ("t2i", "i2t", "both")
POOLS = ("mean", "lse")
FORMAT = "photosearch-attention/1"


@dataclass
class AttentionConfig:
    """Everything needed to rebuild the module; stored as plain types with the weights."""

    word_dim: int = 384  # MiniLM hidden size
    region_dim: int = 1280  # EfficientNet-Lite2's last map
    dim: int = 256  # shared space; also the stored width of a region
    lambda_softmax: float = 10.0  # inverse temperature of the attention softmax (over cosines)
    pool: str = "mean"  # how word (region) similarities become one score: mean | lse
    lambda_lse: float = 6.0  # LogSumExp sharpness when pool == "lse"
    direction: str = "both"  # t2i | i2t | both (mean of the two)
    alpha: float = 1.0  # weight of the attention score next to the global score
    k: int = 100  # how many of the global answer are re-ranked

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {self.direction!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, not {self.pool!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AttentionConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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


def rerank(global_scores: np.ndarray, attention: np.ndarray, alpha: float) -> np.ndarray:
    """Order (best first) of K candidates by global + alpha * attention."""
    return np.argsort(-(np.asarray(global_scores, np.float64) + alpha * np.asarray(attention, np.float64)),
                      kind="stable")


class QueryReranker:
    """numpy-only re-ranking of one text query's K candidates, for the search path (which
    runs on ONNX Runtime and does not import torch): the word projection's weights as arrays,
    the candidates' regions as stored codes."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, config: AttentionConfig) -> None:
        self.weight = np.ascontiguousarray(np.asarray(weight, np.float32).T)  # (word_dim, dim)
        self.bias = np.asarray(bias, np.float32)
        self.config = config

    @classmethod
    def from_module(cls, module: CrossAttention) -> QueryReranker:
        return cls(module.word_proj.weight.detach().numpy(), module.word_proj.bias.detach().numpy(),
                   module.config)

    def words(self, states: np.ndarray) -> np.ndarray:
        """(L, word_dim) token states of the query's words ([CLS]/[SEP] already dropped) -> unit
        (L, dim)."""
        w = np.asarray(states, np.float32) @ self.weight + self.bias
        return w / np.maximum(np.linalg.norm(w, axis=-1, keepdims=True), 1e-12)

    def scores(self, words: np.ndarray, regions: np.ndarray) -> np.ndarray:
        """Attention scores (K,) of unit `words` (L, D) against unit `regions` (K, R, D)."""
        c = self.config
        # plain (batched) matmuls: numpy's einsum does not use BLAS for these shapes
        s = np.matmul(regions, words.T).transpose(0, 2, 1)  # (K, L, R) cosines
        out = []
        if c.direction in ("t2i", "both"):
            a = _softmax(c.lambda_softmax * s, axis=2)
            gram = np.matmul(regions, regions.transpose(0, 2, 1))  # (K, R, R)
            norm2 = (np.matmul(a, gram) * a).sum(-1)
            out.append(_pool_np((a * s).sum(-1) / np.sqrt(np.maximum(norm2, 1e-12)), c))
        if c.direction in ("i2t", "both"):
            a = _softmax(c.lambda_softmax * s, axis=1)
            gram = words @ words.T  # (L, L), symmetric
            norm2 = (np.matmul(gram, a) * a).sum(1)
            out.append(_pool_np((a * s).sum(1) / np.sqrt(np.maximum(norm2, 1e-12)), c))
        return out[0] if len(out) == 1 else (out[0] + out[1]) / 2

    def rerank(self, global_scores: np.ndarray, states: np.ndarray, codes: np.ndarray,
               scales: np.ndarray) -> np.ndarray:
        """Order (best first) of K candidates: global scores (K,), the query's word states,
        the candidates' stored codes (K, R, D) int8 and scales (K, R)."""
        att = self.scores(self.words(states), decode_regions(codes, scales))
        return rerank(global_scores, att, self.config.alpha)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _pool_np(sims: np.ndarray, c: AttentionConfig) -> np.ndarray:
    if c.pool == "mean":
        return sims.mean(-1)
    z = c.lambda_lse * sims
    top = z.max(-1, keepdims=True)
    return (np.log(np.exp(z - top).mean(-1)) + top[..., 0]) / c.lambda_lse


# ---------------------------------------------------------------- storage


def region_bytes(n_regions: int = GRID_SIDE * GRID_SIDE, dim: int = 256) -> int:
    """Bytes one photo's region codes take: int8 values + one fp16 scale per region."""
    return n_regions * dim + 2 * n_regions


def encode_regions(regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., R, D) float regions -> (int8 codes, fp16 scales (..., R)): each region row is
    scaled so its largest |value| is 127. Error per value <= scale/2 + the scale's own fp16
    rounding (<= 2^-11 relative)."""
    x = np.asarray(regions, np.float32)
    scales = (np.abs(x).max(axis=-1) / 127.0).astype(np.float16)
    safe = np.where(scales > 0, scales.astype(np.float32), 1.0)
    codes = np.clip(np.rint(x / safe[..., None]), -127, 127).astype(np.int8)
    return codes, scales


def decode_regions(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of `encode_regions` (float32)."""
    # one fused multiply: astype-then-multiply costs ~15x more for K = 100 photos
    return np.multiply(codes, scales.astype(np.float32)[..., None], dtype=np.float32)


def pack_regions(codes: np.ndarray, scales: np.ndarray) -> bytes:
    """One photo's codes (R, D) and scales (R,) as one blob of `region_bytes` bytes."""
    return np.ascontiguousarray(codes, np.int8).tobytes() + np.ascontiguousarray(scales, "<f2").tobytes()


def unpack_regions(blob: bytes, n_regions: int = GRID_SIDE * GRID_SIDE, dim: int = 256) -> np.ndarray:
    """A `pack_regions` blob -> float32 (R, D)."""
    if len(blob) != region_bytes(n_regions, dim):
        raise ValueError(f"region blob of {len(blob)} bytes, expected {region_bytes(n_regions, dim)}")
    codes = np.frombuffer(blob, np.int8, n_regions * dim).reshape(n_regions, dim)
    scales = np.frombuffer(blob, "<f2", n_regions, offset=n_regions * dim)
    return decode_regions(codes, scales)


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
