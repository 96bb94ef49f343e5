"""Retrieval metrics: R@1/5/10 both directions, rsum, median/mean rank, 5-fold 1K protocol."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ranks_from_sims(sims: np.ndarray, caption_image: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """sims: (n_images, n_captions). Returns 0-based ranks: i2t per image (best of its
    captions), t2i per caption (of its image)."""
    sims = np.asarray(sims, dtype=np.float64)
    cap_img = np.asarray(caption_image)
    n_img, n_cap = sims.shape
    # Ties are counted against the model (a wrong item with an equal score ranks first), so
    # a degenerate model that scores everything equally cannot look good.
    # i2t: rank of the best ground-truth caption = wrong captions scored at least as high
    gt_mask = cap_img[None, :] == np.arange(n_img)[:, None]
    best_gt = np.where(gt_mask, sims, -np.inf).max(axis=1)
    i2t = ((sims >= best_gt[:, None]) & ~gt_mask).sum(axis=1)
    # t2i: for caption j, other images scoring at least as high as its own image
    own = sims[cap_img, np.arange(n_cap)]
    t2i = ((sims >= own[None, :]) & ~gt_mask).sum(axis=0)
    return i2t, t2i


def _summary(ranks: np.ndarray) -> dict[str, float]:
    return {
        "r1": float(100.0 * np.mean(ranks < 1)),
        "r5": float(100.0 * np.mean(ranks < 5)),
        "r10": float(100.0 * np.mean(ranks < 10)),
        "medr": float(np.floor(np.median(ranks)) + 1),
        "meanr": float(np.mean(ranks) + 1),
    }


def retrieval_metrics(sims: np.ndarray, caption_image: Sequence[int]) -> dict:
    i2t, t2i = ranks_from_sims(sims, caption_image)
    a, b = _summary(i2t), _summary(t2i)
    rsum = a["r1"] + a["r5"] + a["r10"] + b["r1"] + b["r5"] + b["r10"]
    return {"i2t": a, "t2i": b, "rsum": float(rsum), "n_images": int(sims.shape[0])}


def metrics_from_embeddings(
    img: np.ndarray, txt: np.ndarray, caption_image: Sequence[int], folds: int = 1
) -> dict:
    """Metrics on embeddings; folds=5 is the COCO 5x1K protocol (image set split in 5, captions
    follow their images, metrics averaged)."""
    cap_img = np.asarray(caption_image)
    if folds <= 1:
        return retrieval_metrics(img @ txt.T, cap_img)
    n = len(img)
    per = n // folds
    results = []
    for f in range(folds):
        lo, hi = f * per, (f + 1) * per
        cmask = (cap_img >= lo) & (cap_img < hi)
        results.append(retrieval_metrics(img[lo:hi] @ txt[cmask].T, cap_img[cmask] - lo))
    out: dict = {"folds": folds, "n_images": n}
    for d in ("i2t", "t2i"):
        out[d] = {k: float(np.mean([r[d][k] for r in results])) for k in results[0][d]}
    out["rsum"] = float(np.mean([r["rsum"] for r in results]))
    return out
