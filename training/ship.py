"""Turn a trained run into the app's model: calibrate the weak-match threshold on val through
the pixel path (as the app embeds photos), record val metrics, write the checkpoint
atomically, and write the caption bank. `python main.py default-model` trains
`training.recipes.DEFAULT_RECIPE` and ships it with this.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

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
    log.info("shipped %s (%s), caption bank %d lines", out, model_id, n)
    return {"model_id": model_id, "val_rsum": val_metrics["rsum"],
            "weak_match_threshold": calib["weak_match_threshold"]}
