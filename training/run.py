"""Run a recipe: cache what stays frozen (once), train, then fit bank normalisation.

The one path from a `Recipe` to a checkpoint, shared by `python main.py train`,
`compare-losses` and `default-model`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.vse.model import TRANSFORMER_TEXT_ENCODERS
from training.data import CaptionDataset
from training.distributed import dist_info, rank_zero_first
from training.recipes import Recipe
from training.text_cache import HiddenCache

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Datasets plus the caches a recipe trains from (None where it reads raw inputs)."""

    train: CaptionDataset
    val: CaptionDataset | None
    feature_cache: Path | None = None
    val_feature_cache: Path | None = None
    text_cache: HiddenCache | np.ndarray | None = None


def feature_cache_dir(recipe: Recipe, ds: CaptionDataset, cache_root: Path) -> Path:
    """Where `prepare` caches `ds`'s backbone features: keyed by backbone, image size and the
    dataset's image list."""
    h = hashlib.sha256("\n".join(str(it.path) for it in ds.items).encode()).hexdigest()[:10]
    return cache_root / f"{recipe.model.backbone}-{recipe.model.image_size}" / h


def prepare(
    recipe: Recipe, train_ds: CaptionDataset, val_ds: CaptionDataset | None, cache_root: Path,
    threads: int = 2,
) -> PreparedData:
    """Frozen backbone: cache backbone features (and MiniLM's frozen part) once, under
    `cache_root` (see `feature_cache_dir`)."""
    data = PreparedData(train_ds, val_ds)
    if not recipe.cached_features:
        return data
    from training.features import cache_features

    config = recipe.model
    # under torchrun rank 0 writes the caches and the other ranks read them
    with rank_zero_first():
        tdir = feature_cache_dir(recipe, train_ds, cache_root)
        cache_features(config.backbone, [it.path for it in train_ds.items], tdir, recipe.options.views,
                       config.tuned_blocks, size=config.image_size, threads=threads)
        data.feature_cache = tdir
        if val_ds is not None:
            vdir = feature_cache_dir(recipe, val_ds, cache_root)
            cache_features(config.backbone, [it.path for it in val_ds.items], vdir, ["orig"],
                           config.tuned_blocks, size=config.image_size, threads=threads)
            data.val_feature_cache = vdir
        if config.text_encoder in TRANSFORMER_TEXT_ENCODERS:
            data.text_cache = _text_cache(recipe, train_ds, tdir)
    return data


def _text_cache(recipe: Recipe, train_ds: CaptionDataset, key: Path) -> HiddenCache | np.ndarray:
    from engine.vse.text_encoders import MiniLMTextEncoder
    from training.text_cache import build_hidden_cache, build_hidden_caches, pooled_features

    config = recipe.model
    encoder = MiniLMTextEncoder(config.embed_dim, 0, name=config.text_encoder)
    tag = config.text_encoder  # "minilm" keeps the cache file names of earlier sessions
    n = encoder.bert.config.num_hidden_layers
    if recipe.text_cache == "pooled":
        uptos = list(range(n - config.text_pool_layers + 1, n + 1))
        caches = build_hidden_caches(encoder, train_ds.captions, uptos,
                                     [Path(f"{key}-{tag}-l{u}.npz") for u in uptos])
        return pooled_features(caches)
    # the states the trained part starts from: below the tuned layers and the lowest pooled one
    upto = min(n - config.tuned_layers, n - config.text_pool_layers + 1)
    return build_hidden_cache(encoder, train_ds.captions, upto, Path(f"{key}-{tag}-l{upto}.npz"))


def run_recipe(
    recipe: Recipe, data: PreparedData, out: Path, resume: bool = False, progress: bool = False
) -> dict[str, Any]:
    """Train into `out` (best val rsum), then on rank 0 fit the bank when there is a val set
    and `recipe.bank_size` > 0. Returns the training summary, plus the bank report under
    "bank" when one was fitted."""
    from training.train import train

    opts = replace(recipe.options, cache_dir=str(data.feature_cache) if data.feature_cache else None)
    summary = train(
        replace(recipe.model), data.train, data.val, out, opts, resume=resume,
        val_cache=data.val_feature_cache, text_cache=data.text_cache, progress=progress,
    )
    if Path(out).exists() and dist_info()[0] == 0:
        bank = fit_bank(recipe, data, Path(out))
        if bank is not None:
            summary["bank"] = bank
    return summary


def fit_bank(recipe: Recipe, data: PreparedData, checkpoint: Path) -> dict[str, Any] | None:
    """Fit bank normalisation into `checkpoint` when the recipe asks for one and there is a
    val set to choose on; returns the bank report (None when not fitted)."""
    if recipe.bank_size <= 0 or data.val is None:
        return None
    from training.bank import add_bank_to_checkpoint

    return add_bank_to_checkpoint(
        checkpoint, data.train, data.val, recipe.bank_size,
        train_cache=data.feature_cache, val_cache=data.val_feature_cache,
    )
