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


def test_selection_photos_are_held_out_of_fit_with_their_captions():
    from training.multilingual import SplitArrays, selection_photos, split_selection

    n_images, per = 30, 3
    caption_image = np.repeat(np.arange(n_images), per)
    rng = np.random.default_rng(0)
    train = SplitArrays(use=rng.standard_normal((len(caption_image), 4)).astype(np.float32),
                        texts=rng.standard_normal((len(caption_image), 6)).astype(np.float32),
                        images=rng.standard_normal((n_images, 6)).astype(np.float32),
                        caption_image=caption_image)
    selected = selection_photos(n_images, every=7)
    assert selected.sum() == 5 and selected[0] and selected[7] and not selected[1]
    fit, held, fit_captions = split_selection(train, selected)
    assert len(held.images) == 5 and len(fit.images) == 25
    assert fit_captions.sum() == 75 and len(held.use) == 15
    # every caption still points at its own photo, in its part's numbering
    for part, photos, caps in ((fit, ~selected, fit_captions), (held, selected, ~fit_captions)):
        originals = np.flatnonzero(photos)
        np.testing.assert_array_equal(part.images, train.images[originals])
        np.testing.assert_array_equal(originals[part.caption_image], caption_image[caps])
        np.testing.assert_array_equal(part.use, train.use[caps])


def test_pivot_keys_are_the_memory_rows_in_use_space_and_respect_allowed():
    texts = low_rank_captions()
    use = low_rank_captions(dim=20, rank=4, seed=5)
    captions = [f"caption {i}" for i in range(len(texts))]
    allowed = np.ones(len(texts), bool)
    allowed[10:20] = False  # e.g. the selection photos' captions
    mem = build_memory(texts, captions, MemoryOptions(rank=5, piv_rank=4, piv_weight=0.5), use, allowed)
    kept = np.flatnonzero(allowed)
    assert mem["mem_codes"].shape == (50, 5) and mem["piv_codes"].shape == (50, 4)
    assert mem["piv_codes"].dtype == np.int8
    keys = mem["mem_codes"] * mem["mem_scale"][:, None]
    np.testing.assert_allclose(keys @ mem["mem_basis"].T, texts[kept], atol=0.02)
    pkeys = mem["piv_codes"] * mem["piv_scale"][:, None]
    np.testing.assert_allclose(pkeys @ mem["piv_basis"].T, use[kept], atol=0.02)
    # no pivot at weight 0, nor without USE vectors
    assert "piv_codes" not in build_memory(texts, captions, MemoryOptions(rank=5, piv_weight=0.0), use)
    assert "piv_codes" not in build_memory(texts, captions, MemoryOptions(rank=5))
