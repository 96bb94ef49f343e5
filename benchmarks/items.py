"""The six measurements of issue 5; each returns a plain dict for results.json."""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine import imaging
from engine.catalog import Catalog
from engine.embedder import Embedder
from engine.indexer import BATCH_SIZE, decode_workers
from engine.library import CATALOG_FILE, INDEX_FILE, Library
from engine.search import SearchService
from engine.vector_index import HNSW_EF_SEARCH, VectorIndex

from . import data
from .model import RekeyedEmbedder

log = logging.getLogger(__name__)

TEXT_QUERIES = [
    "a dog running on the beach",
    "two children playing football in a park",
    "a man riding a bicycle down a city street",
    "snow covered mountains under a blue sky",
    "a woman in a red dress",
    "people sitting at a table in a restaurant",
    "a black cat sleeping on a sofa",
    "surfer riding a big wave",
    "birthday cake with candles",
    "old car parked next to a brick wall",
    "a group of people hiking in the forest",
    "boat on a lake at sunset",
    "girl with a pink umbrella in the rain",
    "skateboarder jumping over stairs",
    "crowd watching a concert at night",
    "brown horse in a green field",
]


def pct(values: list[float], q: float) -> float:
    """Percentile (linear interpolation) of a non-empty list."""
    return float(np.percentile(np.asarray(values, np.float64), q))


def ms_summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50": round(pct(ms, 50), 3), "p99": round(pct(ms, 99), 3), "n": len(ms)}


# -- 1. indexing throughput ------------------------------------------------------------


def forward_rate(embedder: Embedder, batch: np.ndarray, n_batches: int) -> float:
    """Images/s of embed_prepared alone on an already prepared batch (same batch size)."""
    started = time.perf_counter()
    for _ in range(n_batches):
        embedder.embed_prepared(batch)
    return n_batches * len(batch) / (time.perf_counter() - started)


