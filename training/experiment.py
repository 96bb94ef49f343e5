"""Train one variant on cached features (frozen backbone) and report val (+ optional test) rsum.

Used to pick the shipped default model; `make default-model` runs the chosen variant. Example:
  python -m training.experiment --name base --pooling gap --tuned-layers 0 --epochs 6
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from engine.vse.model import VSEConfig
from engine.vse.text_encoders import MiniLMTextEncoder
from training.data import load_dataset
from training.evaluate import evaluate_model
from training.train import TrainOptions, train

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--cache", type=Path, default=Path("cache/effl2"))
    ap.add_argument("--out-dir", type=Path, default=Path("cache/runs"))
    ap.add_argument("--views", default="orig,flip")
    ap.add_argument("--pooling", default="gap")
    ap.add_argument("--fusion", action="store_true")
    ap.add_argument("--img-head", default="linear")
    ap.add_argument("--text-head", default="linear")
    ap.add_argument("--text-encoder", default="minilm")
    ap.add_argument("--tuned-layers", type=int, default=0)
    ap.add_argument("--tuned-blocks", type=int, default=0)
    ap.add_argument("--text-pool-layers", type=int, default=1)
    ap.add_argument("--embed-dim", type=int, default=1024)
    ap.add_argument("--feat-dropout", type=float, default=0.0)
    ap.add_argument("--text-dropout", type=float, default=0.0)
    ap.add_argument("--loss", default="mh")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lr-scale", type=float, default=0.1)
    ap.add_argument("--lr-decay-epoch", type=int, default=None)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--early-stop", type=int, default=3)
    ap.add_argument("--test", action="store_true", help="also report f8k_extra (never for choosing)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    train_ds = load_dataset(args.data_root / "f30k8k_train")
    val_ds = load_dataset(args.data_root / "f30k8k_val")
    config = VSEConfig(
        backbone="efficientnet-lite2", pooling=args.pooling, fusion=args.fusion,
        img_head=args.img_head, text_encoder=args.text_encoder, text_head=args.text_head,
        tuned_layers=args.tuned_layers, tuned_blocks=args.tuned_blocks, text_pool_layers=args.text_pool_layers, embed_dim=args.embed_dim, feat_dropout=args.feat_dropout,
    )
    text_cache = None
    if args.text_encoder == "minilm":
        from training.text_cache import build_hidden_cache

        t0 = time.time()
        if args.tuned_layers == 0 and args.text_dropout == 0:
            from training.text_cache import build_hidden_caches, pooled_features

            uptos = list(range(6 - args.text_pool_layers + 1, 7))
            caches = build_hidden_caches(
                MiniLMTextEncoder(64, 0), train_ds.captions, uptos,
                [args.cache / f"minilm_hidden_l{u}_f30k8k_train.npz" for u in uptos],
            )
            text_cache = pooled_features(caches)
        else:
            upto = min(6 - args.tuned_layers, 6 - args.text_pool_layers + 1)
            text_cache = build_hidden_cache(
                MiniLMTextEncoder(64, 0), train_ds.captions, upto,
                args.cache / f"minilm_hidden_l{upto}_f30k8k_train.npz",
            )
        log.info("text cache ready in %.0fs", time.time() - t0)
    opts = TrainOptions(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_scale_pretrained=args.lr_scale,
        lr_decay_epoch=args.lr_decay_epoch, weight_decay=args.weight_decay, warmup_steps=args.warmup,
        loss=args.loss, cache_dir=str(args.cache / "f30k8k_train"), views=tuple(args.views.split(",")),
        text_dropout=args.text_dropout, early_stop=args.early_stop, seed=args.seed,
    )
    out = args.out_dir / f"{args.name}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    summary = train(
        config, train_ds, val_ds, out, opts, val_cache=args.cache / "f30k8k_val",
        text_cache=text_cache, progress=False,
    )
    result = {"name": args.name, "args": vars(args), "best_val_rsum": summary["best_rsum"],
              "minutes": round((time.time() - t0) / 60, 1)}
    best_epoch = max(summary["history"], key=lambda h: h.get("rsum", -1))
    result["best_epoch"] = best_epoch["epoch"]
    if args.test:
        from engine.vse.checkpoint import load_checkpoint

        model, _ = load_checkpoint(out)
        test = evaluate_model(model, load_dataset(args.data_root / "f8k_extra"),
                              feature_cache=args.cache / "f8k_extra")
        result["test_rsum"] = test["rsum"]
    with open(args.out_dir / "results.jsonl", "a") as fh:
        fh.write(json.dumps(result, default=str) + "\n")
    log.info("RESULT %s", json.dumps({k: result[k] for k in result if k != "args"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
