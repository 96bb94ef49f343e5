"""Approximate nearest-neighbour search over photo embeddings (hnswlib, inner product).

Labels are the catalog's integer photo ids (`photos.id`): they survive moves/renames
(the row is updated in place), and a changed photo keeps its id while its vector is
replaced (hnswlib's add_items on an existing label updates it).

The saved index is a cache of the catalog's `embeddings` table: it is written atomically
with a JSON sidecar (count, model_id, dim, catalog generation); `load_or_rebuild` trusts
it only if every field still matches the catalog, otherwise it rebuilds from the vectors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import hnswlib
import numpy as np

log = logging.getLogger(__name__)

# M=16 / ef_construction=200 with ef_search = max(256, 4k). ef 128 gave recall@10 1.0 on
# 3k 32-d vectors but only 0.961 at 100K x 1024-d (structured synthetic embeddings,
# benchmarks/); ef 256 gives 0.992 there at ~4 ms a query (ef 200: 0.987, 320: 0.999).
# Up to EXHAUSTIVE_MAX vectors ef is the whole index, which makes the search exact.
# Beyond ~500K vectors the graph needs a wider search for the same recall: at 1M x 1024-d
# (a reduced M=12 / ef_construction=40 build) ef 256 gave recall@10 0.78, 1024 0.97 and
# 2048 0.99 at 24 ms p99, so ef also grows with the index: count / EF_PER_COUNT.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 256
EF_PER_K = 4
EF_PER_COUNT = 500
EXHAUSTIVE_MAX = 2000
INITIAL_CAPACITY = 1024

SIDECAR_SUFFIX = ".json"


class VectorIndex:
    """Thread-safe wrapper: one lock so add/mark_deleted never run beside knn."""

    def __init__(self, dim: int, model_id: str, capacity: int = INITIAL_CAPACITY) -> None:
        self.dim = int(dim)
        self.model_id = model_id
        self._lock = threading.Lock()
        self._index = hnswlib.Index(space="ip", dim=self.dim)
        self._index.init_index(
            max_elements=max(capacity, 16), ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M
        )
        self._index.set_ef(HNSW_EF_SEARCH)
        self._live: set[int] = set()
        self._deleted: set[int] = set()
        self._changes = 0

    # -- mutation ----------------------------------------------------------------------

    def add(
        self, ids: np.ndarray | list[int], vectors: np.ndarray, num_threads: int = 1
    ) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        with self._lock:
            needed = self._index.element_count + len(ids)
            if needed > self._index.get_max_elements():
                # Doubling keeps the amortised cost of resize_index (a full copy) low.
                new_cap = max(needed, self._index.get_max_elements() * 2)
                self._index.resize_index(new_cap)
            # Re-adding a deleted label would resurrect it in place; unmark first so
            # hnswlib updates the stored vector instead of refusing.
            for label in ids.tolist():
                if label in self._deleted:
                    with contextlib.suppress(RuntimeError):
                        self._index.unmark_deleted(label)
                    self._deleted.discard(label)
            self._index.add_items(vectors, ids, num_threads=num_threads)
            self._live.update(ids.tolist())
            self._changes += 1

    def mark_deleted(self, ids: list[int] | np.ndarray) -> None:
        with self._lock:
            for label in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
                if label in self._live:
                    self._index.mark_deleted(label)
                    self._live.discard(label)
                    self._deleted.add(label)
                    self._changes += 1

    # -- queries -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, label: object) -> bool:
        return label in self._live

    @property
    def changes(self) -> int:
        """Bumped by every add / effective mark_deleted: tells a caller whether to save."""
        return self._changes

    @property
    def count(self) -> int:
        return len(self._live)

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._live)

    def knn(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (photo id, inner-product score), best first."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        with self._lock:
            k = min(int(k), len(self._live))
            while k > 0:
                ef = max(HNSW_EF_SEARCH, EF_PER_K * k, len(self._live) // EF_PER_COUNT)
                if len(self._live) <= EXHAUSTIVE_MAX:
                    ef = max(ef, self._index.element_count)
                self._index.set_ef(ef)
                try:
                    labels, dists = self._index.knn_query(query, k=k, num_threads=1)
                except RuntimeError:
                    # Too many deleted neighbours for a contiguous result; ask for fewer.
                    k //= 2
                    continue
                # hnswlib's 'ip' distance is 1 - <a, b>.
                return [
                    (int(lbl), float(1.0 - d)) for lbl, d in zip(labels[0], dists[0], strict=True)
                ]
            return []

    # -- persistence -------------------------------------------------------------------

    def save(self, path: Path, generation: int) -> None:
        """Write index + sidecar atomically (temp file, fsync, os.replace)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            os.close(fd)
            try:
                self._index.save_index(tmp)
                _fsync_file(tmp)
                os.replace(tmp, path)
                meta = {
                    "count": len(self._live),
                    "model_id": self.model_id,
                    "dim": self.dim,
                    "generation": int(generation),
                    "index_bytes": os.path.getsize(path),
                    # hnswlib keeps deleted labels in get_ids_list(); listing them here
                    # lets load() skip probing every label (15 s at 100K x 1024-d).
                    "deleted": sorted(self._deleted),
                }
                _atomic_write_text(sidecar_path(path), json.dumps(meta))
                _fsync_dir(path.parent)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    @classmethod
    def load(cls, path: Path, dim: int, model_id: str) -> VectorIndex:
        self = cls.__new__(cls)
        self.dim = int(dim)
        self.model_id = model_id
        self._lock = threading.Lock()
        self._index = hnswlib.Index(space="ip", dim=self.dim)
        self._index.load_index(str(path), allow_replace_deleted=False)
        self._index.set_ef(HNSW_EF_SEARCH)
        self._changes = 0
        labels = self._index.get_ids_list()
        listed = _sidecar_deleted(path)
        if listed is not None:
            self._deleted = listed & set(labels)
            self._live = set(labels) - self._deleted
            return self
        # Older sidecar without the deleted list: deleted labels are still listed by
        # hnswlib and get_items refuses them, which tells them apart (slow: one call each).
        live: set[int] = set()
        deleted: set[int] = set()
        for label in labels:
            try:
                self._index.get_items([label])
            except RuntimeError:
                deleted.add(int(label))
                continue
            live.add(int(label))
        self._live = live
        self._deleted = deleted
        return self

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, model_id: str) -> VectorIndex:
        index = cls(dim, model_id, capacity=max(INITIAL_CAPACITY, int(len(ids) * 1.25)))
        if len(ids):
            # A (re)build blocks opening the library; use every core (single-threaded,
            # 100K x 1024-d takes ~5 min on a laptop).
            index.add(ids, vectors, num_threads=os.cpu_count() or 1)
        return index

    @classmethod
    def load_or_rebuild(
        cls,
        path: Path,
        *,
        dim: int,
        model_id: str,
        expected_count: int,
        generation: int,
        vectors: Callable[[], tuple[np.ndarray, np.ndarray]],
        save: bool = True,
    ) -> tuple[VectorIndex, bool]:
        """Load the cached index if its sidecar matches the catalog, else rebuild it.

        Returns (index, rebuilt). A rebuilt index is saved straight away.
        """
        path = Path(path)
        reason = _stale_reason(path, dim, model_id, expected_count, generation)
        if reason is None:
            try:
                index = cls.load(path, dim, model_id)
                if index.count == expected_count:
                    return index, False
                reason = f"holds {index.count} vectors, catalog has {expected_count}"
            except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
                reason = f"unreadable ({exc})"
        log.info("rebuilding search index %s: %s", path, reason)
        ids, vecs = vectors()
        index = cls.build(ids, vecs, dim, model_id)
        if not save:
            return index, True
        try:
            index.save(path, generation)
        except OSError as exc:  # read-only media: the in-memory index still works
            log.warning("could not save search index %s: %s", path, exc)
        return index, True


def sidecar_path(path: Path) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def _sidecar_deleted(path: Path) -> set[int] | None:
    """Deleted labels recorded by save(), or None when the sidecar predates that field."""
    try:
        meta = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return None
    deleted = meta.get("deleted") if isinstance(meta, dict) else None
    if not isinstance(deleted, list):
        return None
    return {int(x) for x in deleted}


def _stale_reason(
    path: Path, dim: int, model_id: str, count: int, generation: int
) -> str | None:
    side = sidecar_path(path)
    if not path.exists() or not side.exists():
        return "missing"
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        return f"sidecar unreadable ({exc})"
    if not isinstance(meta, dict):
        return "sidecar malformed"
    checks = {
        "model_id": model_id,
        "dim": dim,
        "count": count,
        "generation": generation,
        "index_bytes": path.stat().st_size,
    }
    for key, want in checks.items():
        if meta.get(key) != want:
            return f"{key} is {meta.get(key)!r}, expected {want!r}"
    return None


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform/filesystem
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
