"""Issue 13 rows: the shipped runtime (ONNX Runtime) against torch eager and against the
competitor's model, side by side in one process, plus retrieval fidelity on real photos.

Every rate here comes from interleaved repetitions (A, B, A, B, ...), so both sides see the
same background load and their ratio holds on a shared machine even when absolute figures
move. Thread counts are the same for both sides of a ratio.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine import settings
from engine.embedder import Embedder

from . import data

log = logging.getLogger(__name__)

SHARED = data.REPO.parent / "shared" / "data"
OPENCLIP_ARCH = "ViT-B-32"  # the image tower rclip and Immich run (random weights: same compute)
OPENCLIP_GRAPH = f"openclip-{OPENCLIP_ARCH}-random.onnx"


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def cos_summary(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    c = _cos(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return {"mean": round(float(c.mean()), 5), "min": round(float(c.min()), 5)}


def load_torch_embedder() -> Embedder:
    """The shipped model on torch eager (today's runtime), through the engine's own loader."""
    from engine.embedder import load_embedder

    return load_embedder(None, runtime="torch")


def sample_pixels(embedder: Embedder, n: int, sample_dir: Path = data.SAMPLE_DIR) -> np.ndarray:
    """`prepare_image` of the first n photos_sample photos (cycled when there are fewer)."""
    from PIL import Image

    photos = data.sample_photos(sample_dir)
    out = []
    for i in range(n):
        with Image.open(photos[i % len(photos)]) as im:
            out.append(embedder.prepare_image(im.convert("RGB")))
    return np.stack(out).astype(np.float32)


def interleaved_rates(
    runners: dict[str, Callable[[], int]], reps: int, min_s: float = 0.0
) -> dict[str, Any]:
    """Images/s of each runner (it returns how many it processed), interleaved per repetition.
    `min_s`: each timed call is repeated until it has run at least this long."""
    per: dict[str, list[float]] = {k: [] for k in runners}
    for fn in runners.values():
        fn()  # warm-up: first calls allocate and pick kernels
    for _ in range(reps):
        for name, fn in runners.items():
            count, started = 0, time.perf_counter()
            while True:
                count += fn()
                elapsed = time.perf_counter() - started
                if elapsed >= min_s:
                    break
            per[name].append(count / elapsed)
    return {"median": {k: round(statistics.median(v), 3) for k, v in per.items()},
            "per_rep": {k: [round(x, 3) for x in v] for k, v in per.items()}}


def _with_torch_threads(threads: int) -> Callable[[], None]:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    return lambda: torch.set_num_threads(old)


# -- (a) image tower: shipped runtime vs torch eager ------------------------------------


def bench_image_runtimes(
    shipped: Any, torch_emb: Embedder, batch: int, reps: int, min_s: float
) -> dict[str, Any]:
    """embed_prepared at `batch` on both runtimes, the same threads, interleaved; fidelity
    (cosine of the unit image embeddings) on the same real photos."""
    threads = getattr(shipped, "image_threads", None) or settings.inference_threads("image")
    restore = _with_torch_threads(threads)
    try:
        x = sample_pixels(shipped, batch)
        rates = interleaved_rates(
            {"torch_eager": lambda: len(torch_emb.embed_prepared(x)),
             "shipped": lambda: len(shipped.embed_prepared(x))},
            reps, min_s,
        )
        d = getattr(shipped, "embed_dim", shipped.dim)
        fid_x = sample_pixels(shipped, 64)
        fid = cos_summary(shipped.embed_prepared(fid_x)[:, :d], torch_emb.embed_prepared(fid_x)[:, :d])
    finally:
        restore()
    med = rates["median"]
    return {
        "batch": batch, "threads": threads, "reps": reps,
        "precision": getattr(shipped, "precision", {}).get("image", "torch"),
        "torch_eager_images_per_s": med["torch_eager"], "shipped_images_per_s": med["shipped"],
        "ratio": round(med["shipped"] / med["torch_eager"], 2),
        "per_rep_ratio": [round(s / t, 2) for s, t in zip(rates["per_rep"]["shipped"],
                                                          rates["per_rep"]["torch_eager"], strict=True)],
        "cosine_to_torch": fid, "fidelity_photos": len(fid_x), **{"per_rep": rates["per_rep"]},
    }


# -- (b) text tower, one query at a time -------------------------------------------------


def bench_text_runtimes(shipped: Embedder, torch_emb: Embedder, n: int) -> dict[str, Any]:
    """`embed_texts([q])` alternating between the runtimes query by query (torch on the same
    threads as the ONNX text session); p50/p99 each and the cosine of their vectors."""
    from .items import TEXT_QUERIES, ms_summary

    threads = getattr(shipped, "text_threads", None) or settings.inference_threads("text")
    restore = _with_torch_threads(threads)
    try:
        for q in TEXT_QUERIES[:3]:
            shipped.embed_texts([q])
            torch_emb.embed_texts([q])
        t_ship, t_torch, v_ship, v_torch = [], [], [], []
        for i in range(n):
            q = f"{TEXT_QUERIES[i % len(TEXT_QUERIES)]} {i}"
            for emb, times, vecs in ((shipped, t_ship, v_ship), (torch_emb, t_torch, v_torch)):
                started = time.perf_counter()
                v = emb.embed_texts([q])
                times.append(time.perf_counter() - started)
                vecs.append(v[0])
    finally:
        restore()
    d = getattr(shipped, "embed_dim", shipped.dim)
    return {
        "queries": n, "threads": threads,
        "precision": getattr(shipped, "precision", {}).get("text", "torch"),
        "shipped_ms": ms_summary(t_ship), "torch_ms": ms_summary(t_torch),
        "cosine_to_torch": cos_summary(np.stack(v_ship)[:, :d], np.stack(v_torch)[:, :d]),
    }


# -- (c) the competitor's image tower on ONNX Runtime -------------------------------------


def openclip_graph(work: Path) -> Path:
    """OpenCLIP ViT-B/32's image tower with random weights (pretrained=None: nothing is
    downloaded; weights do not change the compute), exported once to ONNX in work/."""
    path = work / OPENCLIP_GRAPH
    if path.exists():
        return path
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: no hub access at all
    import warnings

    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(OPENCLIP_ARCH, pretrained=None).visual.eval()
    size = model.image_size[0] if isinstance(model.image_size, tuple) else model.image_size
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    started = time.perf_counter()
    # not under no_grad: eval + no_grad takes torch's fused attention fast path
    # (aten::_native_multi_head_attention), which has no ONNX export
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the TorchScript exporter: the dynamo one takes minutes on this ViT for the same graph
        torch.onnx.export(model, (torch.zeros(2, 3, size, size),), str(tmp), input_names=["pixels"],
                          output_names=["embedding"], opset_version=18, dynamo=False,
                          dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}})
    torch.backends.mha.set_fastpath_enabled(fastpath)
    os.replace(tmp, path)
    log.info("OpenCLIP %s image tower exported in %.0f s -> %s", OPENCLIP_ARCH,
             time.perf_counter() - started, path)
    return path


def bench_competitor(shipped: Any, work: Path, batch: int, reps: int, min_s: float) -> dict[str, Any]:
    """Our shipped image path against OpenCLIP ViT-B/32's image tower, both on ONNX Runtime,
    same batch, same intra-op threads, interleaved."""
    from engine.vse.onnx_inference import make_session

    threads = getattr(shipped, "image_threads", None) or settings.inference_threads("image")
    path = openclip_graph(work)
    session = make_session(path, threads, cuda=False, spinning=False)
    inp = session.get_inputs()[0]
    size = int(inp.shape[2]) if isinstance(inp.shape[2], int) else 224
    ours = sample_pixels(shipped, batch)
    theirs = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    rates = interleaved_rates(
        {"ours": lambda: len(shipped.embed_prepared(ours)),
         "openclip": lambda: len(session.run(None, {inp.name: theirs})[0])},
        reps, min_s,
    )
    med = rates["median"]
    return {
        "model": f"OpenCLIP {OPENCLIP_ARCH} image tower, random weights, ONNX Runtime fp32",
        "graph_mb": round(path.stat().st_size / 2**20, 1), "input_px": size,
        "batch": batch, "threads": threads, "reps": reps,
        "ours_precision": getattr(shipped, "precision", {}).get("image", "torch"),
        "ours_images_per_s": med["ours"], "openclip_images_per_s": med["openclip"],
        "ratio": round(med["ours"] / med["openclip"], 2),
        "per_rep_ratio": [round(a / b, 2) for a, b in zip(rates["per_rep"]["ours"],
                                                          rates["per_rep"]["openclip"], strict=True)],
    }


# -- (g) retrieval fidelity on a captioned set ---------------------------------------------


def captioned_set(name: str) -> tuple[list[Path], list[str], list[int]]:
    folder = SHARED / name
    rows = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines() if line.strip()]
    images = [folder / "images" / r["image"] for r in rows]
    captions = [c for r in rows for c in r["captions"]]
    caption_image = [i for i, r in enumerate(rows) for _ in r["captions"]]
    return images, captions, caption_image


def _embed_set(emb: Embedder, pixels: np.ndarray, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    img = np.concatenate([emb.embed_prepared(pixels[s : s + 32]) for s in range(0, len(pixels), 32)])
    txt = np.concatenate([emb.embed_texts(list(captions[s : s + 128])) for s in range(0, len(captions), 128)])
    return img, txt


def bench_fidelity(shipped: Any, torch_emb: Embedder, name: str, limit: int | None = None) -> dict[str, Any]:
    """rsum (R@1+5+10 both ways, training.metrics' tie rule) of the shipped runtime and of torch
    on the same prepared pixels and captions, and the cosine between their vectors."""
    from PIL import Image

    from training.metrics import retrieval_metrics

    images, captions, caption_image = captioned_set(name)
    if limit is not None:
        images = images[:limit]
        keep = [j for j, i in enumerate(caption_image) if i < limit]
        captions, caption_image = [captions[j] for j in keep], [caption_image[j] for j in keep]
    started = time.perf_counter()
    arrays = []
    for p in images:
        with Image.open(p) as im:
            arrays.append(shipped.prepare_image(im.convert("RGB")))
    pixels = np.stack(arrays).astype(np.float32)
    img_s, txt_s = _embed_set(shipped, pixels, captions)
    img_t, txt_t = _embed_set(torch_emb, pixels, captions)
    d = getattr(shipped, "embed_dim", shipped.dim)
    out = {
        "set": name, "images": len(images), "captions": len(captions),
        "precision": getattr(shipped, "precision", None),
        "rsum_shipped": round(retrieval_metrics(img_s @ txt_s.T, caption_image)["rsum"], 2),
        "rsum_torch": round(retrieval_metrics(img_t @ txt_t.T, caption_image)["rsum"], 2),
        "image_cosine_to_torch": cos_summary(img_s[:, :d], img_t[:, :d]),
        "text_cosine_to_torch": cos_summary(txt_s[:, :d], txt_t[:, :d]),
    }
    out["rsum_diff"] = round(out["rsum_shipped"] - out["rsum_torch"], 2)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out
