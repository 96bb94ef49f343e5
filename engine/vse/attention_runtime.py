"""Cross-modal attention re-ranking without torch: what search and indexing run.

engine/vse/attention.py defines the score (SCAN, Lee et al. 2018) in torch for training; this
module is the same score in numpy, the storage form of a photo's regions, and the shipped
weights (`settings.ATTENTION_WEIGHTS`, a plain .npz: no pickles, no torch):

    meta                 JSON: format, model_id (the VSE model whose backbone grid and MiniLM
                         states the projections were trained on), config (AttentionConfig),
                         and how the weights were chosen (val figures)
    region_norm_weight   (region_dim,)       LayerNorm over a pooled grid cell
    region_norm_bias     (region_dim,)
    region_proj_weight   (dim, region_dim)   cell -> shared space
    region_proj_bias     (dim,)
    word_proj_weight     (dim, word_dim)     MiniLM token state -> shared space
    word_proj_bias       (dim,)

A photo's regions: the backbone's last map (region_dim x 7 x 7) average-pooled to 4 x 4 cells
(`pool_grid`), each LayerNorm'd, projected and L2-normalised (`AttentionWeights.regions`), then
stored as int8 with one fp16 scale per cell (`pack_regions`, 4,128 bytes at dim 256).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

GRID_SIDE = 4  # the 7x7 grid is average-pooled to 4x4 (overlapping windows of 2-3 cells)
DIRECTIONS = ("t2i", "i2t", "both")
POOLS = ("mean", "lse")
WEIGHTS_FORMAT = "photosearch-attention-npz/1"
WEIGHT_NAMES = ("region_norm_weight", "region_norm_bias", "region_proj_weight", "region_proj_bias",
                "word_proj_weight", "word_proj_bias")
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default


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
    def from_module(cls, module: object) -> QueryReranker:
        """From a torch CrossAttention (engine/vse/attention.py)."""
        proj = module.word_proj  # type: ignore[attr-defined]
        return cls(proj.weight.detach().numpy(), proj.bias.detach().numpy(), module.config)  # type: ignore[attr-defined]

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


# ---------------------------------------------------------------- inputs


def pool_grid(grid: np.ndarray, side: int = GRID_SIDE) -> np.ndarray:
    """(N, C, H, W) backbone map -> (N, side*side, C) region features: adaptive average
    pooling as torch's (window i spans floor(i*H/side) .. ceil((i+1)*H/side))."""
    g = np.asarray(grid, np.float32)
    n, c, h, w = g.shape
    cells = []
    for i in range(side):
        r0, r1 = (i * h) // side, -((-(i + 1) * h) // side)
        for j in range(side):
            c0, c1 = (j * w) // side, -((-(j + 1) * w) // side)
            cells.append(g[:, :, r0:r1, c0:c1].mean(axis=(2, 3)))
    return np.stack(cells, axis=1)


def strip_special(states: np.ndarray) -> np.ndarray:
    """One text's token states (L, word_dim) with [CLS] first and [SEP] last (no padding) ->
    its words' states, as engine/vse/attention.strip_special: an empty text keeps its [SEP]."""
    states = np.asarray(states, np.float32)
    return states[1:-1] if len(states) > 2 else states[1:2] if len(states) == 2 else states


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


def unpack_many(blobs: list[bytes], n_regions: int = GRID_SIDE * GRID_SIDE, dim: int = 256) -> np.ndarray:
    """`pack_regions` blobs -> float32 (K, R, D), decoded at once (K separate unpacks cost
    ~20 us each, most of the re-ranking of 100 candidates)."""
    size = region_bytes(n_regions, dim)
    if any(len(b) != size for b in blobs):
        raise ValueError(f"region blobs must be {size} bytes each")
    raw = np.frombuffer(b"".join(blobs), np.uint8).reshape(len(blobs), size)
    codes = raw[:, : n_regions * dim].view(np.int8).reshape(len(blobs), n_regions, dim)
    scales = np.ascontiguousarray(raw[:, n_regions * dim :]).view("<f2").reshape(len(blobs), n_regions)
    return decode_regions(codes, scales)


