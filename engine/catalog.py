"""The catalog: SQLite (via sqlite-utils) is the source of truth, vectors included.

The HNSW index file is only a cache rebuilt from the `embeddings` table, so the catalog
alone must be enough to recover from a crash. Every change to the set of indexed vectors
bumps `meta.generation` inside the same transaction; the index sidecar records the
generation it was saved at, which is how a stale index is detected.

Connections are per thread (sqlite3 objects must not be shared) and writes are
serialised by one in-process lock plus `BEGIN IMMEDIATE` against other processes.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlite_utils

from .errors import LibraryLockedError, LibraryUnreadableError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000

STATUS_OK = "ok"
STATUS_OFFLINE = "offline"
STATUS_FAILED = "failed"


def _migration_1(db: sqlite_utils.Database) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute(
        """CREATE TABLE folders (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            online INTEGER NOT NULL DEFAULT 1,
            added_at REAL)"""
    )
    db.execute(
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
    db.execute(
        """CREATE TABLE embeddings (
            content_hash TEXT NOT NULL,
            model_id TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (content_hash, model_id))"""
    )
    db.execute(
        """CREATE TABLE caption_bank (
            id INTEGER PRIMARY KEY,
            caption TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL CHECK (source IN ('model', 'query')),
            added_at REAL)"""
    )
    db.execute(
        """CREATE TABLE caption_embeddings (
            caption_id INTEGER NOT NULL REFERENCES caption_bank(id) ON DELETE CASCADE,
            model_id TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (caption_id, model_id))"""
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    # Moved-file detection and date filters look photos up by hash / folder / date.
    db.execute("CREATE INDEX idx_photos_hash ON photos(content_hash)")
    db.execute("CREATE INDEX idx_photos_folder ON photos(folder_id)")
    db.execute("ALTER TABLE photos ADD COLUMN sort_date REAL")
    db.execute("CREATE INDEX idx_photos_sort_date ON photos(sort_date)")


# Append only: user_version N means MIGRATIONS[:N] have been applied.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_migration_1, _migration_2]
SCHEMA_VERSION = len(MIGRATIONS)


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
        return cls(*row)


PHOTO_COLUMNS = (
    "id, path, folder_id, size, mtime_ns, content_hash, width, height, taken_at, status, "
    "reason, sort_date"
)


def vector_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def blob_to_vector(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4").astype(np.float32)


class Catalog:
    """Thread-safe access to catalog.db; see the module docstring for the rules."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._all_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._migrate()

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                str(self.db_path),
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # autocommit; transactions are explicit
                check_same_thread=False,  # closed from close() on another thread
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.OperationalError as exc:
            raise _friendly(exc, self.db_path) from exc
        except sqlite3.DatabaseError as exc:
            raise LibraryUnreadableError(
                f"cannot open the library database {self.db_path}: {exc}"
            ) from exc
        with self._conns_lock:
            self._all_conns.append(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("catalog is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "conn", None) is None:
            db = self._local.db = sqlite_utils.Database(self.conn)
        return db

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            for conn in self._all_conns:
                with contextlib.suppress(Exception):
                    conn.close()
            self._all_conns.clear()
        self._local = threading.local()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One writer transaction; BEGIN IMMEDIATE so a competing writer waits, not fails."""
        with self._write_lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _friendly(exc, self.db_path) from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    # -- schema ------------------------------------------------------------------------

    def _migrate(self) -> None:
        db = self.db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LibraryUnreadableError(
                f"the library at {self.db_path.parent} was written by a newer photosearch "
                f"(schema {version}, this version knows {SCHEMA_VERSION})"
            )
        for i in range(version, SCHEMA_VERSION):
            with self.transaction():
                log.info("catalog migration %d -> %d", i, i + 1)
                MIGRATIONS[i](db)
                db.execute(f"PRAGMA user_version = {i + 1}")

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    # -- meta --------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str, conn: sqlite3.Connection | None = None) -> None:
        sql = "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        if conn is not None:
            conn.execute(sql, (key, value))
        else:
            with self.transaction() as c:
                c.execute(sql, (key, value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", "0") or 0)

    def bump_generation(self, conn: sqlite3.Connection) -> int:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('generation', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )
        return int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    @property
    def model_id(self) -> str | None:
        return self.get_meta("model_id")

    # -- folders -----------------------------------------------------------------------

    def add_folder(self, path: str) -> int:
        import time

        with self.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO folders(path, online, added_at) VALUES (?, 1, ?)",
                (path, time.time()),
            )
            return int(c.execute("SELECT id FROM folders WHERE path = ?", (path,)).fetchone()[0])

    def folders(self) -> list[tuple[int, str, bool]]:
        rows = self.conn.execute("SELECT id, path, online FROM folders ORDER BY path").fetchall()
        return [(r[0], r[1], bool(r[2])) for r in rows]

    def folder_photo_counts(self) -> dict[int, int]:
        rows = self.conn.execute(
            "SELECT folder_id, COUNT(*) FROM photos WHERE status != 'failed' GROUP BY folder_id"
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    # -- photos ------------------------------------------------------------------------

    def photos_where(self, where: str = "1", params: Iterable[object] = ()) -> list[PhotoRow]:
        rows = self.conn.execute(
            f"SELECT {PHOTO_COLUMNS} FROM photos WHERE {where}", tuple(params)
        ).fetchall()
        return [PhotoRow.from_row(r) for r in rows]

    def photo_by_path(self, path: str) -> PhotoRow | None:
        rows = self.photos_where("path = ?", (path,))
        return rows[0] if rows else None

    def photos_by_ids(self, ids: Iterable[int]) -> dict[int, PhotoRow]:
        ids = list(ids)
        out: dict[int, PhotoRow] = {}
        for i in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            chunk = ids[i : i + 900]
            marks = ",".join("?" * len(chunk))
            for row in self.photos_where(f"id IN ({marks})", chunk):
                out[row.id] = row
        return out

    def count_photos(self, status: str | None = None) -> int:
        if status is None:
            return int(self.conn.execute("SELECT COUNT(*) FROM photos").fetchone()[0])
        return int(
            self.conn.execute("SELECT COUNT(*) FROM photos WHERE status = ?", (status,)).fetchone()[0]
        )

    def failures(self) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT path, reason FROM photos WHERE status = 'failed' ORDER BY path"
        ).fetchall()
        return [(r[0], r[1] or "unknown error") for r in rows]

    # -- embeddings --------------------------------------------------------------------

    def put_embedding(
        self, conn: sqlite3.Connection, digest: str, model_id: str, vector: np.ndarray
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO embeddings(content_hash, model_id, vector) VALUES (?, ?, ?)",
            (digest, model_id, vector_to_blob(vector)),
        )

    def get_embedding(self, digest: str, model_id: str) -> np.ndarray | None:
        row = self.conn.execute(
            "SELECT vector FROM embeddings WHERE content_hash = ? AND model_id = ?",
            (digest, model_id),
        ).fetchone()
        return blob_to_vector(row[0]) if row else None

    def embedded_hashes(self, model_id: str) -> set[str]:
        rows = self.conn.execute(
            "SELECT content_hash FROM embeddings WHERE model_id = ?", (model_id,)
        )
        return {r[0] for r in rows}

    def indexable_vectors(
        self, model_id: str, where: str = "1", params: Iterable[object] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """(photo ids, vectors) of every photo that belongs in the search index."""
        rows = self.conn.execute(
            "SELECT p.id, e.vector FROM photos p JOIN embeddings e "
            "ON e.content_hash = p.content_hash AND e.model_id = ? "
            f"WHERE p.status IN ('ok', 'offline') AND ({where}) ORDER BY p.id",
            (model_id, *params),
        ).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.stack([blob_to_vector(r[1]) for r in rows])
        return ids, vecs

    def count_indexable(self, model_id: str) -> int:
        return int(
            self.conn.execute(
                "SELECT COUNT(*) FROM photos p JOIN embeddings e "
                "ON e.content_hash = p.content_hash AND e.model_id = ? "
                "WHERE p.status IN ('ok', 'offline')",
                (model_id,),
            ).fetchone()[0]
        )

    # -- caption bank ------------------------------------------------------------------

    def add_captions(self, captions: Iterable[str], source: str) -> int:
        import time

        now = time.time()
        rows = [(c.strip(), source, now) for c in captions if c and c.strip()]
        if not rows:
            return 0
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO caption_bank(caption, source, added_at) VALUES (?, ?, ?)",
                rows,
            )
            return c.total_changes - before

    def captions_missing_embeddings(self, model_id: str) -> list[tuple[int, str]]:
        return [
            (r[0], r[1])
            for r in self.conn.execute(
                "SELECT id, caption FROM caption_bank WHERE id NOT IN "
                "(SELECT caption_id FROM caption_embeddings WHERE model_id = ?) ORDER BY id",
                (model_id,),
            )
        ]

    def put_caption_embeddings(
        self, model_id: str, ids: list[int], vectors: np.ndarray
    ) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO caption_embeddings(caption_id, model_id, vector) "
                "VALUES (?, ?, ?)",
                [(i, model_id, vector_to_blob(v)) for i, v in zip(ids, vectors, strict=True)],
            )

    def caption_matrix(self, model_id: str) -> tuple[list[str], np.ndarray]:
        rows = self.conn.execute(
            "SELECT b.caption, e.vector FROM caption_bank b JOIN caption_embeddings e "
            "ON e.caption_id = b.id AND e.model_id = ? ORDER BY b.id",
            (model_id,),
        ).fetchall()
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [r[0] for r in rows], np.stack([blob_to_vector(r[1]) for r in rows])

    def caption_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM caption_bank").fetchone()[0])


def _friendly(exc: sqlite3.OperationalError, db_path: Path) -> Exception:
    msg = str(exc).lower()
    if "locked" in msg or "busy" in msg:
        return LibraryLockedError(
            f"the library at {db_path.parent} is busy (another photosearch is writing to it); "
            "try again when it has finished"
        )
    return LibraryUnreadableError(f"cannot open the library database {db_path}: {exc}")
