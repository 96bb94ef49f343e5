"""A damaged or old-format index file is noticed before hnswlib reads it, and rebuilt.

hnswlib trusts its file: damage in the link lists can make `knn_query` segfault, and damage
in the vectors silently returns the wrong photos. The sidecar's checksum catches both.
"""

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from engine.embedder import l2_normalize
from engine.vector_index import VectorIndex, sidecar_path


def _vecs(n, dim, seed=0):
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, dim)))


def _open(path, ids, vecs, generation=1):
    calls = []

    def loader():
        calls.append(1)
        return ids, vecs

    idx, rebuilt = VectorIndex.load_or_rebuild(
        path, dim=vecs.shape[1], model_id="m", expected_count=len(ids),
        generation=generation, vectors=loader,
    )
    return idx, rebuilt, calls


def _top(idx, queries, k=5):
    return [[label for label, _ in idx.knn(q, k)] for q in queries]


def _exact_top(vecs, queries, k=5):
    return [np.argsort(-(vecs @ q))[:k].tolist() for q in queries]


def test_damaged_vectors_are_detected_and_rebuilt(tmp_path, caplog):
    # Overwrite one stored vector in place with another valid vector: hnswlib loads the
    # file happily (same size, sane link lists), so only a content check can notice.
    path = tmp_path / "index.hnsw"
    ids, vecs = np.arange(300), _vecs(300, 32)
    _open(path, ids, vecs)
    data = bytearray(path.read_bytes())
    target = vecs[9].astype(np.float32).tobytes()
    at = data.find(target)
    assert at > 0
    data[at : at + len(target)] = (-vecs[9]).astype(np.float32).tobytes()
    path.write_bytes(bytes(data))  # same size as before

    queries = vecs[[9, 42, 123]]
    with caplog.at_level(logging.WARNING, logger="engine.vector_index"):
        idx, rebuilt, calls = _open(path, ids, vecs)
    assert rebuilt and calls == [1]
    assert _top(idx, queries) == _exact_top(vecs, queries)
    assert any("checksum" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    # The rebuilt index was saved with a fresh checksum: the next open trusts it.
    _, rebuilt, calls = _open(path, ids, vecs)
    assert not rebuilt and not calls


_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from engine.embedder import l2_normalize
    from engine.vector_index import VectorIndex

    path, n, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    vecs = l2_normalize(np.random.default_rng(0).standard_normal((n, dim)))
    idx, rebuilt = VectorIndex.load_or_rebuild(
        path, dim=dim, model_id="m", expected_count=n, generation=1,
        vectors=lambda: (np.arange(n), vecs),
    )
    tops = [[label for label, _ in idx.knn(vecs[i], 5)] for i in range(0, n, n // 20)]
    print(json.dumps({"rebuilt": rebuilt, "tops": tops}))
    """
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_64k_overwrite_never_crashes_search(tmp_path, seed):
    # The reported repro: 64 KB of random bytes in the middle, file size unchanged. Run in a
    # subprocess because an unchecked load can segfault in knn_query.
    n, dim = 4000, 32
    path = tmp_path / "index.hnsw"
    vecs = _vecs(n, dim)
    _open(path, np.arange(n), vecs)
    size = path.stat().st_size
    data = bytearray(path.read_bytes())
    mid = size // 2 - 32 * 1024
    data[mid : mid + 64 * 1024] = np.random.default_rng(seed).bytes(64 * 1024)
    path.write_bytes(bytes(data))
    assert path.stat().st_size == size

    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), str(n), str(dim)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["rebuilt"] is True
    queries = vecs[list(range(0, n, n // 20))]
    assert out["tops"] == _exact_top(vecs, queries)


def test_sidecar_without_checksum_is_stale_once(tmp_path, caplog):
    # A library saved before checksums existed: rebuilt on the first open, never an error.
    path = tmp_path / "index.hnsw"
    ids, vecs = np.arange(50), _vecs(50, 16)
    _open(path, ids, vecs)
    meta = json.loads(sidecar_path(path).read_text())
    assert "checksum" in meta
    del meta["checksum"]
    sidecar_path(path).write_text(json.dumps(meta))
    idx, rebuilt, calls = _open(path, ids, vecs)
    assert rebuilt and calls == [1] and idx.count == 50
    _, rebuilt, calls = _open(path, ids, vecs)
    assert not rebuilt and not calls


def test_checksum_is_of_the_saved_file(tmp_path):
    path = tmp_path / "index.hnsw"
    ids, vecs = np.arange(30), _vecs(30, 16)
    idx, _, _ = _open(path, ids, vecs)
    idx.mark_deleted([3])
    idx.save(path, generation=2)
    import zlib

    meta = json.loads(sidecar_path(path).read_text())
    algo, value = meta["checksum"].split(":")
    assert algo == "crc32"
    assert int(value, 16) == zlib.crc32(path.read_bytes())


def test_any_load_error_rebuilds_with_a_warning(tmp_path, monkeypatch, caplog):
    path = tmp_path / "index.hnsw"
    ids, vecs = np.arange(30), _vecs(30, 16)
    _open(path, ids, vecs)

    def broken_load(cls, *a, **k):
        raise RuntimeError("Bad value of sz_link_list_other")

    monkeypatch.setattr(VectorIndex, "load", classmethod(broken_load))
    with caplog.at_level(logging.WARNING, logger="engine.vector_index"):
        idx, rebuilt, calls = _open(path, ids, vecs)
    assert rebuilt and calls == [1] and idx.count == 30
    assert any("sz_link_list_other" in r.getMessage() for r in caplog.records)
