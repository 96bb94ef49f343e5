"""Training commands, the one training parser: train, evaluate, compare-losses, calibrate,
default-model.

`train` and `compare-losses` turn their flags into a `training.recipes.Recipe`; `default-model`
trains the shipped recipe, `DEFAULT_RECIPE`. All of them run it through `training.run`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.errors import PhotosearchError
from engine.settings import CAPTION_BANK, DEFAULT_CHECKPOINT

log = logging.getLogger(__name__)


class _LazyChoices:
    """argparse choices read from a module only when argparse consults them (a training
    command's arguments, its --help): the modules import torch, which every other command
    (search, status, ... served by ONNX Runtime) must not pay for (~1-2 s, ~300 MB)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _names(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.name))

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


BACKBONES = _LazyChoices("engine.vse.backbones", "BACKBONES")
TEXT_ENCODERS = _LazyChoices("engine.vse.model", "TEXT_ENCODERS")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path,
                   help="captions.jsonl folder, Karpathy dataset_*.json (or its folder), or COCO captions json")
    p.add_argument("--images", type=Path, help="image folder for Karpathy/COCO json files")
    p.add_argument("--val", type=Path, help="validation set (default: the Karpathy file's val split)")
    # A metavar keeps argparse from listing the (lazy) choices while building the parser.
    p.add_argument("--backbone", default="efficientnet-lite2", choices=BACKBONES, metavar="NAME",
                   help="image backbone, one of: %(choices)s (default %(default)s)")
    p.add_argument("--text-encoder", default="minilm", choices=TEXT_ENCODERS, metavar="NAME",
                   help="text encoder, one of: %(choices)s (default %(default)s)")
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
    p.add_argument("--batch-size", type=int, default=128,
                   help="pairs per step (per process under torchrun; the loss sees all processes' pairs)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lr-scale", type=float, default=0.1,
                   help="learning-rate factor for pretrained weights that train (tuned layers/blocks, --finetune)")
    p.add_argument("--lr-decay-epoch", type=int, default=None, help="halve lr here (default midpoint)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    p.add_argument("--text-dropout", type=float, default=0.0, help="word/token dropout on captions")
    p.add_argument("--feat-dropout", type=float, default=0.0)
    p.add_argument("--early-stop", type=int, default=0,
                   help="stop after N epochs without val improvement (0 = never)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-cache", action="store_true",
                   help="frozen backbone: decode images every step instead of caching features")
    p.add_argument("--views", default="orig,flip", help="cached augmented views (frozen backbone)")
    p.add_argument("--text-cache", default="hidden", choices=("hidden", "pooled"),
                   help="with cached features, MiniLM: cache token states below the trained/pooled "
                        "layers (hidden) or each pooled layer's output (pooled: only the head trains; "
                        "needs --tuned-layers 0 and --text-dropout 0)")
    p.add_argument("--cache-dir", type=Path, default=Path("cache/features"))
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op CPU threads (default: torch's; feature caching uses 2)")
    p.add_argument("--seed", type=int, default=0)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train a matching model")
    _add_model_args(p)
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (best val rsum)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's .resume.pt")
    p.add_argument("--bank-size", type=int, default=4096,
                   help="after training, fit bank normalisation with this many training captions "
                        "and images, keeping it only if it raises val rsum (0 = off)")
    p.add_argument("--test", type=Path, default=None,
                   help="also report rsum on this set after training (never used for any choice)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("evaluate", help="retrieval metrics of a model on a caption dataset")
    p.add_argument("--checkpoint", type=Path, help="default: the shipped model")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--images", type=Path)
    p.add_argument("--split", default="test", help="Karpathy split to evaluate (default test)")
    p.add_argument("--folds", type=int, default=None, help="5 = COCO 5x1K (default for 5000 images)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--attention", type=Path, default=None,
                   help="attention weights for the re-ranked table (default: the shipped ones; "
                        "reported whenever they are for this model)")
    p.add_argument("--no-rerank", action="store_true", help="skip the re-ranked table")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("compare-losses", help="train with MH and SH loss identically; markdown table")
    _add_model_args(p)
    p.add_argument("--out-dir", required=True, type=Path)
    p.set_defaults(func=cmd_compare_losses)

    p = subparsers.add_parser(
        "calibrate", help="re-calibrate a checkpoint's weak-match threshold on a validation set, in place"
    )
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path, help="validation set (never the test set)")
    p.add_argument("--images", type=Path)
    p.set_defaults(func=cmd_calibrate)

    p = subparsers.add_parser(
        "default-model", help="retrain the shipped model from ../shared/data (make default-model)",
        description="Train training.recipes.DEFAULT_RECIPE on DATA_ROOT/f30k8k_train (epochs chosen "
                    "on f30k8k_val), fit its bank and calibrate on f30k8k_val, and write the checkpoint "
                    "and the caption bank. f8k_extra is never read.",
    )
    p.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    p.add_argument("--cache-dir", type=Path, default=Path("cache/features"))
    p.add_argument("--run", type=Path, default=Path("cache/runs/default.pt"),
                   help="the training run's checkpoint, with its logs beside it")
    p.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--caption-bank", type=Path, default=CAPTION_BANK)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-train", type=Path, default=None,
                   help="ship an existing training run (bank, calibration) instead of training")
    p.set_defaults(func=cmd_default_model)


def recipe_from_args(args: argparse.Namespace, loss: str | None = None) -> Any:
    """The `Recipe` a train/compare-losses command line describes."""
    from engine.vse.model import TRANSFORMER_TEXT_ENCODERS, VSEConfig
    from training.recipes import Recipe
    from training.train import TrainOptions

    transformer = args.text_encoder in TRANSFORMER_TEXT_ENCODERS
    config = VSEConfig(
        backbone=args.backbone, finetune=args.finetune, pooling=args.pooling, fusion=args.fusion,
        tuned_blocks=0 if args.finetune else args.tuned_blocks,
        img_head=args.img_head, text_encoder=args.text_encoder, text_head=args.text_head,
        tuned_layers=args.tuned_layers if transformer else 0,
        text_pool_layers=args.text_pool_layers if transformer else 1,
        embed_dim=args.embed_dim, feat_dropout=args.feat_dropout, image_size=args.image_size,
        grid_positions=(-(-args.image_size // 32)) ** 2,
    )
    options = TrainOptions(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_scale_pretrained=args.lr_scale,
        lr_decay_epoch=args.lr_decay_epoch, weight_decay=args.weight_decay, warmup_steps=args.warmup,
        margin=args.margin, loss=loss or args.loss, max_steps=args.max_steps, workers=args.workers,
        seed=args.seed, views=tuple(args.views.split(",")), text_dropout=args.text_dropout,
        early_stop=args.early_stop,
    )
    try:
        return Recipe(
            model=config, options=options, cached_features=not (args.finetune or args.no_cache),
            text_cache=args.text_cache, bank_size=getattr(args, "bank_size", 0),
        )
    except ValueError as exc:
        raise PhotosearchError(str(exc)) from exc


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


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def cmd_train(args: argparse.Namespace) -> int:
    logging.getLogger("training").setLevel(logging.INFO)
    from training.distributed import dist_info
    from training.run import prepare, run_recipe

    _set_threads(args.threads)
    recipe = recipe_from_args(args)
    train_ds, val_ds = _datasets(args)
    data = prepare(recipe, train_ds, val_ds, args.cache_dir, threads=args.threads or 2)
    summary = run_recipe(recipe, data, args.out, resume=args.resume, progress=sys.stderr.isatty())
    if dist_info()[0] != 0:
        return 0  # rank 0 reports
    result: dict[str, Any] = {"checkpoint": str(args.out), "best_val_rsum": summary["best_rsum"]}
    if "bank" in summary:
        result["bank_beta"] = summary["bank"]["beta"]
        result["val_rsum_with_bank"] = max(summary["bank"]["val_rsum_by_beta"].values())
    if args.test is not None:
        from engine.vse.checkpoint import load_checkpoint
        from training.data import load_dataset
        from training.evaluate import evaluate_model

        model, _ = load_checkpoint(args.out)
        result["test_rsum"] = evaluate_model(model, load_dataset(args.test, split="test", images=args.images))["rsum"]
    print(json.dumps(result))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
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
    weights = None
    if not args.no_rerank:
        from engine import settings
        from engine.vse.attention_runtime import load_weights

        weights = load_weights(args.attention or settings.ATTENTION_WEIGHTS, meta["model_id"])
    if weights is not None:
        from training.evaluate import evaluate_reranked

        m["reranked"] = evaluate_reranked(model, ds, weights)
    if args.json:
        print(json.dumps(m, indent=1))
        return 0
    print(f"model {meta['model_id']} on {ds.name} ({m['n_images']} images)")
    for d, name in (("i2t", "image->text"), ("t2i", "text->image")):
        r = m[d]
        print(f"  {name}: R@1 {r['r1']:.1f}  R@5 {r['r5']:.1f}  R@10 {r['r10']:.1f}  medr {r['medr']:.0f}  meanr {r['meanr']:.1f}")
    print(f"  rsum {m['rsum']:.1f}")
    if weights is not None:
        rr = m["reranked"]
        print(f"attention re-ranking of the top {rr['k']} ({rr['direction']}, alpha {rr['alpha']:g}, "
              f"regions int8; {rr['n_images']} images, one fold)")
        heads = [f"{d} {r}" for d in ("i2t", "t2i") for r in ("R@1", "R@5", "R@10")] + ["rsum"]
        print(" " * 20 + "  ".join(f"{h:>8}" for h in heads))
        for label, key in (("without re-ranking", "without"), ("with re-ranking", "with")):
            x = rr[key]
            values = [x[d][r] for d in ("i2t", "t2i") for r in ("r1", "r5", "r10")] + [x["rsum"]]
            print(f"  {label:<18}" + "  ".join(f"{v:8.1f}" for v in values))
    return 0


def cmd_compare_losses(args: argparse.Namespace) -> int:
    from training.plots import plot_compare
    from training.run import prepare, run_recipe

    logging.getLogger("training").setLevel(logging.INFO)
    _set_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe_from_args(args)
    train_ds, val_ds = _datasets(args)
    data = prepare(recipe, train_ds, val_ds, args.cache_dir, threads=args.threads or 2)
    results = {}
    for loss in ("mh", "sh"):
        recipe = replace(recipe_from_args(args, loss=loss), bank_size=0)
        results[loss] = run_recipe(recipe, data, args.out_dir / f"{loss}.pt", progress=sys.stderr.isatty())
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


def cmd_calibrate(args: argparse.Namespace) -> int:
    from training.calibrate import recalibrate_checkpoint
    from training.data import load_dataset

    if not args.checkpoint.exists():
        raise PhotosearchError(f"model checkpoint {args.checkpoint} does not exist")
    calib = recalibrate_checkpoint(args.checkpoint, load_dataset(args.data, split="val", images=args.images))
    print(json.dumps(calib))
    return 0


def cmd_default_model(args: argparse.Namespace) -> int:
    from training.data import load_dataset
    from training.recipes import DEFAULT_RECIPE
    from training.run import PreparedData, feature_cache_dir, fit_bank, prepare, run_recipe
    from training.ship import ship_checkpoint

    logging.getLogger("training").setLevel(logging.INFO)
    _set_threads(args.threads)
    recipe = DEFAULT_RECIPE
    train_ds = load_dataset(args.data_root / "f30k8k_train")
    val_ds = load_dataset(args.data_root / "f30k8k_val")
    if args.skip_train is None:
        data = prepare(recipe, train_ds, val_ds, args.cache_dir, threads=args.threads)
        run_recipe(recipe, data, args.run)
    else:
        # feature caches are used when an earlier run left them, never computed for this
        data = PreparedData(train_ds, val_ds, feature_cache_dir(recipe, train_ds, args.cache_dir),
                            feature_cache_dir(recipe, val_ds, args.cache_dir))
        args.run.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.skip_train, args.run)
        fit_bank(recipe, data, args.run)
    print(json.dumps(ship_checkpoint(args.run, train_ds, val_ds, args.out, args.caption_bank)))
    return 0
