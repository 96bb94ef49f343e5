"""kill -9 in the middle of indexing, then restart: nothing but the batch in flight is lost."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.library import Library
from tests.conftest import CountingEmbedder

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys
    import engine.indexer
    from engine.library import Library
    from tests.conftest import CountingEmbedder

    engine.indexer.SAVE_EVERY_S = 0.0  # save the index after every batch: kill may hit a save
    lib = Library.open(sys.argv[1], CountingEmbedder(dim=32, delay_s=0.25))
    lib.add_folder(sys.argv[2])
    lib.index()
    print("finished", flush=True)
    """
)


def _ok_count(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT COUNT(*) FROM photos WHERE status='ok'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_mid_index_then_restart_is_consistent(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(150):
        arr = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(arr).save(photos / f"img{i:03}.jpg")
    lib_dir = tmp_path / "lib"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(lib_dir), str(photos)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    db = lib_dir / "catalog.db"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _ok_count(db) < 40:
        time.sleep(0.05)
    time.sleep(0.1)  # land somewhere inside a later batch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    before = _ok_count(db)
    assert 40 <= before < 150, f"kill landed at {before} photos; child: {proc.stderr.read()}"

    emb = CountingEmbedder(dim=32)
    with Library.open(lib_dir, emb) as lib:  # the dead writer's lock is gone
        assert lib.vector_index.count == lib.catalog.count_indexable(emb.model_id) == before
        report = lib.index()
        assert report.failed == []
        assert report.indexed == 150 - before and emb.embedded == 150 - before
        assert lib.status().photo_count == 150
        ids, _ = lib.catalog.indexable_vectors(emb.model_id)
        rows = lib.catalog.photos_with_status("ok")
        assert len(rows) == 150 and {r.id for r in rows} == set(ids.tolist())
        assert lib.vector_index.ids() == {r.id for r in rows}
        hits = lib.similar_photos(photos / "img007.jpg", top_k=5).hits
        assert len(hits) == 5
        assert lib.search_text("red", top_k=10).hits
    with Library.open(lib_dir, emb) as lib:  # and the saved index is trusted next time
        assert lib.vector_index.count == 150
