"""Benchmark inputs, generated once into benchmarks/work/ (gitignored) and cached.

* 12 MP photos: photos_sample images upscaled to 4000x3000 with mild grain added. A plain
  bicubic upscale is so smooth that it compresses to ~0.5 MB, and JPEG decode time follows
  the entropy-coded size, so without grain the set would decode unrealistically fast;
  with it the files land near a phone camera's 3-5 MB.
* Synthetic embeddings: unit vectors with structure like real image embeddings (clusters
  plus a low-dimensional latent spread plus small isotropic noise). Uniform random unit
  vectors in 1024-d have no near neighbours at all, which is unlike any real library
  and the worst case for HNSW; the generator is documented in BENCHMARKS.md.
* Synthetic libraries: catalog rows + embeddings inserted in bulk through the engine's
  `Catalog.transaction()`, the HNSW index built with `VectorIndex.build` and saved with
  `VectorIndex.save`, i.e. exactly the files `Library.open` expects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from engine import vector_index as vi_mod
from engine.catalog import Catalog, vector_to_blob
from engine.library import CATALOG_FILE, INDEX_FILE
from engine.vector_index import VectorIndex

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "benchmarks" / "work"
SAMPLE_DIR = REPO.parent / "shared" / "data" / "photos_sample" / "images"

MP12_SIZE = (4000, 3000)
GRAIN_SIGMA = 6.0
# Bump when the generators change so stale caches are rebuilt, not silently reused.
DATA_VERSION = 1
SYNTH_MODEL_ID = "bench-synthetic"


def sample_photos(sample_dir: Path = SAMPLE_DIR) -> list[Path]:
    return sorted(p for p in sample_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))


def _make_12mp(args: tuple[str, str, int]) -> str:
    src, dest, seed = args
    with Image.open(src) as im:
        img = im.convert("RGB")
    w, h = img.size
    # Crop to 4:3 landscape (portrait sources are rotated) so every output is 4000x3000.
    if h > w:
        img = img.transpose(Image.Transpose.ROTATE_90)
        w, h = h, w
    tw, th = (w, w * 3 // 4) if w * 3 // 4 <= h else (h * 4 // 3, h)
    left, top = (w - tw) // 2, (h - th) // 2
    img = img.crop((left, top, left + tw, top + th)).resize(MP12_SIZE, Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.int16)
    rng = np.random.default_rng(seed)
    grain = rng.standard_normal(arr.shape[:2], dtype=np.float32) * GRAIN_SIGMA
    arr = np.clip(arr + grain.astype(np.int16)[..., None], 0, 255).astype(np.uint8)
    tmp = dest + ".tmp"
    Image.fromarray(arr).save(tmp, "JPEG", quality=90)
    os.replace(tmp, dest)
    return dest


def ensure_12mp_photos(count: int, work: Path = WORK, sample_dir: Path = SAMPLE_DIR) -> Path:
    """`count` 4000x3000 q90 JPEGs in work/photos_12mp_<count>/ (made once, then reused)."""
    out = work / f"photos_12mp_v{DATA_VERSION}_{count}"
    sources = sample_photos(sample_dir)
    if not sources:
        raise FileNotFoundError(f"no sample photos in {sample_dir}")
    jobs = []
    for i in range(count):
        dest = out / f"mp12_{i:04d}.jpg"
        if not dest.exists():
            jobs.append((str(sources[i % len(sources)]), str(dest), i))
    if jobs:
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        log.info("generating %d 12 MP photos in %s (once)", len(jobs), out)
        with ProcessPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
            list(pool.map(_make_12mp, jobs, chunksize=4))
        log.info("12 MP photos ready in %.1f s", time.perf_counter() - started)
    return out


def ensure_sample_copy(count: int, work: Path = WORK, sample_dir: Path = SAMPLE_DIR) -> Path:
    """The first `count` sample photos as is (hardlinked so only the set's size varies)."""
    sources = sample_photos(sample_dir)[:count]
    if count >= len(sample_photos(sample_dir)):
        return sample_dir
    out = work / f"photos_sample_{count}"
    out.mkdir(parents=True, exist_ok=True)
    for src in sources:
        dest = out / src.name
        if not dest.exists():
            try:
                os.link(src, dest)
            except OSError:
                shutil.copy2(src, dest)
    return out


# -- synthetic vectors ---------------------------------------------------------------

N_CLUSTERS = 2000
LATENT_DIM = 32
LATENT_SCALE = 0.8
NOISE_SCALE = 0.3


def _generator_params(dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(12345 + dim)
    centers = rng.standard_normal((N_CLUSTERS, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    basis = rng.standard_normal((dim, LATENT_DIM), dtype=np.float32) / np.sqrt(dim)
    return centers, basis


def synthetic_vectors(n: int, dim: int, seed: int, chunk: int = 50_000) -> np.ndarray:
    """(n, dim) float32 unit rows: cluster centre + latent spread + isotropic noise."""
    centers, basis = _generator_params(dim)
    out = np.empty((n, dim), np.float32)
    rng = np.random.default_rng(seed)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centers[rng.integers(0, N_CLUSTERS, m)]
        x += (rng.standard_normal((m, LATENT_DIM), dtype=np.float32) * LATENT_SCALE) @ basis.T
        x += rng.standard_normal((m, dim), dtype=np.float32) * (NOISE_SCALE / np.sqrt(dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + m] = x
    return out


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 100_000) -> np.ndarray:
    """Ground-truth top-k ids (row index) by brute-force inner product."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for s in range(0, len(vectors), chunk):
        scores = queries @ vectors[s : s + chunk].T
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + s], axis=1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, order, 1)
        best_i = np.take_along_axis(cand_i, order, 1)
    return best_i


@contextlib.contextmanager
def hnsw_params(m: int | None, ef_construction: int | None) -> Iterator[None]:
    """Temporarily build with other HNSW settings (the 1M case); restores the defaults."""
    old = (vi_mod.HNSW_M, vi_mod.HNSW_EF_CONSTRUCTION)
    if m is not None:
        vi_mod.HNSW_M = m
    if ef_construction is not None:
        vi_mod.HNSW_EF_CONSTRUCTION = ef_construction
    try:
        yield
    finally:
        vi_mod.HNSW_M, vi_mod.HNSW_EF_CONSTRUCTION = old


# -- files for the re-scan benchmark ---------------------------------------------------

FILES_PER_DIR = 1000


def ensure_tiny_files(n: int, work: Path = WORK, sample_dir: Path = SAMPLE_DIR) -> Path:
    """n small JPEGs under work/files_<n>/dNNN/ as hardlinks of one sample photo."""
    out = work / f"files_{n}"
    done = out / ".complete"
    if done.exists():
        return out
    src = sample_photos(sample_dir)[0]
    started = time.perf_counter()
    for i in range(n):
        d = out / f"d{i // FILES_PER_DIR:04d}"
        if i % FILES_PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
        dest = d / f"p{i:07d}.jpg"
        if not dest.exists():
            try:
                os.link(src, dest)
            except OSError:
                shutil.copy2(src, dest)
    done.write_text("ok")
    log.info("%d tiny files ready in %.1f s", n, time.perf_counter() - started)
    return out


def tiny_file_paths(files_dir: Path, n: int) -> list[str]:
    return [
        str(files_dir / f"d{i // FILES_PER_DIR:04d}" / f"p{i:07d}.jpg") for i in range(n)
    ]


# -- synthetic libraries ---------------------------------------------------------------


def build_synthetic_library(
    lib_dir: Path,
    vectors: np.ndarray,
    model_id: str,
    files_dir: Path | None = None,
    store_embeddings: bool = True,
    hnsw_m: int | None = None,
    hnsw_ef_construction: int | None = None,
) -> dict[str, float]:
    """catalog.db (+ embeddings) + saved index.hnsw for len(vectors) photos.

    Rows point at the real files in `files_dir` (size/mtime from disk, so a re-scan finds
    them unchanged) or at nonexistent paths. Returns build timings (s).
    """
    n, dim = vectors.shape
    if lib_dir.exists():
        shutil.rmtree(lib_dir)
    lib_dir.mkdir(parents=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    catalog = Catalog(lib_dir / CATALOG_FILE)
    try:
        catalog.set_meta("model_id", model_id)
        folder = files_dir if files_dir is not None else lib_dir / "no-such-folder"
        folder_id = catalog.add_folder(str(folder.resolve()))
        if files_dir is not None:
            paths = tiny_file_paths(files_dir.resolve(), n)
            st = os.stat(paths[0])  # hardlinks of one file: one size/mtime for all
            size, mtime_ns = st.st_size, st.st_mtime_ns
        else:
            paths = [str(folder / f"p{i:07d}.jpg") for i in range(n)]
            size, mtime_ns = 100_000, 1_600_000_000 * 10**9
        chunk = 50_000
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            with catalog.transaction() as conn:
                conn.executemany(
                    "INSERT INTO photos(id, path, folder_id, size, mtime_ns, content_hash, "
                    "width, height, taken_at, sort_date, status, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?, 640, 480, NULL, ?, 'ok', NULL)",
                    (
                        (i + 1, paths[i], folder_id, size, mtime_ns, f"{i:040x}",
                         1_600_000_000.0 + i)
                        for i in range(s, e)
                    ),
                )
                if store_embeddings:
                    conn.executemany(
                        "INSERT INTO embeddings(content_hash, model_id, vector) VALUES (?, ?, ?)",
                        ((f"{i:040x}", model_id, vector_to_blob(vectors[i])) for i in range(s, e)),
                    )
        with catalog.transaction() as conn:
            catalog.bump_generation(conn)
        timings["catalog_s"] = time.perf_counter() - started
        t = time.perf_counter()
        with hnsw_params(hnsw_m, hnsw_ef_construction):
            index = VectorIndex.build(np.arange(1, n + 1), vectors, dim, model_id)
        timings["hnsw_build_s"] = time.perf_counter() - t
        t = time.perf_counter()
        index.save(lib_dir / INDEX_FILE, catalog.generation)
        timings["index_save_s"] = time.perf_counter() - t
        timings["index_file_mb"] = os.path.getsize(lib_dir / INDEX_FILE) / 2**20
        timings["catalog_file_mb"] = os.path.getsize(lib_dir / CATALOG_FILE) / 2**20
    finally:
        catalog.close()
    return timings


def library_cached(name: str, spec: dict[str, object], work: Path = WORK) -> bool:
    meta_path = work / "libs" / f"{name}.json"
    if not meta_path.exists() or not (work / "libs" / name / INDEX_FILE).exists():
        return False
    return json.loads(meta_path.read_text()).get("spec") == {**spec, "data_version": DATA_VERSION}


def cached_library(
    name: str,
    vectors_fn: Callable[[], np.ndarray],  # only called when (re)building
    spec: dict[str, object],
    work: Path = WORK,
    **build_kwargs: object,
) -> tuple[Path, dict[str, object]]:
    """Build a synthetic library once; rebuild when `spec` (sizes, params, version) changes."""
    lib_dir = work / "libs" / name
    meta_path = work / "libs" / f"{name}.json"
    spec = {**spec, "data_version": DATA_VERSION}
    if meta_path.exists() and (lib_dir / INDEX_FILE).exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("spec") == spec:
            meta["cached"] = True
            return lib_dir, meta
    log.info("building synthetic library %s (%s)", name, spec)
    timings = build_synthetic_library(lib_dir, vectors_fn(), **build_kwargs)  # type: ignore[arg-type]
    meta = {"spec": spec, "build": timings, "built_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    meta_path.write_text(json.dumps(meta, indent=1))
    meta["cached"] = False
    return lib_dir, meta
