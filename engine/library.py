"""`Library`: the one object the command line and the desktop app talk to.

A library is a directory holding `catalog.db` (the source of truth, vectors included),
`folders.json` (a backup of its folder list), `index.hnsw` (+ `.json` sidecar; a cache
rebuilt when stale), `thumbs/` and a `lock` file.

Concurrency:
* One writer process per library: `open()` takes an exclusive advisory lock (fcntl.flock)
  on `lock`; a second process gets `LibraryLockedError`.
* `open(read_only=True)` is for read commands (search, similar, captions, status): it never
  takes that lock, so an `index` or `watch` started meanwhile is never refused. It writes
  no photos, folders or index file; it does store what searches cache in the catalog
  (remembered queries, caption-bank vectors) through short SQLite transactions that
  SQLite serialises with the writer, and goes without them where the catalog refuses the
  write (read-only media, a busy writer past the timeout, a full disk). A stale index
  cache is rebuilt in memory only, until the next writer saves it.
* Inside a process, indexing passes and model switches are serialised; searches may run
  from any thread at any time and see the (embedder, index) pair that is current.

Model changes: opening a library whose photos were embedded by another model raises
`ModelMismatchError` (the message says how to re-index) unless `reembed=True`, in which
case the new model becomes current and the next `index()` embeds every photo with it
(reusing stored vectors where that model already embedded a file). If the new model's
vectors already exist for every photo (an earlier switch), the switch is silent.
`switch_model()` is the in-process route that keeps serving searches meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from . import duplicates, imaging, settings
from .catalog import (
    STATUS_FAILED,
    STATUS_OFFLINE,
    Catalog,
    PhotoFilter,
    PhotoRow,
    read_folder_backup,
    salvage_catalog,
)
from .duplicates import DuplicateGroup
from .embedder import Embedder
from .errors import (
    FolderNotFoundError,
    LibraryLockedError,
    LibraryUnreadableError,
    ModelMismatchError,
    PhotoNotInLibraryError,
    PhotosearchError,
)
from .indexer import Indexer, IndexProgress, IndexReport
from .reranking import Reranker, load_reranker
from .search import CaptionHit, PhotoHit, SearchResult, SearchService, parse_query, photo_hit
from .vector_index import VectorIndex, sidecar_path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; SQLite's own locking still applies
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.db"
INDEX_FILE = "index.hnsw"
LOCK_FILE = "lock"
THUMBS_DIR = "thumbs"
# caption_bank_ready() allows this many remembered queries still to embed (well under 1 s).
CAPTIONS_READY_MAX = 256

__all__ = [
    "CaptionHit",
    "DuplicateGroup",
    "FolderInfo",
    "IndexProgress",
    "IndexReport",
    "Library",
    "LibraryStatus",
    "PhotoHit",
    "RepairReport",
    "SearchResult",
]

ProgressFn = Callable[[IndexProgress], None]


@dataclass
class FolderInfo:
    path: str
    online: bool
    photo_count: int
    offline_since: datetime | None = None  # when the folder was first found offline
    # Mount points inside the folder that are unmounted or empty (their photos offline).
    offline_mounts: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "online": self.online,
            "photo_count": self.photo_count,
            "offline_since": (
                self.offline_since.isoformat(timespec="seconds") if self.offline_since else None
            ),
            "offline_mounts": self.offline_mounts,
        }


@dataclass
class LibraryStatus:
    photo_count: int  # photos with a vector (ok + offline)
    model_id: str | None
    offline_folders: list[str]
    failures: int  # files that could not be indexed; details in Library.failures()
    offline_photos: int = 0
    folders: list[FolderInfo] = field(default_factory=list)
    library_dir: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "library": self.library_dir,
            "photo_count": self.photo_count,
            "model_id": self.model_id,
            "offline_folders": self.offline_folders,
            "offline_photos": self.offline_photos,
            "failures": self.failures,
            "folders": [f.to_json() for f in self.folders],
        }


@dataclass
class RepairReport:
    damaged: bool  # False: the catalog was healthy and nothing was changed
    problem: str | None = None  # what was wrong with it
    moved_to: str | None = None  # the damaged catalog's new name (kept, never deleted)
    folders_from: str | None = None  # 'catalog', 'backup' or 'catalog+backup'
    folders: list[str] = field(default_factory=list)
    vectors_recovered: int = 0  # so these photos were not embedded again
    index: IndexReport | None = None  # the re-index of the recovered folders

    def to_json(self) -> dict[str, object]:
        return {
            "damaged": self.damaged,
            "problem": self.problem,
            "moved_to": self.moved_to,
            "folders_from": self.folders_from,
            "folders": self.folders,
            "vectors_recovered": self.vectors_recovered,
            "index": self.index.to_json() if self.index is not None else None,
        }


class Library:
    def __init__(self) -> None:  # use Library.open
        raise TypeError("use Library.open(library_dir, embedder)")

    @classmethod
    def open(
        cls,
        library_dir: Path | str,
        embedder: Embedder,
        *,
        read_only: bool = False,
        reembed: bool = False,
        rerank: bool | None = None,
    ) -> Library:
        """`rerank`: attention re-ranking (docs/MODEL.md "Cross-modal attention"); None
        follows settings.rerank_enabled() ($PHOTOSEARCH_RERANK, off by default)."""
        self = cls.__new__(cls)
        self.library_dir = Path(library_dir).expanduser().absolute()
        self.read_only = read_only
        self.rerank = settings.rerank_enabled(rerank)
        self._rerankers: dict[str, Reranker | None] = {}
        self._lock_fd: int | None = None
        self._pass_lock = threading.RLock()
        self._closed = False
        db_path = self.library_dir / CATALOG_FILE
        if read_only and not db_path.exists():
            raise LibraryUnreadableError(
                f"no library at {self.library_dir}; create one with: photosearch index "
                f"--library {self.library_dir} FOLDER"
            )
        try:
            self.library_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LibraryUnreadableError(
                f"cannot create the library folder {self.library_dir}: {exc.strerror or exc}"
            ) from exc
        if not read_only:
            self._acquire_lock()
        try:
            self.catalog = Catalog(db_path, read_only=read_only)
            self.thumbs_dir = self.library_dir / THUMBS_DIR
            self.index_path = self.library_dir / INDEX_FILE
            self.searcher = SearchService(self.catalog)
            # duplicate groups, kept until the library or the model changes: (key, groups)
            self._duplicates: tuple[tuple[str, int, float], list[DuplicateGroup]] | None = None
            self._check_model(embedder, reembed)
            self._active: tuple[Embedder, VectorIndex] = (embedder, self._load_index(embedder))
            self._import_caption_bank(embedder)
        except BaseException:
            self._release()
            raise
        return self

    @classmethod
    def repair(
        cls,
        library_dir: Path | str,
        embedder: Embedder,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> RepairReport:
        """Rebuild a lost or damaged catalog.db (`photosearch repair`).

        A healthy catalog (full `quick_check`) is left alone. Otherwise the damaged file is
        renamed `catalog.db.damaged-<time>` (never deleted), a new catalog gets the folder
        list - from the old file where readable, else from the `folders.json` backup -
        plus every stored vector and remembered query that can still be read, and the
        folders are indexed again: files whose vectors were recovered are hashed, not
        re-embedded. The search index cache is dropped and rebuilt.
        """
        library_dir = Path(library_dir).expanduser().absolute()
        db_path = library_dir / CATALOG_FILE
        if not library_dir.is_dir():
            raise LibraryUnreadableError(f"no library at {library_dir}")
        lock_fd = _take_writer_lock(library_dir)
        try:
            problem = _catalog_problem(db_path)
            if problem is None:
                return RepairReport(damaged=False)
            report = _rebuild_catalog(db_path, problem)
        finally:
            _drop_writer_lock(lock_fd)
        with cls.open(library_dir, embedder) as lib:
            report.index = lib.index(progress, cancel)
        return report

    # -- lifecycle ---------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        self._lock_fd = _take_writer_lock(self.library_dir)

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self.catalog.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                _drop_writer_lock(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        if self._closed:
            return
        with self._pass_lock:
            self._closed = True
            self._release()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def embedder(self) -> Embedder:
        return self._active[0]

    @property
    def vector_index(self) -> VectorIndex:
        return self._active[1]

    def _check_model(self, embedder: Embedder, reembed: bool) -> None:
        stored = self.catalog.model_id
        new = embedder.model_id
        if stored == new:
            return
        has_vectors = stored is not None and self.catalog.count_indexable(stored) > 0
        already_embedded = has_vectors and self.catalog.count_indexable(
            new
        ) >= self.catalog.count_indexable(stored or "")
        if has_vectors and not reembed and not already_embedded:
            raise ModelMismatchError(
                f"the library at {self.library_dir} was indexed with model '{stored}', not "
                f"the current model '{new}'; re-index with: photosearch index --library "
                f"{self.library_dir} --reembed"
            )
        if self.read_only:
            if has_vectors and not already_embedded:
                raise ModelMismatchError(
                    f"the library at {self.library_dir} is being re-indexed for model "
                    f"'{new}'; search it once that has finished"
                )
            return
        log.info("library model: %s -> %s", stored, new)
        self.catalog.set_meta("model_id", new)

    def _load_index(self, embedder: Embedder) -> VectorIndex:
        model_id = embedder.model_id
        index, _ = VectorIndex.load_or_rebuild(
            self.index_path,
            dim=embedder.dim,
            model_id=model_id,
            expected_count=self.catalog.count_indexable(model_id),
            generation=self.catalog.generation,
            vectors=lambda: self.catalog.indexable_vectors(model_id),
            save=not self.read_only,
        )
        return index

    def _save_index(self) -> None:
        if self.read_only:
            return
        _, index = self._active
        try:
            index.save(self.index_path, self.catalog.generation)
        except OSError as exc:
            # on a full disk the DiskFullError the index pass raises is the user's one line; the
            # cache is rebuilt from the catalog on the next open either way
            level = logging.INFO if exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT) else logging.WARNING
            log.log(level, "could not save the search index: %s", exc)

    def _import_caption_bank(self, embedder: Embedder) -> None:
        bank = getattr(embedder, "caption_bank_path", None)
        if not bank:
            return
        bank = Path(bank)
        try:
            stamp = f"{bank.resolve()}:{bank.stat().st_mtime_ns}"
            if self.catalog.get_meta("caption_bank_source") == stamp:
                return
            lines = bank.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            log.warning("caption bank %s unreadable: %s", bank, exc)
            return
        try:
            added = self.catalog.add_captions(lines, "model")
            self.catalog.set_meta("caption_bank_source", stamp)
        except PhotosearchError as exc:  # a cache: a reader on read-only media goes without
            log.warning("caption bank %s not imported: %s", bank, exc)
            return
        log.info("caption bank: %d new captions from %s", added, bank)

    def _require_writable(self) -> None:
        if self.read_only:
            raise LibraryLockedError(
                f"the library at {self.library_dir} is open read-only (another photosearch "
                "process is writing to it)"
            )

    # -- folders -----------------------------------------------------------------------

    def add_folder(self, path: Path | str) -> None:
        self._require_writable()
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FolderNotFoundError(f"folder not found: {folder.absolute()}")
        self.catalog.add_folder(str(folder.resolve()))

    def remove_folder(self, path: Path | str) -> int:
        """Forget a folder and its photos (the files are untouched), e.g. one deleted for
        good, which otherwise stays offline; returns how many photos were forgotten."""
        self._require_writable()
        given = Path(path).expanduser()
        targets = {os.path.abspath(given), str(given.resolve())}
        with self._pass_lock:
            match = [f for f in self.catalog.folders() if f.path in targets]
            if not match:
                raise FolderNotFoundError(f"folder is not in the library: {given.absolute()}")
            ids = self.catalog.forget_folder(match[0].id)
            self.vector_index.mark_deleted(ids)
            self._save_index()
            return len(ids)

    def folders(self) -> list[FolderInfo]:
        counts = self.catalog.folder_photo_counts()
        since = self.catalog.folder_offline_since()
        out = []
        for f in self.catalog.folders():
            went = since.get(f.id) if not f.online else None
            mounts = self.catalog.mount_points(f.id)
            out.append(
                FolderInfo(
                    f.path,
                    f.online,
                    counts.get(f.id, 0),
                    datetime.fromtimestamp(went) if went is not None else None,
                    sorted(m for m, gone in mounts.items() if gone is not None),
                )
            )
        return out

    # -- indexing ----------------------------------------------------------------------

    def _indexer(self) -> Indexer:
        embedder, index = self._active
        return Indexer(self.catalog, index, embedder, self.thumbs_dir, self._save_index,
                       reranker=self._reranker(embedder))

    def _reranker(self, embedder: Embedder) -> Reranker | None:
        """The attention re-ranker for this embedder's model when re-ranking is on (loaded
        once per model; None when off or when the model has no weights or inputs for it)."""
        if not self.rerank:
            return None
        model_id = embedder.model_id
        if model_id not in self._rerankers:
            self._rerankers[model_id] = load_reranker(embedder)
        return self._rerankers[model_id]

    @property
    def reranking(self) -> bool:
        """Whether searches re-rank: the option is on and the current model has weights."""
        return self._reranker(self._active[0]) is not None

    def index(
        self, progress: ProgressFn | None = None, cancel: threading.Event | None = None
    ) -> IndexReport:
        """Full reconcile of every folder (new, changed, moved, removed, offline)."""
        self._require_writable()
        with self._pass_lock:
            indexer = self._indexer()
            report = indexer.reconcile(progress, cancel)
            if indexer.reranker is not None and not report.cancelled:
                # re-ranking on: photos indexed before it get their region codes now
                indexer.fill_region_codes(progress, cancel)
            return report

    def index_paths(
        self,
        paths: Iterable[Path | str],
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> IndexReport:
        """Reconcile just these files or directories (created, changed, moved, deleted)."""
        self._require_writable()
        with self._pass_lock:
            return self._indexer().index_paths(paths, progress, cancel)

    def switch_model(
        self,
        embedder: Embedder,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        """Embed every photo with `embedder` while searches use the old model, then swap.

        If cancelled, nothing is swapped (vectors computed so far are kept and reused by
        the next attempt).
        """
        self._require_writable()
        with self._pass_lock:
            indexer = self._indexer()
            indexer.embed_missing(embedder, progress, cancel)
            if cancel is not None and cancel.is_set():
                return
            model_id = embedder.model_id
            ids, vecs = self.catalog.indexable_vectors(model_id)
            new_index = VectorIndex.build(ids, vecs, embedder.dim, model_id)
            self.catalog.set_meta("model_id", model_id)
            self._active = (embedder, new_index)
            self._save_index()
            self._import_caption_bank(embedder)

    # -- search ------------------------------------------------------------------------

    def search_text(
        self,
        query: str,
        top_k: int = 50,
        folder: str | None = None,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
        remember: bool = True,
        *,
        like_photo: Path | str | None = None,
        sort: str = "relevance",
    ) -> SearchResult:
        """Text -> photos, in the query syntax of `engine.search.parse_query` (`dog -grass`,
        `"red car" +night`). `like_photo` refines from a photo ("this photo, but at night";
        the text may then be empty). `sort='date'` puts the confident matches newest first.
        `remember=False` is for search-as-you-type, whose half-typed queries must not become
        caption suggestions; call `remember_query` once the user commits to a query (Enter,
        or acting on a result)."""
        embedder, index = self._active
        row = self._photo_row(like_photo) if like_photo is not None else None
        result = self.searcher.search_text(
            query, embedder, index, top_k, folder, date_from, date_to, like_photo=row, sort=sort,
            reranker=self._reranker(embedder),
        )
        if remember and row is None:
            self.remember_query(query)
        return result

    def browse(
        self,
        offset: int,
        limit: int,
        *,
        folder: str | None = None,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
    ) -> list[PhotoHit]:
        """One page of the whole library, newest first (date taken, else file time), for the
        grid before any query. Hits have score 0 and strength 0 (not search results)."""
        where = PhotoFilter(
            os.path.abspath(os.path.expanduser(folder)) if folder else None, date_from, date_to
        )
        return [photo_hit(r, 0.0, 0) for r in self.catalog.browse(offset, limit, where)]

    def count_photos(
        self,
        *,
        folder: str | None = None,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
    ) -> int:
        """How many photos `browse` pages through with these filters."""
        where = PhotoFilter(
            os.path.abspath(os.path.expanduser(folder)) if folder else None, date_from, date_to
        )
        return self.catalog.count_browsable(where)

    def remember_query(self, query: str) -> None:
        """Past queries join the caption bank (photo -> captions suggestions): what they look
        for, without the operators (`dog beach -people` is remembered as 'dog beach')."""
        query = parse_query(query).describe()
        if not query:
            return
        try:  # readers too: SQLite serialises this small write with any writer
            self.catalog.add_captions([query], "query")
        except PhotosearchError as exc:
            log.debug("query not stored: %s", exc)

    def _photo_row(self, path: Path | str) -> PhotoRow:
        p = Path(path).expanduser()
        candidates = [str(p.absolute()), os.path.abspath(p), str(p.resolve())]
        for c in candidates:
            row = self.catalog.photo_by_path(c)
            if row is not None:
                break
        else:
            raise PhotoNotInLibraryError(f"photo is not in the library: {p.absolute()}")
        if row.status == STATUS_FAILED:
            raise PhotoNotInLibraryError(
                f"photo could not be indexed ({row.reason}): {row.path}"
            )
        return row

    def photo(self, path: Path | str) -> PhotoRow:
        """The indexed photo at `path`, or PhotoNotInLibraryError: a cheap check that lets
        callers refuse a wrong path before expensive work (embedding the caption bank)."""
        return self._photo_row(path)

    def similar_photos(
        self, path: Path | str, top_k: int = 50, *, sort: str = "relevance"
    ) -> SearchResult:
        embedder, index = self._active
        return self.searcher.similar_photos(self._photo_row(path), embedder, index, top_k, sort)

    def similar_captions(self, path: Path | str, top_k: int = 10) -> list[CaptionHit]:
        embedder, _ = self._active
        return self.searcher.similar_captions(
            self._photo_row(path), embedder, top_k, reranker=self._reranker(embedder)
        )

    def prepare_captions(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Embed the caption bank for the current model now (a one-time cost per model),
        so that the first "find similar captions" answers at once; returns the bank size."""
        embedder, _ = self._active
        captions, _matrix = self.searcher.caption_matrix(
            embedder, progress=progress
        )
        return len(captions)

    def duplicate_groups(self, threshold: float | None = None) -> list[DuplicateGroup]:
        """Groups of near-identical photos (engine/duplicates.py), newest representative
        first; each group's representative is its first path. Computed once per change of
        the library (catalog generation) and model, then answered from memory."""
        embedder, index = self._active
        thr = duplicates.threshold_for(embedder) if threshold is None else float(threshold)
        key = (embedder.model_id, self.catalog.generation, thr)
        cached = self._duplicates
        if cached is not None and cached[0] == key:
            return [DuplicateGroup(list(g.paths)) for g in cached[1]]
        ids, vecs = self.catalog.indexable_vectors(embedder.model_id)
        groups: list[DuplicateGroup] = []
        if len(ids) > 1:
            queries = np.asarray(embedder.image_query(vecs), np.float32)
            neighbours = None
            if len(ids) > duplicates.EXACT_MAX:
                row_of = {int(i): r for r, i in enumerate(ids.tolist())}
                # one batched index query for the whole library (+1: a photo finds itself)
                labels, scores = index.knn_many(queries, duplicates.NEIGHBOURS + 1)

                def neighbours(r: int) -> list[tuple[int, float]]:
                    return [
                        (row_of[int(i)], float(s))
                        for i, s in zip(labels[r], scores[r], strict=True)
                        if int(i) in row_of
                    ]

            found = duplicates.group_indices(queries, thr, neighbours)
            dated: list[tuple[float, list[str]]] = []
            rows = self.catalog.photos_by_ids(int(ids[r]) for g in found for r in g)
            for members in found:
                photos = [rows[int(ids[r])] for r in members if int(ids[r]) in rows]
                if len(photos) < 2:
                    continue
                order = duplicates.representative_order(
                    range(len(photos)),
                    [int(p.width or 0) * int(p.height or 0) for p in photos],
                    [p.sort_date for p in photos],
                    [p.path for p in photos],
                )
                dated.append(
                    (photos[order[0]].sort_date or 0.0, [photos[i].path for i in order])
                )
            dated.sort(key=lambda d: -d[0])
            groups = [DuplicateGroup(paths) for _, paths in dated]
        self._duplicates = (key, groups)
        return [DuplicateGroup(list(g.paths)) for g in groups]

    def caption_bank_ready(self) -> bool:
        """True when "find similar captions" can answer without embedding the bank: the model
        ships its caption vectors (engine/caption_store.py) or this library embedded them
        before, and at most one small chunk of remembered queries is left to embed."""
        embedder, _ = self._active
        return self.searcher.captions_to_embed(embedder) <= CAPTIONS_READY_MAX

    def prepare_caption_bank(self, progress: Callable[[float], None] | None = None) -> None:
        """Embed whatever of the caption bank the model did not ship vectors for (a one-time
        cost per model; nothing for the shipped model). `progress(fraction)` runs with 0.0
        to 1.0 as chunks are done; raising from it (e.g. a cancelled task) stops the work,
        and what was done is kept."""
        embedder, _ = self._active

        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(done / total if total else 1.0)

        self.searcher.caption_matrix(embedder, progress=report)
        if progress is not None:
            progress(1.0)

    def thumbnail_path(self, path: Path | str) -> Path | None:
        """Cached ~256 px JPEG; made on demand if missing and the file is readable."""
        try:
            row = self._photo_row(path)
        except PhotoNotInLibraryError:
            return None
        if not row.content_hash:
            return None
        thumb = imaging.thumbnail_file(self.thumbs_dir, row.content_hash)
        if thumb.exists():
            return thumb
        if self.read_only:
            return None
        try:
            decoded = imaging.decode_image(row.path)
            return imaging.save_thumbnail(decoded.image, self.thumbs_dir, row.content_hash)
        except (imaging.ImageDecodeError, OSError):
            return None

    # -- status ------------------------------------------------------------------------

    def status(self) -> LibraryStatus:
        embedder, index = self._active
        folders = self.folders()
        return LibraryStatus(
            photo_count=self.catalog.count_indexable(embedder.model_id),
            model_id=embedder.model_id,
            offline_folders=[f.path for f in folders if not f.online],
            failures=self.catalog.count_photos(STATUS_FAILED),
            offline_photos=self.catalog.count_photos(STATUS_OFFLINE),
            folders=folders,
            library_dir=str(self.library_dir),
        )

    def failures(self) -> list[tuple[str, str]]:
        return self.catalog.failures()

    def check_catalog(self) -> list[str]:
        """The full `PRAGMA quick_check` of catalog.db ([] when healthy). Opening checks
        only the small tables; this reads the whole file (~0.7 s at 100K photos)."""
        return self.catalog.problems(full=True)


