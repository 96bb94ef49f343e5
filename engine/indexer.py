"""Bringing the catalog and the search index in line with the files on disk.

How a file is classified (against the catalog row at the same path, if any):

* same (size, mtime_ns) as the row -> unchanged, not even read (failed rows stay failed:
  a broken file is retried only once its size or mtime changes);
* otherwise it is read once; the bytes are hashed (blake2b) and, only if no embedding is
  stored for that hash and model, decoded, thumbnailed and `prepare_image`d - all in a
  bounded thread pool;
* a new path whose hash belongs to a row that disappeared in the same pass is a move:
  the row (and so its photo id / index label) is re-pointed, nothing is re-embedded;
* rows whose files are gone are deleted at the end of a completed pass; embeddings are
  kept by hash, so a file that comes back later is not re-embedded either.

A folder that is missing, or present but empty while the catalog has photos in it (an
unmounted drive's mount point), is marked offline with its photos - never deleted.

Per batch: `embed_prepared` on this thread while the pool decodes the next files, then
ONE catalog transaction (photos + embeddings + generation bump), then the VectorIndex
update. A crash loses at most the batch in flight; the index file is only a cache whose
sidecar generation then no longer matches, so it is rebuilt on the next open.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import imaging
from .catalog import STATUS_FAILED, STATUS_OFFLINE, STATUS_OK, Catalog, PhotoRow
from .embedder import Embedder
from .scanner import ScanEntry, is_hidden_path, is_photo_name, scan_folder
from .vector_index import VectorIndex

log = logging.getLogger(__name__)

BATCH_SIZE = 32
# Decode threads: one core is left to the model thread (VSEEmbedder runs torch on
# cpu_count - 1 threads, at most 4). On 2 cores a second decoder only steals CPU time from
# the model thread, which is the bottleneck: 12 MP indexing went from ~0.71 to ~0.76 of
# the model's pure forward rate on a loaded 2-core machine (BENCHMARKS.md).
DEFAULT_WORKERS = max(1, min(4, (os.cpu_count() or 2) - 1))
SAVE_EVERY_S = 30.0
VANISHED = "file vanished during scan"


@dataclass
class IndexProgress:
    done: int
    total: int
    current_path: str
    eta_s: float | None
    failed: int


@dataclass
class IndexReport:
    indexed: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    offline: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "moved": self.moved,
            "removed": self.removed,
            "offline": self.offline,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
        }


@dataclass
class _Candidate:
    path: str
    size: int
    mtime_ns: int
    folder_id: int | None
    row: PhotoRow | None


@dataclass
class _Prepared:
    kind: str  # 'embed' | 'reuse' | 'failed'
    digest: str | None = None
    reason: str | None = None
    width: int | None = None
    height: int | None = None
    taken_at: str | None = None
    array: np.ndarray | None = None


ProgressFn = Callable[[IndexProgress], None]


class Indexer:
    """Runs one indexing pass; the Library serialises passes and owns the index."""

    def __init__(
        self,
        catalog: Catalog,
        index: VectorIndex,
        embedder: Embedder,
        thumbs_dir: Path,
        save_index: Callable[[], None],
        batch_size: int = BATCH_SIZE,
        workers: int = DEFAULT_WORKERS,
        save_every_s: float | None = None,
    ) -> None:
        self.catalog = catalog
        self.index = index
        self.embedder = embedder
        self.thumbs_dir = thumbs_dir
        self.save_index = save_index
        self.batch_size = batch_size
        self.workers = workers
        self.save_every_s = SAVE_EVERY_S if save_every_s is None else save_every_s
        self._known: set[str] = set()
        self._last_save = time.monotonic()

    # -- entry points ------------------------------------------------------------------

    def reconcile(
        self, progress: ProgressFn | None = None, cancel: threading.Event | None = None
    ) -> IndexReport:
        """Full pass over every folder of the library."""
        report = IndexReport()
        entries: dict[str, tuple[ScanEntry, int]] = {}
        existing: dict[str, PhotoRow] = {}
        for folder_id, folder_path, _online in self.catalog.folders():
            rows = self.catalog.photos_where("folder_id = ?", (folder_id,))
            found = [] if not os.path.isdir(folder_path) else list(scan_folder(folder_path))
            has_photos = any(r.status != STATUS_FAILED for r in rows)
            if not found and has_photos:
                report.offline += self._set_folder_offline(folder_id, folder_path)
                continue
            self._set_folder_online(folder_id)
            for row in rows:
                existing[row.path] = row
            for entry in found:
                entries.setdefault(entry.path, (entry, folder_id))
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                return report
        return self._run(entries, existing, report, progress, cancel)

    def index_paths(
        self,
        paths: Iterable[Path | str],
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> IndexReport:
        """Incremental pass over just these files/directories (the watcher's path)."""
        report = IndexReport()
        folders = [(fid, fp) for fid, fp, _ in self.catalog.folders()]
        entries: dict[str, tuple[ScanEntry, int]] = {}
        existing: dict[str, PhotoRow] = {}
        for raw in paths:
            path = os.path.abspath(os.fspath(raw))
            owner = _owning_folder(path, folders)
            if owner is None:
                continue
            folder_id, folder_path = owner
            if is_hidden_path(path, folder_path):
                continue
            for row in self.catalog.photos_where(
                "path = ? OR path LIKE ? ESCAPE '\\'", (path, _like_prefix(path))
            ):
                existing[row.path] = row
            if os.path.isdir(path):
                for entry in scan_folder(path):
                    entries.setdefault(entry.path, (entry, folder_id))
            elif is_photo_name(os.path.basename(path)):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                entries[path] = (ScanEntry(path, st.st_size, st.st_mtime_ns), folder_id)
        return self._run(entries, existing, report, progress, cancel)

    def embed_missing(
        self,
        embedder: Embedder,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> int:
        """Store `embedder`'s vectors for every photo lacking one; photos rows untouched.

        Used by switch_model while searches keep using the current model. Returns how
        many were embedded; files whose bytes changed since indexing are left for the
        next index pass.
        """
        have = self.catalog.embedded_hashes(embedder.model_id)
        rows = [
            r
            for r in self.catalog.photos_where("status = 'ok' AND content_hash IS NOT NULL")
            if r.content_hash not in have
        ]
        seen: set[str] = set()
        todo = []
        for r in rows:
            if r.content_hash not in seen:
                seen.add(r.content_hash or "")
                todo.append(_Candidate(r.path, r.size or 0, r.mtime_ns or 0, r.folder_id, r))
        done = 0

        def flush(batch: list[tuple[_Candidate, _Prepared]]) -> None:
            nonlocal done
            ready = [(c, p) for c, p in batch if p.kind == "embed" and p.digest == c.row.content_hash]  # type: ignore[union-attr]
            if not ready:
                return
            vecs = embedder.embed_prepared(np.stack([p.array for _, p in ready]))
            with self.catalog.transaction() as conn:
                for (_, p), v in zip(ready, vecs, strict=True):
                    self.catalog.put_embedding(conn, p.digest or "", embedder.model_id, v)
            done += len(ready)

        self._pipeline(todo, embedder, set(), flush, progress, cancel, IndexReport())
        return done

    # -- the pass ----------------------------------------------------------------------

    def _run(
        self,
        entries: dict[str, tuple[ScanEntry, int]],
        existing: dict[str, PhotoRow],
        report: IndexReport,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
    ) -> IndexReport:
        model_id = self.embedder.model_id
        index_changes, generation = self.index.changes, self.catalog.generation
        self._known = self.catalog.embedded_hashes(model_id)
        candidates: list[_Candidate] = []
        back_online: list[int] = []
        for path, (entry, folder_id) in entries.items():
            row = existing.get(path)
            if row is not None and row.size == entry.size and row.mtime_ns == entry.mtime_ns:
                if row.status == STATUS_FAILED:
                    report.failed.append((path, row.reason or "unknown error"))
                    continue
                if row.content_hash in self._known:
                    report.unchanged += 1
                    if row.status == STATUS_OFFLINE or row.folder_id != folder_id:
                        back_online.append(row.id)
                    if row.id not in self.index:
                        # catalog says indexed, index disagrees (e.g. cache rebuilt
                        # from an older state): re-add from the stored vector.
                        self._readd(row)
                    continue
                # no vector for the current model (model switch): fall through, re-embed
            candidates.append(_Candidate(path, entry.size, entry.mtime_ns, folder_id, row))
        if back_online:
            with self.catalog.transaction() as conn:
                conn.executemany(
                    "UPDATE photos SET status = 'ok', reason = NULL WHERE id = ?",
                    [(i,) for i in back_online],
                )
        gone_rows = [r for p, r in existing.items() if p not in entries]
        self._gone_by_hash: dict[str, list[PhotoRow]] = {}
        for row in gone_rows:
            if row.content_hash and row.status != STATUS_FAILED:
                self._gone_by_hash.setdefault(row.content_hash, []).append(row)
        self._claimed: set[int] = set()
        self._report_sink = report
        self._pipeline(
            candidates, self.embedder, self._known, self._flush_batch, progress, cancel, report
        )

        if not report.cancelled:
            self._remove_gone([r for r in gone_rows if r.id not in self._claimed], report)
        # An unchanged pass must not rewrite the index file: at 100K x 1024-d that is a
        # 400 MB write + fsync, ~40% of a no-op re-scan. The saved file stays valid as
        # long as neither the index nor the catalog generation moved.
        if self.index.changes != index_changes or self.catalog.generation != generation:
            self.save_index()
            self._last_save = time.monotonic()
        return report

    def _pipeline(
        self,
        candidates: list[_Candidate],
        embedder: Embedder,
        known: set[str],
        flush: Callable[[list[tuple[_Candidate, _Prepared]]], None],
        progress: ProgressFn | None,
        cancel: threading.Event | None,
        report: IndexReport,
    ) -> None:
        """Decode in a bounded pool, hand results to `flush` in batches, in file order."""
        total = len(candidates)
        started = time.monotonic()
        window = self.batch_size * 2  # bounded read-ahead keeps memory flat
        todo = iter(candidates)
        pending: deque[tuple[_Candidate, Future[_Prepared]]] = deque()
        batch: list[tuple[_Candidate, _Prepared]] = []
        done = failed = 0
        if progress and total:
            progress(IndexProgress(0, total, "", None, 0))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ps-decode") as pool:

            def fill() -> None:
                while len(pending) < window:
                    cand = next(todo, None)
                    if cand is None:
                        return
                    pending.append((cand, pool.submit(self._prepare, cand, embedder, known)))

            fill()
            while pending:
                if cancel is not None and cancel.is_set():
                    report.cancelled = True
                    for _, fut in pending:
                        fut.cancel()
                    break
                cand, fut = pending.popleft()
                prepared = fut.result()
                fill()
                batch.append((cand, prepared))
                done += 1
                failed += prepared.kind == "failed"
                n_embed = sum(p.kind == "embed" for _, p in batch)
                if n_embed >= self.batch_size or len(batch) >= 4 * self.batch_size:
                    flush(batch)
                    batch = []
                if progress:
                    elapsed = time.monotonic() - started
                    eta = elapsed / done * (total - done) if done else None
                    progress(IndexProgress(done, total, cand.path, eta, failed))
            if batch:
                flush(batch)

    def _prepare(self, cand: _Candidate, embedder: Embedder, known: set[str]) -> _Prepared:
        """Worker thread: read once, hash, and decode only if no vector is stored."""
        try:
            data = imaging.read_file(cand.path)
            digest = imaging.content_hash(data)
            thumb = imaging.thumbnail_file(self.thumbs_dir, digest)
            if digest in known and thumb.exists():
                return _Prepared("reuse", digest=digest)
            decoded = imaging.decode_image(data)
            imaging.save_thumbnail(decoded.image, self.thumbs_dir, digest)
            taken = decoded.taken_at.isoformat() if decoded.taken_at else None
            if digest in known:
                return _Prepared("reuse", digest, None, decoded.width, decoded.height, taken)
            array = embedder.prepare_image(decoded.image)
            return _Prepared("embed", digest, None, decoded.width, decoded.height, taken, array)
        except imaging.ImageDecodeError as exc:
            return _Prepared("failed", reason=exc.reason)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the pass
            log.warning("unexpected error preparing %s", cand.path, exc_info=True)
            return _Prepared("failed", reason=f"unexpected error: {exc}")

    def _flush_batch(self, batch: list[tuple[_Candidate, _Prepared]]) -> None:
        model_id = self.embedder.model_id
        to_embed = [p for _, p in batch if p.kind == "embed"]
        vectors: dict[str, np.ndarray] = {}
        if to_embed:
            out = self.embedder.embed_prepared(np.stack([p.array for p in to_embed]))
            vectors = {p.digest or "": v for p, v in zip(to_embed, out, strict=True)}
        adds: dict[int, np.ndarray] = {}
        deletes: list[int] = []
        report = self._report_sink
        with self.catalog.transaction() as conn:
            for digest, vec in vectors.items():
                self.catalog.put_embedding(conn, digest, model_id, vec)
            for cand, prep in batch:
                if prep.kind == "failed":
                    report.failed.append((cand.path, prep.reason or "unknown error"))
                    if prep.reason == VANISHED:
                        if cand.row is not None:
                            conn.execute("DELETE FROM photos WHERE id = ?", (cand.row.id,))
                            deletes.append(cand.row.id)
                        continue
                    self._write_failed(conn, cand, prep.reason or "unknown error")
                    if cand.row is not None:
                        deletes.append(cand.row.id)
                    continue
                digest = prep.digest or ""
                photo_id, kind = self._write_ok(conn, cand, prep)
                if kind == "moved":
                    report.moved += 1
                elif kind == "same" and digest not in vectors:
                    report.unchanged += 1
                else:
                    report.indexed += 1
                if digest in vectors or photo_id not in self.index or kind == "changed":
                    vec = vectors.get(digest)
                    if vec is None:
                        vec = self.catalog.get_embedding(digest, model_id)
                    if vec is not None:
                        adds[photo_id] = vec
            if adds or deletes:
                self.catalog.bump_generation(conn)
        self._known.update(vectors)
        if deletes:
            self.index.mark_deleted([d for d in deletes if d not in adds])
        if adds:
            self.index.add(list(adds), np.stack(list(adds.values())))
        if time.monotonic() - self._last_save > self.save_every_s:
            self.save_index()
            self._last_save = time.monotonic()

    # The report the current pass writes into; an attribute so that flush callbacks
    # (shared with embed_missing) keep one simple signature.
    _report_sink: IndexReport

    def _write_ok(self, conn: Any, cand: _Candidate, prep: _Prepared) -> tuple[int, str]:
        digest = prep.digest
        row = cand.row
        if row is not None and row.content_hash == digest and row.status != STATUS_FAILED:
            conn.execute(
                "UPDATE photos SET size = ?, mtime_ns = ?, status = 'ok', reason = NULL, "
                "folder_id = ? WHERE id = ?",
                (cand.size, cand.mtime_ns, cand.folder_id, row.id),
            )
            return row.id, "same"
        width, height, taken = prep.width, prep.height, prep.taken_at
        if width is None:  # vector reused without decoding: copy what we knew
            known = conn.execute(
                "SELECT width, height, taken_at FROM photos WHERE content_hash = ? LIMIT 1",
                (digest,),
            ).fetchone()
            if known:
                width, height, taken = known
        sort_date = _sort_date(taken, cand.mtime_ns)
        values = (
            cand.path, cand.folder_id, cand.size, cand.mtime_ns, digest, width, height, taken,
            sort_date,
        )
        if row is None:
            movers = [r for r in self._gone_by_hash.get(digest or "", []) if r.id not in self._claimed]
            if movers:
                mover = movers[0]
                self._claimed.add(mover.id)
                conn.execute(
                    "UPDATE photos SET path = ?, folder_id = ?, size = ?, mtime_ns = ?, "
                    "content_hash = ?, width = COALESCE(?, width), height = COALESCE(?, height), "
                    "taken_at = COALESCE(?, taken_at), sort_date = ?, status = 'ok', reason = NULL "
                    "WHERE id = ?",
                    (*values, mover.id),
                )
                return mover.id, "moved"
            cur = conn.execute(
                "INSERT INTO photos(path, folder_id, size, mtime_ns, content_hash, width, height, "
                "taken_at, sort_date, status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok', NULL)",
                values,
            )
            return int(cur.lastrowid or 0), "new"
        conn.execute(
            "UPDATE photos SET path = ?, folder_id = ?, size = ?, mtime_ns = ?, content_hash = ?, "
            "width = ?, height = ?, taken_at = ?, sort_date = ?, status = 'ok', reason = NULL "
            "WHERE id = ?",
            (*values, row.id),
        )
        return row.id, "changed"

    def _write_failed(self, conn: Any, cand: _Candidate, reason: str) -> None:
        if cand.row is None:
            conn.execute(
                "INSERT INTO photos(path, folder_id, size, mtime_ns, status, reason, sort_date) "
                "VALUES (?, ?, ?, ?, 'failed', ?, ?)",
                (cand.path, cand.folder_id, cand.size, cand.mtime_ns, reason,
                 cand.mtime_ns / 1e9),
            )
        else:
            conn.execute(
                "UPDATE photos SET size = ?, mtime_ns = ?, content_hash = NULL, status = 'failed', "
                "reason = ? WHERE id = ?",
                (cand.size, cand.mtime_ns, reason, cand.row.id),
            )

    def _remove_gone(self, rows: list[PhotoRow], report: IndexReport) -> None:
        if not rows:
            return
        with self.catalog.transaction() as conn:
            conn.executemany("DELETE FROM photos WHERE id = ?", [(r.id,) for r in rows])
            self.catalog.bump_generation(conn)
        self.index.mark_deleted([r.id for r in rows])
        report.removed += sum(r.status != STATUS_FAILED for r in rows)

    def _readd(self, row: PhotoRow) -> None:
        vec = self.catalog.get_embedding(row.content_hash or "", self.embedder.model_id)
        if vec is not None:
            self.index.add([row.id], vec[None, :])

    def _set_folder_offline(self, folder_id: int, folder_path: str) -> int:
        log.warning("folder %s is missing or unmounted: its photos are marked offline", folder_path)
        with self.catalog.transaction() as conn:
            conn.execute("UPDATE folders SET online = 0 WHERE id = ?", (folder_id,))
            conn.execute(
                "UPDATE photos SET status = 'offline' WHERE folder_id = ? AND status = 'ok'",
                (folder_id,),
            )
            n = conn.execute(
                "SELECT COUNT(*) FROM photos WHERE folder_id = ? AND status = 'offline'",
                (folder_id,),
            ).fetchone()[0]
        return int(n)

    def _set_folder_online(self, folder_id: int) -> None:
        with self.catalog.transaction() as conn:
            conn.execute("UPDATE folders SET online = 1 WHERE id = ?", (folder_id,))


def _sort_date(taken_at: str | None, mtime_ns: int) -> float:
    """Seconds since the epoch used by date filters: EXIF date (local time) else mtime."""
    if taken_at:
        from datetime import datetime

        try:
            return datetime.fromisoformat(taken_at).timestamp()
        except (ValueError, OverflowError, OSError):
            pass
    return mtime_ns / 1e9


def _owning_folder(path: str, folders: list[tuple[int, str]]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for fid, fpath in folders:
        if path == fpath or path.startswith(fpath.rstrip(os.sep) + os.sep):
            if best is None or len(fpath) > len(best[1]):
                best = (fid, fpath)
    return best


def _like_prefix(path: str) -> str:
    escaped = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.rstrip(os.sep) + os.sep + "%"


__all__ = ["Indexer", "IndexProgress", "IndexReport", "STATUS_OK"]
