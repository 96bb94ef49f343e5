"""The indexer's read -> hash -> decode -> prepare pipeline, as a generator of batches.

Files are read once in a bounded thread pool; the bytes are hashed (blake2b) and, only
if no vector is stored for that hash, decoded, thumbnailed and `prepare_image`d for the
model. Results come back in file order, grouped into batches that hold at most
`batch_size` images to embed, so the caller embeds one batch on its own thread while the
pool already works on the next files.

Inside one pass each content hash is embedded at most once: a second file with the
same bytes (a copy) arrives as "reuse" and shares the first file's vector.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import imaging
from .catalog import PhotoRow
from .embedder import Embedder
from .errors import DiskFullError

log = logging.getLogger(__name__)

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})

EMBED = "embed"  # decoded and prepared: needs the model
REUSE = "reuse"  # a vector for these bytes is stored (or embedded earlier in this pass)
FAILED = "failed"  # could not be read or decoded; `reason` says why


@dataclass
class IndexProgress:
    done: int
    total: int
    current_path: str
    eta_s: float | None
    failed: int


ProgressFn = Callable[[IndexProgress], None]


@dataclass
class Candidate:
    """A file the pass must look at, with the catalog row at its path (if any)."""

    path: str
    size: int
    mtime_ns: int
    folder_id: int | None
    row: PhotoRow | None
    # Known not to be indexable without reading it (a FIFO, an unsupported format...).
    skip_reason: str | None = None


@dataclass
class Prepared:
    kind: str  # EMBED | REUSE | FAILED
    digest: str | None = None
    reason: str | None = None
    width: int | None = None
    height: int | None = None
    taken_at: str | None = None
    array: np.ndarray | None = None


Batch = list[tuple[Candidate, Prepared]]


@dataclass
class PipelineState:
    """How far the pipeline got; read by the caller after (or while) iterating."""

    total: int
    done: int = 0
    failed: int = 0
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)
    # Hashes that will be embedded in this pass (the first file with those bytes).
    claimed: set[str] = field(default_factory=set)


def prepare_file(
    cand: Candidate, embedder: Embedder, known: set[str], thumbs_dir: Path
) -> Prepared:
    """Worker thread: read once, hash, and decode only if no vector is stored.

    Per-file problems become a FAILED result with a reason; a full disk (writing the
    thumbnail) raises `DiskFullError`, which ends the pass instead of blaming every
    following file.
    """
    if cand.skip_reason is not None:
        return Prepared(FAILED, reason=cand.skip_reason)
    try:
        data = imaging.read_file(cand.path)
        digest = imaging.content_hash(data)
        thumb = imaging.thumbnail_file(thumbs_dir, digest)
        if digest in known and thumb.exists():
            return Prepared(REUSE, digest=digest)
        decoded = imaging.decode_image(data)
        imaging.save_thumbnail(decoded.image, thumbs_dir, digest)
        taken = decoded.taken_at.isoformat() if decoded.taken_at else None
        if digest in known:
            return Prepared(REUSE, digest, None, decoded.width, decoded.height, taken)
        array = embedder.prepare_image(decoded.image)
        return Prepared(EMBED, digest, None, decoded.width, decoded.height, taken, array)
    except imaging.ImageDecodeError as exc:
        return Prepared(FAILED, reason=exc.reason)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(f"disk full: cannot write a thumbnail ({exc})") from exc
        log.warning("unexpected error preparing %s", cand.path, exc_info=True)
        return Prepared(FAILED, reason=f"unexpected error: {exc}")
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the pass
        log.warning("unexpected error preparing %s", cand.path, exc_info=True)
        return Prepared(FAILED, reason=f"unexpected error: {exc}")


def prepared_batches(
    candidates: Sequence[Candidate],
    prepare: Callable[[Candidate], Prepared],
    state: PipelineState,
    *,
    batch_size: int,
    workers: int,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Batch]:
    """Yield the candidates' results in file order, in batches of <= `batch_size` images
    to embed (and <= 4 x batch_size items, so reused files are committed regularly).

    Read-ahead is bounded (2 batches) so memory stays flat. On cancel the partial batch is
    still yielded (to be saved) and `state.cancelled` set; an exception from `prepare`
    propagates. Either way no more work is started and the pool is shut down.
    """
    window = batch_size * 2
    todo = iter(candidates)
    pending: deque[tuple[Candidate, Future[Prepared]]] = deque()
    batch: Batch = []
    n_embed = 0
    if progress and state.total:
        progress(IndexProgress(0, state.total, "", None, 0))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="ps-decode")
    try:

        def fill() -> None:
            while len(pending) < window:
                cand = next(todo, None)
                if cand is None:
                    return
                pending.append((cand, pool.submit(prepare, cand)))

        fill()
        while pending:
            if cancel is not None and cancel.is_set():
                # Work already decoded and prepared is kept: quitting early must not throw
                # away photos that only wait for their batch to fill.
                state.cancelled = True
                if batch:
                    yield batch
                return
            cand, fut = pending.popleft()
            prepared = fut.result()
            fill()
            if prepared.kind == EMBED:
                digest = prepared.digest or ""
                if digest in state.claimed:
                    # A copy of a file embedded earlier in this pass: share its vector.
                    prepared = Prepared(
                        REUSE, digest, None, prepared.width, prepared.height, prepared.taken_at
                    )
                else:
                    state.claimed.add(digest)
                    n_embed += 1
            batch.append((cand, prepared))
            state.done += 1
            state.failed += prepared.kind == FAILED
            if n_embed >= batch_size or len(batch) >= 4 * batch_size:
                yield batch
                batch, n_embed = [], 0
            if progress:
                elapsed = time.monotonic() - state.started
                eta = elapsed / state.done * (state.total - state.done)
                progress(IndexProgress(state.done, state.total, cand.path, eta, state.failed))
        if batch:
            yield batch
    finally:
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True)
