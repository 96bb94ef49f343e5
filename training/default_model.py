"""Reproduce the shipped default model from ../shared/data (`make default-model`).

Steps: cache EfficientNet-Lite2 features (frozen backbone) for train/val, cache MiniLM lower
layer states for the training captions, train the chosen recipe on f30k8k_train selecting the
epoch on f30k8k_val, fit bank normalisation (beta chosen on f30k8k_val), calibrate the weak-match threshold on f30k8k_val, write the caption bank,
and save engine/assets/default_model.pt. f8k_extra (the public test) is only reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch

from engine.settings import CAPTION_BANK, DEFAULT_CHECKPOINT
from engine.vse.checkpoint import load_checkpoint, save_checkpoint
from training.bank import add_bank_to_checkpoint
from training.calibrate import weak_match_threshold, write_caption_bank
from training.data import load_dataset
from training.evaluate import embed_captions, embed_dataset_images, joint_vectors
from training.experiment import main as run_experiment
from training.features import cache_features
from training.metrics import metrics_from_embeddings

log = logging.getLogger(__name__)

# The recipe chosen by val rsum (see docs/MODEL.md for the variants tried).
RECIPE = [
    "--loss", "infonce", "--fusion", "--pooling", "gap", "--text-pool-layers", "3",
    "--img-head", "mlp", "--text-head", "mlp", "--feat-dropout", "0.4", "--batch-size", "256",
    "--epochs", "10", "--views", "orig,flip", "--early-stop", "3",
]

# Training captions and images kept in the model for bank normalisation (training/bank.py).
BANK_SIZE = 4096


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--cache", type=Path, default=Path("cache/effl2"))
    ap.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-train", type=Path, default=None,
                    help="ship an existing training run (bank, calibration) instead of training")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    root = args.data_root
    views = RECIPE[RECIPE.index("--views") + 1].split(",") if "--views" in RECIPE else ["orig", "flip"]
    tuned_blocks = int(RECIPE[RECIPE.index("--tuned-blocks") + 1]) if "--tuned-blocks" in RECIPE else 0
    train_ds, val_ds = load_dataset(root / "f30k8k_train"), load_dataset(root / "f30k8k_val")
    run = Path("cache/runs/default.pt")
    if args.skip_train is None:
        for ds, split, vs in ((val_ds, "f30k8k_val", ["orig"]), (train_ds, "f30k8k_train", views)):
            cache_features("efficientnet-lite2", [it.path for it in ds.items], args.cache / split, vs,
                           tuned_blocks, threads=args.threads)
        run_experiment(["--name", "default", "--data-root", str(root), "--cache", str(args.cache),
                        "--threads", str(args.threads), *RECIPE])
    else:
        run.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.skip_train, run)
    add_bank_to_checkpoint(run, train_ds, val_ds, BANK_SIZE, train_cache=args.cache / "f30k8k_train",
                           val_cache=args.cache / "f30k8k_val")
    model, ckpt = load_checkpoint(run)
    # calibrate on val through the pixel path, exactly as the app will embed photos
    img = embed_dataset_images(model, [it.path for it in val_ds.items])
    txt = embed_captions(model, val_ds.captions)
    img_j, txt_j = joint_vectors(model, img, txt)
    val_metrics = metrics_from_embeddings(img_j, txt_j, val_ds.caption_image)
    img_q, txt_q = joint_vectors(model, img, txt, texts_as_queries=True)
    calib = weak_match_threshold(img_q @ txt_q.T, val_ds.caption_image)
    calib["calibrated_on"] = "f30k8k_val"
    log.info("val %s; calibration %s", json.dumps(val_metrics), json.dumps(calib))
    metrics = dict(ckpt.get("metrics", {}))
    metrics["val"] = val_metrics
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.pt")
    mid = save_checkpoint(tmp, model, training=ckpt["training"], metrics=metrics, calibration=calib)
    shutil.move(tmp, args.out)
    n = write_caption_bank(train_ds.captions, CAPTION_BANK)
    log.info("shipped %s (%s), caption bank %d lines", args.out, mid, n)
    print(json.dumps({"model_id": mid, "val_rsum": val_metrics["rsum"], "weak_match_threshold": calib["weak_match_threshold"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