# -- the writer lock and repair ----------------------------------------------------------


def _take_writer_lock(library_dir: Path) -> int | None:
    """The exclusive advisory lock on `lock` that one writer process holds."""
    if fcntl is None:
        return None
    path = library_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LibraryUnreadableError(
            f"cannot open the library at {library_dir}: {exc.strerror or exc}"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            pid = int(os.pread(fd, 32, 0).decode().strip() or 0)
            holder = f" (pid {pid})" if pid else ""
        os.close(fd)
        raise LibraryLockedError(
            f"the library at {library_dir} is in use by another photosearch "
            f"process{holder}; close it first or use --library to pick another library"
        ) from exc
    with contextlib.suppress(OSError):  # the pid is only a hint for the message above
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _drop_writer_lock(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the fd drops the flock


def _catalog_problem(db_path: Path) -> str | None:
    """Why catalog.db needs rebuilding, or None if it is healthy."""
    if not db_path.exists():
        return "catalog.db is missing"
    try:
        catalog = Catalog(db_path, read_only=True)
    except LibraryUnreadableError as exc:
        # The message ends by naming `photosearch repair`: not what a repair report says.
        return re.sub(r"; rebuild (it|them) with: .*$", "", str(exc))
    try:
        problems = catalog.problems(full=True)
    finally:
        catalog.close()
    return f"quick_check: {problems[0]}" if problems else None


def _rebuild_catalog(db_path: Path, problem: str) -> RepairReport:
    library_dir = db_path.parent
    report = RepairReport(damaged=True, problem=problem)
    salvage = salvage_catalog(db_path) if db_path.exists() else None
    backup = read_folder_backup(library_dir) or []
    from_catalog = salvage.folders if salvage else []
    report.folders = list(dict.fromkeys(from_catalog + backup))
    report.folders_from = "+".join(
        name for name, found in (("catalog", from_catalog), ("backup", backup)) if found
    ) or None
    if db_path.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = db_path.with_name(f"{db_path.name}.damaged-{stamp}")
        os.replace(db_path, aside)
        wal = Path(str(db_path) + "-wal")
        if wal.exists():  # its pages belong to the damaged file: keep them together
            os.replace(wal, Path(str(aside) + "-wal"))
        report.moved_to = aside.name
    with contextlib.suppress(FileNotFoundError):
        os.unlink(str(db_path) + "-shm")
    index_path = library_dir / INDEX_FILE
    for cache in (index_path, sidecar_path(index_path)):
        with contextlib.suppress(FileNotFoundError):
            cache.unlink()  # its labels are the old photo ids: never trust it again
    log.warning("catalog %s rebuilt (%s); the damaged file is %s", db_path, problem, report.moved_to)
    catalog = Catalog(db_path)
    try:
        with catalog.write() as w:
            for folder in report.folders:
                w.add_folder(folder)
            if salvage is not None:
                w.put_embedding_blobs(salvage.embeddings)
                w.add_captions(salvage.queries, "query")
                if salvage.model_id:
                    w.set_meta("model_id", salvage.model_id)
        report.vectors_recovered = len(salvage.embeddings) if salvage else 0
        catalog.save_folder_backup()
    finally:
        catalog.close()
    return report
