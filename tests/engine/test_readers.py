"""Read commands open the library read-only: they never take the writer lock, so an index
started during a search cannot fail with "locked", and they still keep the caches a
search fills (remembered queries, the caption bank's vectors)."""

import os
import subprocess
import sys
import time
from pathlib import Path

from engine.library import Library
from engine.testing import FakeEmbedder

REPO = Path(__file__).resolve().parents[2]

READER = """
import sys, time
from engine.library import Library
from engine.testing import FakeEmbedder

lib_dir, photo, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
errors, rounds = [], 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:  # what one `photosearch search` / `captions` / `status` process does
        with Library.open(lib_dir, FakeEmbedder(), read_only=True) as lib:
            lib.search_text(f"a red thing {rounds}")
            lib.similar_captions(photo, top_k=3)
            lib.status()
        rounds += 1
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
print(rounds, len(errors))
for e in errors[:5]:
    print(e)
"""


def _bank(tmp_path, n=300):
    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join(f"caption {i}" for i in range(n)))
    return bank


def test_a_reader_keeps_the_caches_a_search_fills(tmp_path, make_image):
    emb = FakeEmbedder()
    emb.caption_bank_path = str(_bank(tmp_path))
    red = make_image("red.jpg", "red")
    lib_dir = tmp_path / "lib"
    with Library.open(lib_dir, emb) as lib:
        lib.add_folder(tmp_path / "photos")
        lib.index()
    with Library.open(lib_dir, emb, read_only=True) as reader:
        reader.search_text("yellow bananas")
        assert reader.prepare_captions() == 301
    with Library.open(lib_dir, emb, read_only=True) as reader:
        seen = []
        reader.prepare_captions(progress=lambda done, total: seen.append(total))
        assert seen == []  # the first reader stored the vectors: nothing left to embed
        assert "yellow bananas" in [c.caption for c in reader.similar_captions(red, top_k=400)]


def test_an_index_started_during_searches_never_fails_locked(tmp_path, make_image):
    first = make_image("p000.jpg", seed=0)
    lib_dir = tmp_path / "lib"
    with Library.open(lib_dir, FakeEmbedder()) as lib:
        lib.add_folder(tmp_path / "photos")
        lib.index()
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(lib_dir), str(first), "8"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    passes, deadline = 0, time.monotonic() + 7
    try:
        while time.monotonic() < deadline:
            passes += 1
            make_image(f"p{passes:03}.jpg", seed=passes)
            with Library.open(lib_dir, FakeEmbedder()) as lib:  # must never be refused
                assert lib.index().indexed == 1
    finally:
        out, err = reader.communicate(timeout=60)
    first, *messages = out.splitlines()
    rounds, n_errors = map(int, first.split())
    assert reader.returncode == 0, err
    assert n_errors == 0, messages
    assert rounds > 0 and passes > 1
