"""The catalog: SQLite is the source of truth, vectors included, and this module holds
every SQL statement the engine runs.

The HNSW index file is only a cache rebuilt from the `embeddings` table, so the catalog
alone must be enough to recover from a crash. Every change to the set of indexed vectors
bumps `meta.generation` inside the same transaction; the index sidecar records the
generation it was saved at, which is how a stale index is detected.

Connections are per thread (sqlite3 objects must not be shared) and writes are
serialised by one in-process lock plus `BEGIN IMMEDIATE` against other processes. A write
happens inside `Catalog.write()`, which hands out a `CatalogWriter` whose methods are the
writes the engine needs, named for what they do; callers never see SQL.

Plain sqlite3, no sqlite-utils: the schema is hand-written and versioned (`MIGRATIONS`),
transactions are explicit, and sqlite-utils' table helpers (schema introspection and a
savepoint per call) bought nothing here but overhead on the indexing path.

File names: a path that is not valid UTF-8 (Python holds its undecodable bytes as
surrogate escapes) cannot be bound as SQLite text. Such paths are stored as a BLOB of
the raw `os.fsencode` bytes in the same TEXT column; SQLite keeps BLOBs as they are, so
the name round-trips losslessly and valid names are stored exactly as before.

Opening refuses a catalog.db that is empty (0 bytes, which SQLite would silently treat as
a new database) or not a photosearch database, and runs `PRAGMA quick_check` on the
small tables (see OPEN_CHECK_TABLES); damage is a `LibraryUnreadableError` naming the
file. Besides catalog.db the catalog keeps `folders.json` beside it, rewritten on every
folder change, so the folder list survives a lost or damaged catalog (`Library.repair`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import numpy as np

from .errors import DiskFullError, LibraryLockedError, LibraryUnreadableError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
# SQLite says "disk I/O error" when it cannot even create its -shm file; with less free
# space than this that is a full disk.
DISK_FULL_BELOW = 1 << 20
FOLDER_BACKUP_FILE = "folders.json"
# Tables checked on every open. The embeddings table is most of the file (4 KB a photo at
# 1024-d): checking it too would more than double the open time at 100K photos (quick_check
# 0.10 s for photos vs 0.67 s for the whole 470 MB file). `Catalog.problems(full=True)`
# checks everything (status, repair).
OPEN_CHECK_TABLES = ("meta", "folders", "photos")

STATUS_OK = "ok"
STATUS_OFFLINE = "offline"
STATUS_FAILED = "failed"

_SQLITE_MAX_PARAMS = 900
_PROGRAMMING_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)  # below SQLite's historical bound-parameter limit of 999


def _migration_1(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute(
        """CREATE TABLE folders (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            online INTEGER NOT NULL DEFAULT 1,
            added_at REAL)"""
    )
    conn.execute(
        """CREATE TABLE photos (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            folder_id INTEGER REFERENCES folders(id) ON DELETE CASCADE,
            size INTEGER,
            mtime_ns INTEGER,
            content_hash TEXT,
            width INTEGER,
            height INTEGER,
            taken_at TEXT,
            status TEXT NOT NULL DEFAULT 'ok',
            reason TEXT)"""
    )
    conn.execute(
        """CREATE TABLE embeddings (
            content_hash TEXT NOT NULL,
            model_id TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (content_hash, model_id))"""
    )
    conn.execute(
        """CREATE TABLE caption_bank (
            id INTEGER PRIMARY KEY,
            caption TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL CHECK (source IN ('model', 'query')),
            added_at REAL)"""
    )
    conn.execute(
        """CREATE TABLE caption_embeddings (
            caption_id INTEGER NOT NULL REFERENCES caption_bank(id) ON DELETE CASCADE,
            model_id TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (caption_id, model_id))"""
    )


def _migration_2(conn: sqlite3.Connection) -> None:
    # Moved-file detection and date filters look photos up by hash / folder / date.
    conn.execute("CREATE INDEX idx_photos_hash ON photos(content_hash)")
    conn.execute("CREATE INDEX idx_photos_folder ON photos(folder_id)")
    conn.execute("ALTER TABLE photos ADD COLUMN sort_date REAL")
    conn.execute("CREATE INDEX idx_photos_sort_date ON photos(sort_date)")


# Region codes of the attention re-ranker (engine/vse/attention_runtime.py), keyed like the
# vectors by (content hash, model id), so a moved or returning file keeps them; `attention_id`
# names the weights that projected them (codes from other weights are not used). Created on the
# first write, when re-ranking is on, not by a migration: with it off (the default) the schema
# stays what it was, so an older photosearch still opens the library.
_REGION_CODES_DDL = """CREATE TABLE IF NOT EXISTS region_codes (
    content_hash TEXT NOT NULL,
    model_id TEXT NOT NULL,
    attention_id TEXT NOT NULL,
    codes BLOB NOT NULL,
    PRIMARY KEY (content_hash, model_id))"""


# Append only: user_version N means MIGRATIONS[:N] have been applied.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1, _migration_2]
SCHEMA_VERSION = len(MIGRATIONS)


# -- paths in the database ---------------------------------------------------------------


def path_to_db(path: str) -> str | bytes:
    """The value stored for `path`: the text itself, or its raw bytes if not UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def path_from_db(value: str | bytes) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _prefix_clause(column: str, prefix: str) -> tuple[str, list[object]]:
    """SQL matching every `column` value that starts with `prefix` (which ends in a separator).

    A range on the UNIQUE index rather than LIKE (which cannot use it and treats % and _
    as wildcards); one range over text values and one over BLOB-stored names, because
    SQLite orders every text value before every BLOB.
    """
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    parts, params = [], []
    for lo, hi in ((prefix, upper), (os.fsencode(prefix), os.fsencode(upper))):
        if isinstance(lo, str) and not isinstance(path_to_db(lo), str):
            continue  # a non-UTF-8 prefix: only BLOB-stored names can start with it
        parts.append(f"({column} >= ? AND {column} < ?)")
        params += [lo, hi]
    return "(" + " OR ".join(parts) + ")", params


