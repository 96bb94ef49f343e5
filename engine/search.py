"""Text -> photos, photo -> photos and photo -> captions over one catalog.

Filters (folder, date range) are applied after an over-fetch from HNSW; when that leaves
fewer than top_k hits, the filtered set is searched exactly (brute force over its stored
vectors), so a narrow filter never hides a match HNSW did not return.

Weak results: `SearchResult.weak` is true when the best score is below a threshold that the
embedder can state as `weak_match_threshold` (calibrated per model), else
`DEFAULT_WEAK_MATCH_THRESHOLD`.

Honest result lists: hits stay sorted by relevance, and `SearchResult.confident` says how many
of the first ones are confident matches; the rest are "less likely". The cutoff is relative to
the query's own score distribution (`Cutoff`): its scores over a sample of the library give a
mean and a spread, and a confident hit both stands out from them (z-score) and lies near the
query's best hit. Each hit carries a `strength` people can read (3 strong, 2 good, 1 weak).

Query syntax (`parse_query`): plain words and "quoted phrases" are the text searched for;
`+term` (or `+"a phrase"`) adds a concept, `-term` ranks photos away from it. A photo's score
is the mean of its scores for the positive terms minus NEGATIVE_WEIGHT times its score for each
negative term: one query vector (the same combination of the terms' query vectors), so HNSW
searches it as any other query. `like_photo` adds a photo's own vector as a positive term
("this photo, but at night").

Attention re-ranking (an option, off by default; engine/reranking.py): with a `Reranker`, a
text query's top RERANK_K hits are reordered by global + alpha * attention and "find similar
captions" reorders its top RERANK_CAPTIONS_K captions likewise. Hits keep their own (global) scores;
the confident count and the strength of each position stay those of the global answer, so the
re-ranked photos fill the same slots. A query refined from a photo, or with a term the
multilingual tower embeds, keeps its global order, as do photos without stored region codes.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from . import settings
from .caption_store import CaptionStore, store_for_embedder
from .catalog import Catalog, PhotoFilter, PhotoRow
from .embedder import Embedder
from .errors import EmptyQueryError, PhotosearchError
from .reranking import Reranker
from .settings import DEFAULT_WEAK_MATCH_THRESHOLD
from .vector_index import VectorIndex

log = logging.getLogger(__name__)

OVERFETCH = 4
MIN_FETCH = 100
# Below this many photos a score spread means little: confident = not below the weak threshold.
MIN_GALLERY_FOR_SPREAD = 8
TEXT_CACHE_SIZE = 512  # query-term vectors kept (search as you type re-embeds the same words)
STATES_CACHE_SIZE = 1024  # word states of terms and captions kept, when re-ranking is on

SORTS = ("relevance", "date")
STRONG, GOOD, WEAK = 3, 2, 1


@dataclass
class PhotoHit:
    path: str
    score: float
    date: datetime | None
    width: int
    height: int
    status: str
    strength: int = WEAK  # 3 strong, 2 good, 1 weak (0: not a search result, e.g. browse)

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "score": round(self.score, 6), "strength": self.strength}


@dataclass
class SearchResult:
    hits: list[PhotoHit]
    weak: bool
    best_score: float | None
    threshold: float
    # The first `confident` hits are confident matches (in relevance order; with sort="date",
    # those are the ones sorted by date). Equal to len(hits) when the cutoff lies past top_k.
    confident: int = 0
    sort: str = "relevance"


@dataclass
class CaptionHit:
    caption: str
    score: float
    strength: int = WEAK

    def to_json(self) -> dict[str, object]:
        return {"caption": self.caption, "score": round(self.score, 6), "strength": self.strength}


def matvec(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """matrix @ vector without BLAS threads: for one query vector numpy's own loop is steady
    (1,000 x 1,026: ~1 ms), while OpenBLAS's two threads on a busy 2-core machine took 18-27 ms
    for the same product (0.1 ms on one thread), waiting for a thread the OS had not run."""
    return np.einsum("ij,j->i", matrix, np.asarray(vector, matrix.dtype).reshape(-1))


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


def photo_hit(row: PhotoRow, score: float = 0.0, strength: int = WEAK) -> PhotoHit:
    return PhotoHit(
        path=row.path,
        score=float(score),
        date=_photo_date(row),
        width=int(row.width or 0),
        height=int(row.height or 0),
        status=row.status,
        strength=strength,
    )


# -- query syntax -------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedQuery:
    """`dog beach -people` -> text 'dog beach', negative ('people',);
    `"red car" +night` -> text 'red car', added ('night',)."""

    text: str = ""
    added: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()

    @property
    def positives(self) -> tuple[str, ...]:
        return ((self.text,) if self.text else ()) + self.added

    @property
    def is_plain(self) -> bool:
        return not self.added and not self.negative

    def describe(self) -> str:
        """What the query looks for, as a caption (what `remember_query` keeps)."""
        return " ".join(self.positives)


# A quoted phrase (an unclosed quote runs to the end: search as you type), else a word; either
# may start with + or -. A sign inside a word ("t-shirt", "x+y") is part of the word.
_TOKEN = re.compile(r'([+-]?)"([^"]*)"?|(\S+)')


def parse_query(text: str) -> ParsedQuery:
    """Split a query into its plain text, +added concepts and -negative terms (pure)."""
    base: list[str] = []
    added: list[str] = []
    negative: list[str] = []
    for m in _TOKEN.finditer(text or ""):
        if m.group(3) is not None:
            word = m.group(3)
            sign = word[0] if word[0] in "+-" else ""
            term = word.lstrip("+-") if sign else word
        else:
            sign, term = m.group(1), m.group(2)
        term = " ".join(term.split())
        if not term:
            continue  # a lone sign or empty quotes, e.g. while typing
        {"": base, "+": added, "-": negative}[sign].append(term)
    base_text = " ".join(base)
    pos = {base_text.lower(), *(a.lower() for a in added)}
    return ParsedQuery(
        base_text,
        tuple(dict.fromkeys(added)),
        tuple(dict.fromkeys(n for n in negative if n.lower() not in pos)),
    )


def combine_terms(
    positives: Sequence[tuple[np.ndarray, float]], negatives: Sequence[np.ndarray]
) -> np.ndarray:
    """The query vector whose score for a photo is the weighted mean of the positive terms'
    scores minus NEGATIVE_WEIGHT times each negative term's score (scores are linear in the
    query vector, so this is exact)."""
    total = sum(w for _, w in positives)
    if not positives or total <= 0:
        raise EmptyQueryError("the search needs something to look for, not only terms to avoid")
    q = np.zeros_like(np.asarray(positives[0][0], np.float32))
    for vec, w in positives:
        q += np.asarray(vec, np.float32) * (w / total)
    for vec in negatives:
        q -= settings.NEGATIVE_WEIGHT * np.asarray(vec, np.float32)
    return q


# -- the cutoff ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cutoff:
    """Where confident and strong matches end for one query, from its best score and its
    score distribution over a sample of the library (mean, std).

    confident: score >= max(mean + CONFIDENT_Z * std, best - CONFIDENT_GAP * std)
    strong:    score >= max(mean + STRONG_Z * std, best - STRONG_GAP * std)
    With too few photos for a spread, confident means not below the weak threshold. A weak
    query (best below the weak threshold) has no confident match at all."""

    confident_min: float
    strong_min: float

    @classmethod
    def for_scores(
        cls, best: float | None, gallery: np.ndarray, weak_min: float | None = None
    ) -> Cutoff:
        if best is None or (weak_min is not None and best < weak_min):
            return cls(math.inf, math.inf)
        if len(gallery) < MIN_GALLERY_FOR_SPREAD:
            floor = weak_min if weak_min is not None else -math.inf
            return cls(floor, max(floor, best))
        mean, std = float(np.mean(gallery)), float(np.std(gallery))
        confident = max(mean + settings.CONFIDENT_Z * std, best - settings.CONFIDENT_GAP * std)
        strong = max(mean + settings.STRONG_Z * std, best - settings.STRONG_GAP * std)
        if weak_min is not None:
            confident = max(confident, weak_min)
        # the best hit of a query that is not weak is always a match
        return cls(min(confident, best), min(max(strong, confident), best))

    def strength(self, score: float) -> int:
        if score >= self.strong_min:
            return STRONG
        return GOOD if score >= self.confident_min else WEAK


def order_hits(hits: list[PhotoHit], confident: int, sort: str) -> list[PhotoHit]:
    """Relevance order, or with sort='date' the confident ones newest first (undated last),
    the less likely ones after them in relevance order."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {SORTS}, not {sort!r}")
    if sort == "relevance":
        return hits
    head = sorted(
        hits[:confident],
        key=lambda h: (h.date is None, -(h.date.timestamp() if h.date else 0.0)),
    )
    return head + hits[confident:]