def decode_prepare_rate(embedder: Embedder, files: list[Path], workers: int) -> float:
    """Images/s of read + decode (the indexer's draft size) + `prepare_image` alone, on a
    pool of `workers` threads: the physical limit of indexing these files on these cores."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: Path) -> int:
        decoded = imaging.decode_image(imaging.read_file(str(path)))
        embedder.prepare_image(decoded.image)
        return 1

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(workers) as pool:
        done = sum(pool.map(one, files))
    _LAST_CPU_S["decode"] = time.process_time() - cpu
    return done / (time.perf_counter() - started)


# CPU seconds (all threads of this process) of the last decode_prepare_rate / _index_once call:
# the CPU each photo costs does not depend on how much of the machine other processes take
_LAST_CPU_S: dict[str, float] = {}


def _index_once(embedder: Embedder, photo_dir: Path, lib_dir: Path, n: int) -> float:
    shutil.rmtree(lib_dir, ignore_errors=True)
    with Library.open(lib_dir, embedder) as lib:
        lib.add_folder(photo_dir)
        started, cpu = time.perf_counter(), time.process_time()
        report = lib.index()
        elapsed = time.perf_counter() - started
        _LAST_CPU_S["index"] = time.process_time() - cpu
    if report.indexed != n or report.failed:
        raise RuntimeError(f"indexing {photo_dir}: {report.to_json()}")
    shutil.rmtree(lib_dir, ignore_errors=True)
    return n / elapsed


def bench_indexing(
    embedder: Embedder, photo_dir: Path, work: Path, reps: int, label: str,
    torch_embedder: Embedder | None = None, decode_reference: bool = False,
) -> dict[str, object]:
    """Library.index on a fresh library, alternated with pure-forward runs (same threads),
    and optionally with the pure decode + prepare rate of the same files on the same number
    of threads, and with a pass of today's torch pipeline (`torch_embedder`, which sizes its
    own decode pool as before).

    Alternating inside one loop means every side sees the same background load, so their
    ratios are meaningful even on a busy machine.
    """
    files = sorted(p for p in photo_dir.iterdir() if p.suffix.lower() == ".jpg")
    n = len(files)
    prepared = [
        embedder.prepare_image(imaging.decode_image(str(p)).image)
        for p in files[:BATCH_SIZE]
    ]
    batch = np.stack(prepared)
    n_batches = max(1, n // len(batch))
    embedder.embed_prepared(batch)  # warm-up: first call allocates / picks kernels
    workers = decode_workers(embedder)
    pipeline, forward, ratios, reports = [], [], [], []
    decode, torch_pipe = [], []
    cpu: dict[str, list[float]] = {"index": [], "decode_prepare": [], "torch_pipeline": []}
    lib_dir = work / "libs" / f"index-{label}"
    for rep in range(reps):
        ips = _index_once(embedder, photo_dir, lib_dir, n)
        cpu["index"].append(1000 * _LAST_CPU_S["index"] / n)
        fwd = forward_rate(embedder, batch, n_batches)
        pipeline.append(ips)
        forward.append(fwd)
        ratios.append(ips / fwd)
        reports.append(round(n / ips, 3))
        extra = ""
        if decode_reference:
            decode.append(decode_prepare_rate(embedder, files, workers))
            cpu["decode_prepare"].append(1000 * _LAST_CPU_S["decode"] / n)
            extra += f", decode+prepare {decode[-1]:.2f} img/s"
        if torch_embedder is not None:
            torch_pipe.append(_index_once(torch_embedder, photo_dir, lib_dir, n))
            cpu["torch_pipeline"].append(1000 * _LAST_CPU_S["index"] / n)
            extra += f", torch pipeline {torch_pipe[-1]:.2f} img/s"
        log.info("indexing %s rep %d: %.2f img/s, forward %.2f img/s, ratio %.3f%s",
                 label, rep, ips, fwd, ips / fwd, extra)
    sizes = [p.stat().st_size for p in files]
    out: dict[str, object] = {
        "images": n,
        "mean_file_mb": round(statistics.mean(sizes) / 2**20, 2),
        "reps": reps,
        "decode_workers": workers,
        "runtime": getattr(embedder, "runtime", "torch"),
        "images_per_s": round(statistics.median(pipeline), 3),
        "model_forward_images_per_s": round(statistics.median(forward), 3),
        # median of the per-rep ratios: each pair ran back to back under the same load
        "ratio": round(statistics.median(ratios), 3),
        "ratio_of_medians": round(statistics.median(pipeline) / statistics.median(forward), 3),
        "per_rep_images_per_s": [round(x, 3) for x in pipeline],
        "per_rep_forward_images_per_s": [round(x, 3) for x in forward],
        "per_rep_index_s": reports,
        "batch_size": len(batch),
        "torch_threads": torch.get_num_threads(),
    }
    # CPU ms per photo (process time, all threads): what each pass costs whatever the load; on
    # an otherwise idle machine the rate ratio tends to the inverse ratio of these
    out["cpu_ms_per_photo"] = {k: round(statistics.median(v), 2) for k, v in cpu.items() if v}
    if decode:
        out["cpu_bound_vs_decode_prepare"] = round(
            statistics.median(cpu["decode_prepare"]) / statistics.median(cpu["index"]), 3)
        out["decode_prepare_images_per_s"] = round(statistics.median(decode), 3)
        out["per_rep_decode_prepare_images_per_s"] = [round(x, 3) for x in decode]
        out["vs_decode_prepare"] = round(statistics.median(
            [a / b for a, b in zip(pipeline, decode, strict=True)]), 3)
    if torch_pipe:
        out["torch_pipeline_images_per_s"] = round(statistics.median(torch_pipe), 3)
        out["per_rep_torch_pipeline_images_per_s"] = [round(x, 3) for x in torch_pipe]
        out["torch_pipeline_decode_workers"] = decode_workers(torch_embedder)
        out["vs_torch_pipeline"] = round(statistics.median(
            [a / b for a, b in zip(pipeline, torch_pipe, strict=True)]), 3)
    return out


def bench_decode_modes(
    files: list[Path], embedder: Embedder | None = None, n: int = 30
) -> dict[str, object]:
    """CPU ms per photo (one thread) of the decode choices for the indexer: a full decode and
    the JPEG draft (scale-on-decode) at the indexer's size and at 1/8; the hash; the indexer's
    decode + thumbnail + prepare; whether the files carry an EXIF preview >= 256 px; and, with
    an embedder, prepare, thumbnail and model apart and the ratio to decode + prepare they allow."""
    import io

    from PIL import Image

    from engine.imaging import DEFAULT_DECODE_SIZE

    files = files[:n]
    blobs = [imaging.read_file(str(p)) for p in files]

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        started = time.process_time()
        for b in blobs:
            fn(b)
        return round(1000 * (time.process_time() - started) / len(blobs), 2)

    def timed_images(fn, images: list[Image.Image]) -> float:  # type: ignore[no-untyped-def]
        started = time.process_time()
        for im in images:
            fn(im)
        return round(1000 * (time.process_time() - started) / len(images), 2)

    def full(b: bytes) -> None:
        with Image.open(io.BytesIO(b)) as im:
            im.load()

    def draft(size: int):  # type: ignore[no-untyped-def]
        def run(b: bytes) -> tuple[int, int]:
            with Image.open(io.BytesIO(b)) as im:
                im.draft("RGB", (size, size))
                im.load()
                return im.size
        return run

    def preview(b: bytes) -> int:
        """Longest side of a JPEG embedded in the EXIF block (IFD1 thumbnail), or 0."""
        with Image.open(io.BytesIO(b)) as im:
            raw = im.info.get("exif", b"")
        start = raw.find(b"\xff\xd8", 8)
        if start < 0:
            return 0
        try:
            with Image.open(io.BytesIO(raw[start:])) as t:
                return max(t.size)
        except OSError:
            return 0

    def thumbnail(image: Image.Image) -> None:
        imaging.thumbnail_image(image).save(io.BytesIO(), "JPEG", quality=imaging.THUMBNAIL_QUALITY)

    def thumb_prepare(b: bytes) -> None:
        decoded = imaging.decode_image(b)
        thumbnail(decoded.image)
        if embedder is not None:
            embedder.prepare_image(decoded.image)

    sizes = {}
    with Image.open(io.BytesIO(blobs[0])) as im:
        sizes["original"] = im.size
    sizes["draft_default"] = draft(DEFAULT_DECODE_SIZE)(blobs[0])
    sizes["draft_1_8"] = draft(max(1, min(sizes["original"]) // 8))(blobs[0])
    previews = [preview(b) for b in blobs]
    images = [imaging.decode_image(b).image for b in blobs]
    parts: dict[str, float] = {}
    if embedder is not None:
        # what indexing adds to decode + prepare, per photo: hash, thumbnail (resize +
        # in-memory encode; the write is a few syscalls more) and the model at the indexer's
        # batch size; `bound_*` is decode+prepare / (decode+prepare + these), the rate ratio
        # the 12 MP item can reach when the cores are full (catalog work not counted)
        prepared = [embedder.prepare_image(im) for im in images[:BATCH_SIZE]]
        batch = np.stack(prepared * max(1, -(-BATCH_SIZE // len(prepared))))[:BATCH_SIZE]
        embedder.embed_prepared(batch)
        started = time.process_time()
        for _ in range(3):
            embedder.embed_prepared(batch)
        model_ms = 1000 * (time.process_time() - started) / (3 * len(batch))
        started = time.process_time()
        for im in images:
            embedder.prepare_image(im)
        prepare_ms = 1000 * (time.process_time() - started) / len(images)
        parts = {"prepare_ms": round(prepare_ms, 2), "model_ms": round(model_ms, 2),
                 "thumbnail_ms": timed_images(thumbnail, images)}
    out: dict[str, object] = {
        "photos": len(blobs),
        "sizes": sizes,
        "full_decode_ms": timed(full),
        f"draft_{DEFAULT_DECODE_SIZE}_ms": timed(draft(DEFAULT_DECODE_SIZE)),
        "draft_1_8_ms": timed(draft(max(1, min(sizes["original"]) // 8))),
        "hash_ms": timed(imaging.content_hash),
        "indexer_decode_ms": timed(lambda b: imaging.decode_image(b)),
        "indexer_decode_thumbnail_prepare_ms": timed(thumb_prepare),
        "preview_check_ms": timed(preview),
        "with_preview_ge_256px": sum(p >= 256 for p in previews),
        "largest_preview_px": max(previews),
        **parts,
    }
    if parts:
        base = float(out["indexer_decode_ms"]) + parts["prepare_ms"]  # type: ignore[arg-type]
        extra = float(out["hash_ms"]) + parts["thumbnail_ms"] + parts["model_ms"]  # type: ignore[arg-type]
        out["bound_vs_decode_prepare"] = round(base / max(base + extra, 1e-9), 3)
        out["bound_model_only"] = round(base / max(base + parts["model_ms"], 1e-9), 3)
    return out


# -- 6. text-query encoding ------------------------------------------------------------


def bench_text(embedder: Embedder, n: int) -> dict[str, float]:
    for q in TEXT_QUERIES[:3]:
        embedder.embed_texts([q])  # warm-up
    times = []
    for i in range(n):
        # A suffix keeps every query distinct, as typed queries are (no caching anywhere).
        q = f"{TEXT_QUERIES[i % len(TEXT_QUERIES)]} {i}"
        started = time.perf_counter()
        embedder.embed_texts([q])
        times.append(time.perf_counter() - started)
    return ms_summary(times)


# -- 2. query latency --------------------------------------------------------------------


def _recall_and_latency(
    index: VectorIndex,
    searcher: SearchService,
    model_id: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    top_k: int,
) -> dict[str, object]:
    truth = data.exact_topk(vectors, queries, 10)
    hits = 0
    for q, t in zip(queries, truth, strict=True):
        got = {label - 1 for label, _ in index.knn(q, 10)}  # labels are row index + 1
        hits += len(got & set(t.tolist()))
    recall = hits / (10 * len(queries))
    times = []
    for q in queries:
        started = time.perf_counter()
        pairs = searcher.search_vector(q, index, model_id, top_k)
        times.append(time.perf_counter() - started)
        assert len(pairs) == min(top_k, index.count)
    return {"recall_at_10": round(recall, 4), "hnsw_catalog_ms": ms_summary(times)}


def _bruteforce(vectors: np.ndarray, queries: np.ndarray, top_k: int) -> dict[str, float]:
    times = []
    for q in queries:
        started = time.perf_counter()
        scores = vectors @ q
        part = np.argpartition(-scores, top_k)[:top_k]
        part[np.argsort(-scores[part])]
        times.append(time.perf_counter() - started)
    return ms_summary(times)


def bench_query(
    n: int,
    embedder: Embedder,
    text_ms: dict[str, float],
    work: Path,
    n_queries: int,
    n_brute: int,
    top_k: int = 50,
    files_dir: Path | None = None,
    hnsw_m: int | None = None,
    hnsw_ef_construction: int | None = None,
    via_library: bool = True,
    build: bool = True,
) -> dict[str, object]:
    dim = embedder.dim
    spec = {"n": n, "dim": dim, "files": files_dir is not None, "m": hnsw_m,
            "efc": hnsw_ef_construction, "embeddings": via_library}
    if not build and not data.library_cached(f"synth-{n}-{dim}", spec, work):
        # The HNSW build does not fit the time budget: measure what does (brute force on
        # the same vectors) and say so; p50/p99/recall stay null rather than guessed.
        vectors = data.synthetic_vectors(n, dim, seed=1)
        queries = data.synthetic_vectors(n_brute, dim, seed=2)
        brute = _bruteforce(vectors, queries, top_k)
        return {
            "n": n, "dim": dim, "top_k": top_k, "status": "HNSW not built (see BENCHMARKS.md)",
            "hnsw": {"M": hnsw_m, "ef_construction": hnsw_ef_construction},
            "p50_ms": None, "p99_ms": None, "recall_at_10": None,
            "bruteforce_p50_ms": brute["p50"], "bruteforce_ms": brute,
            "bruteforce_e2e_p50_ms": round(brute["p50"] + text_ms["p50"], 3),
            "vectors_mb": round(vectors.nbytes / 2**20, 1),
        }
    lib_dir, meta = data.cached_library(
        f"synth-{n}-{dim}", lambda: data.synthetic_vectors(n, dim, seed=1), spec, work,
        model_id=data.SYNTH_MODEL_ID, files_dir=files_dir, store_embeddings=via_library,
        hnsw_m=hnsw_m, hnsw_ef_construction=hnsw_ef_construction,
    )
    t = time.perf_counter()
    vectors = data.synthetic_vectors(n, dim, seed=1)
    log.info("query %d: vectors regenerated in %.1f s", n, time.perf_counter() - t)
    queries = data.synthetic_vectors(n_queries, dim, seed=2)
    out: dict[str, object] = {
        "n": n, "dim": dim, "top_k": top_k, "queries": n_queries,
        "hnsw": {"M": hnsw_m or 16, "ef_construction": hnsw_ef_construction or 200,
                 "ef_search": f"engine default: max({HNSW_EF_SEARCH}, 4k)"},
        "build": meta["build"], "build_cached": meta["cached"],
    }
    if via_library:
        emb = RekeyedEmbedder(embedder, data.SYNTH_MODEL_ID)
        t = time.perf_counter()
        with Library.open(lib_dir, emb) as lib:
            out["open_s"] = round(time.perf_counter() - t, 3)
            out.update(_recall_and_latency(
                lib.vector_index, lib.searcher, emb.model_id, vectors, queries, top_k))
            lib.search_text(TEXT_QUERIES[0], top_k=top_k)  # warm-up
            times = []
            for i in range(n_queries):
                q = f"{TEXT_QUERIES[i % len(TEXT_QUERIES)]} {i}"
                started = time.perf_counter()
                res = lib.search_text(q, top_k=top_k)
                times.append(time.perf_counter() - started)
                assert len(res.hits) == top_k
            e2e = ms_summary(times)
        out["method"] = "end to end: Library.search_text (real text encoder + HNSW + catalog rows)"
    else:
        # No embeddings table at this size (4 GB of blobs we do not need for queries), so
        # no Library: the engine's VectorIndex.load + SearchService on the catalog rows,
        # plus the separately measured text-encode time.
        catalog = Catalog(lib_dir / CATALOG_FILE)
        try:
            t = time.perf_counter()
            index = VectorIndex.load(lib_dir / INDEX_FILE, dim, data.SYNTH_MODEL_ID)
            out["index_load_s"] = round(time.perf_counter() - t, 3)
            out.update(_recall_and_latency(
                index, SearchService(catalog), data.SYNTH_MODEL_ID, vectors, queries, top_k))
        finally:
            catalog.close()
        hc = out["hnsw_catalog_ms"]
        e2e = {"p50": round(hc["p50"] + text_ms["p50"], 3),  # type: ignore[index]
               "p99": round(hc["p99"] + text_ms["p99"], 3)}  # type: ignore[index]
        out["method"] = ("HNSW + catalog rows measured (SearchService.search_vector), plus "
                         "the measured text-encode p50/p99 added")
    out["p50_ms"], out["p99_ms"] = e2e["p50"], e2e["p99"]
    brute = _bruteforce(vectors, queries[:n_brute], top_k)
    out["bruteforce_p50_ms"] = brute["p50"]
    out["bruteforce_ms"] = brute
    out["vectors_mb"] = round(vectors.nbytes / 2**20, 1)
    return out


# -- 3 + 5. open a library (fresh process) and peak RSS --------------------------------


def bench_open(lib_dir: Path, model_kind: str, work: Path, reps: int) -> dict[str, object]:
    runs = []
    for _ in range(reps):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.probe_open", str(lib_dir), model_kind, str(work)],
            cwd=data.REPO, capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"probe_open failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    med = {k: round(statistics.median(r[k] for r in runs), 3) if isinstance(v, int | float) else v
           for k, v in runs[0].items()}
    return {"median": med, "runs": runs}


# -- 4. re-scan of an unchanged library ------------------------------------------------


def bench_rescan(lib_dir: Path, embedder: Embedder, n: int, reps: int) -> dict[str, object]:
    emb = RekeyedEmbedder(embedder, data.SYNTH_MODEL_ID)
    times = []
    with Library.open(lib_dir, emb) as lib:
        for _ in range(reps):
            started = time.perf_counter()
            report = lib.index()
            times.append(time.perf_counter() - started)
            if report.unchanged != n or report.indexed or report.removed or report.failed:
                raise RuntimeError(f"re-scan was not a no-op: {report.to_json()}")
    return {"rescan_s": round(statistics.median(times), 3),
            "per_rep_s": [round(t, 3) for t in times], "files": n,
            "note": "warm page cache (directory entries cached by the previous runs)"}


def machine_info(others: str) -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        ram_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "load_avg_at_start": list(os.getloadavg()),
        "other_load": others,
    }