def folder_prefix(path: str) -> str:
    return path.rstrip(os.sep) + os.sep


# -- rows and filters ----------------------------------------------------------------------


@dataclass
class PhotoRow:
    id: int
    path: str
    folder_id: int | None
    size: int | None
    mtime_ns: int | None
    content_hash: str | None
    width: int | None
    height: int | None
    taken_at: str | None
    status: str
    reason: str | None
    sort_date: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple) -> PhotoRow:
        return cls(row[0], path_from_db(row[1]), *row[2:])


PHOTO_COLUMNS = (
    "id, path, folder_id, size, mtime_ns, content_hash, width, height, taken_at, status, "
    "reason, sort_date"
)


def _prefixed_columns(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in PHOTO_COLUMNS.split(","))


@dataclass(frozen=True)
class PhotoFields:
    """What indexing a file found out: everything a photos row holds but its id/status."""

    path: str
    folder_id: int | None
    size: int
    mtime_ns: int
    content_hash: str
    width: int | None
    height: int | None
    taken_at: str | None
    sort_date: float


@dataclass(frozen=True)
class FolderRow:
    id: int
    path: str
    online: bool
    added_at: float | None


@dataclass(frozen=True)
class PhotoFilter:
    """Which photos a search may return: under `folder` (an absolute path), and with a
    date (EXIF, else file time; `photos.sort_date`) within [date_from, date_to]."""

    folder: str | None = None
    date_from: datetime | None = None
    date_to: datetime | None = None

    @property
    def active(self) -> bool:
        return self.folder is not None or self.date_from is not None or self.date_to is not None

    @property
    def prefix(self) -> str | None:
        return folder_prefix(self.folder) if self.folder else None

    def matches(self, row: PhotoRow) -> bool:
        """The filter in Python, for rows that HNSW returned (the same rule as the SQL)."""
        prefix = self.prefix
        if prefix is not None and not row.path.startswith(prefix):
            return False
        when = row.sort_date
        lo, hi = _timestamp(self.date_from), _timestamp(self.date_to)
        if lo is not None and (when is None or when < lo):
            return False
        return not (hi is not None and (when is None or when > hi))

    def sql(self) -> tuple[str, list[object]]:
        where, params = ["1"], []
        prefix = self.prefix
        if prefix is not None:
            clause, clause_params = _prefix_clause("p.path", prefix)
            where.append(clause)
            params += clause_params
        lo, hi = _timestamp(self.date_from), _timestamp(self.date_to)
        if lo is not None:
            where.append("p.sort_date >= ?")
            params.append(lo)
        if hi is not None:
            where.append("p.sort_date <= ?")
            params.append(hi)
        return " AND ".join(where), params


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def vector_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def blob_to_vector(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4").astype(np.float32)


# -- writes ------------------------------------------------------------------------------


class CatalogWriter:
    """The writes of one transaction; obtained from `Catalog.write()`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    # meta
    def set_meta(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def delete_meta(self, key: str) -> None:
        self._conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    def bump_generation(self) -> int:
        """Mark the set of indexable vectors as changed (invalidates the saved index)."""
        return _bump_generation(self._conn)

    # embeddings
    def put_embeddings(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO embeddings(content_hash, model_id, vector) VALUES (?, ?, ?)",
            [(digest, model_id, vector_to_blob(v)) for digest, v in vectors.items()],
        )

    def put_embedding(self, digest: str, model_id: str, vector: np.ndarray) -> None:
        self.put_embeddings(model_id, {digest: vector})

    # region codes (attention re-ranking, only when it is on)
    def put_region_codes(self, model_id: str, attention_id: str, codes: Mapping[str, bytes]) -> None:
        """Store photos' packed region codes (content hash -> blob) for this model and weights."""
        if not codes:
            return
        self._conn.execute(_REGION_CODES_DDL)
        self._conn.executemany(
            "INSERT OR REPLACE INTO region_codes(content_hash, model_id, attention_id, codes) "
            "VALUES (?, ?, ?, ?)",
            [(digest, model_id, attention_id, blob) for digest, blob in codes.items()],
        )

    def put_embedding_blobs(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """(content hash, model id, stored vector bytes) rows, e.g. salvaged by repair."""
        self._conn.executemany(
            "INSERT OR REPLACE INTO embeddings(content_hash, model_id, vector) VALUES (?, ?, ?)",
            rows,
        )

    # photos
    def known_dimensions(self, digest: str) -> tuple[int | None, int | None, str | None] | None:
        """(width, height, taken_at) of any photo with these bytes, for a file whose
        vector was reused without decoding it."""
        row = self._conn.execute(
            "SELECT width, height, taken_at FROM photos WHERE content_hash = ? "
            "AND width IS NOT NULL LIMIT 1",
            (digest,),
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def insert_photo(self, fields: PhotoFields) -> int:
        cur = self._conn.execute(
            "INSERT INTO photos(path, folder_id, size, mtime_ns, content_hash, width, height, "
            "taken_at, sort_date, status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok', NULL)",
            _field_values(fields),
        )
        return int(cur.lastrowid or 0)

    def insert_photos(self, rows: Iterable[tuple[int, PhotoFields]]) -> None:
        """Bulk insert with given ids (synthetic libraries for benchmarks)."""
        self._conn.executemany(
            "INSERT INTO photos(id, path, folder_id, size, mtime_ns, content_hash, width, "
            "height, taken_at, sort_date, status, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok', NULL)",
            ((photo_id, *_field_values(fields)) for photo_id, fields in rows),
        )

    def refresh_photo(self, photo_id: int, folder_id: int | None, size: int, mtime_ns: int) -> None:
        """Same bytes as catalogued: only the file's size/mtime (a touch) or folder moved."""
        self._conn.execute(
            "UPDATE photos SET size = ?, mtime_ns = ?, status = 'ok', reason = NULL, "
            "folder_id = ? WHERE id = ?",
            (size, mtime_ns, folder_id, photo_id),
        )

    def move_photo(self, photo_id: int, fields: PhotoFields) -> None:
        """Re-point a row at the path its file moved to; it keeps its id (index label)."""
        self._conn.execute(
            "UPDATE photos SET path = ?, folder_id = ?, size = ?, mtime_ns = ?, "
            "content_hash = ?, width = COALESCE(?, width), height = COALESCE(?, height), "
            "taken_at = COALESCE(?, taken_at), sort_date = ?, status = 'ok', reason = NULL "
            "WHERE id = ?",
            (*_field_values(fields), photo_id),
        )

    def replace_photo(self, photo_id: int, fields: PhotoFields) -> None:
        """The file at this row's path now holds other bytes."""
        self._conn.execute(
            "UPDATE photos SET path = ?, folder_id = ?, size = ?, mtime_ns = ?, content_hash = ?, "
            "width = ?, height = ?, taken_at = ?, sort_date = ?, status = 'ok', reason = NULL "
            "WHERE id = ?",
            (*_field_values(fields), photo_id),
        )

    def record_failure(
        self,
        path: str,
        folder_id: int | None,
        size: int,
        mtime_ns: int,
        reason: str,
        photo_id: int | None = None,
    ) -> None:
        """A file that could not be indexed; kept (with its reason) until it changes."""
        if photo_id is None:
            self._conn.execute(
                "INSERT INTO photos(path, folder_id, size, mtime_ns, status, reason, sort_date) "
                "VALUES (?, ?, ?, ?, 'failed', ?, ?) ON CONFLICT(path) DO UPDATE SET "
                "folder_id = excluded.folder_id, size = excluded.size, "
                "mtime_ns = excluded.mtime_ns, content_hash = NULL, status = 'failed', "
                "reason = excluded.reason",
                (path_to_db(path), folder_id, size, mtime_ns, reason, mtime_ns / 1e9),
            )
        else:
            self._conn.execute(
                "UPDATE photos SET size = ?, mtime_ns = ?, content_hash = NULL, "
                "status = 'failed', reason = ? WHERE id = ?",
                (size, mtime_ns, reason, photo_id),
            )

    def delete_photos(self, ids: Iterable[int]) -> None:
        self._conn.executemany("DELETE FROM photos WHERE id = ?", [(i,) for i in ids])

    def mark_photos_ok(self, ids: Iterable[int]) -> None:
        self._conn.executemany(
            "UPDATE photos SET status = 'ok', reason = NULL WHERE id = ?", [(i,) for i in ids]
        )

    def mark_photos_offline(self, ids: Iterable[int]) -> None:
        self._conn.executemany(
            "UPDATE photos SET status = 'offline' WHERE id = ? AND status = 'ok'",
            [(i,) for i in ids],
        )

    # folders
    def add_folder(self, path: str) -> int:
        value = path_to_db(path)
        self._conn.execute(
            "INSERT OR IGNORE INTO folders(path, online, added_at) VALUES (?, 1, ?)",
            (value, time.time()),
        )
        return int(
            self._conn.execute("SELECT id FROM folders WHERE path = ?", (value,)).fetchone()[0]
        )

    def set_folder_offline(self, folder_id: int) -> int:
        """The folder is unplugged: it and its photos go offline. Returns its offline photos."""
        self._conn.execute("UPDATE folders SET online = 0 WHERE id = ?", (folder_id,))
        self._conn.execute(
            "UPDATE photos SET status = 'offline' WHERE folder_id = ? AND status = 'ok'",
            (folder_id,),
        )
        if self._meta(_offline_key(folder_id)) is None:
            self.set_meta(_offline_key(folder_id), repr(time.time()))
        return int(
            self._conn.execute(
                "SELECT COUNT(*) FROM photos WHERE folder_id = ? AND status = 'offline'",
                (folder_id,),
            ).fetchone()[0]
        )

    def set_folder_online(self, folder_id: int) -> None:
        self._conn.execute(
            "UPDATE folders SET online = 1 WHERE id = ? AND online != 1", (folder_id,)
        )
        self.delete_meta(_offline_key(folder_id))

    def forget_folder(self, folder_id: int) -> list[int]:
        """Drop a folder and its photos' rows (never the files); returns the photo ids."""
        ids = [
            r[0]
            for r in self._conn.execute("SELECT id FROM photos WHERE folder_id = ?", (folder_id,))
        ]
        self._conn.execute("DELETE FROM photos WHERE folder_id = ?", (folder_id,))
        self._conn.execute("DELETE FROM folders WHERE id = ?", (folder_id,))
        self.delete_meta(_offline_key(folder_id))
        self.delete_meta(_mounts_key(folder_id))
        _bump_generation(self._conn)
        return ids

    def set_mount_points(self, folder_id: int, mounts: Mapping[str, float | None]) -> None:
        """Mount points found inside a folder -> when each went offline (None: online)."""
        if mounts:
            # json's ensure_ascii writes undecodable-name surrogates as escapes: lossless
            self.set_meta(_mounts_key(folder_id), json.dumps(dict(mounts), sort_keys=True))
        else:
            self.delete_meta(_mounts_key(folder_id))

    # caption bank
    def add_captions(self, captions: Iterable[str], source: str) -> int:
        now = time.time()
        rows = []
        for caption in captions:
            text = (caption or "").strip()
            if not text:
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                log.info("caption not stored: it is not valid text (%r)", text)
                continue
            rows.append((text, source, now))
        if not rows:
            return 0
        before = self._conn.total_changes
        self._conn.executemany(
            "INSERT OR IGNORE INTO caption_bank(caption, source, added_at) VALUES (?, ?, ?)", rows
        )
        return self._conn.total_changes - before

    def put_caption_embeddings(self, model_id: str, ids: list[int], vectors: np.ndarray) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO caption_embeddings(caption_id, model_id, vector) "
            "VALUES (?, ?, ?)",
            [(i, model_id, vector_to_blob(v)) for i, v in zip(ids, vectors, strict=True)],
        )

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None


def _field_values(f: PhotoFields) -> tuple[object, ...]:
    return (
        path_to_db(f.path), f.folder_id, f.size, f.mtime_ns, f.content_hash, f.width, f.height,
        f.taken_at, f.sort_date,
    )


def _bump_generation(conn: sqlite3.Connection) -> int:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('generation', '1') "
        "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
    )
    return int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])


