"""Weak-match threshold and caption bank for a trained model.

Threshold: on a validation set, every caption is used as a query; the threshold is the
best-hit score that 95% of them exceed (see `weak_match_threshold`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.data import CaptionDataset

log = logging.getLogger(__name__)


def weak_match_threshold(
    sims: np.ndarray, caption_image: Sequence[int], keep_fraction: float = 0.95
) -> dict[str, float]:
    """sims: (n_images, n_captions). Returns the threshold and the figures behind it.

    "No good match" should mean "nothing in the library looks like what you describe", not
    "the top hit is uncertain": a user describing the kind of photo the library holds should
    rarely see the banner. So the threshold is the best-hit score that `keep_fraction` of
    validation captions exceed when searched against the validation photos (its 5% point by
    default). The figures also say how often the flag fires when each caption's own photo is
    removed from the gallery, and the top-1 accuracy of the queries that are not flagged.
    """
    cap_img = np.asarray(caption_image)
    cols = np.arange(sims.shape[1])
    best = sims.max(axis=0)
    masked = sims.copy()
    masked[cap_img, cols] = -np.inf
    best_absent = masked.max(axis=0)
    thr = float(np.quantile(best, 1.0 - keep_fraction))
    correct = sims.argmax(axis=0) == cap_img
    return {
        "weak_match_threshold": round(thr, 4),
        "method": f"{1 - keep_fraction:.0%} quantile of the best-hit score of validation captions",
        "n_queries": int(len(best)),
        "n_images": int(sims.shape[0]),
        "top1_accuracy": float(correct.mean()),
        "flagged_when_present": float((best < thr).mean()),
        "flagged_when_own_photo_removed": float((best_absent < thr).mean()),
        "accuracy_when_not_flagged": float(correct[best >= thr].mean()),
    }


def recalibrate_checkpoint(checkpoint: Path, ds: CaptionDataset) -> dict[str, Any]:
    """Re-calibrate a checkpoint's weak-match threshold on a validation set, in place
    (`python main.py calibrate`). Only the calibration entry changes; the weights and so the
    model id stay the same."""
    import os
    import shutil

    import torch

    from engine.vse.checkpoint import load_checkpoint
    from training.evaluate import embed_captions, embed_dataset_images, joint_vectors

    model, _meta = load_checkpoint(checkpoint)
    img = embed_dataset_images(model, [it.path for it in ds.items])
    txt = embed_captions(model, ds.captions)
    img, txt = joint_vectors(model, img, txt, texts_as_queries=True)
    calib = weak_match_threshold(img @ txt.T, ds.caption_image)
    calib["calibrated_on"] = ds.name
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    raw["calibration"] = calib
    tmp = checkpoint.with_suffix(".tmp.pt")
    torch.save(raw, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    shutil.move(tmp, checkpoint)
    log.info("calibration of %s: %s", checkpoint, calib)
    return calib


def write_caption_bank(captions: Sequence[str], path: Path) -> int:
    """Deduplicated (case-insensitive) training captions, one per line, first-seen order."""
    seen: set[str] = set()
    lines = []
    for c in captions:
        c = " ".join(c.split())
        if c.endswith(" ."):
            c = c[:-2]  # Flickr8k's tokenised full stop reads oddly as a suggestion
        if c and c.lower() not in seen:
            seen.add(c.lower())
            lines.append(c)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)



# -- confident matches (issue 14) --------------------------------------------------------

CUTOFF_Z = (1.0, 1.5, 2.0, 2.5, 3.0)
CUTOFF_GAP = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def cutoff_figures(
    sims: np.ndarray, caption_image: Sequence[int], z: float, gap: float,
    weak_threshold: float | None = None, sample: int = 1000,
) -> dict[str, float]:
    """How the confident-match rule of engine.search.Cutoff does when every caption searches
    the gallery: sims (n_images, n_captions), in the form the photo search scores them.

    The gallery statistics come from every k-th image (k = n // sample), as the library's
    `Catalog.sample_vectors` takes them. `keep` is the share of captions whose own photo is a
    confident match, `drop` the share of (caption, photo) pairs that fall under the divider."""
    cap_img = np.asarray(caption_image)
    cols = np.arange(sims.shape[1])
    stride = max(1, sims.shape[0] // sample)
    ref = sims[::stride][:sample]
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    best = sims.max(axis=0)
    cut = np.minimum(np.maximum(mean + z * std, best - gap * std), best)
    if weak_threshold is not None:
        cut = np.where(best < weak_threshold, np.inf, cut)
    conf = sims >= cut
    counts = conf.sum(axis=0)
    return {
        "z": z, "gap": gap, "n_images": int(sims.shape[0]), "n_queries": int(sims.shape[1]),
        "keep": float(conf[cap_img, cols].mean()),
        "drop": float(1.0 - conf.mean()),
        "matches_mean": float(counts.mean()),
        "matches_median": float(np.median(counts)),
    }


def calibrate_cutoff(
    galleries: dict[str, tuple[np.ndarray, Sequence[int]]],
    keep_target: float = 0.9,
    weak_threshold: float | None = None,
    zs: Sequence[float] = CUTOFF_Z,
    gaps: Sequence[float] = CUTOFF_GAP,
) -> dict[str, Any]:
    """The (z, gap) of the grid that drops the largest share of every gallery on average while
    each gallery keeps at least `keep_target` of the captions' own photos; with every row of
    the grid, so the choice can be checked."""
    grid = []
    for z in zs:
        for gap in gaps:
            rows = {name: cutoff_figures(s, ci, z, gap, weak_threshold) for name, (s, ci) in galleries.items()}
            grid.append({"z": z, "gap": gap, "galleries": rows})
    ok = [g for g in grid if all(r["keep"] >= keep_target for r in g["galleries"].values())]
    if not ok:
        raise ValueError(f"no cutoff in the grid keeps {keep_target:.0%} of true matches")

    def mean_drop(g: dict[str, Any]) -> float:
        return float(np.mean([r["drop"] for r in g["galleries"].values()]))

    best = max(ok, key=mean_drop)
    return {"z": best["z"], "gap": best["gap"], "keep_target": keep_target,
            "chosen": best["galleries"], "grid": grid}


# -- duplicate threshold (issue 14) ------------------------------------------------------


def _copy_transforms() -> dict[str, Any]:
    """Copies a photo library holds of one picture: a resized export, a re-encode, a crop of
    a few percent, a small exposure change, and an export that does several at once."""
    import io

    from PIL import Image, ImageEnhance

    def jpeg(im: Any, quality: int) -> Any:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    def crop(im: Any, f: float) -> Any:
        w, h = im.size
        dx, dy = int(w * f), int(h * f)
        return im.crop((dx, dy, w - dx, h - dy))

    lanczos = Image.Resampling.LANCZOS
    return {
        "resize50": lambda im: jpeg(im.resize((im.width // 2, im.height // 2), lanczos), 90),
        "reencode_q60": lambda im: jpeg(im, 60),
        "crop3": lambda im: crop(im, 0.03),
        "crop5": lambda im: crop(im, 0.05),
        "brighter10": lambda im: ImageEnhance.Brightness(im).enhance(1.10),
        "darker10": lambda im: ImageEnhance.Brightness(im).enhance(0.90),
        "export": lambda im: jpeg(crop(im.resize((im.width * 7 // 10, im.height * 7 // 10), lanczos), 0.02), 75),
    }


def duplicate_figures(
    embedder: Any, photos: Sequence[Path], thresholds: Sequence[float],
    same_photo: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Precision and recall of `cos >= threshold` between photos (the app's plain photo
    cosine, `Embedder.image_query`) on generated copies of `photos` against the distinct
    photos. `same_photo[i]` names the picture photo i shows (two files of one picture are
    not counted as distinct); pairs, not groups, are counted."""
    from PIL import Image

    transforms = _copy_transforms()
    orig: list[np.ndarray] = []
    copies: dict[str, list[np.ndarray]] = {k: [] for k in transforms}
    for p in photos:
        with Image.open(p) as im:
            im = im.convert("RGB")
            orig.append(embedder.prepare_image(im))
            for k, f in transforms.items():
                copies[k].append(embedder.prepare_image(f(im)))

    def embed(rows: list[np.ndarray]) -> np.ndarray:
        out = [embedder.embed_prepared(np.stack(rows[s : s + 16])) for s in range(0, len(rows), 16)]
        return np.asarray(embedder.image_query(np.concatenate(out)), np.float32)

    o = embed(orig)
    c = {k: embed(v) for k, v in copies.items()}
    n = len(o)
    names = np.asarray(same_photo if same_photo is not None else [str(p) for p in photos])
    distinct = names[:, None] != names[None, :]
    pos = {k: np.sum(o * v, axis=1) for k, v in c.items()}
    neg = np.concatenate(
        [(o @ o.T)[np.triu(distinct, 1)]] + [(o @ v.T)[distinct] for v in c.values()]
    )
    all_pos = np.concatenate(list(pos.values()))
    rows = []
    for thr in thresholds:
        tp, fp = int((all_pos >= thr).sum()), int((neg >= thr).sum())
        rows.append({
            "threshold": thr, "recall": tp / len(all_pos),
            "precision": tp / (tp + fp) if tp + fp else 1.0, "false_pairs": fp,
            "recall_by_copy": {k: float((v >= thr).mean()) for k, v in pos.items()},
        })
    return {
        "photos": n, "copy_pairs": int(len(all_pos)), "distinct_pairs": int(len(neg)),
        "distinct_max": float(neg.max()) if len(neg) else None,
        "copy_median": {k: float(np.median(v)) for k, v in pos.items()},
        "rows": rows,
    }
