"""Measure the shipped (or a given) model's CPU speed: images/s and single-query text latency."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from engine.models import load_default_embedder, load_embedder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--images", type=Path, default=Path("../shared/data/f8k_extra/images"))
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    emb = load_embedder(args.checkpoint) if args.checkpoint else load_default_embedder()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    paths = sorted(args.images.glob("*.jpg"))[: args.n_images]
    t0 = time.perf_counter()
    prepared = []
    for p in paths:
        with Image.open(p) as im:
            prepared.append(emb.prepare_image(im.convert("RGB")))
    t_prep = time.perf_counter() - t0
    emb.embed_prepared(np.stack(prepared[:4]))  # warm-up
    t0 = time.perf_counter()
    for s in range(0, len(prepared), 16):
        emb.embed_prepared(np.stack(prepared[s : s + 16]))
    t_img = time.perf_counter() - t0
    queries = ["a dog running on the beach", "two children playing in the snow", "a man on a red bike"]
    emb.embed_texts(queries[:1])
    lat = []
    for i in range(60):
        t0 = time.perf_counter()
        emb.embed_texts([queries[i % 3]])
        lat.append((time.perf_counter() - t0) * 1000)
    out = {
        "model_id": emb.model_id,
        "images_per_s": round(len(prepared) / t_img, 1),
        "prepare_ms_per_image": round(1000 * t_prep / len(paths), 1),
        "text_query_ms_median": round(statistics.median(lat), 1),
        "text_query_ms_p90": round(sorted(lat)[int(0.9 * len(lat))], 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