def _offline_key(folder_id: int) -> str:
    return f"folder_offline_since:{folder_id}"


def _mounts_key(folder_id: int) -> str:
    return f"folder_mounts:{folder_id}"


# -- the catalog -------------------------------------------------------------------------


class Catalog:
    """Thread-safe access to catalog.db; see the module docstring for the rules.

    `read_only=True` is for readers beside a writer process: it writes no folder backup.
    Readers may still store caches (caption vectors, remembered queries) through
    `write()`; SQLite serialises those with the writer.
    """

    def __init__(self, db_path: Path, *, read_only: bool = False) -> None:
        self.db_path = Path(db_path)
        self.read_only = read_only
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._all_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._immutable = False  # reading a full disk's catalog without -shm (readers only)
        existed = self.db_path.exists()
        if existed:
            self._refuse_empty_file()
        try:
            self._migrate(existed)
            self._check_on_open()
        except BaseException:
            self.close()
            raise
        if not read_only and not self.backup_path.exists():
            self.save_folder_backup()

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = self._connect_once(immutable=self._immutable)
        except sqlite3.OperationalError as exc:
            if not (self.read_only and not self._immutable and self._may_read_immutable(exc)):
                self._reraise(exc)
            # A full disk: a WAL reader must create the 32 KB -shm file and cannot. With no
            # WAL content every committed page is in the main file, so reading that file as
            # immutable (no locks, no -shm) sees exactly the committed state.
            log.warning("disk full: reading %s as it is, without locks", self.db_path)
            self._immutable = True
            try:
                conn = self._connect_once(immutable=True)
            except sqlite3.DatabaseError as exc2:
                self._reraise(exc2)
        except sqlite3.DatabaseError as exc:
            self._reraise(exc)
        with self._conns_lock:
            self._all_conns.append(conn)
        return conn

    def _connect_once(self, immutable: bool) -> sqlite3.Connection:
        if immutable:
            uri = self.db_path.absolute().as_uri() + "?immutable=1"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA user_version").fetchone()
            return conn
        conn = sqlite3.connect(
            str(self.db_path),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,  # closed from close() on another thread
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _may_read_immutable(self, exc: sqlite3.OperationalError) -> bool:
        msg = str(exc).lower()
        if "disk i/o error" not in msg and "full" not in msg:
            return False
        return _size_or_zero(Path(str(self.db_path) + "-wal")) == 0

    @property
    def conn(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("catalog is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            for conn in self._all_conns:
                with contextlib.suppress(Exception):
                    conn.close()
            self._all_conns.clear()
        self._local = threading.local()

    def _query(self, sql: str, params: Iterable[object] = ()) -> list[tuple]:
        """Every read goes through here, so damage found mid-read is one clear error."""
        try:
            return self.conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            self._reraise(exc)

    def _scalar(self, sql: str, params: Iterable[object] = ()) -> object:
        rows = self._query(sql, params)
        return rows[0][0] if rows else None

    @contextlib.contextmanager
    def write(self) -> Iterator[CatalogWriter]:
        """One writer transaction: BEGIN IMMEDIATE, so a competing writer waits, not fails.

        Any failure rolls it back; a write that waited out the busy timeout raises
        `LibraryLockedError`.
        """
        with self._write_lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                self._reraise(exc)
            try:
                yield CatalogWriter(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                # A failed COMMIT leaves the transaction open: always end it here.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    self._reraise(exc)
                raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The raw connection inside a writer transaction. Only for bulk loaders outside
        the engine (benchmarks/data.py) until they use `write()`; engine code never does."""
        with self.write() as writer:
            yield writer._conn

    def _reraise(self, exc: sqlite3.Error) -> NoReturn:
        if isinstance(exc, _PROGRAMMING_ERRORS):
            raise exc  # a bug in our SQL, not the user's library: keep the traceback
        raise sqlite_error(exc, self.db_path) from exc

    # -- opening checks ----------------------------------------------------------------

    def _refuse_empty_file(self) -> None:
        """A 0-byte catalog.db would open as a brand-new library and hide the loss. (A new
        WAL database whose pages are all still in -wal is not empty.)"""
        try:
            size = self.db_path.stat().st_size
            wal_size = _size_or_zero(Path(str(self.db_path) + "-wal"))
        except OSError as exc:
            raise LibraryUnreadableError(
                f"cannot open the library database {self.db_path}: {exc.strerror or exc}"
            ) from exc
        if size == 0 and wal_size == 0:
            raise LibraryUnreadableError(
                f"the library database {self.db_path} is empty (0 bytes): its folder list "
                f"and index are lost; rebuild them with: {repair_hint(self.db_path)}"
            )

    def _check_on_open(self) -> None:
        problems = self.problems(full=False)
        if problems:
            raise LibraryUnreadableError(
                f"the library database {self.db_path} is damaged ({problems[0]}); "
                f"rebuild it with: {repair_hint(self.db_path)}"
            )

    def problems(self, full: bool = True) -> list[str]:
        """`PRAGMA quick_check` findings ([] when healthy); `full=False` checks only the
        small tables (what every open does)."""
        try:
            if full:
                rows = self.conn.execute("PRAGMA quick_check").fetchall()
            else:
                rows = []
                for table in OPEN_CHECK_TABLES:
                    rows += self.conn.execute(f"PRAGMA quick_check({table})").fetchall()
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc).lower() or "busy" in str(exc).lower():
                self._reraise(exc)
            return [str(exc)]
        return [str(r[0]) for r in rows if r[0] != "ok"]

    # -- schema ------------------------------------------------------------------------

    def _migrate(self, existed: bool) -> None:
        try:
            version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
            has_tables = bool(
                self.conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
            )
        except sqlite3.DatabaseError as exc:
            self._reraise(exc)
        if version > SCHEMA_VERSION:
            raise LibraryUnreadableError(
                f"the library at {self.db_path.parent} was written by a newer photosearch "
                f"(schema {version}, this version knows {SCHEMA_VERSION})"
            )
        if version == 0 and existed and has_tables:
            raise LibraryUnreadableError(
                f"{self.db_path} is not a photosearch library database; move it away or "
                "pick another library with --library"
            )
        while version < SCHEMA_VERSION:
            with self.write() as w:
                # Re-read inside the transaction: another process may have migrated.
                version = int(w._conn.execute("PRAGMA user_version").fetchone()[0])
                if version >= SCHEMA_VERSION:
                    break
                log.info("catalog migration %d -> %d", version, version + 1)
                MIGRATIONS[version](w._conn)
                w._conn.execute(f"PRAGMA user_version = {version + 1}")
            version += 1

    @property
    def schema_version(self) -> int:
        return int(self._scalar("PRAGMA user_version") or 0)

    def table_names(self) -> set[str]:
        return {r[0] for r in self._query("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def column_names(self, table: str) -> list[str]:
        return [r[1] for r in self._query(f"PRAGMA table_info({table})")]

    # -- meta --------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as w:
            w.set_meta(key, value)

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", "0") or 0)

    def bump_generation(self, conn: sqlite3.Connection) -> int:
        """For `transaction()` users; engine code calls `CatalogWriter.bump_generation`."""
        return _bump_generation(conn)

    @property
    def model_id(self) -> str | None:
        return self.get_meta("model_id")

    # -- folders -----------------------------------------------------------------------

    def add_folder(self, path: str) -> int:
        with self.write() as w:
            folder_id = w.add_folder(path)
        self.save_folder_backup()
        return folder_id

    def forget_folder(self, folder_id: int) -> list[int]:
        """Forget a folder and its photos (not the files); returns the photo ids dropped."""
        with self.write() as w:
            ids = w.forget_folder(folder_id)
        self.save_folder_backup()
        return ids

    def folders(self) -> list[FolderRow]:
        rows = self._query("SELECT id, path, online, added_at FROM folders ORDER BY path")
        return [FolderRow(r[0], path_from_db(r[1]), bool(r[2]), r[3]) for r in rows]

    def folder_photo_counts(self) -> dict[int, int]:
        rows = self._query(
            "SELECT folder_id, COUNT(*) FROM photos WHERE status != 'failed' GROUP BY folder_id"
        )
        return {r[0]: r[1] for r in rows}

    def folder_offline_since(self) -> dict[int, float]:
        """Folder id -> when it was first found offline (epoch seconds)."""
        out = {}
        for key, value in self._query(
            "SELECT key, value FROM meta WHERE key LIKE 'folder_offline_since:%'"
        ):
            with contextlib.suppress(ValueError):
                out[int(key.split(":", 1)[1])] = float(value)
        return out

    def mount_points(self, folder_id: int) -> dict[str, float | None]:
        """Mount points remembered inside a folder -> when each went offline (or None)."""
        raw = self.get_meta(_mounts_key(folder_id))
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        return {str(k): (float(v) if v is not None else None) for k, v in data.items()}

    @property
    def backup_path(self) -> Path:
        return self.db_path.with_name(FOLDER_BACKUP_FILE)

    def save_folder_backup(self) -> None:
        """Rewrite folders.json from the folders table (done on every folder change)."""
        if self.read_only:
            return
        data = {
            "what": "photosearch folder list, a backup of catalog.db's folders table",
            "written_at": time.time(),
            "model_id": self.model_id,
            "folders": [f.path for f in self.folders()],
        }
        try:
            # ensure_ascii writes undecodable-name surrogates as escapes: lossless
            _atomic_write(self.backup_path, json.dumps(data, indent=1, ensure_ascii=True))
        except OSError as exc:
            log.warning("could not write the folder backup %s: %s", self.backup_path, exc)

    # -- photos ------------------------------------------------------------------------

    def _photos(self, where: str, params: Iterable[object] = ()) -> list[PhotoRow]:
        return [
            PhotoRow.from_row(r)
            for r in self._query(f"SELECT {PHOTO_COLUMNS} FROM photos WHERE {where}", params)
        ]

    def photo_by_path(self, path: str) -> PhotoRow | None:
        rows = self._photos("path = ?", (path_to_db(path),))
        return rows[0] if rows else None

    def photos_in_folder(self, folder_id: int) -> list[PhotoRow]:
        return self._photos("folder_id = ?", (folder_id,))

    def photos_under(self, path: str) -> list[PhotoRow]:
        """The photo at `path`, or every photo below it if it is a directory."""
        clause, params = _prefix_clause("path", folder_prefix(path))
        return self._photos(f"path = ? OR {clause}", [path_to_db(path), *params])

    def photos_with_status(self, *statuses: str) -> list[PhotoRow]:
        marks = ",".join("?" * len(statuses))
        return self._photos(f"status IN ({marks}) ORDER BY id", statuses)

    def photos_by_ids(self, ids: Iterable[int]) -> dict[int, PhotoRow]:
        ids = list(ids)
        out: dict[int, PhotoRow] = {}
        for i in range(0, len(ids), _SQLITE_MAX_PARAMS):
            chunk = ids[i : i + _SQLITE_MAX_PARAMS]
            for row in self._photos(f"id IN ({','.join('?' * len(chunk))})", chunk):
                out[row.id] = row
        return out

    def photos_missing_embedding(self, model_id: str) -> list[PhotoRow]:
        """Indexed photos whose bytes have no vector for `model_id` (a model switch)."""
        return self._photos(
            "status = 'ok' AND content_hash IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
            "embeddings e WHERE e.content_hash = photos.content_hash AND e.model_id = ?) "
            "ORDER BY id",
            (model_id,),
        )

    def count_photos(self, status: str | None = None) -> int:
        if status is None:
            return int(self._scalar("SELECT COUNT(*) FROM photos") or 0)
        return int(self._scalar("SELECT COUNT(*) FROM photos WHERE status = ?", (status,)) or 0)

    def browse(
        self, offset: int, limit: int, photo_filter: PhotoFilter | None = None
    ) -> list[PhotoRow]:
        """One page of the library's photos (ok and offline), newest first: by `sort_date`
        (date taken, else file time), then newest row. Walks idx_photos_sort_date backwards,
        so a page costs the same at 100K photos as at 100 (plus the OFFSET's index steps)."""
        where, params = (photo_filter or PhotoFilter()).sql()
        rows = self._query(
            f"SELECT {_prefixed_columns('p')} FROM photos p "
            f"WHERE p.status IN ('ok', 'offline') AND ({where}) "
            "ORDER BY p.sort_date DESC, p.id DESC LIMIT ? OFFSET ?",
            (*params, max(0, int(limit)), max(0, int(offset))),
        )
        return [PhotoRow.from_row(r) for r in rows]

    def count_browsable(self, photo_filter: PhotoFilter | None = None) -> int:
        """How many photos `browse` pages through with this filter."""
        where, params = (photo_filter or PhotoFilter()).sql()
        return int(
            self._scalar(
                f"SELECT COUNT(*) FROM photos p WHERE p.status IN ('ok', 'offline') AND ({where})",
                params,
            )
            or 0
        )

    def failures(self) -> list[tuple[str, str]]:
        rows = self._query("SELECT path, reason FROM photos WHERE status = 'failed' ORDER BY path")
        return [(path_from_db(r[0]), r[1] or "unknown error") for r in rows]

    # -- embeddings --------------------------------------------------------------------

    def get_embedding(self, digest: str, model_id: str) -> np.ndarray | None:
        rows = self._query(
            "SELECT vector FROM embeddings WHERE content_hash = ? AND model_id = ?",
            (digest, model_id),
        )
        return blob_to_vector(rows[0][0]) if rows else None

    # -- region codes (attention re-ranking) -------------------------------------------

    def has_region_codes_table(self) -> bool:
        return bool(self._scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'region_codes'"))

    def region_codes_for_photos(
        self, photo_ids: Iterable[int], model_id: str, attention_id: str
    ) -> dict[int, bytes]:
        """Photo id -> packed region codes of its bytes, for the photos that have them."""
        ids = list(photo_ids)
        out: dict[int, bytes] = {}
        if not ids or not self.has_region_codes_table():
            return out
        for i in range(0, len(ids), _SQLITE_MAX_PARAMS):
            chunk = ids[i : i + _SQLITE_MAX_PARAMS]
            rows = self._query(
                "SELECT p.id, r.codes FROM photos p JOIN region_codes r "
                "ON r.content_hash = p.content_hash AND r.model_id = ? AND r.attention_id = ? "
                f"WHERE p.id IN ({','.join('?' * len(chunk))})",
                (model_id, attention_id, *chunk),
            )
            out.update((int(r[0]), bytes(r[1])) for r in rows)
        return out

    def photos_missing_region_codes(self, model_id: str, attention_id: str) -> list[PhotoRow]:
        """Indexed photos whose bytes have a vector for `model_id` but no region codes from
        these weights (indexed before re-ranking was on)."""
        missing = "" if not self.has_region_codes_table() else (
            "AND NOT EXISTS (SELECT 1 FROM region_codes r WHERE r.content_hash = photos.content_hash "
            "AND r.model_id = ? AND r.attention_id = ?) "
        )
        params = (model_id,) + ((model_id, attention_id) if missing else ())
        return self._photos(
            "status = 'ok' AND content_hash IS NOT NULL AND EXISTS (SELECT 1 FROM embeddings e "
            f"WHERE e.content_hash = photos.content_hash AND e.model_id = ?) {missing}ORDER BY id",
            params,
        )

    def region_codes_for_hash(self, digest: str, model_id: str, attention_id: str) -> bytes | None:
        """The packed region codes stored for these bytes, or None."""
        if not self.has_region_codes_table():
            return None
        rows = self._query(
            "SELECT codes FROM region_codes WHERE content_hash = ? AND model_id = ? AND attention_id = ?",
            (digest, model_id, attention_id),
        )
        return bytes(rows[0][0]) if rows else None

    def count_region_codes(self, model_id: str, attention_id: str) -> int:
        """How many distinct photo contents have region codes for this model and weights."""
        if not self.has_region_codes_table():
            return 0
        return int(self._scalar(
            "SELECT COUNT(*) FROM region_codes WHERE model_id = ? AND attention_id = ?",
            (model_id, attention_id)) or 0)

    def embedded_hashes(self, model_id: str) -> set[str]:
        return {
            r[0]
            for r in self._query("SELECT content_hash FROM embeddings WHERE model_id = ?", (model_id,))
        }

    def indexable_vectors(
        self, model_id: str, photo_filter: PhotoFilter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(photo ids, vectors) of every photo that belongs in the search index, or only
        of those `photo_filter` lets through."""
        where, params = (photo_filter or PhotoFilter()).sql()
        rows = self._query(
            "SELECT p.id, e.vector FROM photos p JOIN embeddings e "
            "ON e.content_hash = p.content_hash AND e.model_id = ? "
            f"WHERE p.status IN ('ok', 'offline') AND ({where}) ORDER BY p.id",
            (model_id, *params),
        )
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.stack([blob_to_vector(r[1]) for r in rows])
        return ids, vecs

    def sample_vectors(self, model_id: str, n: int) -> np.ndarray:
        """About `n` indexable vectors spread evenly over photo ids (every k-th id), (m, d):
        what a query's score distribution over the library is estimated from."""
        top = int(self._scalar("SELECT MAX(id) FROM photos") or 0)
        if top == 0 or n <= 0:
            return np.zeros((0, 0), np.float32)
        stride = max(1, top // int(n))
        # rowid lookups of every stride-th id: no scan (a `p.id % k = 0` filter read the
        # whole photos table, 0.4 s warm and 1.4 s cold at 100K photos)
        wanted = list(range(stride, top + 1, stride))[: int(n)]
        rows = []
        for i in range(0, len(wanted), _SQLITE_MAX_PARAMS):
            chunk = wanted[i : i + _SQLITE_MAX_PARAMS]
            rows += self._query(
                "SELECT e.vector FROM photos p JOIN embeddings e "
                "ON e.content_hash = p.content_hash AND e.model_id = ? "
                f"WHERE p.id IN ({','.join('?' * len(chunk))}) "
                "AND p.status IN ('ok', 'offline')",
                (model_id, *chunk),
            )
        if not rows:
            return np.zeros((0, 0), np.float32)
        return np.stack([blob_to_vector(r[0]) for r in rows])

    def count_indexable(self, model_id: str) -> int:
        return int(
            self._scalar(
                "SELECT COUNT(*) FROM photos p JOIN embeddings e "
                "ON e.content_hash = p.content_hash AND e.model_id = ? "
                "WHERE p.status IN ('ok', 'offline')",
                (model_id,),
            )
            or 0
        )

    # -- caption bank ------------------------------------------------------------------

    def add_captions(self, captions: Iterable[str], source: str) -> int:
        with self.write() as w:
            return w.add_captions(captions, source)

    def captions_missing_embeddings(
        self, model_id: str, source: str | None = None
    ) -> list[tuple[int, str]]:
        """(id, caption) of bank captions with no vector for `model_id` (only those from
        `source`, 'model' or 'query', when given)."""
        only, params = ("AND source = ? ", [source]) if source else ("", [])
        return [
            (r[0], r[1])
            for r in self._query(
                "SELECT id, caption FROM caption_bank WHERE id NOT IN "
                "(SELECT caption_id FROM caption_embeddings WHERE model_id = ?) "
                f"{only}ORDER BY id",
                (model_id, *params),
            )
        ]

    def count_captions_missing(self, model_id: str) -> int:
        return int(
            self._scalar(
                "SELECT COUNT(*) FROM caption_bank WHERE id NOT IN "
                "(SELECT caption_id FROM caption_embeddings WHERE model_id = ?)",
                (model_id,),
            )
            or 0
        )

    def put_caption_embeddings(self, model_id: str, ids: list[int], vectors: np.ndarray) -> None:
        with self.write() as w:
            w.put_caption_embeddings(model_id, ids, vectors)

    def caption_matrix(
        self, model_id: str, source: str | None = None
    ) -> tuple[list[str], np.ndarray]:
        only, params = ("WHERE b.source = ? ", [source]) if source else ("", [])
        rows = self._query(
            "SELECT b.caption, e.vector FROM caption_bank b JOIN caption_embeddings e "
            f"ON e.caption_id = b.id AND e.model_id = ? {only}ORDER BY b.id",
            (model_id, *params),
        )
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [r[0] for r in rows], np.stack([blob_to_vector(r[1]) for r in rows])

    def caption_count(self) -> int:
        return int(self._scalar("SELECT COUNT(*) FROM caption_bank") or 0)


# -- errors ------------------------------------------------------------------------------


def repair_hint(db_path: Path) -> str:
    return f"photosearch repair --library {db_path.parent}"


def sqlite_error(exc: sqlite3.Error, db_path: Path) -> Exception:
    """The user-facing error for a SQLite failure on `db_path`."""
    msg = str(exc).lower()
    if "locked" in msg or "busy" in msg:
        return LibraryLockedError(
            f"the library at {db_path.parent} is busy (another photosearch is writing to it); "
            "try again when it has finished"
        )
    if "full" in msg or ("disk i/o error" in msg and _disk_is_full(db_path.parent)):
        return DiskFullError(
            f"disk full: cannot write the library at {db_path.parent}; free space and try again"
        )
    if "malformed" in msg or "not a database" in msg or "corrupt" in msg:
        return LibraryUnreadableError(
            f"cannot open the library database {db_path}: it is damaged ({exc}); "
            f"rebuild it with: {repair_hint(db_path)}"
        )
    return LibraryUnreadableError(f"cannot open the library database {db_path}: {exc}")


def _disk_is_full(directory: Path) -> bool:
    try:
        return shutil.disk_usage(directory).free < DISK_FULL_BELOW
    except OSError:
        return False


def _size_or_zero(path: Path) -> int:
    """Size of a file another process may delete at any moment (a -wal file)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_folder_backup(library_dir: Path) -> list[str] | None:
    """The folder list kept in `folders.json`, or None without a usable backup."""
    try:
        data = json.loads((Path(library_dir) / FOLDER_BACKUP_FILE).read_text(encoding="utf-8"))
        folders = data["folders"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(folders, list):
        return None
    return [f for f in folders if isinstance(f, str)]


@dataclass
class Salvage:
    """What could still be read from a damaged catalog."""

    folders: list[str]
    model_id: str | None
    embeddings: list[tuple[str, str, bytes]]  # (content_hash, model_id, vector blob)
    queries: list[str]  # remembered search queries (the model's bank is re-imported)
    problems: list[str]


def salvage_catalog(db_path: Path) -> Salvage:
    """Read whatever rows survive in a damaged catalog.db, table by table and row by row
    up to the first unreadable page. Opens it read-only: the file is never changed."""
    out = Salvage([], None, [], [], [])
    try:
        if db_path.stat().st_size == 0:
            out.problems.append("the file is empty")
            return out
        conn = sqlite3.connect(db_path.absolute().as_uri() + "?mode=ro", uri=True)
    except (OSError, sqlite3.Error) as exc:
        out.problems.append(str(exc))
        return out

    def rows(sql: str, what: str) -> Iterator[tuple]:
        try:
            cur = conn.execute(sql)
            while (row := cur.fetchone()) is not None:
                yield row
        except sqlite3.Error as exc:
            out.problems.append(f"{what}: {exc}")

    try:
        out.folders = [path_from_db(r[0]) for r in rows("SELECT path FROM folders", "folders")]
        for (value,) in rows("SELECT value FROM meta WHERE key = 'model_id'", "meta"):
            out.model_id = value
        out.embeddings = list(
            rows("SELECT content_hash, model_id, vector FROM embeddings", "embeddings")
        )
        out.queries = [
            r[0]
            for r in rows("SELECT caption FROM caption_bank WHERE source = 'query'", "captions")
        ]
    finally:
        conn.close()
    return out
