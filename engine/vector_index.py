"""Approximate nearest-neighbour search over photo embeddings (hnswlib, inner product).

Labels are the catalog's integer photo ids (`photos.id`): they survive moves/renames
(the row is updated in place), and a changed photo keeps its id while its vector is
replaced (hnswlib's add_items on an existing label updates it).

The saved index is a cache of the catalog's `embeddings` table: it is written atomically
with a JSON sidecar (count, model_id, dim, catalog generation, size and CRC-32 of the
file), and only once the written file's layout has been checked, so a full disk leaves the
old pair in place rather than a short file; `load_or_rebuild` trusts it only if every field
still matches the catalog and the file's checksum and layout match, otherwise it rebuilds
from the vectors. The checksum is verified
before hnswlib reads the file because hnswlib trusts its input: damaged link lists make
`knn_query` segfault, damaged vectors silently return the wrong photos.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import mmap
import os
import struct
import tempfile
import threading
import zlib
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

# CRC-32 rather than a cryptographic hash: the threat is a damaged disk or a half-copied
# file, not an adversary, and it is the cheapest full read on CPUs without SHA extensions.
# Measured on a 100K x 1026-d index (~434 MB): crc32 0.24 s, sha256 0.31 s (SHA-NI),
# blake2b 0.87 s. 4 MB chunks keep the check out of peak RSS (the file is in the page cache
# right after, so hnswlib's own read is cheap).
CHECKSUM_ALGO = "crc32"
CHECKSUM_CHUNK = 4 << 20


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

    def knn_many(
        self, queries: np.ndarray, k: int, ef: int = 64, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k of many queries in one hnswlib call: (labels, scores), each
        (n, k'), best first, k' = min(k, live photos). For whole-library passes (duplicates)
        where one `knn` call per photo costs milliseconds each; a low ef trades a little
        recall of far neighbours, which such passes (a threshold near 1) do not need."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        threads = num_threads or max(1, os.cpu_count() or 1)
        with self._lock:
            k = min(int(k), len(self._live))
            while k > 0:
                self._index.set_ef(max(int(ef), k))
                try:
                    labels, dists = self._index.knn_query(queries, k=k, num_threads=threads)
                except RuntimeError:
                    k //= 2  # as in knn: too many deleted neighbours for k results
                    continue
                return labels.astype(np.int64), (1.0 - dists).astype(np.float32)
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.int64), empty.astype(np.float32)

    # -- persistence -------------------------------------------------------------------

    def save(self, path: Path, generation: int) -> None:
        """Write index + sidecar atomically, or not at all.

        Both go to temp files in the same directory, are fsynced and checked, and only
        then replace the old pair (index first, then sidecar). hnswlib's save_index
        ignores write errors - on a full disk it leaves a short or 0-byte file and
        returns normally - so the temp file's structure is walked against the element
        count before it may replace anything. On any failure the temp files are deleted,
        the old index and sidecar stay as they were, and OSError is raised.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        side = sidecar_path(path)
        with self._lock:
            temps: list[str] = []
            try:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
                os.close(fd)
                temps.append(tmp)
                self._index.save_index(tmp)
                _fsync_file(tmp)
                problem = hnsw_file_problem(tmp, self.dim, self._index.element_count)
                if problem:
                    raise OSError(
                        errno.EIO, f"the search index was not written completely ({problem}); "
                        "is the disk full?", str(path)
                    )
                # The sidecar describes exactly the bytes that were fsynced. A crash between
                # the two replaces leaves the old sidecar, whose checksum no longer matches:
                # the index is rebuilt, never trusted.
                meta = {
                    "count": len(self._live),
                    "model_id": self.model_id,
                    "dim": self.dim,
                    "generation": int(generation),
                    "index_bytes": os.path.getsize(tmp),
                    "checksum": file_checksum(tmp),
                    # hnswlib keeps deleted labels in get_ids_list() and only tells them
                    # apart by probing each one (15 s at 100K x 1024-d).
                    "deleted": sorted(self._deleted),
                }
                temps.append(_write_temp_text(side, json.dumps(meta)))
                os.replace(temps[0], path)
                os.replace(temps[1], side)
                temps.clear()
                _fsync_dir(path.parent)
            except BaseException:
                for tmp in temps:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                raise

    @classmethod
    def load(cls, path: Path, dim: int, model_id: str) -> VectorIndex:
        """Read a saved index as is; `load_or_rebuild` verifies its checksum first."""
        self = cls.__new__(cls)
        self.dim = int(dim)
        self.model_id = model_id
        self._lock = threading.Lock()
        self._index = hnswlib.Index(space="ip", dim=self.dim)
        self._index.load_index(str(path), allow_replace_deleted=False)
        self._index.set_ef(HNSW_EF_SEARCH)
        self._changes = 0
        labels = set(self._index.get_ids_list())
        listed = _sidecar_deleted(path)
        if listed is None:
            # Every sidecar that carries a checksum lists the deleted labels; without them
            # a deleted label would be served as live.
            raise ValueError("sidecar does not list the deleted labels")
        self._deleted = listed & labels
        self._live = labels - self._deleted
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
        """Load the cached index if its sidecar and checksum match, else rebuild it.

        Returns (index, rebuilt). A rebuilt index is saved straight away. A missing,
        outdated or old-format (no checksum) cache is rebuilt quietly (info); a damaged
        one (checksum mismatch, hnswlib refusing it) with a warning.
        """
        path = Path(path)
        reason = _stale_reason(path, dim, model_id, expected_count, generation)
        damaged = False
        if reason is None:
            damaged = True
            reason = _damage_reason(path, dim)
        if reason is None:
            try:
                index = cls.load(path, dim, model_id)
                if index.count == expected_count:
                    return index, False
                reason = f"holds {index.count} vectors, catalog has {expected_count}"
            except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
                reason = f"unreadable ({exc})"
        if damaged:
            log.warning(
                "search index %s is damaged (%s); rebuilding it from the catalog", path, reason
            )
        else:
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


