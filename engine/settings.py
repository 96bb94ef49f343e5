"""Defaults and paths: the one place that reads photosearch's environment variables.

Everything a user or a test can point elsewhere lives here, so the command line, the app and
the benchmarks agree on where the library is and which model to load.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "photosearch"

ASSETS_DIR = Path(__file__).parent / "assets"
DEFAULT_CHECKPOINT = ASSETS_DIR / "default_model.pt"
CAPTION_BANK = ASSETS_DIR / "caption_bank.txt"
# Activation ranges of the shipped model's image graph, measured on 100 f30k8k_val photos: what
# lets a user's machine, which has no calibration photos, build the int8 image graph.
IMAGE_INT8_CALIBRATION = ASSETS_DIR / "default_model.int8-calibration.json"
# The multilingual query tower's head (engine/vse/multilingual.py): its meta names its model.
MULTILINGUAL_HEAD = ASSETS_DIR / "multilingual_head.npz"
# Chinese queries also read by the English tower through a word-by-word CC-CEDICT gloss
# (engine/vse/glossing.py): the query's vector is unit(USE head + GLOSS_WEIGHT x English tower
# of the gloss). Each dictionary word reads the most caption-like of its first GLOSS_SENSES
# senses, each place down the list costing GLOSS_POSITION_COST (in log caption counts). All
# three chosen on f30k8k_val's hand-written Chinese (docs/MODEL.md "Glosses").
GLOSS_WEIGHT = 0.4
GLOSS_SENSES = 2
GLOSS_POSITION_COST = 0.25
# Cross-modal attention re-ranking (docs/MODEL.md "Cross-modal attention"): the trained
# projections (plain .npz; its meta names the model they belong to, others are ignored).
ATTENTION_WEIGHTS = ASSETS_DIR / "attention.npz"

# PHOTOSEARCH_LIBRARY: where the library lives when --library is not given (CLI and app).
LIBRARY_ENV = "PHOTOSEARCH_LIBRARY"
# PHOTOSEARCH_EMBEDDER=fake: the model-free FakeEmbedder, a hook for tests and benchmarks only.
EMBEDDER_ENV = "PHOTOSEARCH_EMBEDDER"
# PHOTOSEARCH_DEBUG=1: debug logging in the app.
DEBUG_ENV = "PHOTOSEARCH_DEBUG"
# PHOTOSEARCH_RUNTIME=torch: run the model in PyTorch instead of ONNX Runtime (the default).
RUNTIME_ENV = "PHOTOSEARCH_RUNTIME"
RUNTIMES = ("onnx", "torch")
DEFAULT_RUNTIME = "onnx"
# PHOTOSEARCH_ONNX_CACHE: where the ONNX graphs derived from checkpoints are kept.
ONNX_CACHE_ENV = "PHOTOSEARCH_ONNX_CACHE"
# PHOTOSEARCH_RERANK=1: attention re-ranking on (the CLI's --rerank says the same per command).
# Off by default: +3.5 val rsum, under the +8 issue 12 asks of a default, for ~4 KB a photo and
# a few ms a query. When on, indexing stores each new photo's region codes, text search
# re-ranks the top RERANK_K of the global answer and "find similar captions" its top
# RERANK_CAPTIONS_K: each caption re-ranked needs its own MiniLM pass (~12 ms each on a busy
# 2-core machine), and on f30k8k_val K = 20 gave the same R@1/5/10 as 100.
RERANK_ENV = "PHOTOSEARCH_RERANK"
RERANK_DEFAULT = False
RERANK_K = 100
RERANK_CAPTIONS_K = 20

# Used when a model states no calibrated threshold of its own. Inner products of unit vectors:
# for VSE-style models a relevant photo typically scores 0.3-0.6 against its query and
# unrelated ones 0.0-0.2, so 0.2 flags only queries with nothing like them.
DEFAULT_WEAK_MATCH_THRESHOLD = 0.2

# Honest result lists (engine/search.py `Cutoff`): a hit is a confident match when its score
# stands out from the gallery for this query (z-score against a sample of the library's vectors
# >= CONFIDENT_Z) and is not far below the query's best hit (within CONFIDENT_GAP gallery
# standard deviations of it); "strong" is the same rule with the tighter STRONG_* values.
# Calibrated on f30k8k_val with the shipped model (docs/MODEL.md "Confident matches").
CONFIDENT_Z = 1.5
CONFIDENT_GAP = 2.0
STRONG_Z = 3.0
STRONG_GAP = 0.5
# Photos sampled from the library to estimate a query's score distribution (mean, std).
GALLERY_SAMPLE = 1000

# Query syntax (engine/search.py `parse_query`): the score of a photo is the mean of its scores
# for the positive terms (the plain text and each +term), minus NEGATIVE_WEIGHT times its score
# for each -term; "find similar, then type" adds the photo's plain cosine as a positive term of
# weight LIKE_PHOTO_WEIGHT (each text term has 1): the photo anchors, the text re-ranks.
NEGATIVE_WEIGHT = 0.5
LIKE_PHOTO_WEIGHT = 1.0


def default_library_dir() -> Path:
    """$PHOTOSEARCH_LIBRARY, else the per-user data dir (~/.local/share/photosearch/library)."""
    env = os.environ.get(LIBRARY_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME)) / "library"


def user_cache_dir() -> Path:
    """Derived files that can be rebuilt at any time (exported inference graphs, ...)."""
    return Path(platformdirs.user_cache_dir(APP_NAME))


def embedder_override() -> str:
    """The value of $PHOTOSEARCH_EMBEDDER, lower-cased ('' when unset)."""
    return os.environ.get(EMBEDDER_ENV, "").strip().lower()


def inference_runtime() -> str:
    """$PHOTOSEARCH_RUNTIME lower-cased, else 'onnx'. Unknown values are the caller's to reject."""
    return os.environ.get(RUNTIME_ENV, "").strip().lower() or DEFAULT_RUNTIME


def rerank_enabled(explicit: bool | None = None) -> bool:
    """Attention re-ranking on? `explicit` (a CLI flag, the app's setting) wins; else
    $PHOTOSEARCH_RERANK (1/true/yes/on), else RERANK_DEFAULT (off)."""
    if explicit is not None:
        return bool(explicit)
    env = os.environ.get(RERANK_ENV, "").strip().lower()
    if not env:
        return RERANK_DEFAULT
    return env in ("1", "true", "yes", "on")


def onnx_cache_dir() -> Path:
    """$PHOTOSEARCH_ONNX_CACHE, else <user cache>/onnx: one folder per model id."""
    env = os.environ.get(ONNX_CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "onnx"


def inference_threads(tower: str, cores: int | None = None) -> int:
    """ONNX Runtime threads for one tower ('image' or 'text'), from the core count.

    The image tower shares the machine with the indexer's decode threads, which need more CPU
    per photo than the int8 model does (a 12 MP JPEG ~100 ms to decode, ~10 ms to embed), so
    it gets a quarter of the cores. A text query is one short sequence that stops scaling past
    a few threads, so it gets half, both capped at 4 and never below 1 (2 cores: 1 and 1).
    """
    cores = cores or os.cpu_count() or 2
    share = {"image": 4, "text": 2}[tower]
    return max(1, min(4, cores // share))
