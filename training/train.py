"""Training loop: end-to-end (images decoded each step) or on cached frozen-backbone features.

VSE++ recipe by default: Adam lr 2e-4 halved at the midpoint, grad clip 2.5, batch 128,
margin 0.2, MH loss, 30 epochs. Every epoch is one pass over all training captions, each with
its image. Validation every epoch (R@K both directions, rsum); the best-rsum model is written
to `out`, a resume file beside it, a CSV/JSON log and PNG curves.
CUDA + AMP when available; DDP when launched by torchrun (WORLD_SIZE > 1, training/distributed.py).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from engine.vse.checkpoint import save_checkpoint
from engine.vse.model import VSEConfig, VSEModel
from engine.vse.text_encoders import GRUTextEncoder, MiniLMTextEncoder, tokenize
from training.augment import train_transform
from training.batches import (
    Batch,
    CachedImageFeatures,
    CachedTailInputs,
    CachedTokenStates,
    CaptionTexts,
    PixelImages,
    PooledTextFeatures,
    TrainingStep,
)
from training.data import CaptionDataset
from training.distributed import broadcast_flag, setup_distributed
from training.evaluate import evaluate_model
from training.features import early_stage_channels
from training.loss import ContrastiveLoss, InfoNCELoss

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-4
    lr_decay_epoch: int | None = None  # default: the midpoint
    lr_scale_pretrained: float = 0.1  # tuned transformer layers / fine-tuned backbone
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 2.5
    margin: float = 0.2
    loss: str = "mh"  # mh | sh | infonce
    max_steps: int | None = None  # stop early (smoke tests)
    workers: int = 2
    seed: int = 0
    cache_dir: str | None = None  # cached frozen-backbone features (precomputed mode)
    views: tuple[str, ...] = ("orig", "flip")
    text_dropout: float = 0.0  # token/word dropout on training captions
    early_stop: int = 0  # stop after this many epochs without val improvement (0 = never)
    threads: int | None = None
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- vocabulary


def build_vocab(captions: list[str], min_count: int = 1) -> tuple[list[str], dict[str, Any]]:
    """Training-caption vocabulary (words by frequency) and stats; GloVe covers the rest."""
    counts: dict[str, int] = {}
    lengths = []
    for c in captions:
        toks = tokenize(c)
        lengths.append(len(toks))
        for t in toks:
            counts[t] = counts.get(t, 0) + 1
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    stats = {
        "n_captions": len(captions),
        "n_tokens": int(sum(lengths)),
        "n_types": len(counts),
        "vocab_size": len(words),
        "mean_length": float(np.mean(lengths)) if lengths else 0.0,
        "max_length": int(max(lengths)) if lengths else 0,
    }
    return words, stats


# ---------------------------------------------------------------- data feeding


class _PixelPairs(Dataset):
    """(image tensor, caption) pairs, one per caption, for end-to-end training."""

    def __init__(self, ds: CaptionDataset, transform: Any) -> None:
        self.paths = [it.path for it in ds.items]
        self.captions = ds.captions
        self.cap_img = ds.caption_image
        self.transform = transform

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        with Image.open(self.paths[self.cap_img[i]]) as im:
            x = self.transform(im.convert("RGB"))
        return x, self.captions[i]


def _collate(batch: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


class CachedFeed:
    """Batches from cached image features (+ cached MiniLM hidden states, or pooled MiniLM
    features as an (n_captions, d) array, when available)."""

    def __init__(
        self, ds: CaptionDataset, cache_dir: Path, views: tuple[str, ...], text_cache: Any,
        tuned_blocks: int = 0, early_channels: int = 0,
    ) -> None:
        from training.features import load_cached, load_tail_inputs

        names = json.loads((cache_dir / "images.json").read_text())
        if names != [it.path.name for it in ds.items]:
            raise ValueError(f"feature cache {cache_dir} does not match the dataset's images")
        self.views = []
        # with tuned backbone blocks the "grid" slot holds the activations entering them, and
        # only the stage maps tapped before them are kept
        self.tail = tuned_blocks > 0
        for v in views:
            g, s = load_cached(cache_dir, v)
            if tuned_blocks > 0:
                g, s = load_tail_inputs(cache_dir, v, tuned_blocks), s[:, :early_channels]
            # into RAM as fp16: random access to a memmap would thrash on a cold page cache
            self.views.append((np.ascontiguousarray(g), np.ascontiguousarray(s)))
        self.captions = ds.captions
        self.cap_img = np.asarray(ds.caption_image)
        self.text_cache = text_cache

    def __len__(self) -> int:
        return len(self.captions)

    def batches(
        self, order: np.ndarray, bs: int, rng: np.random.Generator, rank: int = 0, world: int = 1
    ) -> Iterator[Batch]:
        """Batches of `bs` pairs in `order`. Under torchrun every process walks the same order
        and view draws (same `rng` seed) through batches of world * bs and takes its own
        contiguous share, so the processes together see exactly one process's batches."""
        step = bs * world
        for start in range(0, len(order) - step + 1, step):  # drop the ragged last batch
            share = slice(rank * bs, (rank + 1) * bs)
            idx = order[start : start + step][share]
            v = rng.integers(0, len(self.views), size=step)[share]
            imgs = self.cap_img[idx]
            grid = torch.from_numpy(np.stack([self.views[vi][0][j] for vi, j in zip(v, imgs, strict=True)]))
            stages = torch.from_numpy(np.stack([self.views[vi][1][j] for vi, j in zip(v, imgs, strict=True)]))
            images = CachedTailInputs(grid, stages) if self.tail else CachedImageFeatures(grid, stages)
            if isinstance(self.text_cache, np.ndarray):
                texts: Any = PooledTextFeatures(torch.from_numpy(self.text_cache[idx]))
            elif self.text_cache is not None:
                h, m = self.text_cache.batch(idx)
                texts = CachedTokenStates(h, m, self.text_cache.upto)
            else:
                texts = CaptionTexts([self.captions[i] for i in idx])
            yield Batch(images, texts)


