"""Bank normalisation (hubness correction) fitted after training.

In a joint space some images sit close to almost every caption ("hubs") and crowd the top of
many result lists; likewise some captions match almost any image. Following inverted-softmax /
query-bank normalisation, a pair is scored as its cosine minus each side's soft-max similarity
to a bank of the other modality drawn from the training set (`VSEModel.image_vectors`). The
bank is a few thousand training captions and images, embedded once; the strength `beta` is
chosen on the validation set, and the bank is dropped when it does not help there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.vse.model import VSEModel
from training.data import CaptionDataset
from training.evaluate import embed_captions, embed_dataset_images, joint_vectors
from training.metrics import metrics_from_embeddings

log = logging.getLogger(__name__)

BETAS = (10.0, 15.0, 20.0, 30.0)


def bank_embeddings(
    model: VSEModel, train_ds: CaptionDataset, size: int, seed: int = 0,
    feature_cache: Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit embeddings of `size` random training captions and `size` random training images
    (fewer when the set is smaller)."""
    n = min(size, len(train_ds.items), len(train_ds.captions))
    rng = np.random.default_rng(seed)
    cap_idx = np.sort(rng.choice(len(train_ds.captions), n, replace=False))
    img_idx = np.sort(rng.choice(len(train_ds.items), n, replace=False))
    txt = embed_captions(model, [train_ds.captions[i] for i in cap_idx])
    if feature_cache is not None and (feature_cache / "done_orig").exists():
        img = embed_dataset_images(model, [it.path for it in train_ds.items], feature_cache=feature_cache)[img_idx]
    else:
        img = embed_dataset_images(model, [train_ds.items[i].path for i in img_idx])
    return torch.from_numpy(txt), torch.from_numpy(img)


def fit_bank(
    model: VSEModel,
    train_ds: CaptionDataset,
    val_ds: CaptionDataset,
    size: int = 4096,
    betas: Sequence[float] = BETAS,
    train_cache: Path | None = None,
    val_cache: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Attach the bank with the beta that maximises val rsum, or leave the model plain when no
    beta beats plain cosine on val. Returns what was measured, for the checkpoint's record."""
    text_bank, image_bank = bank_embeddings(model, train_ds, size, seed, train_cache)
    val_img = embed_dataset_images(model, [it.path for it in val_ds.items], feature_cache=val_cache)
    val_txt = embed_captions(model, val_ds.captions)
    plain = metrics_from_embeddings(val_img, val_txt, val_ds.caption_image)["rsum"]
    by_beta: dict[str, float] = {}
    for beta in betas:
        model.set_banks(text_bank, image_bank, beta)
        i, t = joint_vectors(model, val_img, val_txt)
        by_beta[f"{beta:g}"] = metrics_from_embeddings(i, t, val_ds.caption_image)["rsum"]
    best = max(betas, key=lambda b: by_beta[f"{b:g}"])
    report: dict[str, Any] = {
        "bank_size": int(text_bank.shape[0]), "val_rsum_plain": plain, "val_rsum_by_beta": by_beta,
        "chosen_on": val_ds.describe().get("name", "val"),
    }
    if by_beta[f"{best:g}"] > plain:
        model.set_banks(text_bank, image_bank, best)
        report["beta"] = best
    else:
        model.clear_banks()
        report["beta"] = None
    log.info("bank normalisation: %s", report)
    return report


def add_bank_to_checkpoint(
    path: Path, train_ds: CaptionDataset, val_ds: CaptionDataset, size: int = 4096,
    train_cache: Path | None = None, val_cache: Path | None = None,
) -> dict[str, Any]:
    """Fit the bank for a trained checkpoint and rewrite it in place (new model id)."""
    from engine.vse.checkpoint import load_checkpoint, save_checkpoint

    model, ckpt = load_checkpoint(path)
    report = fit_bank(model, train_ds, val_ds, size, train_cache=train_cache, val_cache=val_cache)
    metrics = dict(ckpt.get("metrics", {}))
    metrics["bank_normalisation"] = report
    save_checkpoint(path, model, training=ckpt.get("training"), metrics=metrics,
                    calibration=ckpt.get("calibration"), extra=ckpt.get("extra"))
    return report
