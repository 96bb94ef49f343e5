"""Text -> photos, photo -> photos and photo -> captions over one catalog.

Filters (folder, date range) are applied after an over-fetch from HNSW; when that leaves
fewer than top_k hits, the filtered set is searched exactly (brute force over its stored
vectors), so a narrow filter never hides a match HNSW did not return.

Weak results: `SearchResult.weak` is true when the best score is below a threshold that the
embedder can state as `weak_match_threshold` (calibrated per model), else
`DEFAULT_WEAK_MATCH_THRESHOLD`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from .catalog import Catalog, PhotoFilter, PhotoRow
from .embedder import Embedder
from .errors import EmptyQueryError, PhotosearchError
from .settings import DEFAULT_WEAK_MATCH_THRESHOLD
from .vector_index import VectorIndex

log = logging.getLogger(__name__)

OVERFETCH = 4
MIN_FETCH = 100


@dataclass
class PhotoHit:
    path: str
    score: float
    date: datetime | None
    width: int
    height: int
    status: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "score": round(self.score, 6)}


@dataclass
class SearchResult:
    hits: list[PhotoHit]
    weak: bool
    best_score: float | None
    threshold: float


@dataclass
class CaptionHit:
    caption: str
    score: float

    def to_json(self) -> dict[str, object]:
        return {"caption": self.caption, "score": round(self.score, 6)}


def weak_threshold(embedder: Embedder) -> float:
    value = getattr(embedder, "weak_match_threshold", None)
    try:
        return float(value) if value is not None else DEFAULT_WEAK_MATCH_THRESHOLD
    except (TypeError, ValueError):
        return DEFAULT_WEAK_MATCH_THRESHOLD


def _photo_date(row: PhotoRow) -> datetime | None:
    if row.taken_at:
        try:
            return datetime.fromisoformat(row.taken_at)
        except ValueError:
            pass
    if row.mtime_ns:
        return datetime.fromtimestamp(row.mtime_ns / 1e9)
    return None


class SearchService:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._caption_lock = threading.Lock()
        self._caption_cache: dict[str, tuple[int, list[str], np.ndarray]] = {}

    # -- photos ------------------------------------------------------------------------

    def search_vector(
        self,
        query: np.ndarray,
        index: VectorIndex,
        model_id: str,
        top_k: int,
        folder: str | None = None,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
        exclude: set[int] | None = None,
    ) -> list[tuple[PhotoRow, float]]:
        exclude = exclude or set()
        top_k = max(0, int(top_k))
        if top_k == 0 or index.count == 0:
            return []
        where = PhotoFilter(
            os.path.abspath(os.path.expanduser(folder)) if folder else None, date_from, date_to
        )

        def keep(row: PhotoRow) -> bool:
            return row.id not in exclude and row.status != "failed" and where.matches(row)

        want = top_k + len(exclude)
        fetch = want if not where.active else min(index.count, max(want * OVERFETCH, MIN_FETCH))
        pairs = index.knn(query, fetch)
        rows = self.catalog.photos_by_ids(i for i, _ in pairs)
        hits = [(rows[i], s) for i, s in pairs if i in rows and keep(rows[i])]
        if len(hits) >= top_k or fetch >= index.count:
            return hits[:top_k]
        # Too few survived the filter: search the filtered set exactly.
        ids, vecs = self.catalog.indexable_vectors(model_id, where)
        if len(ids) == 0:
            return []
        scores = vecs @ np.asarray(query, np.float32).reshape(-1)
        order = np.argsort(-scores)
        rows = self.catalog.photos_by_ids(int(ids[j]) for j in order[: want])
        out = []
        for j in order[:want]:
            row = rows.get(int(ids[j]))
            if row is not None and keep(row):
                out.append((row, float(scores[j])))
        return out[:top_k]

    @staticmethod
    def to_result(pairs: list[tuple[PhotoRow, float]], threshold: float) -> SearchResult:
        hits = [
            PhotoHit(
                path=row.path,
                score=float(score),
                date=_photo_date(row),
                width=int(row.width or 0),
                height=int(row.height or 0),
                status=row.status,
            )
            for row, score in pairs
        ]
        best = hits[0].score if hits else None
        return SearchResult(hits, best is None or best < threshold, best, threshold)

    def search_text(
        self,
        query: str,
        embedder: Embedder,
        index: VectorIndex,
        top_k: int = 50,
        folder: str | None = None,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
    ) -> SearchResult:
        text = (query or "").strip()
        if not text:
            raise EmptyQueryError("the search query is empty; type what the photo shows")
        vec = embedder.text_query(embedder.embed_texts([text])[0])
        pairs = self.search_vector(vec, index, embedder.model_id, top_k, folder, date_from, date_to)
        return self.to_result(pairs, weak_threshold(embedder))

    def similar_photos(
        self, row: PhotoRow, embedder: Embedder, index: VectorIndex, top_k: int = 50
    ) -> SearchResult:
        vec = self.catalog.get_embedding(row.content_hash or "", embedder.model_id)
        if vec is None:
            return SearchResult([], True, None, weak_threshold(embedder))
        query = embedder.image_query(vec)
        pairs = self.search_vector(query, index, embedder.model_id, top_k, exclude={row.id})
        return self.to_result(pairs, weak_threshold(embedder))

    # -- captions ----------------------------------------------------------------------

    def caption_matrix(
        self,
        embedder: Embedder,
        writable: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """All bank captions embedded with `embedder`, computing missing ones lazily.

        The shipped bank is tens of thousands of captions, a minute or two of CPU the first
        time per model; `progress(done, missing)` lets callers show that, and each chunk is
        stored as it is done (when the catalog takes the write; else kept in memory) so an
        interrupted run resumes where it stopped."""
        model_id = embedder.model_id
        with self._caption_lock:
            total = self.catalog.caption_count()
            cached = self._caption_cache.get(model_id)
            if cached is not None and cached[0] == total:
                return cached[1], cached[2]
            missing = self.catalog.captions_missing_embeddings(model_id)
            extra_text: list[str] = []
            extra_vecs: list[np.ndarray] = []
            for i in range(0, len(missing), 256):
                chunk = missing[i : i + 256]
                vecs = embedder.embed_texts([c for _, c in chunk])
                if writable:
                    try:
                        self.catalog.put_caption_embeddings(
                            model_id, [c_id for c_id, _ in chunk], vecs
                        )
                    except PhotosearchError as exc:
                        # A reader beside a busy writer, read-only media, a full disk: the
                        # vectors are a cache, so serve them from memory this time.
                        log.info("caption vectors kept in memory only: %s", exc)
                        writable = False
                if not writable:
                    extra_text += [c for _, c in chunk]
                    extra_vecs.append(vecs)
                if progress is not None:
                    progress(min(i + len(chunk), len(missing)), len(missing))
            captions, matrix = self.catalog.caption_matrix(model_id)
            if extra_vecs:
                captions = captions + extra_text
                stacked = np.concatenate(extra_vecs)
                matrix = stacked if matrix.size == 0 else np.concatenate([matrix, stacked])
            self._caption_cache[model_id] = (total, captions, matrix)
            return captions, matrix

    def similar_captions(
        self, row: PhotoRow, embedder: Embedder, top_k: int = 10, writable: bool = True
    ) -> list[CaptionHit]:
        vec = self.catalog.get_embedding(row.content_hash or "", embedder.model_id)
        if vec is None:
            return []
        captions, matrix = self.caption_matrix(embedder, writable)
        if not captions:
            return []
        scores = matrix @ vec
        order = np.argsort(-scores)[: max(0, int(top_k))]
        return [CaptionHit(captions[j], float(scores[j])) for j in order]
