"""Train and evaluate the multilingual query head (engine/vse/multilingual.py).

The head maps frozen USE-multilingual sentence vectors into the shipped model's joint space,
so photo vectors already in a library answer queries in any of USE's 16 languages without
re-embedding. It is trained on English captions only (f30k8k_train without the selection
photos); USE's cross-language alignment carries the other languages. Choices (epoch, options,
memory settings) are made on the selection photos' English captions through USE plus the
hand-written Chinese val captions. Targets come from the shipped model itself: its unit
image embedding of the caption's photo and its unit text embedding of the caption.

    python -m training.multilingual cache     # shipped-model targets + USE features -> cache/
    python -m training.multilingual train --out engine/assets/multilingual_head.npz
    python -m training.multilingual memory    # add the caption + pivot memories, choice sets with/without
    python -m training.multilingual evaluate  # f30k8k_val; --split f8k_extra once, after a choice
    python -m training.multilingual bench     # query encode p50/p99, Chinese and English
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.vse.model import VSEModel
from engine.vse.multilingual import (
    DEFAULT_HEAD,
    MultilingualHead,
    USEEncoder,
    one_torch_thread,
    use_record,
)
from training.data import CaptionDataset, load_jsonl
from training.evaluate import embed_captions, embed_dataset_images
from training.metrics import ranks_from_sims

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEFAULT_CACHE = ROOT / "cache" / "multilingual"


def _split_dir(cache: Path, model_id: str, split: str) -> Path:
    return cache / model_id / split


def _unit_images(embedder: Any, paths: Sequence[Path], batch: int = 16) -> np.ndarray:
    """Unit image embeddings as the app computes them (ONNX: the int8 image graph that
    fills a library; torch: the checkpoint's pixel path)."""
    if not hasattr(embedder, "embed_unit_images"):
        return embed_dataset_images(embedder.model, list(paths), torch.device("cpu"))
    from PIL import Image

    out = []
    for s in range(0, len(paths), batch):
        arrs = []
        for p in paths[s : s + batch]:
            with Image.open(p) as im:
                arrs.append(embedder.prepare_image(im.convert("RGB")))
        out.append(embedder.embed_unit_images(np.stack(arrs)))
    return np.concatenate(out)


def _unit_texts(embedder: Any, texts: Sequence[str], batch: int = 128) -> np.ndarray:
    """Unit embeddings of the model's own (English) text tower."""
    if not hasattr(embedder, "embed_unit_texts"):
        return embed_captions(embedder.model, list(texts))
    # batches of similar length: padding is most of the work on short captions
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.empty((len(texts), embedder.embed_dim), np.float32)
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        out[idx] = embedder.embed_unit_texts([texts[i] for i in idx])
    return out


def cache_targets(embedder: Any, ds: CaptionDataset, cache: Path, split: str) -> Path:
    """The shipped model's unit image and text embeddings of one split (fp16, computed once,
    by the runtime the app runs: minutes for f30k8k_train on two cores)."""
    out = _split_dir(cache, embedder.model_id, split)
    out.mkdir(parents=True, exist_ok=True)
    names = [it.path.name for it in ds.items]
    runtime = getattr(embedder, "runtime", "torch")
    images_file, texts_file = out / "images.npy", out / "texts.npy"
    meta = out / "meta.json"
    if meta.exists() and images_file.exists() and texts_file.exists():
        old = json.loads(meta.read_text())
        if old.get("images") == names and old.get("runtime") == runtime:
            return out
    t0 = time.time()
    txt = _unit_texts(embedder, ds.captions)
    np.save(texts_file, txt.astype(np.float16))
    log.info("%s: %d caption embeddings in %.0f s (%s)", split, len(txt), time.time() - t0, runtime)
    t0 = time.time()
    img = _unit_images(embedder, [it.path for it in ds.items])
    np.save(images_file, img.astype(np.float16))
    log.info("%s: %d image embeddings in %.0f s (%s)", split, len(img), time.time() - t0, runtime)
    meta.write_text(json.dumps({"images": names, "caption_image": ds.caption_image, "runtime": runtime,
                                "precision": getattr(embedder, "precision", None)}))
    return out


def cache_use_features(encoder: USEEncoder, texts: Sequence[str], path: Path) -> np.ndarray:
    """USE vectors of `texts`, cached in `path` (float32) next to the texts they belong to."""
    key = path.with_suffix(".texts.json")
    if path.exists() and key.exists() and json.loads(key.read_text()) == list(texts):
        return np.load(path)
    t0 = time.time()
    feats = encoder.encode(list(texts))
    np.save(path, feats)
    key.write_text(json.dumps(list(texts), ensure_ascii=False))
    log.info("%s: %d USE vectors in %.0f s", path.name, len(feats), time.time() - t0)
    return feats


@dataclass
class SplitArrays:
    """One split's training/eval arrays: USE vectors of every caption, the shipped model's unit
    text embedding of the same captions, unit image embeddings, caption -> image index."""

    use: np.ndarray
    texts: np.ndarray
    images: np.ndarray
    caption_image: np.ndarray
    # USE vectors of the same captions put word by word into Chinese (training.pseudo_chinese)
    pseudo: np.ndarray | None = None


def load_split(cache: Path, model_id: str, split: str, encoder: USEEncoder) -> SplitArrays:
    out = _split_dir(cache, model_id, split)
    meta = json.loads((out / "meta.json").read_text())
    ds = load_jsonl(DATA / split)
    if meta["images"] != [it.path.name for it in ds.items]:
        raise RuntimeError(f"{out} was cached for another image list; rerun `cache`")
    return SplitArrays(
        use=cache_use_features(encoder, ds.captions, out / "use.npy"),
        texts=np.load(out / "texts.npy").astype(np.float32),
        images=np.load(out / "images.npy").astype(np.float32),
        caption_image=np.asarray(meta["caption_image"]),
    )


# The selection set: f30k8k_train photos held out of the head and of the memories, with their
# Flickr8k-style captions (like f8k_extra's) and a gallery of about f8k_extra's size. f30k8k_val
# (242 photos, Flickr30K-style captions) could not see that the USE path loses more than the
# English tower among f8k_extra's photos. The shipped English model was trained on these photos,
# so the English tower's own figures there are inflated (R@1 75 against 31 on f8k_extra) and only
# comparisons between USE-path variants mean something on it.
SELECTION_EVERY = 12  # every 12th photo of f30k8k_train's captions.jsonl order: 583 photos, 2,915 captions


def selection_photos(n_images: int, every: int = SELECTION_EVERY) -> np.ndarray:
    """Boolean mask of the selection photos among a split's `n_images` photos."""
    mask = np.zeros(n_images, bool)
    mask[::every] = True
    return mask


def split_selection(train: SplitArrays, selected: np.ndarray) -> tuple[SplitArrays, SplitArrays, np.ndarray]:
    """(fit: the photos not selected and their captions, held: the selected ones, caption mask
    of fit), each with caption -> image indices into its own photos."""
    cap_held = selected[train.caption_image]

    def part(photos: np.ndarray, caps: np.ndarray) -> SplitArrays:
        remap = np.full(len(selected), -1)
        idx = np.flatnonzero(photos)
        remap[idx] = np.arange(len(idx))
        return SplitArrays(use=train.use[caps], texts=train.texts[caps], images=train.images[idx],
                           caption_image=remap[train.caption_image[caps]],
                           pseudo=None if train.pseudo is None else train.pseudo[caps])

    return part(~selected, ~cap_held), part(selected, cap_held), ~cap_held


# ---------------------------------------------------------------------------------------------
# The head and its training


@dataclass
class HeadOptions:
    kind: str = "linear"  # linear | mlp (linear + GELU MLP residual, starts as the linear map)
    hidden: int = 1024
    epochs: int = 20
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    dropout: float = 0.1  # on the USE input (the head's only regulariser besides early stop)
    # Gaussian noise (per dimension) added to the unit USE input while training: a translation
    # moves a caption's USE vector (cosine ~0.66 between an English caption and its Chinese
    # version on val), so the head should not hang on directions such a move disturbs
    noise: float = 0.04
    # share of training captions shown as their word-by-word Chinese version
    # (training.pseudo_chinese) instead of the English one, each epoch anew
    pseudo: float = 0.25
    # loss = w_image * InfoNCE(text -> photo) + w_text * InfoNCE(text -> its MiniLM embedding)
    #        + w_cos * (1 - cos(head, MiniLM embedding))
    w_image: float = 1.0
    # distillation into the MiniLM embedding: +5 selection-set rsum at w_text 1 (val_zh +1.7;
    # session 4 chose 0 on val alone, where it cost 2.5 val_zh rsum)
    w_text: float = 1.0
    w_cos: float = 0.0
    temperature: float = 0.05
    seed: int = 0


class TrainableHead(nn.Module):
    """The training twin of engine.vse.multilingual.MultilingualHead (same arithmetic)."""

    def __init__(self, in_dim: int, out_dim: int, opts: HeadOptions) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.drop = nn.Dropout(opts.dropout)
        self.mlp: nn.Sequential | None = None
        if opts.kind == "mlp":
            self.mlp = nn.Sequential(nn.Linear(in_dim, opts.hidden), nn.GELU(), nn.Linear(opts.hidden, out_dim))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        elif opts.kind != "linear":
            raise ValueError(f"unknown head kind {opts.kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        y = self.fc(x)
        if self.mlp is not None:
            y = y + self.mlp(x)
        return F.normalize(y, dim=-1)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"fc_w": self.fc.weight, "fc_b": self.fc.bias}
        if self.mlp is not None:
            out.update(mlp1_w=self.mlp[0].weight, mlp1_b=self.mlp[0].bias,
                       mlp2_w=self.mlp[2].weight, mlp2_b=self.mlp[2].bias)
        return {k: v.detach().cpu().numpy() for k, v in out.items()}


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean cross-entropy of row i of `queries` picking row i of `keys` among all rows."""
    logits = queries @ keys.T / temperature
    return F.cross_entropy(logits, torch.arange(len(queries)))


def _epoch_batches(caption_image: np.ndarray, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Every caption once, in batches that hold at most one caption per photo, so no batch
    has a second positive posing as a negative."""
    by_image: dict[int, list[int]] = {}
    for j, i in enumerate(caption_image):
        by_image.setdefault(int(i), []).append(j)
    for caps in by_image.values():
        rng.shuffle(caps)
    rounds = max(len(c) for c in by_image.values())
    out = []
    for r in range(rounds):
        picks = np.array([c[r] for c in by_image.values() if r < len(c)])
        rng.shuffle(picks)
        out.extend(picks[s : s + batch] for s in range(0, len(picks), batch))
    rng.shuffle(out)
    return out


@dataclass
class ValSet:
    """Queries (USE vectors) whose right answer is image `target[k]` among `images`."""

    name: str
    use: np.ndarray
    target: np.ndarray
    scored: bool = True  # counts towards the epoch choice (else only reported)
    images: np.ndarray | None = None  # its own gallery (unit image embeddings); None: the val photos


def t2i_recalls(
    model: VSEModel, query_units: np.ndarray, image_units: np.ndarray, target: np.ndarray
) -> dict[str, float]:
    """t2i R@1/5/10 (percent) and their sum with the model's bank-normalised scores."""
    with torch.no_grad():
        q = model.text_query_vectors(torch.from_numpy(query_units).float()).numpy()
        g = model.image_vectors(torch.from_numpy(image_units).float()).numpy()
    sims = g @ q.T  # (n_images, n_queries)
    _, t2i = ranks_from_sims(sims, target)
    r = {f"r{k}": float(100 * np.mean(t2i < k)) for k in (1, 5, 10)}
    r["rsum"] = r["r1"] + r["r5"] + r["r10"]
    return r


def train_head(
    model: VSEModel, train: SplitArrays, val_images: np.ndarray, vals: Sequence[ValSet], opts: HeadOptions,
) -> tuple[TrainableHead, list[dict[str, Any]]]:
    """Fit one head; keeps the epoch with the best summed t2i rsum over `vals`."""
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    head = TrainableHead(train.use.shape[1], train.texts.shape[1], opts)
    opt = torch.optim.AdamW(head.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    use = torch.from_numpy(train.use)
    pseudo = torch.from_numpy(train.pseudo) if opts.pseudo and train.pseudo is not None else None
    if opts.pseudo and pseudo is None:
        raise ValueError("pseudo > 0 needs the split's pseudo-Chinese USE vectors")
    texts = F.normalize(torch.from_numpy(train.texts), dim=-1)
    images = F.normalize(torch.from_numpy(train.images), dim=-1)
    cap_img = torch.from_numpy(train.caption_image)
    steps = opts.epochs * len(_epoch_batches(train.caption_image, opts.batch, np.random.default_rng(0)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opts.lr, total_steps=steps, pct_start=0.1)
    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    for epoch in range(1, opts.epochs + 1):
        head.train()
        t0, total = time.time(), 0.0
        for idx in _epoch_batches(train.caption_image, opts.batch, rng):
            b = torch.from_numpy(idx)
            x = use[b]
            if pseudo is not None:
                x = torch.where((torch.rand(len(b)) < opts.pseudo)[:, None], pseudo[b], x)
            if opts.noise:
                x = x + opts.noise * torch.randn_like(x)
            pred = head(x)
            loss = torch.zeros(())
            if opts.w_image:
                loss = loss + opts.w_image * info_nce(pred, images[cap_img[b]], opts.temperature)
            if opts.w_text:
                loss = loss + opts.w_text * info_nce(pred, texts[b], opts.temperature)
            if opts.w_cos:
                loss = loss + opts.w_cos * (1 - (pred * texts[b]).sum(-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        head.eval()
        row: dict[str, Any] = {"epoch": epoch, "loss": total / len(train.use), "seconds": time.time() - t0}
        score = 0.0
        with torch.no_grad():
            for v in vals:
                gallery = val_images if v.images is None else v.images
                r = t2i_recalls(model, head(torch.from_numpy(v.use)).numpy(), gallery, v.target)
                row[v.name] = r
                score += r["rsum"] if v.scored else 0.0
        row["score"] = score
        history.append(row)
        log.info("epoch %d loss %.4f %s", epoch, row["loss"],
                 " ".join(f"{v.name} {row[v.name]['r1']:.1f}/{row[v.name]['r5']:.1f}/{row[v.name]['r10']:.1f}" for v in vals))
        if best is None or score > best[0]:
            best = (score, {k: v.clone() for k, v in head.state_dict().items()})
    assert best is not None
    head.load_state_dict(best[1])
    return head, history


def read_translations(path: Path) -> list[dict[str, str]]:
    """tests/data/*_zh.jsonl lines: {"image", "en", "zh"}."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


VAL_ZH = ROOT / "tests" / "data" / "f30k8k_val_zh.jsonl"
TEST_ZH = ROOT / "tests" / "data" / "f8k_extra_zh.jsonl"
SMOKE = ROOT / "tests" / "data" / "multilingual_smoke.jsonl"


def _val_sets(val: SplitArrays, encoder: USEEncoder, val_names: list[str], held: SplitArrays) -> list[ValSet]:
    """What picks the epoch and the memory settings: the selection photos' English captions
    through USE (gallery: the 583 selection photos) and the hand-written Chinese val captions;
    reported beside them: all English val captions through USE, and the Chinese set's captions
    in English through USE (how much of the gap is translation)."""
    rows = read_translations(VAL_ZH)
    index = {n: i for i, n in enumerate(val_names)}
    target = np.array([index[r["image"]] for r in rows])
    return [
        ValSet("sel_en_use", held.use, held.caption_image, images=held.images),
        ValSet("val_zh", encoder.encode([r["zh"] for r in rows]), target),
        ValSet("val_en_use", val.use, val.caption_image, scored=False),
        ValSet("val_zh_set_en_use", encoder.encode([r["en"] for r in rows]), target, scored=False),
    ] + ([ValSet("sel_pseudo_zh_use", held.pseudo, held.caption_image, scored=False, images=held.images)]
         if held.pseudo is not None else [])


def _choice_data(
    cache: Path, model_id: str, encoder: USEEncoder, pseudo: bool = False
) -> tuple[SplitArrays, SplitArrays, SplitArrays, np.ndarray, list[ValSet]]:
    """(train, fit, val, fit caption mask, choice sets): f30k8k_train split into the photos a
    head or memory may learn from (fit) and the selection photos, and the sets of _val_sets.
    With `pseudo`, train's captions carry their pseudo-Chinese USE vectors too."""
    train = load_split(cache, model_id, "f30k8k_train", encoder)
    if pseudo:
        from training.pseudo_chinese import use_pseudo_chinese

        captions = load_jsonl(DATA / "f30k8k_train").captions
        translated = use_pseudo_chinese(encoder).translate_all(captions)
        out = _split_dir(cache, model_id, "f30k8k_train")
        train.pseudo = cache_use_features(encoder, translated, out / "use_pseudo_zh.npy")
    val = load_split(cache, model_id, "f30k8k_val", encoder)
    val_names = json.loads((_split_dir(cache, model_id, "f30k8k_val") / "meta.json").read_text())["images"]
    fit, held, fit_captions = split_selection(train, selection_photos(len(train.images)))
    return train, fit, val, fit_captions, _val_sets(val, encoder, val_names, held)


def _load_shipped() -> tuple[VSEModel, str]:
    from engine.settings import DEFAULT_CHECKPOINT
    from engine.vse.checkpoint import load_checkpoint

    model, ckpt = load_checkpoint(DEFAULT_CHECKPOINT)
    return model, ckpt["model_id"]


def run_train(args: argparse.Namespace) -> int:
    opts = HeadOptions(**{k: getattr(args, k) for k in asdict(HeadOptions()) if getattr(args, k, None) is not None})
    model, model_id = _load_shipped()
    encoder = USEEncoder()
    train, fit, val, _, vals = _choice_data(args.cache, model_id, encoder, pseudo=opts.pseudo > 0)
    # the English tower on the same queries, for scale (on the selection photos it was trained on)
    held = vals[0]
    assert held.images is not None
    sel_texts = train.texts[selection_photos(len(train.images))[train.caption_image]]
    minilm = {"sel_en": t2i_recalls(model, sel_texts, held.images, held.target),
              "val_en": t2i_recalls(model, val.texts, val.images, val.caption_image)}
    log.info("English tower: %s", minilm)
    t0 = time.time()
    head, history = train_head(model, fit, val.images, vals, opts)
    best = max(history, key=lambda r: r["score"])
    summary = {
        "options": asdict(opts),
        "best_epoch": best["epoch"],
        "choice": {v.name: best[v.name] for v in vals},
        "english_tower": minilm,
        "train_seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(summary, indent=1))
    if args.log:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        args.log.write_text(json.dumps({"summary": summary, "history": history}, indent=1))
    if args.out:
        meta = {
            "model_id": model_id,
            "encoder": use_record(),
            "head": opts.kind,
            "training": {"data": f"f30k8k_train English captions, without the selection photos (every {SELECTION_EVERY}th)",
                         "chosen_on": "selection photos (English through USE) + f30k8k_val_zh", **summary},
        }
        MultilingualHead.write(args.out, head.arrays(), meta)
        log.info("wrote %s (%.1f MB)", args.out, args.out.stat().st_size / 1e6)
    return 0


@dataclass
class MemoryOptions:
    """The head's caption memory and pivot memory (engine.vse.multilingual.MultilingualHead)."""

    rank: int = 128  # PCA dims of the stored keys (0.91 of the caption embeddings' energy)
    k: int = 16
    tau: float = 0.05
    weight: float = 0.25
    # the pivot memory: the same captions' USE vectors as keys (weight 0: none)
    piv_rank: int = 128
    piv_k: int = 16
    piv_tau: float = 0.05
    piv_weight: float = 0.25
    # the pivot keys move this far from a caption's English USE vector towards its
    # pseudo-Chinese one (training.pseudo_chinese), where Chinese queries land
    piv_pseudo: float = 0.0


def _pca_int8(x: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(basis, int8 codes, row scales) of the unit rows of `x` in its uncentred top-`rank` right
    singular vectors, so that a key's inner product with a projected query approximates the
    full one."""
    t = F.normalize(torch.from_numpy(np.ascontiguousarray(x, np.float32)), dim=-1)
    _, _, vh = torch.linalg.svd(t, full_matrices=False)
    basis = vh[:rank].T.contiguous()  # (dim, rank)
    keys = t @ basis
    scale = keys.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    codes = torch.round(keys / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return basis.numpy(), codes.numpy(), scale.numpy()


def build_memory(
    texts: np.ndarray, captions: Sequence[str], opts: MemoryOptions,
    use: np.ndarray | None = None, allowed: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The caption memory of the unit caption embeddings `texts`, one row per distinct caption
    (`allowed`: a mask of the captions it may hold), and, with `use` (the same captions' USE
    vectors) and opts.piv_weight, the pivot memory's USE keys for the same rows."""
    seen: dict[str, int] = {}
    for j, c in enumerate(captions):
        if allowed is None or allowed[j]:
            seen.setdefault(c.strip().lower(), j)
    rows = sorted(seen.values())
    basis, codes, scale = _pca_int8(texts[rows], opts.rank)
    out = {"mem_basis": basis, "mem_codes": codes, "mem_scale": scale}
    if use is not None and opts.piv_weight:
        basis, codes, scale = _pca_int8(use[rows], opts.piv_rank)
        out.update(piv_basis=basis, piv_codes=codes, piv_scale=scale)
    return out


def _memory_meta(opts: MemoryOptions, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    memory = {"rank": opts.rank, "k": opts.k, "tau": opts.tau, "weight": opts.weight, "captions": n,
              "data": "f30k8k_train captions, the shipped model's English text tower"}
    pivot = {"rank": opts.piv_rank, "k": opts.piv_k, "tau": opts.piv_tau, "weight": opts.piv_weight,
             "data": "USE vectors of the caption memory's captions"
                     + (f", {opts.piv_pseudo} of the way to their pseudo-Chinese ones" if opts.piv_pseudo else ""),
             "pseudo": opts.piv_pseudo}
    return memory, pivot


def run_memory(args: argparse.Namespace) -> int:
    """Add (or replace) the caption (and pivot) memory of a head asset, from f30k8k_train's
    captions, and report the choice sets without and with it. Scored with memories of the fit
    captions only (the selection photos' own captions would answer their queries); the asset
    gets the memories of every training caption."""
    opts = MemoryOptions(**{k: getattr(args, k) for k in asdict(MemoryOptions()) if getattr(args, k, None) is not None})
    model, model_id = _load_shipped()
    head_path = args.head
    with np.load(head_path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in MultilingualHead.ARRAYS
                  if k in z.files and not k.startswith(("mem_", "piv_"))}
    if meta["model_id"] != model_id:
        raise SystemExit(f"{head_path} maps into {meta['model_id']}, not the shipped {model_id}")
    encoder = USEEncoder()
    train, _, val, fit_captions, vals = _choice_data(args.cache, model_id, encoder, pseudo=opts.piv_pseudo > 0)
    captions = load_jsonl(DATA / "f30k8k_train").captions
    pivot_keys = train.use
    if opts.piv_pseudo:
        assert train.pseudo is not None
        blend = (1 - opts.piv_pseudo) * train.use + opts.piv_pseudo * train.pseudo
        pivot_keys = blend / np.linalg.norm(blend, axis=1, keepdims=True)
    meta = {k: v for k, v in meta.items() if k not in ("format", "memory", "pivot")}
    scored = build_memory(train.texts, captions, opts, pivot_keys, fit_captions)
    meta["memory"], meta["pivot"] = _memory_meta(opts, len(scored["mem_codes"]))
    report: dict[str, Any] = {"options": asdict(opts)}
    for name, mem in (("without", {}), ("with", scored)):
        head = MultilingualHead({**arrays, **mem}, meta)
        row: dict[str, Any] = {}
        with torch.no_grad():
            for v in vals:
                gallery = val.images if v.images is None else v.images
                row[v.name] = t2i_recalls(model, head(torch.from_numpy(v.use)).numpy(), gallery, v.target)
        row["score"] = sum(row[v.name]["rsum"] for v in vals if v.scored)
        report[name] = row
    memory = build_memory(train.texts, captions, opts, pivot_keys)
    meta["memory"], meta["pivot"] = _memory_meta(opts, len(memory["mem_codes"]))
    if not opts.piv_weight:
        del meta["pivot"]
    meta["memory"]["choice"] = {k: report[k] for k in ("without", "with")}
    print(json.dumps(report, indent=1))
    out = args.out or head_path
    MultilingualHead.write(out, {**arrays, **memory}, meta)
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return 0


def _gallery(args: argparse.Namespace, split: str) -> tuple[Any, VSEModel, list[str], np.ndarray, Path]:
    """The real embedder (shipped model + multilingual head, on `--runtime`), the shipped
    model, a split's photo names and their stored-form vectors (what a library holds:
    `image_vectors` of the unit embeddings, cached), and the split's cache folder."""
    from engine.embedder import load_embedder

    embedder = load_embedder(None, device="cpu", runtime=args.runtime)
    if getattr(embedder, "multilingual", None) is None:
        raise SystemExit("the embedder has no multilingual tower (missing or mismatched head)")
    model, model_id = _load_shipped()
    if model_id != embedder.model_id:
        raise SystemExit(f"embedder model {embedder.model_id} is not the shipped {model_id}")
    ds = load_jsonl(DATA / split)
    out = cache_targets(embedder, ds, args.cache, split)
    units = torch.from_numpy(np.load(out / "images.npy").astype(np.float32))
    with torch.no_grad():
        vectors = model.image_vectors(units).numpy()
    return embedder, model, [it.path.name for it in ds.items], vectors, out


def _query_scores(embedder: Any, queries: Sequence[str], gallery: np.ndarray) -> np.ndarray:
    """(n_images, n_queries) search scores, through embed_texts + text_query as search does."""
    q = np.stack([embedder.text_query(v) for v in embedder.embed_texts(list(queries))])
    return gallery @ q.T


def _ranks_of(sims: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each query's photo (ties count against the query, as training.metrics)."""
    own = sims[target, np.arange(len(target))]
    return ((sims >= own[None, :]).sum(axis=0) - 1).astype(int)


def _ranks(embedder: Any, queries: Sequence[str], gallery: np.ndarray, target: np.ndarray) -> np.ndarray:
    return _ranks_of(_query_scores(embedder, queries, gallery), target)


def _weak_share(embedder: Any, sims: np.ndarray) -> float:
    """Share of queries whose best photo scores under the weak-match threshold (the search
    then says it found nothing convincing)."""
    return round(float(np.mean(sims.max(axis=0) < embedder.weak_match_threshold)), 3)


def _recalls(ranks: np.ndarray) -> dict[str, float]:
    r = {f"r{k}": round(float(100 * np.mean(ranks < k)), 1) for k in (1, 5, 10)}
    r["rsum"] = round(r["r1"] + r["r5"] + r["r10"], 1)
    return r


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def run_evaluate(args: argparse.Namespace) -> int:
    """Chinese vs English t2i over all photos of a split: f30k8k_val (choices) or f8k_extra
    (the public test, run once after the choice). English is checked twice: the set's own
    English captions through the routed embedder, and every caption of the split both through
    the routed embedder and through the English tower alone (equal unless routing sends an
    English caption to USE). f8k_extra adds the smoke queries."""
    from engine.settings import CAPTION_BANK

    split = args.split
    zh_set = args.set or (VAL_ZH if split == "f30k8k_val" else TEST_ZH)
    embedder, model, names, gallery, cache_dir = _gallery(args, split)
    index = {n: i for i, n in enumerate(names)}
    rows = read_translations(zh_set)
    target = np.array([index[r["image"]] for r in rows])
    tower = embedder.multilingual
    routed = {lang: sum(tower.needs(r[lang]) for r in rows) for lang in ("en", "zh")}
    sims = {lang: _query_scores(embedder, [r[lang] for r in rows], gallery) for lang in ("en", "zh")}
    en, zh = (_recalls(_ranks_of(sims[lang], target)) for lang in ("en", "zh"))
    ratio = {k: round(zh[k] / en[k], 3) if en[k] else None for k in ("r1", "r5", "r10")}
    real_tower = tower.load() if hasattr(tower, "load") else tower
    glosser, real_tower.glosser = real_tower.glosser, None
    try:
        zh_use_only = _recalls(_ranks(embedder, [r["zh"] for r in rows], gallery, target))
    finally:
        real_tower.glosser = glosser
    ds = load_jsonl(DATA / split)
    all_target = np.asarray(ds.caption_image)
    tower_only = torch.from_numpy(np.load(cache_dir / "texts.npy").astype(np.float32))
    with torch.no_grad():
        q = model.text_query_vectors(tower_only).numpy()
    tower_ranks = _ranks_of(gallery @ q.T, all_target)
    bank = _read_lines(CAPTION_BANK) if CAPTION_BANK.exists() else []
    report: dict[str, Any] = {
        "split": split, "set": str(zh_set.relative_to(ROOT)) if zh_set.is_relative_to(ROOT) else str(zh_set),
        "runtime": getattr(embedder, "runtime", "torch"), "model_id": embedder.model_id,
        "queries": len(rows), "gallery": len(names),
        "english": en, "chinese": zh, "chinese_over_english": ratio,
        "glosses": None if glosser is None else {"weight": real_tower.gloss_weight},
        "chinese_without_glosses": zh_use_only,
        "chinese_without_glosses_over_english": {
            k: round(zh_use_only[k] / en[k], 3) if en[k] else None for k in ("r1", "r5", "r10")
        },
        "routed_to_multilingual": routed,
        "weak_share": {lang: _weak_share(embedder, sims[lang]) for lang in ("en", "zh")},
        "weak_match_threshold": round(float(embedder.weak_match_threshold), 4),
        "all_english_captions": {
            "n": len(ds.captions),
            "routed_to_multilingual": sum(map(tower.needs, ds.captions)),
            "through_embedder": _recalls(_ranks(embedder, ds.captions, gallery, all_target)),
            "english_tower_only": _recalls(tower_ranks),
        },
        "caption_bank_lines_routed_to_multilingual": [sum(map(tower.needs, bank)), len(bank)],
    }
    if split == "f8k_extra":
        smoke = read_translations(SMOKE)
        with_target = [r for r in smoke if r["image"]]
        ranks = _ranks(embedder, [r["text"] for r in with_target], gallery,
                       np.array([index[r["image"]] for r in with_target]))
        report["smoke"] = [
            {"lang": r["lang"], "text": r["text"], "routed": tower.needs(r["text"]), "rank": int(k) + 1}
            for r, k in zip(with_target, ranks, strict=True)
        ]
        first = {it.path.name: it.captions[0] for it in ds.items}
        for r in (r for r in smoke if not r["image"]):
            qv = embedder.text_query(embedder.embed_texts([r["text"]])[0])
            top = np.argsort(-(gallery @ qv))[:3]
            report["smoke"].append({"lang": r["lang"], "text": r["text"], "routed": tower.needs(r["text"]),
                                    "top3": [first[names[i]] for i in top]})
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


def _percentiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def run_bench(args: argparse.Namespace) -> int:
    """Query encode latency end to end (text -> joint vector, VSEEmbedder.embed_texts), one
    query a call, every query distinct, after warm-up."""
    from engine.embedder import load_embedder

    embedder = load_embedder(None, device="cpu")
    if getattr(embedder, "multilingual", None) is None:
        raise SystemExit("the embedder has no multilingual tower (missing or mismatched head)")
    t0 = time.perf_counter()
    embedder.multilingual.warm_up()
    load_s = time.perf_counter() - t0
    rows = read_translations(TEST_ZH) + read_translations(VAL_ZH)
    sets = {"zh": [r["zh"] for r in rows], "en": [r["en"] for r in rows]}
    out: dict[str, Any] = {"use_load_s": round(load_s, 2), "torch_threads": torch.get_num_threads()}
    for name, queries in sets.items():
        for q in queries[:10]:
            embedder.embed_texts([q])
        times, cpu = [], []
        for q in queries[: args.n]:
            started, cpu0 = time.perf_counter(), time.process_time()
            embedder.embed_texts([q])
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu0)
        # CPU time beside wall time: on a shared machine the wall-clock tail is mostly waiting
        out[name] = {**_percentiles(times), "cpu": _percentiles(cpu)}
    # where a non-English query's time goes: USE (tokenizer + forward), then the head with its
    # caption memory; the rest of embed_texts is routing and the bank terms English pays too
    tower = embedder.multilingual
    use_t, head_t = [], []
    with one_torch_thread(), torch.no_grad():  # as MultilingualTextTower.embed runs a query
        for q in sets["zh"][: args.n]:
            t0 = time.perf_counter()
            u = tower.encoder.encode([q])
            t1 = time.perf_counter()
            tower.head(torch.from_numpy(u))
            use_t.append(t1 - t0)
            head_t.append(time.perf_counter() - t1)
    out["zh_parts"] = {"use": _percentiles(use_t), "head_and_memory": _percentiles(head_t)}
    out["loadavg_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))
    return 0


def _use_head(path: Path) -> None:
    """Make load_embedder read the head at `path` (both runtimes) instead of the shipped one."""
    import engine.settings
    import engine.vse.inference

    if not path.is_file():
        raise SystemExit(f"no head at {path}")
    engine.settings.MULTILINGUAL_HEAD = path
    engine.vse.inference.DEFAULT_HEAD = path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: 1 for cache/train; as the app leaves it for evaluate/bench)")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cache", help="cache shipped-model targets and USE features")
    c.add_argument("--splits", default="f30k8k_val,f30k8k_train")
    c.add_argument("--runtime", choices=("onnx", "torch"), default=None, help="default: the app's")
    t = sub.add_parser("train", help="fit a head on f30k8k_train, best epoch on f30k8k_val")
    for f, v in asdict(HeadOptions()).items():
        t.add_argument("--" + f.replace("_", "-"), dest=f, type=type(v), default=None)
    t.add_argument("--out", type=Path, default=None, help="write the head asset here")
    t.add_argument("--log", type=Path, default=None, help="write the per-epoch history here (json)")
    e = sub.add_parser("evaluate", help="Chinese vs English t2i on a split (f8k_extra: the public test)")
    e.add_argument("--split", choices=("f30k8k_val", "f8k_extra"), default="f30k8k_val",
                   help="f30k8k_val for choices; f8k_extra once, after them")
    e.add_argument("--set", type=Path, default=None, help="translations (default: the split's *_zh.jsonl)")
    e.add_argument("--runtime", choices=("onnx", "torch"), default=None, help="default: the app's")
    e.add_argument("--head", type=Path, default=None, help="a candidate head asset instead of the shipped one")
    m = sub.add_parser("memory", help="add the caption memory to a head asset; val with and without")
    m.add_argument("--head", type=Path, default=DEFAULT_HEAD)
    m.add_argument("--out", type=Path, default=None, help="default: overwrite --head")
    for f, v in asdict(MemoryOptions()).items():
        m.add_argument("--" + f, dest=f, type=type(v), default=None)
    b = sub.add_parser("bench", help="query encode p50/p99, Chinese and English")
    b.add_argument("-n", type=int, default=300)
    b.add_argument("--head", type=Path, default=None, help="a candidate head asset instead of the shipped one")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads or args.command in ("cache", "train", "memory"):
        torch.set_num_threads(args.threads or 1)
    if args.command == "cache":
        from engine.embedder import load_embedder

        embedder = load_embedder(None, device="cpu", runtime=args.runtime)
        encoder = USEEncoder()
        for split in args.splits.split(","):
            ds = load_jsonl(DATA / split)
            out = cache_targets(embedder, ds, args.cache, split)
            cache_use_features(encoder, ds.captions, out / "use.npy")
        return 0
    if args.command in ("evaluate", "bench") and args.head is not None:
        _use_head(args.head)
    commands = {"train": run_train, "memory": run_memory, "evaluate": run_evaluate, "bench": run_bench}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
