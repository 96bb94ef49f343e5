"""Evaluate a model on a caption dataset: R@1/5/10 both directions, rsum, median/mean rank."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.vse.model import VSEModel
from engine.vse.preprocess import prepare_eval
from training.batches import CachedImageFeatures, CachedTailInputs
from training.data import CaptionDataset
from training.metrics import metrics_from_embeddings

log = logging.getLogger(__name__)


@torch.no_grad()
def embed_dataset_images(
    model: VSEModel, paths: Sequence[Path], device: torch.device | None = None,
    batch_size: int = 32, feature_cache: Path | None = None,
) -> np.ndarray:
    """Image embeddings; from cached backbone features when a matching cache is given."""
    device = device or next(model.parameters()).device
    model.eval()
    if feature_cache is not None and (feature_cache / "done_orig").exists():
        from training.features import load_cached

        names = json.loads((feature_cache / "images.json").read_text())
        n_tuned = model.config.tuned_blocks
        tail_ready = n_tuned == 0 or (feature_cache / f"done_pre{n_tuned}_orig").exists()
        if names == [p.name for p in paths] and tail_ready:
            grid, stages = load_cached(feature_cache, "orig")
            if n_tuned:
                from training.features import early_stage_channels, load_tail_inputs

                grid = load_tail_inputs(feature_cache, "orig", n_tuned)
                stages = stages[:, : early_stage_channels(model.img.backbone, n_tuned)]
            cached = CachedTailInputs if n_tuned else CachedImageFeatures
            out = []
            for s in range(0, len(grid), 256):
                g = torch.from_numpy(np.array(grid[s : s + 256])).to(device)
                st = torch.from_numpy(np.array(stages[s : s + 256])).to(device)
                out.append(cached(g, st).embed(model).float().cpu().numpy())
            return np.concatenate(out)
        log.warning("feature cache %s does not match the image list: embedding pixels", feature_cache)
    bb = model.img.backbone
    out = []
    for s in range(0, len(paths), batch_size):
        arrs = []
        for p in paths[s : s + batch_size]:
            with Image.open(p) as im:
                arrs.append(prepare_eval(im, bb.mean, bb.std, model.config.image_size))
        x = torch.from_numpy(np.stack(arrs)).to(device)
        with torch.autocast(device.type, enabled=device.type == "cuda", dtype=torch.float16):
            out.append(model.embed_images(x).float().cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def embed_captions(model: VSEModel, captions: Sequence[str], batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = [
        model.embed_texts(captions[s : s + batch_size]).float().cpu().numpy()
        for s in range(0, len(captions), batch_size)
    ]
    return np.concatenate(out)


@torch.no_grad()
def joint_vectors(
    model: VSEModel, img: np.ndarray, txt: np.ndarray, texts_as_queries: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings -> the vectors whose inner products are the model's scores (identity
    unless the model carries bank normalisation, see VSEModel.image_vectors). With
    `texts_as_queries`, texts are in the form the photo search uses (same t2i ranking; the
    absolute scores are what the weak-match threshold is calibrated on)."""
    dev = next(model.parameters()).device
    to_text = model.text_query_vectors if texts_as_queries else model.text_vectors
    i = model.image_vectors(torch.from_numpy(img).to(dev)).float().cpu().numpy()
    t = to_text(torch.from_numpy(txt).to(dev)).float().cpu().numpy()
    return i, t


def evaluate_model(
    model: VSEModel, ds: CaptionDataset, device: torch.device | None = None,
    feature_cache: Path | None = None, folds: int | None = None,
) -> dict[str, Any]:
    """Metrics dict; 5K-image test sets use the 5-fold 1K protocol unless `folds` says otherwise."""
    img = embed_dataset_images(model, [it.path for it in ds.items], device, feature_cache=feature_cache)
    txt = embed_captions(model, ds.captions)
    img, txt = joint_vectors(model, img, txt)
    if folds is None:
        folds = 5 if len(ds) == 5000 else 1
    return metrics_from_embeddings(img, txt, ds.caption_image, folds=folds)


