"""Deletion rules: an unplugged drive - a whole folder or a mount point inside one - puts its
photos offline; only files that are really gone are deleted."""

import os
import shutil
import subprocess
from datetime import datetime

import pytest

import engine.indexer as indexer_mod
from engine.library import Library


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    return d


@pytest.fixture
def lib(tmp_path, photos, fake_embedder):
    library = Library.open(tmp_path / "lib", fake_embedder)
    library.add_folder(photos)
    yield library
    library.close()


class FakeMounts:
    """Stands in for the OS's mount table (the test machine may not allow mounting)."""

    def __init__(self, monkeypatch):
        self.mounted: set[str] = set()
        monkeypatch.setattr(indexer_mod, "mount_table", lambda: set(self.mounted))
        monkeypatch.setattr(indexer_mod, "is_mount_point", lambda p: p in self.mounted)


def _fill(make_image, sub, n, seed):
    return [make_image(f"{sub}/p{i}.jpg", seed=seed + i) for i in range(n)]


def test_an_unmounted_mount_point_inside_a_folder_keeps_its_photos(
    lib, make_image, photos, monkeypatch, fake_embedder, tmp_path
):
    mounts = FakeMounts(monkeypatch)
    usb = photos / "usb"
    _fill(make_image, "usb", 3, 0)
    _fill(make_image, "home", 2, 10)
    mounts.mounted.add(str(usb))
    assert lib.index().indexed == 5

    # unmount: the mount point stays behind, empty
    shutil.move(str(usb), str(tmp_path / "drive"))
    usb.mkdir()
    mounts.mounted.clear()
    r = lib.index()
    assert (r.removed, r.offline) == (0, 3)
    status = lib.status()
    assert status.photo_count == 5 and status.offline_photos == 3
    hits = {h.path: h.status for h in lib.search_text("red", top_k=10).hits}
    assert sorted(hits.values()) == ["offline"] * 3 + ["ok"] * 2
    assert lib.folders()[0].online and lib.folders()[0].offline_mounts == [str(usb)]
    # the watcher's path must not delete them either
    assert lib.index_paths([usb]).removed == 0 and lib.status().photo_count == 5

    # remount: back online, nothing re-embedded
    usb.rmdir()
    shutil.move(str(tmp_path / "drive"), str(usb))
    mounts.mounted.add(str(usb))
    r = lib.index()
    assert (r.unchanged, r.indexed, r.removed, r.offline) == (5, 0, 0, 0)
    assert lib.status().offline_photos == 0 and fake_embedder.embedded == 5
    assert lib.folders()[0].offline_mounts == []


def test_a_mounted_but_empty_mount_point_counts_as_offline(lib, make_image, photos, monkeypatch):
    mounts = FakeMounts(monkeypatch)
    _fill(make_image, "nas", 2, 0)
    make_image("top.jpg", seed=9)
    mounts.mounted.add(str(photos / "nas"))
    lib.index()
    for f in (photos / "nas").iterdir():  # e.g. a network share that came up empty
        f.unlink()
    r = lib.index()
    assert (r.removed, r.offline) == (0, 2)


def test_photos_really_deleted_from_a_plain_subfolder_are_removed(lib, make_image, photos, monkeypatch):
    FakeMounts(monkeypatch)  # nothing is a mount point
    _fill(make_image, "trip", 2, 0)
    make_image("top.jpg", seed=9)
    lib.index()
    for f in (photos / "trip").iterdir():
        f.unlink()
    r = lib.index()
    assert (r.removed, r.offline) == (2, 0)


def test_a_former_mount_point_filled_with_other_files_is_a_plain_folder_again(
    lib, make_image, photos, monkeypatch
):
    mounts = FakeMounts(monkeypatch)
    _fill(make_image, "usb", 2, 0)
    mounts.mounted.add(str(photos / "usb"))
    lib.index()
    mounts.mounted.clear()
    for f in (photos / "usb").iterdir():
        f.unlink()
    make_image("usb/new.jpg", seed=50)  # the directory now holds its own files
    r = lib.index()
    assert (r.removed, r.indexed, r.offline) == (2, 1, 0)
    assert lib.folders()[0].offline_mounts == []


def test_status_tells_since_when_a_folder_is_offline(lib, make_image, photos, tmp_path):
    make_image("a.jpg")
    lib.index()
    assert lib.folders()[0].offline_since is None
    before = datetime.now().replace(microsecond=0)
    photos.rename(tmp_path / "away")
    lib.index()
    since = lib.folders()[0].offline_since
    assert since is not None and before <= since.replace(microsecond=0) <= datetime.now()
    lib.index()
    assert lib.folders()[0].offline_since == since  # the first time it went, not the last check
    folder_json = lib.status().to_json()["folders"][0]
    assert folder_json["offline_since"] == since.isoformat(timespec="seconds")
    (tmp_path / "away").rename(photos)
    lib.index()
    assert lib.folders()[0].offline_since is None and lib.folders()[0].online


def test_a_deleted_folder_can_be_forgotten(lib, make_image, photos):
    make_image("a.jpg")
    lib.index()
    shutil.rmtree(photos)
    lib.index()
    assert not lib.folders()[0].online
    assert lib.remove_folder(photos) == 1
    assert lib.folders() == [] and lib.status().photo_count == 0


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _can_mount(), reason="mounting a tmpfs needs root")
def test_a_real_nested_tmpfs_mount(lib, make_image, photos, tmp_path, fake_embedder):
    usb = photos / "usb"
    usb.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(usb)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        _fill(make_image, "usb", 3, 0)
        make_image("top.jpg", seed=9)
        saved = tmp_path / "saved"
        shutil.copytree(usb, saved)
        assert lib.index().indexed == 4
    finally:
        subprocess.run(["umount", str(usb)], check=True)
    r = lib.index()
    assert (r.removed, r.offline) == (0, 3)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(usb)], check=True)
    try:
        for f in saved.iterdir():
            shutil.copy2(f, usb / f.name)
        r = lib.index()
        assert (r.unchanged, r.indexed, r.offline) == (4, 0, 0)
        assert fake_embedder.embedded == 4
    finally:
        subprocess.run(["umount", "-l", str(usb)], check=True)
