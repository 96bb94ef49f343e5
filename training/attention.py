"""Train and measure the cross-modal attention re-ranker (engine/vse/attention.py, issue 12).

The shipped model's global embeddings stay fixed; only the attention module's projections
train, on `f30k8k_train`, from cached inputs: the backbone's last grid (training/features.py,
pooled 7x7 -> 4x4) and MiniLM's token states (training/text_cache.py). The loss is the VSE++
hinge over the hardest in-batch negatives (training/loss.py) on the combined score
global + alpha * attention. Every choice (epoch, direction, alpha, lambda) is made on
`f30k8k_val` by the rsum of re-ranking the top K of the global answer.

    python -m training.attention prepare --data ../shared/data/f30k8k_train --out B_TRAIN.npz
    python -m training.attention prepare --data ../shared/data/f30k8k_val --out B_VAL.npz
    python -m training.attention train --train B_TRAIN.npz --val B_VAL.npz --out att.pt
    python -m training.attention evaluate --val B_VAL.npz --weights att.pt
    python -m training.attention latency --weights att.pt --photos 100000
    python -m training.attention ship --weights att.pt --out engine/assets/attention.npz
    python -m training.attention search-eval --data ../shared/data/f30k8k_val --library /tmp/lib

A bundle (.npz) holds one split: pooled region features (N, 16, 1280) fp16, the shipped model's
joint vectors of images and captions (their inner products are its scores), token states
(flattened, fp16, with offsets) and each caption's image.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.vse.attention import (
    AttentionConfig,
    CrossAttention,
    encode_regions,
    export_weights,
    load_attention,
    pool_grid,
    region_bytes,
    save_attention,
    strip_special,
)
from training.loss import ContrastiveLoss
from training.metrics import retrieval_metrics

log = logging.getLogger(__name__)

ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
KS = (20, 50, 100)
DEFAULT_CHECKPOINT = Path("engine/assets/default_model.pt")
TOKEN_LAYER = 6  # MiniLM's last layer: the word features that attend


# ---------------------------------------------------------------- bundles


class Bundle:
    """One split's cached inputs (see the module docstring)."""

    def __init__(self, regions: np.ndarray, img: np.ndarray, txt: np.ndarray, hidden: np.ndarray,
                 offsets: np.ndarray, caption_image: np.ndarray) -> None:
        if len(offsets) != len(txt) + 1 or len(caption_image) != len(txt) or len(regions) != len(img):
            raise ValueError("inconsistent bundle: captions, offsets and images disagree")
        self.regions, self.img, self.txt = regions, img, txt
        self.hidden, self.offsets, self.caption_image = hidden, offsets.astype(np.int64), caption_image.astype(np.int64)

    @classmethod
    def load(cls, path: Path) -> Bundle:
        z = np.load(path)
        return cls(z["regions"], z["img"], z["txt"], z["hidden"], z["offsets"], z["caption_image"])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, regions=self.regions, img=self.img, txt=self.txt, hidden=self.hidden,
                 offsets=self.offsets, caption_image=self.caption_image)

    def states(self, idx: np.ndarray | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded token states (B, L, word_dim) and mask of captions `idx`, [CLS]/[SEP] dropped."""
        lens = [int(self.offsets[i + 1] - self.offsets[i]) for i in idx]
        h = np.zeros((len(lens), max(lens), self.hidden.shape[1]), np.float32)
        m = np.zeros((len(lens), max(lens)), np.int64)
        for r, i in enumerate(idx):
            h[r, : lens[r]] = self.hidden[self.offsets[i] : self.offsets[i + 1]]
            m[r, : lens[r]] = 1
        return strip_special(torch.from_numpy(h), torch.from_numpy(m))


def prepare_bundle(data: Path, checkpoint: Path, cache_root: Path, threads: int = 2) -> Bundle:
    """Cache (once) backbone features of the original view and MiniLM's token states of `data`,
    under the same keys `make default-model` uses, and embed both with the shipped model."""
    from engine.vse.checkpoint import load_checkpoint
    from engine.vse.text_encoders import MiniLMTextEncoder
    from training.data import load_dataset
    from training.evaluate import embed_dataset_images, joint_vectors
    from training.features import cache_features
    from training.recipes import DEFAULT_RECIPE
    from training.run import feature_cache_dir
    from training.text_cache import build_hidden_caches, pooled_features

    torch.set_num_threads(threads)
    ds = load_dataset(data)
    fdir = feature_cache_dir(DEFAULT_RECIPE, ds, cache_root)
    cache_features("efficientnet-lite2", [it.path for it in ds.items], fdir, ["orig"], threads=threads)
    model, _ = load_checkpoint(checkpoint)
    if model.config.text_encoder != "minilm" or model.config.tuned_layers:
        raise ValueError("the attention re-ranker is trained beside a frozen-MiniLM model")
    img = embed_dataset_images(model, [it.path for it in ds.items], feature_cache=fdir)
    # token states of the pooled layers (the same files `make default-model` caches); with a
    # frozen transformer the text embedding is the head on their mean-pooled states
    n = model.txt.bert.config.num_hidden_layers
    pool = model.config.text_pool_layers
    uptos = sorted(set(range(n - pool + 1, n + 1)) | {TOKEN_LAYER})
    encoder = model.txt if isinstance(model.txt, MiniLMTextEncoder) else None
    assert encoder is not None
    caches = build_hidden_caches(encoder, ds.captions, uptos, [Path(f"{fdir}-minilm-l{u}.npz") for u in uptos])
    by_layer = dict(zip(uptos, caches, strict=True))
    with torch.no_grad():
        pooled = pooled_features([by_layer[u] for u in range(n - pool + 1, n + 1)])
        txt = torch.nn.functional.normalize(
            model.txt.proj(torch.from_numpy(pooled)), dim=-1).numpy()
    img_v, txt_v = joint_vectors(model, img.astype(np.float32), txt.astype(np.float32))
    regions = np.concatenate([pool_grid(g).numpy().astype(np.float16) for g in _last_maps(model, fdir)])
    tok = by_layer[TOKEN_LAYER]
    return Bundle(regions, img_v.astype(np.float32), txt_v.astype(np.float32), tok.hidden,
                  tok.offsets, np.asarray(ds.caption_image))


def _last_maps(model: Any, fdir: Path, batch: int = 256) -> Any:
    """The backbone's last map (B, C, H, W) of every cached photo, in batches: the cached
    frozen map, or, when the model tunes its last blocks, those blocks run on their cached
    inputs (the map the app's image graph gives the re-ranker)."""
    from training.features import load_cached, load_tail_inputs

    n_tuned = model.config.tuned_blocks
    if not n_tuned:
        grid, _ = load_cached(fdir, "orig")
        for s in range(0, len(grid), batch):
            yield torch.from_numpy(np.array(grid[s : s + batch]))
        return
    pre = load_tail_inputs(fdir, "orig", n_tuned)
    model.eval()
    with torch.no_grad():
        for s in range(0, len(pre), batch):
            x = torch.from_numpy(np.array(pre[s : s + batch])).float()
            yield model.img.backbone.forward_tail(x, n_tuned)[0]


# ---------------------------------------------------------------- scoring


@torch.no_grad()
def attention_matrix(module: CrossAttention, b: Bundle, direction: str, chunk: int = 64,
                     int8: bool = False) -> np.ndarray:
    """(n_images, n_captions) attention scores in `direction`; `int8` scores against the
    stored form of the regions (encode_regions), as search would."""
    module.eval()
    saved = module.config.direction
    module.config.direction = direction
    try:
        regions = torch.cat([module.regions(torch.from_numpy(b.regions[s : s + 256].astype(np.float32)))
                             for s in range(0, len(b.regions), 256)])
        if int8:
            from engine.vse.attention import decode_regions

            regions = torch.from_numpy(decode_regions(*encode_regions(regions.numpy())))
        out = []
        for s in range(0, len(b.txt), chunk):
            states, mask = b.states(list(range(s, min(len(b.txt), s + chunk))))
            out.append(module.score(module.words(states), mask, regions).numpy())
    finally:
        module.config.direction = saved
    return np.concatenate(out, axis=1)


def reranked_metrics(glob: np.ndarray, att: np.ndarray, alpha: float, k: int,
                     caption_image: np.ndarray,
                     orders: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """R@K both directions when each query's top `k` by the global score is re-ordered by
    global + alpha * attention (everything below the top k keeps its global order). `orders`:
    the global argsorts (per caption over images, per image over captions), when reused."""
    by_caption, by_image = orders or global_orders(glob)
    comb = glob + alpha * att
    lift = float(np.abs(glob).max() + np.abs(comb).max() + 10.0)  # keeps the top k above the rest
    # text -> image: per caption (column), its top k images
    top_i = by_caption[:k]
    s_t2i = glob.copy()
    cols = np.arange(glob.shape[1])[None, :]
    s_t2i[top_i, cols] = comb[top_i, cols] + lift
    # image -> text: per image (row), its top k captions
    top_t = by_image[:, :k]
    s_i2t = glob.copy()
    rows = np.arange(glob.shape[0])[:, None]
    s_i2t[rows, top_t] = comb[rows, top_t] + lift
    i2t = retrieval_metrics(s_i2t, caption_image)["i2t"]
    t2i = retrieval_metrics(s_t2i, caption_image)["t2i"]
    rsum = sum(i2t[r] + t2i[r] for r in ("r1", "r5", "r10"))
    return {"i2t": i2t, "t2i": t2i, "rsum": float(rsum)}


def global_orders(glob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best-first image order per caption (column) and caption order per image (row)."""
    return np.argsort(-glob, axis=0, kind="stable"), np.argsort(-glob, axis=1, kind="stable")


def sweep(module: CrossAttention, b: Bundle, ks: tuple[int, ...] = KS,
          alphas: tuple[float, ...] = ALPHAS, int8: bool = False) -> dict[str, Any]:
    """Val rsum for every (direction, K, alpha); the best at the configured K is `best`."""
    glob = b.img @ b.txt.T
    base = retrieval_metrics(glob, b.caption_image)
    mats = {d: attention_matrix(module, b, d, int8=int8) for d in ("t2i", "i2t")}
    mats["both"] = (mats["t2i"] + mats["i2t"]) / 2
    rows = []
    orders = global_orders(glob)
    for d, att in mats.items():
        for k in ks:
            for a in alphas:
                m = reranked_metrics(glob, att, a, k, b.caption_image, orders)
                rows.append({"direction": d, "k": k, "alpha": a, "rsum": m["rsum"], "i2t": m["i2t"], "t2i": m["t2i"]})
    k_main = module.config.k if module.config.k in ks else max(ks)
    best = max((r for r in rows if r["k"] == k_main), key=lambda r: r["rsum"])
    alone = {d: retrieval_metrics(att, b.caption_image)["rsum"] for d, att in mats.items()}
    return {"global": {"rsum": base["rsum"], "i2t": base["i2t"], "t2i": base["t2i"]},
            "best": best, "attention_alone_rsum": alone, "rows": rows}


# ---------------------------------------------------------------- training


def train_attention(train: Bundle, val: Bundle, config: AttentionConfig, epochs: int, batch_size: int,
                    lr: float, margin: float, seed: int, max_minutes: float,
                    global_weight: float = 1.0, init: Path | None = None) -> tuple[CrossAttention, dict]:
    """Train the projections; keep the epoch with the best val rsum (re-ranked top K).
    The loss is on global_weight * global + alpha * attention: 1 trains attention on what the
    global score gets wrong, 0 trains it alone (SCAN's own objective) and combines afterwards."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    module = CrossAttention(config)
    if init is not None:  # continue from saved weights (same shapes)
        module.load_state_dict(load_attention(init)[0].state_dict())
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    # the existing VSE++ MH loss takes embeddings and scores them as im @ s.T; feeding the
    # combined score matrix against the identity makes it the loss of those scores
    loss_fn = ContrastiveLoss(margin=margin, max_violation=True)
    by_image: list[list[int]] = [[] for _ in range(len(train.img))]
    for c, i in enumerate(train.caption_image):
        by_image[int(i)].append(c)
    img_t = torch.from_numpy(train.img)
    txt_t = torch.from_numpy(train.txt)
    history: list[dict[str, Any]] = []
    best_state, best = None, -1.0
    t0 = time.time()
    for epoch in range(1, epochs + 1):
        module.train()
        order = rng.permutation(len(train.img))
        total, steps = 0.0, 0
        for s in range(0, len(order) - 1, batch_size):
            ims = order[s : s + batch_size]
            if len(ims) < 2:
                break
            caps = [int(rng.choice(by_image[int(i)])) for i in ims]
            states, mask = train.states(caps)
            regions = module.regions(torch.from_numpy(train.regions[ims].astype(np.float32)))
            glob = global_weight * (img_t[ims] @ txt_t[caps].T)
            scores = module.combined(glob, module.words(states), mask, regions)
            loss = loss_fn(scores, torch.eye(len(ims)))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 2.0)
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        res = sweep(module, val)
        row = {"epoch": epoch, "loss": total / max(steps, 1), "val_global_rsum": res["global"]["rsum"],
               "val_best": {k: res["best"][k] for k in ("direction", "k", "alpha", "rsum")},
               "minutes": (time.time() - t0) / 60}
        history.append(row)
        log.info("epoch %d loss %.3f val rsum %.1f -> %.1f (%s, alpha %.2f) %.1f min", epoch, row["loss"],
                 row["val_global_rsum"], res["best"]["rsum"], res["best"]["direction"], res["best"]["alpha"],
                 row["minutes"])
        if res["best"]["rsum"] > best:
            best = res["best"]["rsum"]
            best_state = {k: v.clone() for k, v in module.state_dict().items()}
        if (time.time() - t0) / 60 >= max_minutes:
            log.info("stopping: %.1f min of training reached", max_minutes)
            break
    assert best_state is not None
    module.load_state_dict(best_state)
    return module, {"history": history}


# ---------------------------------------------------------------- latency


def measure_latency(module: CrossAttention, photos: int, k: int, queries: int, seed: int = 0,
                    tokens: int = 12, sqlite_dir: Path | None = None) -> dict[str, Any]:
    """Added cost of re-ranking `k` candidates for one text query, CPU, one thread, on the
    numpy path search would use (`QueryReranker`: project the query's token states, decode the
    candidates' int8 codes, score, sort), and on torch for comparison. The token states come
    with the global query (the same MiniLM pass). Codes are gathered out of `photos` stored
    ones held in memory; with `sqlite_dir`, also read as blobs from a SQLite table of `photos`
    rows (what a catalog read of K rows costs; the catalog itself is not touched)."""
    import sqlite3

    from engine.vse.attention import QueryReranker, pack_regions, unpack_regions

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    d, r = module.config.dim, 16
    codes = rng.integers(-127, 128, size=(photos, r, d), dtype=np.int8)
    scales = (rng.random((photos, r)) / 127 / 16).astype(np.float16)  # unit-ish rows
    module.eval()
    reranker = QueryReranker.from_module(module)
    db = None
    if sqlite_dir is not None:
        sqlite_dir.mkdir(parents=True, exist_ok=True)
        path = sqlite_dir / "regions.sqlite"
        path.unlink(missing_ok=True)
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE regions (id INTEGER PRIMARY KEY, blob BLOB NOT NULL)")
        db.executemany("INSERT INTO regions VALUES (?, ?)",
                       ((i, pack_regions(codes[i], scales[i])) for i in range(photos)))
        db.commit()
        db.close()
        db = sqlite3.connect(path)
    times: dict[str, list[float]] = {"numpy": [], "torch": [], "sqlite_read": [], "sqlite_total": []}
    with torch.no_grad():
        for q in range(queries + 10):
            states = rng.normal(size=(tokens, module.config.word_dim)).astype(np.float32)
            cand = rng.choice(photos, k, replace=False)
            glob = rng.normal(size=k)
            t = time.perf_counter()
            order = reranker.rerank(glob, states, codes[cand], scales[cand])
            t1 = time.perf_counter()
            w = module.words(torch.from_numpy(states)[None])
            reg = torch.from_numpy(codes[cand].astype(np.float32) * scales[cand].astype(np.float32)[..., None])
            att = module.score(w, torch.ones(1, tokens), reg)[:, 0].numpy()
            np.argsort(-(glob + module.config.alpha * att), kind="stable")
            t2 = time.perf_counter()
            if db is not None:
                ids = [int(i) for i in cand]
                rows = dict(db.execute(f"SELECT id, blob FROM regions WHERE id IN ({','.join('?' * k)})", ids))
                t3 = time.perf_counter()
                regs = np.stack([unpack_regions(rows[i], r, d) for i in ids])
                reranker.scores(reranker.words(states), regs)
                t4 = time.perf_counter()
            if q >= 10:  # warm-up
                times["numpy"].append((t1 - t) * 1000)
                times["torch"].append((t2 - t1) * 1000)
                if db is not None:
                    times["sqlite_read"].append((t3 - t2) * 1000)
                    times["sqlite_total"].append((t4 - t2) * 1000)
            assert len(order) == k
    out: dict[str, Any] = {"queries": queries, "k": k, "photos": photos, "tokens": tokens,
                           "direction": module.config.direction, "bytes_per_photo": region_bytes(r, d),
                           "bytes_per_100k": region_bytes(r, d) * 100_000}
    for name, vals in times.items():
        if vals:
            a = np.array(vals)
            out[name] = {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}
    return out


# ---------------------------------------------------------------- CLI


def _config(args: argparse.Namespace, train: Bundle) -> AttentionConfig:
    return AttentionConfig(word_dim=int(train.hidden.shape[1]), region_dim=int(train.regions.shape[2]),
                           dim=args.dim, lambda_softmax=args.lam, pool=args.pool, lambda_lse=args.lambda_lse,
                           direction=args.direction, alpha=args.alpha_train, k=args.k)


def run_train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    train, val = Bundle.load(args.train), Bundle.load(args.val)
    config = _config(args, train)
    module, report = train_attention(train, val, config, args.epochs, args.batch_size, args.lr, args.margin,
                                     args.seed, args.max_minutes, args.global_weight, args.init)
    res = sweep(module, val)
    best = res["best"]
    # the chosen scoring goes with the weights: direction and alpha picked on val
    module.config.direction, module.config.alpha = best["direction"], float(best["alpha"])
    report.update({"config": module.config.to_dict(), "val_global": res["global"], "val_best": best,
                   "train": str(args.train), "val": str(args.val), "args": vars(args)})
    save_attention(args.out, module, extra={"val_best": best, "val_global_rsum": res["global"]["rsum"],
                                            "train_config": config.to_dict()})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**report, "sweep": res["rows"]}, indent=1, default=str))
    print(json.dumps({"val_global_rsum": res["global"]["rsum"], "val_best": best}, default=str))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    module, _ = load_attention(args.weights)
    if args.lam is not None:  # score the same weights with another softmax temperature
        module.config.lambda_softmax = args.lam
    val = Bundle.load(args.val)
    out = {}
    for form in ("float", "int8"):
        res = sweep(module, val, int8=form == "int8")
        chosen = [r for r in res["rows"] if r["direction"] == module.config.direction
                  and r["alpha"] == module.config.alpha]
        out[form] = {"global": res["global"], "chosen": chosen, "best": res["best"],
                     "attention_alone_rsum": res["attention_alone_rsum"]}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    for form, r in out.items():
        for row in r["chosen"]:
            print(f"{form} {row['direction']} alpha {row['alpha']} K {row['k']}: rsum {r['global']['rsum']:.1f} -> "
                  f"{row['rsum']:.1f}  i2t R@1/5/10 {row['i2t']['r1']:.1f}/{row['i2t']['r5']:.1f}/{row['i2t']['r10']:.1f}"
                  f"  t2i {row['t2i']['r1']:.1f}/{row['t2i']['r5']:.1f}/{row['t2i']['r10']:.1f}")
    return 0


def run_latency(args: argparse.Namespace) -> int:
    module, _ = load_attention(args.weights)
    if args.direction:
        module.config.direction = args.direction
    res = measure_latency(module, args.photos, args.k, args.queries, tokens=args.tokens,
                          sqlite_dir=args.sqlite_dir)
    print(json.dumps(res))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    bundle = prepare_bundle(args.data, args.checkpoint, args.cache_dir, args.threads)
    bundle.save(args.out)
    glob = retrieval_metrics(bundle.img @ bundle.txt.T, bundle.caption_image)
    print(json.dumps({"out": str(args.out), "images": len(bundle.img), "captions": len(bundle.txt),
                      "global_rsum": glob["rsum"]}))
    return 0


def run_ship(args: argparse.Namespace) -> int:
    """Kept weights -> the plain .npz the engine loads (settings.ATTENTION_WEIGHTS), naming
    the model they were trained beside, with how they were chosen."""
    from engine.vse.checkpoint import load_checkpoint

    module, extra = load_attention(args.weights)
    _, ckpt = load_checkpoint(args.checkpoint)
    export_weights(module, args.out, ckpt["model_id"], {"trained": extra, "source": str(args.weights)})
    print(json.dumps({"out": str(args.out), "model_id": ckpt["model_id"], "bytes": args.out.stat().st_size}))
    return 0


def run_search_eval(args: argparse.Namespace) -> int:
    """The app's own path end to end: index a split's images with re-ranking on (ONNX int8
    image graph + its backbone map, region codes in the catalog), then search every caption
    through Library.search_text with re-ranking off and on: text->image R@1/5/10 and the
    query latency of each (the text pass included)."""
    from engine.embedder import load_embedder
    from engine.library import Library
    from training.data import load_dataset

    ds = load_dataset(args.data)
    names = {Path(it.path).name: i for i, it in enumerate(ds.items)}
    embedder = load_embedder(None)
    with Library.open(args.library, embedder, rerank=True) as lib:
        if not lib.reranking:
            print("error: no attention weights for this model, or not the ONNX runtime", file=sys.stderr)
            return 2
        lib.add_folder(Path(ds.items[0].path).parent)
        t = time.perf_counter()
        lib.index()
        index_s = time.perf_counter() - t
    captions = ds.captions[: args.limit] if args.limit else ds.captions
    out: dict[str, Any] = {"images": len(ds.items), "captions": len(captions), "index_s": index_s}
    embedder = load_embedder(None)
    libs = {name: Library.open(args.library, embedder, read_only=True, rerank=name == "rerank")
            for name in ("global", "rerank")}
    ranks: dict[str, list[int]] = {n: [] for n in libs}
    times: dict[str, list[float]] = {n: [] for n in libs}
    try:
        for lib in libs.values():
            lib.search_text("warm up", top_k=10, remember=False)
        for c, cap in enumerate(captions):
            # alternate off / on per query (which goes first too), so load shifts hit both alike
            for name in (("global", "rerank") if c % 2 == 0 else ("rerank", "global")):
                t = time.perf_counter()
                hits = libs[name].search_text(cap, top_k=10, remember=False).hits
                times[name].append((time.perf_counter() - t) * 1000)
                found = [names.get(Path(h.path).name) for h in hits]
                want = int(ds.caption_image[c])
                ranks[name].append(found.index(want) if want in found else 10)
    finally:
        for lib in libs.values():
            lib.close()
    for name in libs:
        r = np.asarray(ranks[name])
        out[name] = {"t2i_r1": float((r < 1).mean() * 100), "t2i_r5": float((r < 5).mean() * 100),
                     "t2i_r10": float((r < 10).mean() * 100),
                     "query_ms_p50": float(np.percentile(times[name], 50)),
                     "query_ms_p99": float(np.percentile(times[name], 99))}
    added = np.asarray(times["rerank"]) - np.asarray(times["global"])
    out["added_ms_p50"] = float(np.percentile(added, 50))
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.attention", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="cache one split's inputs and the shipped model's vectors")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--cache-dir", type=Path, default=Path("cache/features"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("train", help="train the projections, choose direction/alpha on val")
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--json", type=Path)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--lam", type=float, default=10.0, help="attention softmax inverse temperature")
    p.add_argument("--pool", choices=("mean", "lse"), default="mean")
    p.add_argument("--lambda-lse", type=float, default=6.0)
    p.add_argument("--direction", choices=("t2i", "i2t", "both"), default="both", help="trained score")
    p.add_argument("--alpha-train", type=float, default=1.0)
    p.add_argument("--global-weight", type=float, default=1.0,
                   help="weight of the fixed global score in the training loss (0: attention alone)")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--init", type=Path, help="start from these attention weights")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--margin", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("evaluate", help="val R@K with and without re-ranking (float and int8 regions)")
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--json", type=Path)
    p.add_argument("--lam", type=float, help="override the trained softmax inverse temperature")
    p = sub.add_parser("latency", help="added query latency of re-ranking K candidates")
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--photos", type=int, default=100_000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--direction", choices=("t2i", "i2t", "both"))
    p.add_argument("--tokens", type=int, default=12, help="words in the query")
    p.add_argument("--sqlite-dir", type=Path, help="also time reading the K blobs from SQLite here")
    p = sub.add_parser("ship", help="write kept weights as the engine's .npz asset (no torch needed to load)")
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--out", type=Path, default=Path("engine/assets/attention.npz"))
    p = sub.add_parser("search-eval", help="t2i R@K and query latency through the app's search, off and on")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--library", type=Path, required=True, help="a scratch library folder")
    p.add_argument("--limit", type=int, default=0, help="only the first N captions")
    args = ap.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("train", "val", "weights", "init"):
        path = getattr(args, name, None)
        if path is not None and not Path(path).exists():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
    handlers = {"prepare": run_prepare, "train": run_train, "evaluate": run_evaluate, "latency": run_latency,
                "ship": run_ship, "search-eval": run_search_eval}
    return handlers[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