# ---------------------------------------------------------------- optimiser


def make_optimizer(model: VSEModel, opts: TrainOptions) -> torch.optim.Optimizer:
    pretrained, fresh = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # weights that start from a pretrained network move slower than the new heads
        (pretrained if name.startswith(("img.backbone.", "txt.bert.")) else fresh).append(p)
    groups = [{"params": fresh, "lr": opts.lr, "base_lr": opts.lr}]
    if pretrained:
        lr = opts.lr * opts.lr_scale_pretrained
        groups.append({"params": pretrained, "lr": lr, "base_lr": lr})
    if opts.weight_decay > 0:
        # decoupled decay: plain Adam's L2 would be rescaled away by the adaptive step
        return torch.optim.AdamW(groups, lr=opts.lr, weight_decay=opts.weight_decay)
    return torch.optim.Adam(groups, lr=opts.lr)


def set_lr(opt: torch.optim.Optimizer, epoch: int, step: int, opts: TrainOptions) -> None:
    decay_at = opts.lr_decay_epoch if opts.lr_decay_epoch is not None else opts.epochs // 2
    factor = 0.5 if epoch >= decay_at > 0 else 1.0
    if opts.warmup_steps and step < opts.warmup_steps:
        factor *= (step + 1) / opts.warmup_steps
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor


# ---------------------------------------------------------------- main loop