# ---------------------------------------------------------------- the shipped weights


@dataclass
class AttentionWeights:
    """The trained projections as arrays, for the model `model_id`; `attention_id` names these
    exact weights (stored region codes are valid only for the weights that projected them)."""

    model_id: str
    attention_id: str
    config: AttentionConfig
    arrays: dict[str, np.ndarray]
    meta: dict

    def regions(self, pooled: np.ndarray) -> np.ndarray:
        """(N, R, region_dim) pooled grid cells -> unit (N, R, dim): what a photo stores."""
        a = self.arrays
        x = np.asarray(pooled, np.float32)
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        x = (x - mu) / np.sqrt(var + LAYER_NORM_EPS) * a["region_norm_weight"] + a["region_norm_bias"]
        y = x @ a["region_proj_weight"].T + a["region_proj_bias"]
        return y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12)

    def region_blobs(self, grid: np.ndarray) -> list[bytes]:
        """Backbone maps (N, region_dim, H, W) -> one stored blob per photo."""
        codes, scales = encode_regions(self.regions(pool_grid(grid)))
        return [pack_regions(c, s) for c, s in zip(codes, scales, strict=True)]

    def unpack(self, blob: bytes) -> np.ndarray:
        return unpack_regions(blob, GRID_SIDE * GRID_SIDE, self.config.dim)

    def unpack_many(self, blobs: list[bytes]) -> np.ndarray:
        return unpack_many(blobs, GRID_SIDE * GRID_SIDE, self.config.dim)

    def query_reranker(self) -> QueryReranker:
        return QueryReranker(self.arrays["word_proj_weight"], self.arrays["word_proj_bias"], self.config)


def save_weights(path: Path, arrays: dict[str, np.ndarray], config: AttentionConfig, model_id: str,
                 extra: dict | None = None) -> None:
    """Write the .npz described in the module docstring (float32 arrays, JSON meta)."""
    missing = [n for n in WEIGHT_NAMES if n not in arrays]
    if missing:
        raise ValueError(f"attention weights lack {missing}")
    meta = {"format": WEIGHTS_FORMAT, "model_id": model_id, "config": config.to_dict(), **(extra or {})}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta, sort_keys=True, default=str)),
             **{n: np.asarray(arrays[n], np.float32) for n in WEIGHT_NAMES})
    tmp.replace(path)


def load_weights(path: Path, model_id: str) -> AttentionWeights | None:
    """The weights at `path` when they are for `model_id`; None (logged) when the file is
    missing, unreadable, or for another model (its projections would see other features)."""
    path = Path(path)
    if not path.is_file():
        log.info("no attention weights at %s: re-ranking is unavailable", path)
        return None
    try:
        raw = path.read_bytes()
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {n: np.asarray(z[n], np.float32) for n in WEIGHT_NAMES}
        if meta.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {WEIGHTS_FORMAT}")
        config = AttentionConfig.from_dict(meta["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("attention weights %s are not readable (%s): ignored", path, exc)
        return None
    if meta.get("model_id") != model_id:
        log.warning("attention weights %s are for model %s, not %s: ignored (no re-ranking)",
                    path, meta.get("model_id"), model_id)
        return None
    expect = {"region_norm_weight": (config.region_dim,), "region_norm_bias": (config.region_dim,),
              "region_proj_weight": (config.dim, config.region_dim), "region_proj_bias": (config.dim,),
              "word_proj_weight": (config.dim, config.word_dim), "word_proj_bias": (config.dim,)}
    for name, shape in expect.items():
        if arrays[name].shape != shape:
            log.warning("attention weights %s: %s has shape %s, not %s: ignored", path, name,
                        arrays[name].shape, shape)
            return None
    attention_id = "att-" + hashlib.sha256(raw).hexdigest()[:16]
    return AttentionWeights(model_id, attention_id, config, arrays, meta)

