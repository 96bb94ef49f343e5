"""Saving the search index on a full disk (issue 11 #3): hnswlib's save_index ignores write
errors, so a full disk used to leave a 0-byte index.hnsw behind a sidecar that vouched for
it. Now the save either replaces the old pair with a complete, checked one or leaves it
untouched (no temp files left), and a short file from an older save is rebuilt."""

import errno
import json
import logging
import os
import shutil
import subprocess

import numpy as np
import pytest

import engine.vector_index as vi
from engine.vector_index import VectorIndex, file_checksum, hnsw_file_problem, sidecar_path

DIM = 32


def _unit(rng, n):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class ShortWriter:
    """An hnswlib index whose save_index writes only the first `keep` bytes and returns
    normally - what hnswlib does when the disk fills (its ofstream errors are unchecked)."""

    def __init__(self, real, keep):
        self._real, self._keep = real, keep

    def __getattr__(self, name):
        return getattr(self._real, name)

    def save_index(self, path):
        self._real.save_index(path)
        with open(path, "r+b") as f:
            f.truncate(self._keep)


@pytest.fixture
def saved(tmp_path):
    """An index of 200 vectors saved at generation 1, then grown to 600 in memory."""
    rng = np.random.default_rng(0)
    index = VectorIndex.build(np.arange(200), _unit(rng, 200), DIM, "m")
    path = tmp_path / "index.hnsw"
    index.save(path, 1)
    before = (path.read_bytes(), sidecar_path(path).read_bytes())
    index.add(np.arange(200, 600), _unit(rng, 400))
    return index, path, before


def _unchanged(path, before):
    assert (path.read_bytes(), sidecar_path(path).read_bytes()) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.hnsw", "index.hnsw.json"]
    loaded, rebuilt = VectorIndex.load_or_rebuild(
        path, dim=DIM, model_id="m", expected_count=200, generation=1,
        vectors=lambda: pytest.fail("the old index must load as it is"),
    )
    assert not rebuilt and loaded.count == 200


@pytest.mark.parametrize("keep", [0, 95, 4096, -1], ids=["empty", "header", "4k", "last-byte"])
def test_a_short_write_keeps_the_old_index(saved, keep):
    index, path, before = saved
    real = index._index
    full = None
    if keep == -1:  # everything but the last byte
        probe = path.parent / "probe"
        real.save_index(str(probe))
        full = probe.stat().st_size
        probe.unlink()
    index._index = ShortWriter(real, full - 1 if full else keep)
    with pytest.raises(OSError, match="not written completely"):
        index.save(path, 2)
    _unchanged(path, before)
    index._index = real
    index.save(path, 2)  # space again: the next save goes through
    assert hnsw_file_problem(path, DIM, 600) is None


@pytest.mark.parametrize("step", ["fsync", "sidecar"])
def test_enospc_while_saving_keeps_the_old_index(saved, monkeypatch, step):
    index, path, before = saved

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vi, "_fsync_file" if step == "fsync" else "_write_temp_text", full)
    with pytest.raises(OSError) as err:
        index.save(path, 2)
    assert err.value.errno == errno.ENOSPC
    _unchanged(path, before)


def test_a_short_file_a_sidecar_vouches_for_is_rebuilt(saved, caplog):
    # What the old save left on a full disk: a cut file whose size and checksum the sidecar
    # recorded, so only its layout gives it away.
    index, path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    meta = {
        "count": 200, "model_id": "m", "dim": DIM, "generation": 1,
        "index_bytes": len(data) // 2, "checksum": file_checksum(path), "deleted": [],
    }
    sidecar_path(path).write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    vecs = _unit(rng, 200)
    with caplog.at_level(logging.WARNING, logger="engine.vector_index"):
        loaded, rebuilt = VectorIndex.load_or_rebuild(
            path, dim=DIM, model_id="m", expected_count=200, generation=1,
            vectors=lambda: (np.arange(200), vecs),
        )
    assert rebuilt and loaded.count == 200
    assert "is damaged (" in caplog.text and "cut short" in caplog.text
    assert loaded.knn(vecs[7], 1)[0][0] == 7


def test_the_layout_check_accepts_every_real_save(tmp_path):
    rng = np.random.default_rng(1)
    for n in (0, 1, 17, 3000):
        index = VectorIndex.build(np.arange(n), _unit(rng, n), DIM, "m")
        index.mark_deleted(list(range(0, n, 5)))
        path = tmp_path / f"i{n}.hnsw"
        index.save(path, 1)
        assert hnsw_file_problem(path, DIM, n) is None
        assert hnsw_file_problem(path, DIM + 1) is not None  # the check can fail


def _mount_tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def test_a_real_full_disk_keeps_the_old_index(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "1m")
    try:
        rng = np.random.default_rng(0)
        index = VectorIndex.build(np.arange(200), _unit(rng, 200), DIM, "m")
        path = disk / "index.hnsw"
        index.save(path, 1)
        before = (path.read_bytes(), sidecar_path(path).read_bytes())
        with open(disk / "filler", "wb", buffering=0) as f:
            for chunk in (65536, 4096, 64, 1):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        index.add(np.arange(200, 2000), _unit(rng, 1800))
        with pytest.raises(OSError):
            index.save(path, 2)
        (disk / "filler").unlink()
        _unchanged(path, before)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
