import json

import numpy as np
import pytest

from engine.embedder import l2_normalize
from engine.vector_index import VectorIndex, sidecar_path


def _vecs(n, dim=32, seed=0):
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, dim)))


def _open(path, ids, vecs, generation=1, model_id="m"):
    calls = []

    def loader():
        calls.append(1)
        return ids, vecs

    idx, rebuilt = VectorIndex.load_or_rebuild(
        path, dim=vecs.shape[1], model_id=model_id, expected_count=len(ids),
        generation=generation, vectors=loader,
    )
    return idx, rebuilt, calls


def test_knn_recall_and_growth():
    n, dim = 3000, 32
    vecs = _vecs(n, dim)
    idx = VectorIndex(dim, "m", capacity=16)  # must grow on its own
    for start in range(0, n, 500):
        idx.add(np.arange(start, start + 500), vecs[start : start + 500])
    assert idx.count == n
    queries = _vecs(50, dim, seed=1)
    exact = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]
    hits = 0
    for q, truth in zip(queries, exact, strict=True):
        got = [i for i, _ in idx.knn(q, 10)]
        hits += len(set(got) & set(truth.tolist()))
    assert hits / (10 * len(queries)) >= 0.98


def test_scores_are_inner_products_and_delete_and_update():
    vecs = _vecs(20)
    idx = VectorIndex(32, "m")
    idx.add(np.arange(20), vecs)
    (best, score), *_ = idx.knn(vecs[3], 1)
    assert best == 3 and score == pytest.approx(1.0, abs=1e-5)
    idx.mark_deleted([3])
    assert 3 not in {i for i, _ in idx.knn(vecs[3], 19)} and idx.count == 19
    idx.add([3], vecs[5:6])  # re-added label with a new vector
    assert idx.count == 20
    assert idx.knn(vecs[5], 2)[0][1] == pytest.approx(1.0, abs=1e-5)
    assert len(idx.knn(vecs[0], 100)) == 20  # k larger than the index is fine


def test_save_load_and_stale_detection(tmp_path):
    path = tmp_path / "index.hnsw"
    ids, vecs = np.arange(50), _vecs(50)
    idx, rebuilt, calls = _open(path, ids, vecs)
    assert rebuilt and calls and path.exists()  # missing -> rebuilt and saved
    idx.mark_deleted([7])
    idx.save(path, generation=2)
    side = json.loads(sidecar_path(path).read_text())
    assert side["count"] == 49 and side["model_id"] == "m" and side["generation"] == 2
    idx2, rebuilt, calls = _open(path, ids[ids != 7], vecs[ids != 7], generation=2)
    assert not rebuilt and not calls and idx2.count == 49 and 7 not in idx2
    # stale generation / other model -> rebuilt from the vectors
    _, rebuilt, _ = _open(path, ids, vecs, generation=3)
    assert rebuilt
    _, rebuilt, _ = _open(path, ids, vecs, generation=3, model_id="other")
    assert rebuilt


@pytest.mark.parametrize("damage", ["truncate", "garbage", "sidecar"])
def test_corrupt_index_is_rebuilt(tmp_path, damage):
    path = tmp_path / "index.hnsw"
    ids, vecs = np.arange(40), _vecs(40)
    _open(path, ids, vecs)
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 1000)
    else:
        sidecar_path(path).write_text("{not json")
    idx, rebuilt, calls = _open(path, ids, vecs)
    assert rebuilt and calls and idx.count == 40
    assert idx.knn(vecs[9], 1)[0][0] == 9


def test_garbage_with_matching_sidecar_is_rebuilt(tmp_path):
    # Even if the sidecar looks right, an unreadable index must not crash the app.
    path = tmp_path / "index.hnsw"
    ids, vecs = np.arange(10), _vecs(10)
    _open(path, ids, vecs)
    meta = json.loads(sidecar_path(path).read_text())
    path.write_bytes(b"\xff" * meta["index_bytes"])
    idx, rebuilt, _ = _open(path, ids, vecs)
    assert rebuilt and idx.count == 10


def _recall_at_10(index, vecs, queries):
    exact = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]
    found = [len({i for i, _ in index.knn(q, 10)} & set(t.tolist())) for q, t in zip(queries, exact, strict=True)]
    return sum(found) / (10 * len(queries))


def test_a_large_index_keeps_its_recall(monkeypatch):
    """Big libraries need a wider search for the same recall (1M photos: 0.78 at ef 256).

    A deliberately weak graph (M=4, ef_construction=10) over 6000 vectors stands in for a
    huge index; EF_PER_COUNT=2 makes the count-driven widening apply at this size.
    """
    import engine.vector_index as vi

    monkeypatch.setattr(vi, "HNSW_M", 4)
    monkeypatch.setattr(vi, "HNSW_EF_CONSTRUCTION", 10)
    vecs, queries = _vecs(6000, 32, seed=0), _vecs(50, 32, seed=1)
    index = vi.VectorIndex.build(np.arange(6000), vecs, 32, "m")
    monkeypatch.setattr(vi, "EF_PER_COUNT", 10**9)  # no widening: the fixed ef floor
    narrow = _recall_at_10(index, vecs, queries)
    assert narrow < 0.95, "the graph is too good for this test to show anything"
    monkeypatch.setattr(vi, "EF_PER_COUNT", 2)
    assert _recall_at_10(index, vecs, queries) >= 0.98


def test_knn_many_matches_brute_force_and_skips_deleted():
    rng = np.random.default_rng(3)
    vectors = l2_normalize(rng.standard_normal((2000, 32)).astype(np.float32))
    ids = np.arange(10, 2010)
    index = VectorIndex.build(ids, vectors, 32, "m")
    index.mark_deleted([10, 11])
    queries = vectors[:200]
    labels, scores = index.knn_many(queries, 5, ef=64)
    assert labels.shape == scores.shape == (200, 5)
    live = vectors[2:]
    exact = live @ queries.T  # naive reference over the live photos
    top = np.argsort(-exact, axis=0)[:5].T + 12
    hits = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(labels.tolist(), top.tolist(), strict=True)])
    assert hits >= 0.95
    assert not np.isin(labels, [10, 11]).any()
    np.testing.assert_allclose(scores[:, 0], exact[top[:, 0] - 12, np.arange(200)], atol=1e-4)
