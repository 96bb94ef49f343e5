"""Near-identical photos (burst shots, edited copies, resized exports) grouped by their vectors.

Two photos are duplicates when the plain cosine of their image vectors (`Embedder.image_query`,
the "find similar photos" score) is at least `DUPLICATE_THRESHOLD`; groups are the connected
components of that relation (union-find), so A~B and B~C put A, B and C in one group. Each
photo's neighbours come from the search index (a few nearest per photo), or from an exact
matrix product for small libraries.

The threshold is calibrated on generated copies (resize, JPEG re-encode, a crop of a few
percent, a small exposure change) against distinct photos with the shipped model
(docs/MODEL.md "Duplicates").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# Cosine (plain, between photos) at or above which two photos count as the same picture, for
# the shipped model: on generated copies of 442 photos it joins 86.8% of the copy pairs and
# none of 1,461,765 distinct pairs (the closest: 0.81). docs/MODEL.md "Duplicates".
DUPLICATE_THRESHOLD = 0.85
# Nearest photos looked at per photo: bursts of more than this many are still joined through
# their members' own neighbours.
NEIGHBOURS = 8
# Up to this many photos, every pair is scored exactly (blocks of a matrix product). Measured
# on the busy 2-core machine: exact 1.1 s at 4K and 6.8 s at 10K photos (O(n^2)); one index
# query per photo cost 8 ms each at 10K (83 s). Above it one batched HNSW query for the whole
# library (VectorIndex.knn_many) grows ~linearly: at 30K exact 28.4 s against 21.8 s batched,
# the same groups on planted near-copies (random 1026-d vectors, load ~5, 2 cores).
EXACT_MAX = 50_000
_BLOCK_ELEMENTS = 1 << 24  # one block of scores: 64 MB of float32


@dataclass
class DuplicateGroup:
    """Paths of near-identical photos, the representative first (the most pixels, then the
    oldest, then by path): the tile the grid shows for the group."""

    paths: list[str]

    def to_json(self) -> dict[str, object]:
        return {"count": len(self.paths), "representative": self.paths[0], "paths": self.paths}


def threshold_for(embedder: object) -> float:
    """The embedder's own `duplicate_threshold` where it states one (another model's cosines
    spread differently), else DUPLICATE_THRESHOLD, calibrated for the shipped model."""
    value = getattr(embedder, "duplicate_threshold", None)
    try:
        return float(value) if value is not None else DUPLICATE_THRESHOLD
    except (TypeError, ValueError):
        return DUPLICATE_THRESHOLD


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return [g for g in out.values() if len(g) > 1]


def exact_pairs(vectors: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Every (i, j), i < j, with vectors[i] . vectors[j] >= threshold (blocks of rows).

    A bound in 64 principal directions (score only pairs whose bound reaches the threshold)
    was tried: on real photo vectors it left 1,965 of 26 million pairs, but writing and
    scanning the n x n bound costs as much as the full product at 7K-20K photos (1.8 vs
    1.4 s at 7,235; 33 vs 36 s at 20K), so the plain product stayed."""
    v = np.ascontiguousarray(vectors, np.float32)
    n = len(v)
    pairs: list[tuple[int, int]] = []
    step = max(16, _BLOCK_ELEMENTS // max(1, n))
    for s in range(0, n, step):
        block = v[s : s + step] @ v.T
        ii, jj = np.nonzero(block >= threshold)
        ii = ii + s
        upper = ii < jj
        pairs += zip(ii[upper].tolist(), jj[upper].tolist(), strict=True)
    return pairs


def group_indices(
    vectors: np.ndarray,
    threshold: float = DUPLICATE_THRESHOLD,
    neighbours: Callable[[int], Sequence[tuple[int, float]]] | None = None,
) -> list[list[int]]:
    """Groups (row indices, each sorted) of rows whose cosine reaches `threshold`.

    `vectors` are unit rows compared by inner product. `neighbours(i)` -> [(row, score)], the
    nearest rows of row i, replaces the exact all-pairs product (large libraries)."""
    n = len(vectors)
    uf = UnionFind(n)
    if neighbours is None:
        for a, b in exact_pairs(vectors, threshold):
            uf.union(a, b)
    else:
        for i in range(n):
            for j, score in neighbours(i):
                if j != i and score >= threshold:
                    uf.union(i, j)
    return [sorted(g) for g in uf.groups()]


def representative_order(
    members: Sequence[int], pixels: Sequence[int], dates: Sequence[float | None], paths: Sequence[str]
) -> list[int]:
    """Members with the representative first: most pixels, then oldest, then path."""
    return sorted(
        members,
        key=lambda i: (-pixels[i], dates[i] if dates[i] is not None else float("inf"), paths[i]),
    )
