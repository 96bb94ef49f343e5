"""SCAN-style cross attention (engine/vse/attention.py) against a naive reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.errors import ModelLoadError
from engine.vse.attention import (
    AttentionConfig,
    CrossAttention,
    QueryReranker,
    attention_scores,
    decode_regions,
    encode_regions,
    load_attention,
    pack_regions,
    pool_grid,
    region_bytes,
    rerank,
    save_attention,
    strip_special,
    unpack_regions,
)


def _unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _pool_ref(values: list[float], c: AttentionConfig) -> float:
    if c.pool == "mean":
        return sum(values) / len(values)
    return math.log(sum(math.exp(c.lambda_lse * v) for v in values) / len(values)) / c.lambda_lse


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def naive_score(words: torch.Tensor, n_words: int, regions: torch.Tensor, c: AttentionConfig) -> float:
    """One image-text pair, with explicit loops and the attended vectors built explicitly."""
    w = words[:n_words].tolist()
    r = regions.tolist()
    parts = []
    if c.direction in ("t2i", "both"):
        sims = []
        for wi in w:
            logits = [c.lambda_softmax * _cos(wi, rj) for rj in r]
            top = max(logits)
            e = [math.exp(x - top) for x in logits]
            a = [x / sum(e) for x in e]
            attended = [sum(a[j] * r[j][d] for j in range(len(r))) for d in range(len(wi))]
            sims.append(_cos(wi, attended))
        parts.append(_pool_ref(sims, c))
    if c.direction in ("i2t", "both"):
        sims = []
        for rj in r:
            logits = [c.lambda_softmax * _cos(wi, rj) for wi in w]
            top = max(logits)
            e = [math.exp(x - top) for x in logits]
            a = [x / sum(e) for x in e]
            attended = [sum(a[i] * w[i][d] for i in range(len(w))) for d in range(len(rj))]
            sims.append(_cos(rj, attended))
        parts.append(_pool_ref(sims, c))
    return sum(parts) / len(parts)


@pytest.mark.parametrize("direction", ["t2i", "i2t", "both"])
@pytest.mark.parametrize("pool", ["mean", "lse"])
def test_scores_match_the_naive_reference(direction: str, pool: str) -> None:
    c = AttentionConfig(direction=direction, pool=pool, lambda_softmax=7.0, lambda_lse=5.0)
    n_img, n_txt, L, R, D = 3, 4, 6, 5, 8
    words = _unit(n_txt, L, D, seed=1)
    regions = _unit(n_img, R, D, seed=2)
    lengths = [6, 3, 1, 4]  # padded captions of different lengths
    mask = torch.zeros(n_txt, L, dtype=torch.long)
    for t, n in enumerate(lengths):
        mask[t, :n] = 1
    got = attention_scores(words, mask, regions, c)
    assert got.shape == (n_img, n_txt)
    for i in range(n_img):
        for t in range(n_txt):
            want = naive_score(words[t], lengths[t], regions[i], c)
            assert got[i, t].item() == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_padded_tokens_do_not_change_the_score(direction: str) -> None:
    c = AttentionConfig(direction=direction)
    words = _unit(1, 7, 8, seed=3)
    regions = _unit(2, 5, 8, seed=4)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0]])
    base = attention_scores(words, mask, regions, c)
    garbage = words.clone()
    garbage[0, 3:] = _unit(4, 8, seed=5)  # whatever sits in the padding
    assert torch.allclose(attention_scores(garbage, mask, regions, c), base, atol=1e-12)
    # and the padded caption scores as the same caption cut to its real length
    assert torch.allclose(attention_scores(words[:, :3], mask[:, :3], regions, c), base, atol=1e-12)
    # a real token in that position does count
    assert not torch.allclose(attention_scores(garbage, torch.ones_like(mask), regions, c), base)


def test_module_scores_are_the_function_on_its_projections() -> None:
    torch.manual_seed(0)
    c = AttentionConfig(word_dim=12, region_dim=20, dim=8, alpha=0.5)
    m = CrossAttention(c)
    states, mask = torch.randn(3, 5, 12), torch.ones(3, 5, dtype=torch.long)
    cells = torch.randn(2, 16, 20)
    w, r = m.words(states), m.regions(cells)
    assert torch.allclose(w.norm(dim=-1), torch.ones(3, 5), atol=1e-5)
    assert torch.allclose(r.norm(dim=-1), torch.ones(2, 16), atol=1e-5)
    g = torch.randn(2, 3)
    assert torch.allclose(m.combined(g, w, mask, r), g + 0.5 * attention_scores(w, mask, r, c))


def test_a_word_matching_one_region_attends_to_it() -> None:
    # the word equals region 0: with a sharp softmax its attended vector is region 0 (cos ~1);
    # an image without that region scores lower
    c = AttentionConfig(direction="t2i", lambda_softmax=50.0)
    regions = _unit(1, 4, 16, seed=6)
    words = regions[:, :1].clone()
    other = _unit(1, 4, 16, seed=7)
    mask = torch.ones(1, 1, dtype=torch.long)
    s = attention_scores(words, mask, torch.cat([regions, other]), c)
    assert s[0, 0].item() > 0.99
    assert s[0, 0] > s[1, 0] + 0.3


def test_strip_special_drops_cls_and_sep() -> None:
    states = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])  # [CLS] a b [SEP] pad; [CLS] [SEP]
    s, m = strip_special(states, mask)
    assert s.shape == (2, 4, 1)
    assert m.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0]]  # the empty caption keeps its [SEP]
    assert s[0, :2, 0].tolist() == [1.0, 2.0]


def test_pool_grid_4x4() -> None:
    grid = torch.arange(7 * 7, dtype=torch.float32).reshape(1, 1, 7, 7).repeat(1, 3, 1, 1)
    cells = pool_grid(grid)
    assert cells.shape == (1, 16, 3)
    assert cells[0, 0, 0].item() == pytest.approx(grid[0, 0, :2, :2].mean().item())  # rows/cols 0-1
    assert cells[0, 5, 0].item() == pytest.approx(grid[0, 0, 1:4, 1:4].mean().item())  # rows/cols 1-3


def test_int8_region_round_trip_error_bound() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16, 256)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)  # stored regions are unit vectors
    x[0, 0] = 0.0  # an all-zero region must survive too
    codes, scales = encode_regions(x)
    assert codes.dtype == np.int8 and scales.dtype == np.float16 and scales.shape == (50, 16)
    back = decode_regions(codes, scales)
    row_max = np.abs(x).max(axis=-1, keepdims=True)
    bound = row_max * (0.5 / 127 + 2.0**-11 * 128 / 127)  # half a step + the fp16 scale's rounding
    assert np.all(np.abs(back - x) <= bound + 1e-7)
    assert np.all(back[0, 0] == 0.0)
    # what re-ranking sees: cosines between words and stored regions barely move
    w = rng.normal(size=(20, 256)).astype(np.float32)
    w /= np.linalg.norm(w, axis=-1, keepdims=True)
    assert np.abs(np.einsum("wd,nrd->nwr", w, back) - np.einsum("wd,nrd->nwr", w, x)).max() < 5e-3
    # the blob a catalog would store: exactly region_bytes() bytes, and back
    blob = pack_regions(codes[3], scales[3])
    assert len(blob) == region_bytes(16, 256) == 4128
    assert np.array_equal(unpack_regions(blob), back[3])
    with pytest.raises(ValueError):
        unpack_regions(blob[:-1])


def test_rerank_orders_by_the_combined_score() -> None:
    g = np.array([0.5, 0.4, 0.3])
    a = np.array([0.0, 0.2, 0.9])
    assert rerank(g, a, 0.0).tolist() == [0, 1, 2]
    assert rerank(g, a, 1.0).tolist() == [2, 1, 0]


def test_save_load_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    m = CrossAttention(AttentionConfig(word_dim=6, region_dim=10, dim=4, alpha=0.3, pool="lse"))
    save_attention(tmp_path / "a.pt", m, extra={"val": 1.5})
    back, extra = load_attention(tmp_path / "a.pt")
    assert back.config == m.config and extra == {"val": 1.5}
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    with pytest.raises(ModelLoadError):
        load_attention(tmp_path / "missing.pt")
    with pytest.raises(ValueError):
        AttentionConfig(direction="sideways")


@pytest.mark.parametrize("direction", ["t2i", "i2t", "both"])
@pytest.mark.parametrize("pool", ["mean", "lse"])
def test_numpy_query_reranker_matches_torch(direction: str, pool: str) -> None:
    torch.manual_seed(1)
    c = AttentionConfig(word_dim=12, region_dim=20, dim=8, direction=direction, pool=pool, alpha=0.7)
    m = CrossAttention(c).eval()
    states = torch.randn(1, 5, 12)
    regions = m.regions(torch.randn(9, 16, 20)).detach()
    q = QueryReranker.from_module(m)
    w = q.words(states[0].numpy())
    assert np.allclose(w, m.words(states)[0].detach().numpy(), atol=1e-5)
    want = attention_scores(m.words(states), torch.ones(1, 5), regions, c)[:, 0].detach().numpy()
    assert np.allclose(q.scores(w, regions.numpy()), want, atol=1e-5)
    # from stored codes: the order is the one of the torch scores on the decoded regions
    codes, scales = encode_regions(regions.numpy())
    g = np.linspace(0.3, 0.1, 9)
    dec = torch.from_numpy(decode_regions(codes, scales))
    att = attention_scores(m.words(states), torch.ones(1, 5), dec, c)[:, 0].detach().numpy()
    assert q.rerank(g, states[0].numpy(), codes, scales).tolist() == rerank(g, att, 0.7).tolist()


def test_numpy_pool_grid_and_region_projection_match_torch(tmp_path) -> None:
    from engine.vse.attention import export_weights, module_from_weights
    from engine.vse.attention_runtime import load_weights
    from engine.vse.attention_runtime import pool_grid as pool_grid_np

    g = torch.Generator().manual_seed(3)
    grid = torch.rand(3, 12, 7, 7, generator=g) * 6
    assert np.allclose(pool_grid_np(grid.numpy()), pool_grid(grid).numpy(), atol=1e-6)
    module = CrossAttention(AttentionConfig(word_dim=10, region_dim=12, dim=8, alpha=0.3, direction="i2t"))
    with torch.no_grad():  # LayerNorm away from its identity init
        module.region_norm.weight.uniform_(0.5, 1.5)
        module.region_norm.bias.uniform_(-0.2, 0.2)
    module.eval()
    export_weights(module, tmp_path / "a.npz", "vse-test")
    w = load_weights(tmp_path / "a.npz", "vse-test")
    assert w is not None and w.config == module.config and w.attention_id.startswith("att-")
    with torch.no_grad():
        ref = module.regions(pool_grid(grid)).numpy()
        states = torch.randn(5, 10, generator=g)
        ref_words = module.words(states[None])[0].numpy()
    assert np.allclose(w.regions(pool_grid_np(grid.numpy())), ref, atol=1e-5)
    assert np.allclose(w.query_reranker().words(states.numpy()), ref_words, atol=1e-5)
    back = module_from_weights(w)
    for k, v in module.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    # the file is plain numpy: no pickles needed to read it
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert "meta" in z and z["region_proj_weight"].shape == (8, 12)
    assert load_weights(tmp_path / "a.npz", "vse-other") is None
    assert load_weights(tmp_path / "missing.npz", "vse-test") is None


def test_numpy_strip_special_matches_torch() -> None:
    from engine.vse.attention_runtime import strip_special as strip_np

    for n in (2, 3, 7):
        states = torch.randn(1, n, 4)
        words, mask = strip_special(states, torch.ones(1, n, dtype=torch.long))
        kept = words[0][mask[0].bool()].numpy()
        assert np.array_equal(strip_np(states[0].numpy()), kept)


def test_unpack_many_is_unpack_of_each() -> None:
    from engine.vse.attention_runtime import unpack_many

    rng = np.random.default_rng(5)
    codes, scales = encode_regions(rng.normal(size=(4, 16, 8)).astype(np.float32))
    blobs = [pack_regions(c, s) for c, s in zip(codes, scales, strict=True)]
    many = unpack_many(blobs, 16, 8)
    assert many.shape == (4, 16, 8)
    for i, b in enumerate(blobs):
        assert np.array_equal(many[i], unpack_regions(b, 16, 8))
    with pytest.raises(ValueError):
        unpack_many([blobs[0][:-1]], 16, 8)
