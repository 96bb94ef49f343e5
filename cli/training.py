"""Command-line subcommands from training/: train, evaluate, compare-losses."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from engine.errors import PhotosearchError
from engine.vse.backbones import BACKBONES
from engine.vse.model import TEXT_ENCODERS, VSEConfig

log = logging.getLogger(__name__)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path,
                   help="captions.jsonl folder, Karpathy dataset_*.json (or its folder), or COCO captions json")
    p.add_argument("--images", type=Path, help="image folder for Karpathy/COCO json files")
    p.add_argument("--val", type=Path, help="validation set (default: the Karpathy file's val split)")
    p.add_argument("--backbone", default="efficientnet-lite2", choices=BACKBONES)
    p.add_argument("--text-encoder", default="minilm", choices=TEXT_ENCODERS)
    p.add_argument("--finetune", action="store_true", help="train the backbone end to end")
    p.add_argument("--tuned-blocks", type=int, default=0,
                   help="EfficientNet-Lite: train only its last N blocks and 1x1 head (cached inputs)")
    p.add_argument("--pooling", default="gap", choices=("gap", "gpo"))
    p.add_argument("--fusion", action="store_true", help="fuse pooled mid-stage features")
    p.add_argument("--img-head", default="linear", choices=("linear", "mlp"))
    p.add_argument("--text-head", default="linear", choices=("linear", "mlp"))
    p.add_argument("--tuned-layers", type=int, default=0, help="MiniLM top layers to train")
    p.add_argument("--text-pool-layers", type=int, default=1,
                   help="MiniLM: mean-pool the outputs of the top N layers and concatenate them")
    p.add_argument("--embed-dim", type=int, default=1024)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--loss", default="mh", choices=("mh", "sh", "infonce"),
                   help="VSE++ hinge with hardest (mh) or summed (sh) negatives; infonce = softmax")
    p.add_argument("--margin", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lr-decay-epoch", type=int, default=None, help="halve lr here (default midpoint)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    p.add_argument("--text-dropout", type=float, default=0.0, help="word/token dropout on captions")
    p.add_argument("--feat-dropout", type=float, default=0.0)
    p.add_argument("--early-stop", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-cache", action="store_true",
                   help="frozen backbone: decode images every step instead of caching features")
    p.add_argument("--views", default="orig,flip", help="cached augmented views (frozen backbone)")
    p.add_argument("--cache-dir", type=Path, default=Path("cache/features"))
    p.add_argument("--seed", type=int, default=0)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train a matching model")
    _add_model_args(p)
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (best val rsum)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's .resume.pt")
    p.add_argument("--bank-size", type=int, default=4096,
                   help="after training, fit bank normalisation with this many training captions "
                        "and images, keeping it only if it raises val rsum (0 = off)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("evaluate", help="retrieval metrics of a model on a caption dataset")
    p.add_argument("--checkpoint", type=Path, help="default: the shipped model")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--images", type=Path)
    p.add_argument("--split", default="test", help="Karpathy split to evaluate (default test)")
    p.add_argument("--folds", type=int, default=None, help="5 = COCO 5x1K (default for 5000 images)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("compare-losses", help="train with MH and SH loss identically; markdown table")
    _add_model_args(p)
    p.add_argument("--out-dir", required=True, type=Path)
    p.set_defaults(func=cmd_compare_losses)


def _config(args: argparse.Namespace) -> VSEConfig:
    return VSEConfig(
        backbone=args.backbone, finetune=args.finetune, pooling=args.pooling, fusion=args.fusion,
        tuned_blocks=0 if args.finetune else args.tuned_blocks,
        img_head=args.img_head, text_encoder=args.text_encoder, text_head=args.text_head,
        tuned_layers=args.tuned_layers if args.text_encoder == "minilm" else 0,
        text_pool_layers=args.text_pool_layers if args.text_encoder == "minilm" else 1,
        embed_dim=args.embed_dim, feat_dropout=args.feat_dropout, image_size=args.image_size,
        grid_positions=-(-args.image_size // 32) ** 2,
    )


def _datasets(args: argparse.Namespace) -> tuple[Any, Any]:
    from training.data import load_dataset

    train_ds = load_dataset(args.data, split="train", images=args.images)
    if args.val is not None:
        val_ds = load_dataset(args.val, split="val", images=args.images)
    elif args.data.suffix == ".json" or not (args.data / "captions.jsonl").exists():
        val_ds = load_dataset(args.data, split="val", images=args.images)
    else:
        val_ds = None
    return train_ds, val_ds


def _prepare_caches(args: argparse.Namespace, config: VSEConfig, train_ds: Any, val_ds: Any) -> dict[str, Any]:
    """Frozen backbone: cache backbone features (and MiniLM lower-layer states) once."""
    if config.finetune or args.no_cache:
        return {}
    from training.features import cache_features

    def key(ds: Any) -> str:
        h = hashlib.sha256("\n".join(str(it.path) for it in ds.items).encode()).hexdigest()[:10]
        return f"{config.backbone}-{config.image_size}/{h}"

    out: dict[str, Any] = {}
    tdir = args.cache_dir / key(train_ds)
    cache_features(config.backbone, [it.path for it in train_ds.items], tdir, args.views.split(","),
                   config.tuned_blocks, size=config.image_size)
    out["cache_dir"] = str(tdir)
    if val_ds is not None:
        vdir = args.cache_dir / key(val_ds)
        cache_features(config.backbone, [it.path for it in val_ds.items], vdir, ["orig"],
                       config.tuned_blocks, size=config.image_size)
        out["val_cache"] = vdir
    if config.text_encoder == "minilm":
        from engine.vse.text_encoders import MiniLMTextEncoder
        from training.text_cache import build_hidden_cache

        # the cache holds the states the trained part starts from: below the tuned layers
        # and below the lowest pooled layer
        upto = min(6 - config.tuned_layers, 6 - config.text_pool_layers + 1)
        out["text_cache"] = build_hidden_cache(
            MiniLMTextEncoder(config.embed_dim, 0), train_ds.captions, upto,
            args.cache_dir / f"{key(train_ds)}-minilm-l{upto}.npz",
        )
    return out


def _prepare(args: argparse.Namespace) -> tuple[VSEConfig, Any, Any, dict[str, Any]]:
    """Config, train/val datasets and feature caches, once per command."""
    config = _config(args)
    train_ds, val_ds = _datasets(args)
    return config, train_ds, val_ds, _prepare_caches(args, config, train_ds, val_ds)


def _run_training(
    args: argparse.Namespace, out: Path, loss: str, prepared: tuple[VSEConfig, Any, Any, dict[str, Any]]
) -> dict[str, Any]:
    from training.train import TrainOptions, train

    config, train_ds, val_ds, caches = prepared
    opts = TrainOptions(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_decay_epoch=args.lr_decay_epoch,
        weight_decay=args.weight_decay, warmup_steps=args.warmup, margin=args.margin, loss=loss,
        max_steps=args.max_steps, workers=args.workers, seed=args.seed,
        cache_dir=caches.get("cache_dir"), views=tuple(args.views.split(",")),
        text_dropout=args.text_dropout, early_stop=args.early_stop,
    )
    return train(
        config, train_ds, val_ds, out, opts, resume=getattr(args, "resume", False),
        val_cache=caches.get("val_cache"), text_cache=caches.get("text_cache"),
        progress=sys.stderr.isatty(),
    )


def cmd_train(args: argparse.Namespace) -> int:
    logging.getLogger("training").setLevel(logging.INFO)
    from training.train import dist_info

    prepared = _prepare(args)
    summary = _run_training(args, args.out, args.loss, prepared)
    result = {"checkpoint": str(args.out), "best_val_rsum": summary["best_rsum"]}
    _, train_ds, val_ds, caches = prepared
    if args.bank_size > 0 and val_ds is not None and args.out.exists() and dist_info()[0] == 0:
        from training.bank import add_bank_to_checkpoint

        report = add_bank_to_checkpoint(
            args.out, train_ds, val_ds, args.bank_size,
            train_cache=Path(caches["cache_dir"]) if "cache_dir" in caches else None,
            val_cache=caches.get("val_cache"),
        )
        result["bank_beta"] = report["beta"]
        result["val_rsum_with_bank"] = max(report["val_rsum_by_beta"].values())
    print(json.dumps(result))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.settings import DEFAULT_CHECKPOINT
    from engine.vse.checkpoint import load_checkpoint
    from training.data import load_dataset
    from training.evaluate import evaluate_model

    ckpt = args.checkpoint or DEFAULT_CHECKPOINT
    if not Path(ckpt).exists():
        raise PhotosearchError(f"model checkpoint {ckpt} does not exist")
    model, meta = load_checkpoint(ckpt)
    ds = load_dataset(args.data, split=args.split, images=args.images)
    m = evaluate_model(model, ds, folds=args.folds)
    m["model_id"] = meta["model_id"]
    if args.json:
        print(json.dumps(m, indent=1))
    else:
        print(f"model {meta['model_id']} on {ds.name} ({m['n_images']} images)")
        for d, name in (("i2t", "image->text"), ("t2i", "text->image")):
            r = m[d]
            print(f"  {name}: R@1 {r['r1']:.1f}  R@5 {r['r5']:.1f}  R@10 {r['r10']:.1f}  medr {r['medr']:.0f}  meanr {r['meanr']:.1f}")
        print(f"  rsum {m['rsum']:.1f}")
    return 0


def cmd_compare_losses(args: argparse.Namespace) -> int:
    from training.plots import plot_compare

    logging.getLogger("training").setLevel(logging.INFO)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    prepared = _prepare(args)
    results = {}
    for loss in ("mh", "sh"):
        results[loss] = _run_training(args, args.out_dir / f"{loss}.pt", loss, prepared)
    rows = []
    for loss, res in results.items():
        hist = [h for h in res["history"] if "rsum" in h]
        if not hist:
            raise PhotosearchError("compare-losses needs a validation set (--val)")
        best = max(hist, key=lambda h: h["rsum"])
        rows.append(
            f"| {loss.upper()} | {best['i2t_r1']:.1f} | {best['i2t_r5']:.1f} | {best['i2t_r10']:.1f} "
            f"| {best['t2i_r1']:.1f} | {best['t2i_r5']:.1f} | {best['t2i_r10']:.1f} | {best['rsum']:.1f} | {best['epoch']} |"
        )
    table = "\n".join([
        f"Validation recall, MH vs SH, identical setup ({args.backbone}, {args.text_encoder}, "
        f"{args.epochs} epochs, best epoch by rsum)",
        "",
        "| loss | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | rsum | epoch |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    (args.out_dir / "compare_losses.md").write_text(table + "\n")
    plot_compare({k.upper(): v["history"] for k, v in results.items()}, args.out_dir / "compare_losses.png")
    print(table)
    return 0
