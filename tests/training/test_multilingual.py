"""The multilingual head's training side: the caption memory it builds reproduces inner
products with the stored keys, and the trained head's arrays run the same arithmetic in the
engine's MultilingualHead."""

import numpy as np
import torch
import torch.nn.functional as F

from engine.vse.multilingual import MultilingualHead
from training.multilingual import HeadOptions, MemoryOptions, TrainableHead, build_memory


def low_rank_captions(n: int = 60, dim: int = 32, rank: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_memory_keys_keep_inner_products_and_drop_repeated_captions():
    texts = low_rank_captions()
    captions = [f"caption {i}" for i in range(len(texts))]
    captions[7] = "Caption 3 "  # the same caption again (case and spaces): stored once
    mem = build_memory(texts, captions, MemoryOptions(rank=5))
    assert mem["mem_codes"].dtype == np.int8 and mem["mem_codes"].shape == (len(texts) - 1, 5)
    assert np.abs(mem["mem_codes"]).max() == 127  # each row uses its full int8 range
    keys = mem["mem_codes"].astype(np.float64) * mem["mem_scale"][:, None]
    kept = np.delete(texts, 7, axis=0)
    # the captions span 5 dims, so a rank-5 basis loses nothing but int8 rounding
    q = low_rank_captions(n=4, seed=0)[:4]
    np.testing.assert_allclose((q @ mem["mem_basis"]) @ keys.T, q @ kept.T, atol=0.02)
    # a lower rank keeps the largest directions: the approximation gets worse, not wrong
    small = build_memory(texts, captions, MemoryOptions(rank=2))
    small_keys = small["mem_codes"] * small["mem_scale"][:, None]
    err_small = np.abs((q @ small["mem_basis"]) @ small_keys.T - q @ kept.T).mean()
    err_full = np.abs((q @ mem["mem_basis"]) @ keys.T - q @ kept.T).mean()
    assert err_full < err_small < 1.0


def test_trained_head_arrays_run_the_same_in_the_engine():
    torch.manual_seed(0)
    for kind in ("linear", "mlp"):
        head = TrainableHead(512, 16, HeadOptions(kind=kind, hidden=8)).eval()
        if head.mlp is not None:  # trained weights are not zero: give the residual a value
            torch.nn.init.normal_(head.mlp[-1].weight, std=0.1)
        x = F.normalize(torch.randn(3, 512), dim=-1)
        arrays = {k: v.astype(np.float16).astype(np.float32) for k, v in head.arrays().items()}
        engine = MultilingualHead(arrays, {"model_id": "vse-x"})
        with torch.no_grad():
            want = head(x)
        torch.testing.assert_close(engine(x), want, atol=2e-3, rtol=0)
