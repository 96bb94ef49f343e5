"""Turn a trained run into the app's model: calibrate the weak-match threshold on val through
the pixel path (as the app embeds photos), record val metrics, write the checkpoint
atomically, and write the caption bank with its vectors (`ship_caption_store`: the app's
"find similar captions" then needs no text-encoder work for the bank). `python main.py
default-model` trains `training.recipes.DEFAULT_RECIPE` and ships it with this.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.caption_store import bank_file_captions, store_path_for, write_caption_store
from engine.vse.checkpoint import load_checkpoint, save_checkpoint
from training.calibrate import weak_match_threshold, write_caption_bank
from training.data import CaptionDataset
from training.evaluate import embed_captions, embed_dataset_images, joint_vectors
from training.metrics import metrics_from_embeddings

log = logging.getLogger(__name__)


def ship_checkpoint(
    run: Path, train_ds: CaptionDataset, val_ds: CaptionDataset, out: Path, caption_bank: Path
) -> dict[str, Any]:
    """Write `run` (bank already fitted) to `out` with val metrics and calibration, and the
    training captions to `caption_bank`. Returns the model id, val rsum and threshold."""
    model, ckpt = load_checkpoint(run)
    img = embed_dataset_images(model, [it.path for it in val_ds.items])
    txt = embed_captions(model, val_ds.captions)
    img_j, txt_j = joint_vectors(model, img, txt)
    val_metrics = metrics_from_embeddings(img_j, txt_j, val_ds.caption_image)
    img_q, txt_q = joint_vectors(model, img, txt, texts_as_queries=True)
    calib = weak_match_threshold(img_q @ txt_q.T, val_ds.caption_image)
    calib["calibrated_on"] = val_ds.name
    log.info("val %s; calibration %s", json.dumps(val_metrics), json.dumps(calib))
    metrics = dict(ckpt.get("metrics", {}))
    metrics["val"] = val_metrics
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.pt")
    model_id = save_checkpoint(tmp, model, training=ckpt["training"], metrics=metrics, calibration=calib)
    shutil.move(tmp, out)
    n = write_caption_bank(train_ds.captions, caption_bank)
    store = ship_caption_store(out, caption_bank)
    log.info("shipped %s (%s), caption bank %d lines, vectors %s", out, model_id, n, store["path"])
    return {"model_id": model_id, "val_rsum": val_metrics["rsum"],
            "weak_match_threshold": calib["weak_match_threshold"], "caption_store": store["path"]}


@torch.no_grad()
def ship_caption_store(
    checkpoint: Path, caption_bank: Path, out: Path | None = None, batch_size: int = 256
) -> dict[str, Any]:
    """Embed the caption bank with the shipped checkpoint, as the app embeds texts (the
    checkpoint reloaded from disk, each caption routed to the tower its language needs, the
    bank-normalisation terms added), and store the vectors beside it
    (engine/caption_store.py: int8 rows + the two float32 bank terms)."""
    from engine.vse.multilingual import DEFAULT_HEAD, embed_routed, load_multilingual_tower

    checkpoint = Path(checkpoint)
    model, ckpt = load_checkpoint(checkpoint)
    if torch.cuda.is_available():
        model = model.cuda()
    model.eval()
    tower = load_multilingual_tower(
        DEFAULT_HEAD, ckpt["model_id"], int(model.config.embed_dim), Path(caption_bank)
    )
    captions = bank_file_captions(caption_bank)
    rows = []
    for s in range(0, len(captions), batch_size):
        unit = embed_routed(model, tower, captions[s : s + batch_size]).float()
        unit = torch.nn.functional.normalize(unit, dim=-1)
        rows.append(model.text_vectors(unit).float().cpu().numpy())
        log.info("caption vectors: %d / %d", min(s + batch_size, len(captions)), len(captions))
    vectors = np.concatenate(rows) if rows else np.zeros((0, model.joint_dim), np.float32)
    path = Path(out) if out is not None else store_path_for(checkpoint)
    meta = write_caption_store(
        path, ckpt["model_id"], captions, vectors, quantized_dims=int(model.config.embed_dim)
    )
    return {**meta, "path": str(path)}
