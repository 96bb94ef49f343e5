"""Cache of a transformer text tower's (MiniLM, MPNet) hidden states after the frozen lower layers, so training runs only the
tuned top layers + pooling + projection. Stored flattened (tokens x hidden size, fp16) with offsets."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engine.vse.text_encoders import TransformerTextEncoder

log = logging.getLogger(__name__)


class HiddenCache:
    def __init__(self, hidden: np.ndarray, offsets: np.ndarray, upto: int) -> None:
        self.hidden, self.offsets, self.upto = hidden, offsets, upto

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded (B, L, hidden) float32 hidden states and (B, L) attention mask."""
        lens = [int(self.offsets[i + 1] - self.offsets[i]) for i in idx]
        L = max(lens)
        h = np.zeros((len(idx), L, self.hidden.shape[1]), np.float32)
        m = np.zeros((len(idx), L), np.int64)
        for r, i in enumerate(idx):
            h[r, : lens[r]] = self.hidden[self.offsets[i] : self.offsets[i + 1]]
            m[r, : lens[r]] = 1
        return torch.from_numpy(h), torch.from_numpy(m)


@torch.no_grad()
def build_hidden_caches(
    encoder: TransformerTextEncoder, captions: Sequence[str], uptos: Sequence[int],
    paths: Sequence[Path | None], batch_size: int = 256,
) -> list[HiddenCache]:
    """Hidden states after each of `uptos` layers for every caption, in one pass; each saved
    to its `paths` entry (.npz) when given, and reused from there when already present."""
    found: list[HiddenCache | None] = []
    for upto, path in zip(uptos, paths, strict=True):
        cache = None
        if path is not None and path.exists():
            z = np.load(path)
            if int(z["upto"]) == upto and len(z["offsets"]) == len(captions) + 1:
                cache = HiddenCache(z["hidden"], z["offsets"], upto)
        found.append(cache)
    if all(c is not None for c in found):
        return found  # type: ignore[return-value]
    encoder.eval()
    top = max(uptos)
    # sort by length so padding is minimal, then scatter back to caption order
    order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
    out: dict[int, list] = {u: [None] * len(captions) for u in uptos}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        tok = encoder.tokenize([captions[i] for i in idx])
        ids, mask = tok["input_ids"], tok["attention_mask"]
        h = encoder.bert.embeddings(input_ids=ids)
        run = encoder.layer_runner(h, mask)
        levels = {0: h}
        for li, layer in enumerate(encoder.bert.encoder.layer[:top]):
            h = run(layer, h)
            levels[li + 1] = h
        for r, i in enumerate(idx):
            n = int(mask[r].sum())
            for u in uptos:
                out[u][i] = levels[u][r, :n].numpy().astype(np.float16)
        if start // batch_size % 20 == 0:
            log.info("text cache %d/%d", start + len(idx), len(captions))
    result = []
    for upto, path in zip(uptos, paths, strict=True):
        chunks = out[upto]
        offsets = np.concatenate([[0], np.cumsum([len(c) for c in chunks])]).astype(np.int64)
        hidden = np.concatenate(chunks)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, hidden=hidden, offsets=offsets, upto=upto)
        result.append(HiddenCache(hidden, offsets, upto))
    return result


def build_hidden_cache(
    encoder: TransformerTextEncoder, captions: Sequence[str], upto: int, path: Path | None = None,
    batch_size: int = 256,
) -> HiddenCache:
    """Hidden states after `upto` layers for every caption (see build_hidden_caches)."""
    return build_hidden_caches(encoder, captions, [upto], [path], batch_size)[0]


def pooled_features(caches: Sequence[HiddenCache]) -> np.ndarray:
    """Mean-pooled (over tokens) states of each cache, concatenated: (n_captions, k*hidden) float32.
    With a frozen transformer this is exactly what the text head sees, so training needs no
    transformer compute at all."""
    out = []
    for c in caches:
        sums = np.add.reduceat(c.hidden.astype(np.float32), c.offsets[:-1], axis=0)
        out.append(sums / np.diff(c.offsets)[:, None].astype(np.float32))
    return np.concatenate(out, axis=1)