def file_checksum(path: str | os.PathLike[str]) -> str:
    """'crc32:<8 hex digits>' of the whole file, read in chunks."""
    crc = 0
    buf = bytearray(CHECKSUM_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
    return f"{CHECKSUM_ALGO}:{crc:08x}"


def _damage_reason(path: Path, dim: int) -> str | None:
    """None if the file's checksum is the one its sidecar recorded and its layout is whole
    (an older save could leave a short file behind a sidecar that vouched for it)."""
    try:
        want = json.loads(sidecar_path(path).read_text()).get("checksum")
        got = file_checksum(path)
        if got != want:
            return f"checksum is {got}, the sidecar recorded {want}"
        return hnsw_file_problem(path, dim)
    except (OSError, ValueError, AttributeError, struct.error) as exc:
        return f"unreadable ({exc})"


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
    checksum = meta.get("checksum")
    if not isinstance(checksum, str) or not checksum.startswith(CHECKSUM_ALGO + ":"):
        # Saved before checksums existed (or with another algorithm): the content cannot
        # be vouched for, so it is rebuilt once and saved with one.
        return "sidecar has no checksum (older format)"
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


def _write_temp_text(path: Path, text: str) -> str:
    """`text` in a fsynced temp file beside `path` (the caller replaces `path` with it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


# hnswlib 0.8.0's saveIndex layout (pinned in pyproject): a 96-byte header, then
# cur_element_count level-0 records of size_data_per_element bytes, then per element a
# uint32 byte count and that many bytes of upper-level links. Walking it costs ~35 ms at
# 100K elements (one 4-byte read per element, the file already in the page cache).
_HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")
_LINK_SIZE = struct.Struct("<I")


def hnsw_file_problem(path: str | os.PathLike[str], dim: int, count: int | None = None) -> str | None:
    """None if `path` is a complete hnswlib file for `dim`-d vectors (and `count`
    elements, if given), else what is wrong: a cheap walk of its layout, which catches the
    short or empty file a full disk leaves (hnswlib does not check its writes)."""
    size = os.path.getsize(path)
    if size < _HNSW_HEADER.size:
        return f"{size} bytes, shorter than the header"
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        header = _HNSW_HEADER.unpack_from(data, 0)
        elements, per_element, max_m0 = header[2], header[3], header[9]
        if count is not None and elements != count:
            return f"holds {elements} elements, expected {count}"
        if per_element != max_m0 * 4 + 4 + 4 * dim + 8:
            return f"element size {per_element} does not fit {dim}-d vectors"
        pos = _HNSW_HEADER.size + elements * per_element
        unpack = _LINK_SIZE.unpack_from
        for _ in range(elements):
            if pos + 4 > size:
                return f"{size} bytes, cut short in the link lists"
            pos += 4 + unpack(data, pos)[0]
    if pos != size:
        return f"{size} bytes, the layout needs {pos}"
    return None