# ---------------------------------------------------------------- with attention re-ranking


@torch.no_grad()
def dataset_regions(model: VSEModel, paths: Sequence[Path], feature_cache: Path | None = None,
                    batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Each image's backbone map pooled to the re-ranker's 4x4 regions, (N, 16, C) float16,
    and its unit embedding, from one backbone pass (or from cached features when they match)."""
    from engine.vse.attention import pool_grid

    if feature_cache is not None and (feature_cache / "done_orig").exists():
        from training.features import load_cached

        names = json.loads((feature_cache / "images.json").read_text())
        if names == [p.name for p in paths] and model.config.tuned_blocks == 0:
            grid, _ = load_cached(feature_cache, "orig")
            regions = np.concatenate([pool_grid(torch.from_numpy(np.array(grid[s : s + 256]))).numpy()
                                      for s in range(0, len(grid), 256)]).astype(np.float16)
            return regions, embed_dataset_images(model, paths, feature_cache=feature_cache)
    model.eval()
    bb = model.img.backbone
    regions, vectors = [], []
    for s in range(0, len(paths), batch_size):
        arrs = []
        for p in paths[s : s + batch_size]:
            with Image.open(p) as im:
                arrs.append(prepare_eval(im, bb.mean, bb.std, model.config.image_size))
        grid, stages = bb(torch.from_numpy(np.stack(arrs)))
        pooled = torch.cat([st.mean(dim=(2, 3)) for st in stages], dim=1)
        vectors.append(CachedImageFeatures(grid, pooled).embed(model).float().numpy())
        regions.append(pool_grid(grid).numpy().astype(np.float16))
    return np.concatenate(regions), np.concatenate(vectors)


@torch.no_grad()
def caption_token_states(model: VSEModel, captions: Sequence[str], batch_size: int = 256
                         ) -> tuple[np.ndarray, np.ndarray]:
    """MiniLM's last-layer token states of every caption, flattened (tokens, 384) float16, and
    offsets (len + 1): what the search path gets from the ONNX text graph's extra output."""
    model.eval()
    hidden, offsets = [], [0]
    for s in range(0, len(captions), batch_size):
        tok = model.txt.tokenize(list(captions[s : s + batch_size]))
        states = model.txt.bert(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        for row, n in zip(states, tok["attention_mask"].sum(1).tolist(), strict=True):
            hidden.append(row[: int(n)].numpy().astype(np.float16))
            offsets.append(offsets[-1] + int(n))
    return np.concatenate(hidden), np.asarray(offsets, np.int64)


def evaluate_reranked(
    model: VSEModel, ds: CaptionDataset, weights: Any, feature_cache: Path | None = None,
    k: int | None = None,
) -> dict[str, Any]:
    """R@K without and with attention re-ranking of each query's top `k` (both directions), as
    search does it: regions stored int8, the weights' direction and alpha. One fold (the whole
    set), so the two rows compare exactly."""
    from engine.vse.attention import module_from_weights
    from training.attention import Bundle, attention_matrix, global_orders, reranked_metrics

    paths = [it.path for it in ds.items]
    regions, img = dataset_regions(model, paths, feature_cache)
    txt = embed_captions(model, ds.captions)
    img, txt = joint_vectors(model, img, txt)
    hidden, offsets = caption_token_states(model, ds.captions)
    bundle = Bundle(regions, img, txt, hidden, offsets, np.asarray(ds.caption_image))
    module = module_from_weights(weights)
    c = module.config
    k = int(k or c.k)
    glob = img @ txt.T
    att = attention_matrix(module, bundle, c.direction, int8=True)
    orders = global_orders(glob)
    without = reranked_metrics(glob, att, 0.0, k, bundle.caption_image, orders)
    with_att = reranked_metrics(glob, att, float(c.alpha), k, bundle.caption_image, orders)
    return {"n_images": len(img), "k": k, "alpha": float(c.alpha), "direction": c.direction,
            "attention_id": weights.attention_id, "without": without, "with": with_att}
