"""Bringing the catalog and the search index in line with the files on disk.

How a file is classified (against the catalog row at the same path, if any):

* same (size, mtime_ns) as the row -> unchanged, not even read (failed rows stay failed:
  a broken file is retried only once its size or mtime changes);
* otherwise it goes through the pipeline (engine/pipeline.py): read once, hashed, and
  decoded and prepared for the model only if no embedding is stored for that hash and
  model; identical files in one pass are embedded once;
* a new path whose hash belongs to a row that disappeared in the same pass is a move:
  the row (and so its photo id / index label) is re-pointed, nothing is re-embedded;
* rows whose files are gone are deleted at the end of a completed pass; embeddings are
  kept by hash, so a file that comes back later is not re-embedded either.

Offline, never deleted: a folder that is missing, or present but empty while the
catalog has photos in it (an unmounted drive's mount point), goes offline with its
photos. The same holds for a mount point *inside* a folder: every directory found to be
a mount point is remembered (catalog meta), and while it is missing or empty - unmounted,
or mounted but showing nothing - the photos below it go offline instead of being
deleted. When each went offline is kept for `status`.

Per batch: `embed_prepared` on this thread while the pool decodes the next files, then
ONE catalog transaction (photos + embeddings + generation bump), then the VectorIndex
update. A crash loses at most the batch in flight; the index file is only a cache whose
sidecar generation then no longer matches, so it is rebuilt on the next open. A full
disk ends the pass with `DiskFullError`; every batch committed before it stays.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import (
    STATUS_FAILED,
    STATUS_OFFLINE,
    STATUS_OK,
    Catalog,
    CatalogWriter,
    FolderRow,
    PhotoFields,
    PhotoRow,
    folder_prefix,
)
from .embedder import Embedder
from .errors import DiskFullError
from .imaging import not_regular_file_reason
from .pipeline import (
    DISK_FULL_ERRNOS,
    EMBED,
    FAILED,
    Batch,
    Candidate,
    IndexProgress,
    PipelineState,
    Prepared,
    prepare_file,
    prepared_batches,
)
from .reranking import Reranker
from .scanner import (
    ScanEntry,
    ScanSkip,
    is_hidden_path,
    is_photo_name,
    looks_like_photo_name,
    scan_folder,
    unsupported_reason,
)
from .vector_index import VectorIndex

log = logging.getLogger(__name__)

BATCH_SIZE = 32


def decode_workers(embedder: object | None = None, cores: int | None = None) -> int:
    """Decode threads for an indexing pass, from the core count and the model's runtime.

    On torch eager the model is the bottleneck (~100 ms of CPU per photo, on cpu_count - 1
    threads): decoders get the one core it leaves, since on 2 cores a second decoder only
    stole time from the model thread (12 MP indexing 0.71 -> 0.76 of the forward rate,
    BENCHMARKS.md). On ONNX Runtime int8 the model needs ~10 ms per photo against ~100 ms of
    read + hash + decode + thumbnail + prepare for a 12 MP JPEG, so decoding is the
    bottleneck: every core decodes except those the image session's threads keep busy
    (they sleep between batches: no spinning). 2 cores -> 2, 4 -> 4, 8 -> 7, 16 -> 13.
    Several decoders also overlap one file's hashing (blake2b, GIL released) with
    another's decoding.
    """
    cores = max(1, cores or os.cpu_count() or 2)
    if getattr(embedder, "runtime", "torch") != "onnx":
        return max(1, min(4, cores - 1))
    model_threads = int(getattr(embedder, "image_threads", 1) or 1)
    return max(1, min(16, cores - model_threads + 1))


# Kept for callers that size a pool without an embedder (the torch rule).
DEFAULT_WORKERS = decode_workers()
SAVE_EVERY_S = 30.0
VANISHED = "file vanished during scan"


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
class _PassState:
    """What one indexing pass knows and has done so far."""

    report: IndexReport
    known: set[str]  # hashes with a stored vector for the current model
    gone_by_hash: dict[str, list[PhotoRow]]  # rows whose files vanished: move sources
    claimed: set[int] = field(default_factory=set)  # vanished rows re-pointed by a move
    last_save: float = field(default_factory=time.monotonic)


@dataclass
class _Scan:
    """The files a pass will look at, and the catalog rows they are compared with."""

    entries: dict[str, tuple[ScanEntry, int]] = field(default_factory=dict)
    # photo-named paths (or folders) the scan could not pass on, and why; each becomes a
    # failure with that reason (FIFOs, link loops, unsupported formats, unlistable folders)
    skipped: dict[str, tuple[ScanSkip, int]] = field(default_factory=dict)
    existing: dict[str, PhotoRow] = field(default_factory=dict)
    # folder id -> folder path, for the mount check of vanished rows
    folders: dict[int, str] = field(default_factory=dict)


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
        workers: int | None = None,
        save_every_s: float | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.catalog = catalog
        # attention re-ranking on: each embedded photo's region codes are stored with its vector
        self.reranker = reranker
        self.index = index
        self.embedder = embedder
        self.thumbs_dir = thumbs_dir
        self.save_index = save_index
        self.batch_size = batch_size
        # None: sized for this embedder's runtime (decode_workers)
        self.workers = decode_workers(embedder) if workers is None else workers
        self.save_every_s = SAVE_EVERY_S if save_every_s is None else save_every_s

    # -- entry points ------------------------------------------------------------------

    def reconcile(
        self, progress: ProgressFn | None = None, cancel: threading.Event | None = None
    ) -> IndexReport:
        """Full pass over every folder of the library."""
        report = IndexReport()
        scan = _Scan()
        for folder in self.catalog.folders():
            rows = self.catalog.photos_in_folder(folder.id)
            skips: list[ScanSkip] = []
            found = (
                list(scan_folder(folder.path, on_skip=skips.append))
                if os.path.isdir(folder.path)
                else []
            )
            has_photos = any(r.status != STATUS_FAILED for r in rows)
            if not found and has_photos:
                report.offline += self._set_folder_offline(folder)
                continue
            if not folder.online:
                with self.catalog.write() as w:
                    w.set_folder_online(folder.id)
            scan.folders[folder.id] = folder.path
            for row in rows:
                scan.existing[row.path] = row
            for entry in found:
                scan.entries.setdefault(entry.path, (entry, folder.id))
            for skip in skips:
                scan.skipped.setdefault(skip.path, (skip, folder.id))
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                return report
        return self._run(scan, report, progress, cancel)

    def index_paths(
        self,
        paths: Iterable[Path | str],
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> IndexReport:
        """Incremental pass over just these files/directories (the watcher's path)."""
        report = IndexReport()
        folders = self.catalog.folders()
        scan = _Scan()
        for raw in paths:
            path = os.path.abspath(os.fspath(raw))
            owner = _owning_folder(path, folders)
            if owner is None:
                continue
            if is_hidden_path(path, owner.path):
                continue
            scan.folders[owner.id] = owner.path
            for row in self.catalog.photos_under(path):
                scan.existing[row.path] = row
            if os.path.isdir(path):
                skips: list[ScanSkip] = []
                for entry in scan_folder(path, on_skip=skips.append):
                    scan.entries.setdefault(entry.path, (entry, owner.id))
                for skip in skips:
                    scan.skipped.setdefault(skip.path, (skip, owner.id))
                continue
            found = _inspect_file(path)
            if isinstance(found, ScanEntry):
                scan.entries[path] = (found, owner.id)
            elif isinstance(found, ScanSkip):
                scan.skipped[path] = (found, owner.id)
        return self._run(scan, report, progress, cancel)

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
        done = 0
        for ready in self._unchanged_prepared(
            self.catalog.photos_missing_embedding(embedder.model_id), embedder, progress, cancel
        ):
            vecs = embedder.embed_prepared(np.stack([p.array for p in ready]))
            with self.catalog.write() as w:
                w.put_embeddings(
                    embedder.model_id,
                    {p.digest or "": v for p, v in zip(ready, vecs, strict=True)},
                )
            done += len(ready)
        return done

    def fill_region_codes(
        self, progress: ProgressFn | None = None, cancel: threading.Event | None = None
    ) -> int:
        """Re-ranking on: store region codes for photos indexed without them (before the
        option was on). Their vectors and rows are untouched; files whose bytes changed since
        are left for the next pass. Returns how many got codes."""
        reranker = self.reranker
        if reranker is None or reranker.model_id != self.embedder.model_id:
            return 0
        model_id = self.embedder.model_id
        rows = self.catalog.photos_missing_region_codes(model_id, reranker.attention_id)
        if not rows:
            return 0
        log.info("storing region codes of %d photos indexed before re-ranking was on", len(rows))
        done = 0
        for ready in self._unchanged_prepared(rows, self.embedder, progress, cancel):
            _, blobs = reranker.embed_prepared(np.stack([p.array for p in ready]))
            with self.catalog.write() as w:
                w.put_region_codes(
                    model_id, reranker.attention_id,
                    {p.digest or "": b for p, b in zip(ready, blobs, strict=True)},
                )
            done += len(ready)
        return done

    def _unchanged_prepared(
        self,
        rows: Sequence[PhotoRow],
        embedder: Embedder,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
    ) -> Iterator[list[Prepared]]:
        """Batches of prepared photos for catalog rows that need a second look (a new model's
        vectors, region codes), one per content hash, leaving out files whose bytes changed
        since they were indexed: the next index pass owns those."""
        seen: set[str] = set()
        todo = []
        for r in rows:
            if r.content_hash not in seen:
                seen.add(r.content_hash or "")
                todo.append(Candidate(r.path, r.size or 0, r.mtime_ns or 0, r.folder_id, r))
        for batch in prepared_batches(
            todo,
            lambda c: prepare_file(c, embedder, set(), self.thumbs_dir),
            PipelineState(total=len(todo)),
            batch_size=self.batch_size,
            workers=self.workers,
            progress=progress,
            cancel=cancel,
        ):
            ready = [p for c, p in batch if p.kind == EMBED and c.row and p.digest == c.row.content_hash]
            if ready:
                yield ready

    # -- the pass ----------------------------------------------------------------------

    def _run(
        self,
        scan: _Scan,
        report: IndexReport,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
    ) -> IndexReport:
        """The pass; a full disk ends it with one sentence that says what was kept."""
        index_changes, generation = self.index.changes, self.catalog.generation
        try:
            return self._run_pass(scan, report, progress, cancel)
        except (DiskFullError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno not in DISK_FULL_ERRNOS:
                raise
            # info, not warning: the DiskFullError raised below is the report the user sees
            log.info("disk full during indexing: %s", exc)
            # Batches committed so far stay; the in-flight one was rolled back. Saving the
            # index may fail too (it is a cache: the next open rebuilds it if stale).
            self._save_if_changed(index_changes, generation)
            raise DiskFullError(
                f"disk full: {report.indexed} photos indexed, free space and run index again",
                indexed=report.indexed,
            ) from exc

    def _run_pass(
        self,
        scan: _Scan,
        report: IndexReport,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
    ) -> IndexReport:
        model_id = self.embedder.model_id
        index_changes, generation = self.index.changes, self.catalog.generation
        known = self.catalog.embedded_hashes(model_id)
        candidates: list[Candidate] = []
        back_online: list[int] = []
        for path, (entry, folder_id) in scan.entries.items():
            row = scan.existing.get(path)
            if row is not None and row.size == entry.size and row.mtime_ns == entry.mtime_ns:
                if row.status == STATUS_FAILED:
                    report.failed.append((path, row.reason or "unknown error"))
                    continue
                if row.content_hash in known:
                    report.unchanged += 1
                    if row.status == STATUS_OFFLINE or row.folder_id != folder_id:
                        back_online.append(row.id)
                    if row.id not in self.index:
                        # catalog says indexed, index disagrees (e.g. cache rebuilt
                        # from an older state): re-add from the stored vector.
                        self._readd(row)
                    continue
                # no vector for the current model (model switch): fall through, re-embed
            candidates.append(Candidate(path, entry.size, entry.mtime_ns, folder_id, row))
        for path, (skip, folder_id) in scan.skipped.items():
            if path in scan.entries:
                continue
            size, mtime_ns = _lstat_size_mtime(path)
            row = scan.existing.get(path)
            if (
                row is not None
                and row.status == STATUS_FAILED
                and row.reason == skip.reason
                and (row.size, row.mtime_ns) == (size, mtime_ns)
            ):
                report.failed.append((path, skip.reason))  # recorded already
                continue
            candidates.append(Candidate(path, size, mtime_ns, folder_id, row, skip.reason))
        if back_online:
            with self.catalog.write() as w:
                w.mark_photos_ok(back_online)
        gone_rows = [
            r for p, r in scan.existing.items() if p not in scan.entries and p not in scan.skipped
        ]
        offline_rows = list(
            {
                r.id: r
                for r in self._behind_offline_mounts(scan, gone_rows)
                + _below_unlisted(scan, gone_rows)
            }.values()
        )
        if offline_rows:
            with self.catalog.write() as w:
                w.mark_photos_offline(r.id for r in offline_rows)
            report.offline += sum(r.status != STATUS_FAILED for r in offline_rows)
            kept = {r.id for r in offline_rows}
            gone_rows = [r for r in gone_rows if r.id not in kept]
        state = _PassState(report, known, {})
        for row in gone_rows:
            if row.content_hash and row.status != STATUS_FAILED:
                state.gone_by_hash.setdefault(row.content_hash, []).append(row)

        pipeline = PipelineState(total=len(candidates))
        for batch in prepared_batches(
            candidates,
            lambda c: prepare_file(c, self.embedder, known, self.thumbs_dir),
            pipeline,
            batch_size=self.batch_size,
            workers=self.workers,
            progress=progress,
            cancel=cancel,
        ):
            self._commit_batch(state, batch)
        report.cancelled = report.cancelled or pipeline.cancelled

        if not report.cancelled:
            self._remove_gone([r for r in gone_rows if r.id not in state.claimed], report)
        self._save_if_changed(index_changes, generation)
        return report

    def _save_if_changed(self, index_changes: int, generation: int) -> None:
        # An unchanged pass must not rewrite the index file: at 100K x 1024-d that is a
        # 400 MB write + fsync, ~40% of a no-op re-scan. The saved file stays valid as
        # long as neither the index nor the catalog generation moved.
        if self.index.changes != index_changes or self.catalog.generation != generation:
            self.save_index()

    def _commit_batch(self, state: _PassState, batch: Batch) -> None:
        model_id = self.embedder.model_id
        to_embed = [p for _, p in batch if p.kind == EMBED]
        vectors: dict[str, np.ndarray] = {}
        region_codes: dict[str, bytes] = {}
        reranker = self.reranker if self.reranker is not None and self.reranker.model_id == model_id else None
        if to_embed and reranker is not None:
            out, blobs = reranker.embed_prepared(np.stack([p.array for p in to_embed]))
            vectors = {p.digest or "": v for p, v in zip(to_embed, out, strict=True)}
            region_codes = {p.digest or "": b for p, b in zip(to_embed, blobs, strict=True)}
        elif to_embed:
            out = self.embedder.embed_prepared(np.stack([p.array for p in to_embed]))
            vectors = {p.digest or "": v for p, v in zip(to_embed, out, strict=True)}
        adds: dict[int, np.ndarray] = {}
        deletes: list[int] = []
        report = state.report
        with self.catalog.write() as w:
            w.put_embeddings(model_id, vectors)
            if region_codes and reranker is not None:
                w.put_region_codes(model_id, reranker.attention_id, region_codes)
            for cand, prep in batch:
                if prep.kind == FAILED:
                    reason = prep.reason or "unknown error"
                    report.failed.append((cand.path, reason))
                    if reason == VANISHED:
                        if cand.row is not None:
                            w.delete_photos([cand.row.id])
                            deletes.append(cand.row.id)
                        continue
                    w.record_failure(
                        cand.path, cand.folder_id, cand.size, cand.mtime_ns, reason,
                        cand.row.id if cand.row is not None else None,
                    )
                    if cand.row is not None:
                        deletes.append(cand.row.id)
                    continue
                digest = prep.digest or ""
                photo_id, kind = self._write_ok(w, state, cand, prep)
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
                w.bump_generation()
        state.known.update(vectors)
        if deletes:
            self.index.mark_deleted([d for d in deletes if d not in adds])
        if adds:
            self.index.add(list(adds), np.stack(list(adds.values())))
        if time.monotonic() - state.last_save > self.save_every_s:
            self.save_index()
            state.last_save = time.monotonic()

    def _write_ok(
        self, w: CatalogWriter, state: _PassState, cand: Candidate, prep: Prepared
    ) -> tuple[int, str]:
        digest = prep.digest or ""
        row = cand.row
        if row is not None and row.content_hash == digest and row.status != STATUS_FAILED:
            w.refresh_photo(row.id, cand.folder_id, cand.size, cand.mtime_ns)
            return row.id, "same"
        width, height, taken = prep.width, prep.height, prep.taken_at
        if width is None:  # vector reused without decoding: copy what we knew
            known = w.known_dimensions(digest)
            if known:
                width, height, taken = known
        fields = PhotoFields(
            cand.path, cand.folder_id, cand.size, cand.mtime_ns, digest, width, height, taken,
            _sort_date(taken, cand.mtime_ns),
        )
        if row is None:
            movers = [r for r in state.gone_by_hash.get(digest, []) if r.id not in state.claimed]
            if movers:
                state.claimed.add(movers[0].id)
                w.move_photo(movers[0].id, fields)
                return movers[0].id, "moved"
            return w.insert_photo(fields), "new"
        w.replace_photo(row.id, fields)
        return row.id, "changed"

    def _remove_gone(self, rows: list[PhotoRow], report: IndexReport) -> None:
        if not rows:
            return
        with self.catalog.write() as w:
            w.delete_photos(r.id for r in rows)
            w.bump_generation()
        self.index.mark_deleted([r.id for r in rows])
        report.removed += sum(r.status != STATUS_FAILED for r in rows)

    def _readd(self, row: PhotoRow) -> None:
        vec = self.catalog.get_embedding(row.content_hash or "", self.embedder.model_id)
        if vec is not None:
            self.index.add([row.id], vec[None, :])

    def _set_folder_offline(self, folder: FolderRow) -> int:
        log.warning("folder %s is missing or unmounted: its photos are marked offline", folder.path)
        with self.catalog.write() as w:
            return w.set_folder_offline(folder.id)

    # -- mount points inside folders ---------------------------------------------------

    def _behind_offline_mounts(self, scan: _Scan, gone_rows: list[PhotoRow]) -> list[PhotoRow]:
        """Vanished rows below an offline mount point: to keep (offline), not delete.

        Also brings each scanned folder's remembered mount points up to date.
        """
        gone_by_folder: dict[int, list[PhotoRow]] = {}
        for row in gone_rows:
            if row.folder_id is not None:
                gone_by_folder.setdefault(row.folder_id, []).append(row)
        table = mount_table()
        found_dirs: dict[int, set[str]] = {}
        if table is None:  # no mount table: look for mounts where the photos are
            for path, (_entry, folder_id) in scan.entries.items():
                found_dirs.setdefault(folder_id, set()).add(os.path.dirname(path))
        kept: list[PhotoRow] = []
        for folder_id, root in scan.folders.items():
            remembered = self.catalog.mount_points(folder_id)
            rows = gone_by_folder.get(folder_id, [])
            if table is not None:
                prefix = folder_prefix(root)
                mounted = {m for m in table if m.startswith(prefix)}
            else:
                candidates = set(remembered)
                for directory in found_dirs.get(folder_id, set()) | {
                    os.path.dirname(r.path) for r in rows
                }:
                    candidates.update(_dirs_between(root, directory))
                mounted = {d for d in candidates if is_mount_point(d)}
            updated = _mount_states(remembered, mounted)
            offline = [folder_prefix(m) for m, since in updated.items() if since is not None]
            kept += [r for r in rows if any(r.path.startswith(p) for p in offline)]
            if updated != remembered:
                with self.catalog.write() as w:
                    w.set_mount_points(folder_id, updated)
        return kept


def _mount_states(
    remembered: dict[str, float | None], mounted: set[str]
) -> dict[str, float | None]:
    """Mount point -> since when it is offline (None: online), after this look."""
    now = time.time()
    out: dict[str, float | None] = {}
    for mount in sorted(set(remembered) | mounted):
        if _has_entries(mount):
            if mount in mounted:
                out[mount] = None  # mounted and showing files
            # else: unmounted and refilled with files of its own, a plain folder: forget it
            continue
        if remembered.get(mount) is None:
            log.warning("mount point %s is unmounted or empty: its photos are offline", mount)
        out[mount] = remembered.get(mount) or now
    return out


def is_mount_point(path: str) -> bool:
    """True if `path` is a mount point (`os.path.ismount`: another device than its
    parent, or the same inode as its parent)."""
    try:
        return os.path.ismount(path)
    except (OSError, ValueError):
        return False


def mount_table() -> set[str] | None:
    """Every mount point the OS lists (Linux: /proc/self/mountinfo, which also shows bind
    mounts that `os.path.ismount` cannot tell apart), or None where there is no table."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    out = set()
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            out.add(os.fsdecode(_unescape_mount(fields[4])))
    return out


def _unescape_mount(raw: bytes) -> bytes:
    # mountinfo writes space, tab, newline and backslash as \040, \011, \012, \134.
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i] == 0x5C and raw[i + 1 : i + 4].isdigit() and len(raw[i + 1 : i + 4]) == 3:
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _dirs_between(root: str, directory: str) -> list[str]:
    """`directory` and its ancestors strictly below `root`."""
    out = []
    prefix = folder_prefix(root)
    while directory.startswith(prefix):
        out.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return out


def _has_entries(directory: str) -> bool:
    try:
        with os.scandir(directory) as it:
            return next(it, None) is not None
    except OSError:
        return False


def _inspect_file(path: str) -> ScanEntry | ScanSkip | None:
    """One path named by the watcher: a photo to index, one that cannot be (why), or
    None for a path that is not a photo or is gone. The scanner's rules for one file."""
    name = os.path.basename(path)
    if not looks_like_photo_name(name):
        return None
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return ScanSkip(path, "symbolic link loop")
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return ScanSkip(path, "broken symbolic link (its target is missing)")
        return None
    if not stat.S_ISREG(st.st_mode):
        # never opened: reading a FIFO would block the pass
        return ScanSkip(path, not_regular_file_reason(st.st_mode))
    reason = unsupported_reason(name)
    if reason:
        return ScanSkip(path, reason)
    if not is_photo_name(name):
        return None
    return ScanEntry(path, st.st_size, st.st_mtime_ns)


def _lstat_size_mtime(path: str) -> tuple[int, int]:
    try:
        st = os.lstat(path)
    except OSError:
        return 0, 0
    return st.st_size, st.st_mtime_ns


def _below_unlisted(scan: _Scan, gone_rows: list[PhotoRow]) -> list[PhotoRow]:
    """Vanished rows inside a folder the scan could not list: the files are most likely
    still there (a permission change), so they go offline instead of being deleted."""
    prefixes = [folder_prefix(path) for path in scan.skipped if os.path.isdir(path)]
    if not prefixes:
        return []
    return [r for r in gone_rows if any(r.path.startswith(p) for p in prefixes)]


def _sort_date(taken_at: str | None, mtime_ns: int) -> float:
    """Seconds since the epoch used by date filters: EXIF date (local time) else mtime."""
    if taken_at:
        from datetime import datetime

        try:
            return datetime.fromisoformat(taken_at).timestamp()
        except (ValueError, OverflowError, OSError):
            pass
    return mtime_ns / 1e9


def _owning_folder(path: str, folders: list[FolderRow]) -> FolderRow | None:
    best: FolderRow | None = None
    for folder in folders:
        if path == folder.path or path.startswith(folder_prefix(folder.path)):
            if best is None or len(folder.path) > len(best.path):
                best = folder
    return best


__all__ = ["Indexer", "IndexProgress", "IndexReport", "STATUS_OK"]
