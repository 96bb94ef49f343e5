"""A full disk as the user meets it on the command line (issue 11 #3): `index` ends with one
line and exit 2, read commands keep answering, nothing indexed so far is lost. Real small
tmpfs (needs root, as CI has); the engine tests fake it without root."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
# Full mid-pass: how many photos made it; full before the pass could start: the library.
MESSAGE = re.compile(
    r"^photosearch: error: disk full: (\d+ photos indexed, free space and run index again"
    r"|cannot write the library at .+; free space and try again)$"
)


def _photosearch(*args):
    env = {**os.environ, "PHOTOSEARCH_EMBEDDER": "fake"}
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=REPO,
        capture_output=True, text=True, env=env, timeout=120,
    )


@pytest.fixture(scope="module")
def full_disk_run(tmp_path_factory):
    """One scenario, run once: a library on a 4 MB tmpfs, 30 photos indexed, 60 more added,
    the disk filled (300 KB left, room to start a pass but not to finish it), then what the
    user runs: index twice, the read commands, and index again once space is freed."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    tmp_path = tmp_path_factory.mktemp("full")
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        photos = tmp_path / "photos"
        photos.mkdir()
        for i in range(30):
            Image.effect_noise((96, 96), 40 + i).convert("RGB").save(photos / f"p{i:02}.jpg")
        lib = disk / "lib"
        first = _photosearch("index", "--library", lib, photos)
        assert first.returncode == 0, first.stderr
        for i in range(60):  # noise: each thumbnail takes ~30 KB
            Image.effect_noise((320, 320), 100 + i).convert("RGB").save(photos / f"n{i:02}.jpg")
        (disk / "spare").write_bytes(b"\0" * 300_000)
        _fill(disk)
        (disk / "spare").unlink()
        runs = {"photos": photos}
        runs["index"] = _photosearch("index", "--library", lib)
        runs["index again"] = _photosearch("index", "--library", lib)
        for command in ("search", "status", "folders"):
            extra = ["grey noise"] if command == "search" else []
            runs[command] = _photosearch(command, *extra, "--library", lib, "--json")
        (disk / "filler").unlink()
        runs["freed"] = _photosearch("index", "--library", lib, "--json")
        runs["after"] = _photosearch("status", "--library", lib, "--json")
        return runs
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk):
    with open(disk / "filler", "wb", buffering=0) as f:
        for chunk in (65536, 4096, 64, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("run", ["index", "index again"])
def test_index_on_a_full_disk_ends_with_the_disk_full_line(full_disk_run, run):
    proc = full_disk_run[run]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert MESSAGE.match(lines[-1]), proc.stderr
    assert all(line.startswith("WARNING ") for line in lines[:-1]), proc.stderr


@pytest.mark.parametrize("run", ["index", "index again"])
def test_index_on_a_full_disk_is_exactly_one_line(full_disk_run, run):
    # The indexer logs the disk-full cause at info: the error line is all the user sees.
    stderr = full_disk_run[run].stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_read_commands_answer_on_a_full_disk_and_nothing_is_lost(full_disk_run):
    for command in ("search", "status", "folders"):
        proc = full_disk_run[command]
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(json.loads(full_disk_run["search"].stdout)) >= 20
    assert json.loads(full_disk_run["status"].stdout)["photo_count"] >= 30
    folders = json.loads(full_disk_run["folders"].stdout)
    assert [f["path"] for f in folders] == [str(full_disk_run["photos"])]
    assert full_disk_run["freed"].returncode == 0, full_disk_run["freed"].stderr
    assert json.loads(full_disk_run["after"].stdout)["photo_count"] == 90
