"""Build the MiniLM hidden-state caches (layers 4, 5, 6) for a dataset's captions."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from engine.model.text import MiniLMTextEncoder
from training.data import load_dataset
from training.text_cache import build_hidden_caches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out-prefix", type=Path, required=True)
    ap.add_argument("--uptos", default="4,5,6")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    uptos = [int(u) for u in args.uptos.split(",")]
    paths = [Path(f"{args.out_prefix}_l{u}_{args.data.name}.npz") for u in uptos]
    build_hidden_caches(MiniLMTextEncoder(64, 0), ds.captions, uptos, paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
