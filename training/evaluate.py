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