def train(
    config: VSEConfig,
    train_ds: CaptionDataset,
    val_ds: CaptionDataset | None,
    out: Path,
    opts: TrainOptions,
    resume: bool = False,
    val_cache: Path | None = None,
    text_cache: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, validate each epoch, keep the best-rsum checkpoint at `out`. Returns a summary."""
    from tqdm import tqdm

    rank, world, device = setup_distributed()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed + rank)
    random.seed(opts.seed + rank)
    # the data order and view draws are the same on every process (CachedFeed.batches)
    rng = np.random.default_rng(opts.seed)
    use_amp = device.type == "cuda"

    vocab, vocab_stats = (None, None)
    if config.text_encoder in ("gru", "bigru"):
        vocab, vocab_stats = build_vocab(train_ds.captions)
    model = VSEModel(config, vocab=vocab).to(device)
    if isinstance(model.txt, MiniLMTextEncoder):
        model.txt.token_dropout = opts.text_dropout
    elif isinstance(model.txt, GRUTextEncoder):
        model.txt.word_dropout = opts.text_dropout
    criterion: nn.Module = (
        InfoNCELoss() if opts.loss == "infonce" else ContrastiveLoss(opts.margin, max_violation=opts.loss == "mh")
    )
    criterion.to(device)
    optimizer = make_optimizer(model, opts)
    if any(p.requires_grad for p in criterion.parameters()):
        # the temperature is trained with the heads (it is not part of the model)
        optimizer.add_param_group({"params": list(criterion.parameters()), "lr": opts.lr, "base_lr": opts.lr})
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    out = Path(out)
    resume_path = out.with_suffix(".resume.pt")
    log_csv, log_json = out.with_suffix(".log.csv"), out.with_suffix(".log.json")
    history: list[dict[str, Any]] = []
    # -inf, not -1: without a val set the score is -loss, and summed losses exceed 1
    start_epoch, step, best = 0, 0, -math.inf
    if resume and resume_path.exists():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        criterion.load_state_dict(state.get("criterion", {}))
        start_epoch, step, best = state["epoch"] + 1, state["step"], state["best_rsum"]
        history = state["history"]
        log.info("resumed from %s at epoch %d", resume_path, start_epoch)

    net: nn.Module = TrainingStep(model, criterion, use_amp)
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )

    cached = opts.cache_dir is not None
    if cached:
        if config.finetune:
            raise ValueError("precomputed features need a frozen backbone")
        feed = CachedFeed(
            train_ds, Path(opts.cache_dir), tuple(opts.views), text_cache, config.tuned_blocks,
            early_stage_channels(model.img.backbone, config.tuned_blocks) if config.tuned_blocks else 0,
        )
        n_pairs = len(feed)
    else:
        pairs = _PixelPairs(train_ds, train_transform(model.img.backbone.mean, model.img.backbone.std, config.image_size))
        sampler = torch.utils.data.DistributedSampler(pairs, world, rank) if world > 1 else None
        loader = DataLoader(
            pairs, batch_size=opts.batch_size, shuffle=sampler is None, sampler=sampler,
            num_workers=opts.workers, collate_fn=_collate, drop_last=True,
            persistent_workers=opts.workers > 0,
        )
        n_pairs = len(pairs)

    args_record = {"config": config.to_dict(), "options": asdict(opts)}
    data_record = {"train": train_ds.describe(), "val": val_ds.describe() if val_ds else None, "vocab": vocab_stats}
    stale = 0
    for epoch in range(start_epoch, opts.epochs):
        model.train()
        t0 = time.time()
        losses = []
        if cached:
            order = rng.permutation(n_pairs)
            iterator: Iterator[Batch] = feed.batches(order, opts.batch_size, rng, rank, world)
            total = len(order) // (opts.batch_size * world)
        else:
            if world > 1:
                sampler.set_epoch(epoch)  # type: ignore[union-attr]
            iterator = (Batch(PixelImages(x), CaptionTexts(t)) for x, t in loader)
            total = len(loader)
        bar = tqdm(iterator, total=total, desc=f"epoch {epoch + 1}/{opts.epochs}", disable=not progress or rank != 0, leave=False)
        for batch in bar:
            set_lr(optimizer, epoch, step, opts)
            loss = net(batch.to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if opts.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], opts.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
            step += 1
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            if opts.max_steps and step >= opts.max_steps:
                break
        record: dict[str, Any] = {
            "epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)) if losses else math.nan,
            "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 1),
        }
        if rank == 0:
            metrics = None
            if val_ds is not None:
                model.eval()
                metrics = evaluate_model(model, val_ds, device=device, feature_cache=val_cache)
                record.update(flat_metrics(metrics))
            history.append(record)
            log.info("epoch %d: %s", epoch + 1, json.dumps(record))
            score = metrics["rsum"] if metrics else -record["loss"]
            if score > best:
                best, stale = score, 0
                save_checkpoint(
                    out, model,
                    training={"data": data_record, "args": args_record, "epoch": epoch + 1, "step": step},
                    metrics={"val": metrics} if metrics else {},
                )
            else:
                stale += 1
            keep = set(model.stored_keys())
            torch.save(
                {"model": {k: v for k, v in model.state_dict().items() if k in keep},
                 "optimizer": optimizer.state_dict(), "epoch": epoch,
                 "step": step, "best_rsum": best, "history": history,
                 "criterion": criterion.state_dict()},
                resume_path,
            )
            write_logs(history, log_csv, log_json)
            try:
                from training.plots import plot_history

                plot_history(history, out.with_suffix(".curves.png"))
            except Exception as exc:  # plotting must never kill a long training run
                log.warning("could not plot curves: %s", exc)
        if opts.max_steps and step >= opts.max_steps:
            break
        # val runs on rank 0 only, so it decides for every process
        if broadcast_flag(bool(opts.early_stop) and stale >= opts.early_stop):
            log.info("no val improvement for %d epochs: stopping", stale)
            break
    if world > 1:
        dist.barrier()
    return {"best_rsum": best, "history": history, "checkpoint": str(out)}


def flat_metrics(m: dict[str, Any]) -> dict[str, float]:
    out = {"rsum": m["rsum"]}
    for d in ("i2t", "t2i"):
        for k in ("r1", "r5", "r10", "medr"):
            out[f"{d}_{k}"] = m[d][k]
    return out


def write_logs(history: list[dict[str, Any]], csv_path: Path, json_path: Path) -> None:
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    json_path.write_text(json.dumps(history, indent=1))
