"""A damaged index.hnsw as the user meets it (issue 11 #1): `search` used to segfault (rc 139)
and `index` to die with hnswlib's RuntimeError. Now both notice the damage before hnswlib
reads the file, say so in one warning line, rebuild from the catalog and answer as before."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
WARNING = "is damaged (checksum is crc32:"


def _photosearch(*args):
    env = {**os.environ, "PHOTOSEARCH_EMBEDDER": "fake"}
    return subprocess.run(  # a subprocess: a segfault must fail the test, not kill pytest
        [sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=REPO,
        capture_output=True, text=True, env=env, timeout=120,
    )


def _damage_middle(path, seed):
    """Random bytes over the middle half of the file; its size stays the same."""
    data = bytearray(path.read_bytes())
    start, end = len(data) // 4, 3 * len(data) // 4
    data[start:end] = np.random.default_rng(seed).bytes(end - start)
    path.write_bytes(bytes(data))


def test_search_and_index_survive_a_damaged_index_file(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    lib = tmp_path / "lib"
    assert _photosearch("index", "--library", lib, photos).returncode == 0
    index_file = lib / "index.hnsw"
    size = index_file.stat().st_size
    queries = ["a red car", "two dogs", "snow"]
    before = [_photosearch("search", q, "--library", lib, "--json", "--top-k", "5") for q in queries]

    _damage_middle(index_file, seed=1)
    assert index_file.stat().st_size == size
    for query, old in zip(queries, before, strict=True):
        proc = _photosearch("search", query, "--library", lib, "--json", "--top-k", "5")
        assert proc.returncode == 0, proc.stderr  # was 139 (segfault)
        assert [h["path"] for h in json.loads(proc.stdout)] == [
            h["path"] for h in json.loads(old.stdout)
        ]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and WARNING in lines[0] and "rebuilding it from the catalog" in lines[0]

    _damage_middle(index_file, seed=2)
    proc = _photosearch("index", "--library", lib, "--json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["unchanged"] == 40
    assert WARNING in proc.stderr
    proc = _photosearch("search", queries[0], "--library", lib, "--json", "--top-k", "5")
    assert proc.returncode == 0 and proc.stderr == ""  # the writer saved a sound index again