@dataclass
class _GallerySample:
    model_id: str
    indexed: int  # index.count when sampled
    vectors: np.ndarray = field(repr=False)


class SearchService:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._caption_lock = threading.Lock()
        self._caption_cache: dict[str, tuple[int, list[str], np.ndarray]] = {}
        self._stores: dict[str, CaptionStore | None] = {}
        self._text_lock = threading.Lock()
        self._text_cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._states_cache: OrderedDict[tuple[str, str], np.ndarray | None] = OrderedDict()
        self._sample_lock = threading.Lock()
        self._sample: _GallerySample | None = None

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

    def gallery_sample(self, index: VectorIndex, model_id: str) -> np.ndarray:
        """Up to GALLERY_SAMPLE of the library's vectors (evenly spread over photo ids), kept
        until the library has grown or shrunk by a tenth: a query's score distribution."""
        count = index.count
        with self._sample_lock:
            s = self._sample
            fresh = (
                s is not None
                and s.model_id == model_id
                and abs(count - s.indexed) <= max(1, s.indexed // 10)
            )
            if not fresh:
                vecs = self.catalog.sample_vectors(model_id, settings.GALLERY_SAMPLE)
                s = self._sample = _GallerySample(model_id, count, vecs)
            return s.vectors

    def to_result(
        self,
        pairs: list[tuple[PhotoRow, float]],
        threshold: float,
        query: np.ndarray | None = None,
        index: VectorIndex | None = None,
        model_id: str | None = None,
        sort: str = "relevance",
        weak_min: float | None = None,
    ) -> SearchResult:
        """Hits with their strength, the confident count and the weak flag. `weak_min`: the
        score below which nothing is confident (the weak threshold for text queries)."""
        best = float(max(s for _, s in pairs)) if pairs else None
        gallery = np.zeros(0, np.float32)
        if query is not None and index is not None and model_id is not None and pairs:
            sample = self.gallery_sample(index, model_id)
            if len(sample):
                gallery = matvec(sample, query)
        cutoff = Cutoff.for_scores(best, gallery, weak_min)
        hits = [photo_hit(row, score, cutoff.strength(score)) for row, score in pairs]
        confident = sum(1 for h in hits if h.strength >= GOOD)
        return SearchResult(
            order_hits(hits, confident, sort),
            best is None or best < threshold,
            best,
            threshold,
            confident,
            sort,
        )

    def text_vectors(self, texts: Sequence[str], embedder: Embedder) -> np.ndarray:
        """`embed_texts` rows, from a small cache of recent terms where possible."""
        model_id = embedder.model_id
        out: list[np.ndarray | None] = []
        with self._text_lock:
            for t in texts:
                v = self._text_cache.get((model_id, t))
                if v is not None:
                    self._text_cache.move_to_end((model_id, t))
                out.append(v)
        todo = list(dict.fromkeys(t for t, v in zip(texts, out, strict=True) if v is None))
        if todo:
            fresh = dict(zip(todo, embedder.embed_texts(todo), strict=True))
            with self._text_lock:
                for t, v in fresh.items():
                    self._text_cache[(model_id, t)] = v
                while len(self._text_cache) > TEXT_CACHE_SIZE:
                    self._text_cache.popitem(last=False)
            out = [fresh[t] if v is None else v for t, v in zip(texts, out, strict=True)]
        if not out:
            return np.zeros((0, embedder.dim), np.float32)
        return np.stack([np.asarray(v, np.float32) for v in out])

    def text_states(self, texts: Sequence[str], embedder: Embedder, reranker: Reranker) -> list[np.ndarray | None]:
        """Word states of texts for re-ranking, cached; the vectors of the same text pass go to
        the term-vector cache, so the query's vector costs no second pass."""
        model_id = embedder.model_id
        with self._text_lock:
            known = {t: self._states_cache[(model_id, t)] for t in texts if (model_id, t) in self._states_cache}
        todo = list(dict.fromkeys(t for t in texts if t not in known))
        if todo:
            vectors, states = reranker.text_states(todo)
            with self._text_lock:
                for t, v, st in zip(todo, vectors, states, strict=True):
                    self._text_cache[(model_id, t)] = v
                    self._states_cache[(model_id, t)] = st
                    known[t] = st
                while len(self._text_cache) > TEXT_CACHE_SIZE:
                    self._text_cache.popitem(last=False)
                while len(self._states_cache) > STATES_CACHE_SIZE:
                    self._states_cache.popitem(last=False)
        return [known[t] for t in texts]

    def rerank_photos(
        self, pairs: list[tuple[PhotoRow, float]], states: Sequence[np.ndarray], embedder: Embedder,
        reranker: Reranker,
    ) -> list[tuple[PhotoRow, float]]:
        """`pairs` (best first) with its top K reordered by global + alpha * attention; photos
        without region codes keep their places."""
        head = pairs[: reranker.k]
        blobs = self.catalog.region_codes_for_photos(
            [row.id for row, _ in head], embedder.model_id, reranker.attention_id
        )
        have = [p for p, (row, _) in enumerate(head) if row.id in blobs]
        if len(have) < 2 or not states:
            return pairs
        att = reranker.photo_scores(states, [blobs[head[p][0].id] for p in have])
        order = reranker.reorder(np.array([s for _, s in head]), dict(zip(have, att.tolist(), strict=True)))
        return [head[p] for p in order] + pairs[reranker.k :]

    def cached_text_vector(self, text: str, model_id: str) -> np.ndarray | None:
        with self._text_lock:
            return self._text_cache.get((model_id, text))

    def query_vector(
        self,
        parsed: ParsedQuery,
        embedder: Embedder,
        photo_vector: np.ndarray | None = None,
    ) -> np.ndarray:
        """The one query vector for a parsed query (and optionally a photo to refine from)."""
        texts = list(parsed.positives) + list(parsed.negative)
        rows = self.text_vectors(texts, embedder) if texts else np.zeros((0, embedder.dim))
        queries = [embedder.text_query(r) for r in rows]
        n_pos = len(parsed.positives)
        positives = [(q, 1.0) for q in queries[:n_pos]]
        if photo_vector is not None:
            positives.append((embedder.image_query(photo_vector), settings.LIKE_PHOTO_WEIGHT))
        return combine_terms(positives, queries[n_pos:])

    def search_text(
        self,
        query: str,
        embedder: Embedder,
        index: VectorIndex,
        top_k: int = 50,
        folder: str | None = None,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
        like_photo: PhotoRow | None = None,
        sort: str = "relevance",
        reranker: Reranker | None = None,
    ) -> SearchResult:
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {SORTS}, not {sort!r}")
        parsed = parse_query((query or "").strip())
        threshold = weak_threshold(embedder)
        photo_vec = None
        exclude: set[int] = set()
        if like_photo is not None:
            photo_vec = self.catalog.get_embedding(like_photo.content_hash or "", embedder.model_id)
            if photo_vec is None:
                return SearchResult([], True, None, threshold, 0, sort)
            exclude = {like_photo.id}
        if not parsed.positives and photo_vec is None:
            if parsed.negative:
                raise EmptyQueryError(
                    "the search needs something to look for, not only terms to leave out "
                    f"(-{parsed.negative[0]}); e.g. 'beach -people'"
                )
            raise EmptyQueryError("the search query is empty; type what the photo shows")
        states: list[np.ndarray | None] = []
        if reranker is not None and (photo_vec is not None or reranker.model_id != embedder.model_id):
            reranker = None  # a photo term has no words; weights of another model do not apply
        if reranker is not None:
            states = self.text_states(list(parsed.positives), embedder, reranker)
            if any(st is None for st in states):
                reranker = None
        vec = self.query_vector(parsed, embedder, photo_vec)
        if reranker is None:
            pairs = self.search_vector(
                vec, index, embedder.model_id, top_k, folder, date_from, date_to, exclude
            )
            return self.to_result(pairs, threshold, vec, index, embedder.model_id, sort, threshold)
        pairs = self.search_vector(
            vec, index, embedder.model_id, max(top_k, reranker.k), folder, date_from, date_to, exclude
        )
        reordered = self.rerank_photos(pairs, [st for st in states if st is not None], embedder, reranker)
        by_global = self.to_result(pairs[:top_k], threshold, vec, index, embedder.model_id, "relevance",
                                   threshold)
        # the global answer's strength per position: the re-ranked photos fill its slots
        hits = [photo_hit(row, score, h.strength)
                for (row, score), h in zip(reordered[:top_k], by_global.hits, strict=False)]
        return SearchResult(order_hits(hits, by_global.confident, sort), by_global.weak,
                            by_global.best_score, threshold, by_global.confident, sort)

    def similar_photos(
        self,
        row: PhotoRow,
        embedder: Embedder,
        index: VectorIndex,
        top_k: int = 50,
        sort: str = "relevance",
    ) -> SearchResult:
        vec = self.catalog.get_embedding(row.content_hash or "", embedder.model_id)
        if vec is None:
            return SearchResult([], True, None, weak_threshold(embedder), 0, sort)
        query = embedder.image_query(vec)
        pairs = self.search_vector(query, index, embedder.model_id, top_k, exclude={row.id})
        return self.to_result(
            pairs, weak_threshold(embedder), query, index, embedder.model_id, sort
        )

    # -- captions ----------------------------------------------------------------------

    def caption_store(self, embedder: Embedder) -> CaptionStore | None:
        """The caption vectors shipped with the model (engine/caption_store.py), or None."""
        model_id = embedder.model_id
        with self._caption_lock:
            if model_id not in self._stores:
                self._stores[model_id] = store_for_embedder(embedder)
            return self._stores[model_id]

    def captions_to_embed(self, embedder: Embedder) -> int:
        """How many bank captions still need the text encoder before captions can answer."""
        store = self.caption_store(embedder)
        with self._caption_lock:
            cached = self._caption_cache.get(embedder.model_id)
            if cached is not None and cached[0] == self.catalog.caption_count():
                return 0
        if store is None:
            return self.catalog.count_captions_missing(embedder.model_id)
        known = set(store.captions)
        return sum(
            1
            for _, c in self.catalog.captions_missing_embeddings(embedder.model_id, "query")
            if c not in known
        )

    def caption_matrix(
        self,
        embedder: Embedder,
        writable: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """The bank captions this library embeds itself, with their vectors: every caption
        when the model ships no caption store, else only remembered queries.

        Without a store the shipped bank is tens of thousands of captions, minutes of CPU the
        first time per model; `progress(done, missing)` lets callers show that, and each chunk
        is stored as it is done (when the catalog takes the write; else kept in memory) so an
        interrupted run resumes where it stopped."""
        model_id = embedder.model_id
        store = self.caption_store(embedder)
        source = None if store is None else "query"
        known = set(store.captions) if store is not None else set()
        with self._caption_lock:
            total = self.catalog.caption_count()
            cached = self._caption_cache.get(model_id)
            if cached is not None and cached[0] == total:
                return cached[1], cached[2]
            missing = [
                (i, c)
                for i, c in self.catalog.captions_missing_embeddings(model_id, source)
                if c not in known
            ]
            extra_text: list[str] = []
            extra_vecs: list[np.ndarray] = []
            for i in range(0, len(missing), 256):
                chunk = missing[i : i + 256]
                vecs = self._caption_vectors([c for _, c in chunk], embedder)
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
            captions, matrix = self.catalog.caption_matrix(model_id, source)
            if known and captions:
                keep = [j for j, c in enumerate(captions) if c not in known]
                captions = [captions[j] for j in keep]
                matrix = matrix[keep] if keep else np.zeros((0, 0), np.float32)
            if extra_vecs:
                captions = captions + extra_text
                stacked = np.concatenate(extra_vecs)
                matrix = stacked if matrix.size == 0 else np.concatenate([matrix, stacked])
            self._caption_cache[model_id] = (total, captions, matrix)
            return captions, matrix

    def _caption_vectors(self, texts: list[str], embedder: Embedder) -> np.ndarray:
        """Vectors of captions to embed: a remembered query was usually just searched, so its
        vector is still in the term cache and costs no text-encoder work."""
        cached = [self.cached_text_vector(t, embedder.model_id) for t in texts]
        todo = [t for t, v in zip(texts, cached, strict=True) if v is None]
        fresh = iter(embedder.embed_texts(todo)) if todo else iter(())
        return np.stack(
            [np.asarray(next(fresh) if v is None else v, np.float32) for v in cached]
        )

    def similar_captions(
        self, row: PhotoRow, embedder: Embedder, top_k: int = 10, writable: bool = True,
        reranker: Reranker | None = None,
    ) -> list[CaptionHit]:
        vec = self.catalog.get_embedding(row.content_hash or "", embedder.model_id)
        if vec is None:
            return []
        store = self.caption_store(embedder)
        captions, matrix = self.caption_matrix(embedder, writable)
        parts_text: list[str] = []
        parts_scores: list[np.ndarray] = []
        if store is not None and len(store):
            parts_text += store.captions
            parts_scores.append(store.scores(vec))
        if captions:
            parts_text += captions
            parts_scores.append(matvec(matrix, vec))
        if not parts_text:
            return []
        scores = np.concatenate(parts_scores)
        if reranker is not None and reranker.model_id == embedder.model_id:
            return self._reranked_captions(row, parts_text, scores, embedder, top_k, reranker)
        order = np.argsort(-scores)[: max(0, int(top_k))]
        best = float(scores[order[0]]) if len(order) else None
        cutoff = Cutoff.for_scores(best, scores)
        return [
            CaptionHit(parts_text[j], float(scores[j]), cutoff.strength(float(scores[j])))
            for j in order
        ]

    def _reranked_captions(
        self, row: PhotoRow, texts: list[str], scores: np.ndarray, embedder: Embedder, top_k: int,
        reranker: Reranker,
    ) -> list[CaptionHit]:
        """similar_captions with its top K captions reordered by global + alpha * attention
        (the photo's stored regions against each caption's words); strengths stay per place."""
        order = np.argsort(-scores)
        k = reranker.caption_k
        top = [int(j) for j in order[: max(k, int(top_k))]]
        blob = self.catalog.region_codes_for_hash(row.content_hash or "", embedder.model_id,
                                                  reranker.attention_id)
        ranked = top
        if blob is not None and len(top) > 1:
            head = top[:k]
            states = self.text_states([texts[j] for j in head], embedder, reranker)
            have = [p for p, st in enumerate(states) if st is not None]
            att = reranker.caption_scores(blob, [states[p] for p in have]) if have else np.zeros(0)
            new = reranker.reorder(scores[head], dict(zip(have, att.tolist(), strict=True)))
            ranked = [head[p] for p in new] + top[k:]
        keep = max(0, int(top_k))
        best = float(scores[order[0]]) if keep and len(order) else None
        cutoff = Cutoff.for_scores(best, scores)
        return [
            CaptionHit(texts[j], float(scores[j]), cutoff.strength(float(scores[g])))
            for j, g in zip(ranked[:keep], top[:keep], strict=True)
        ]
