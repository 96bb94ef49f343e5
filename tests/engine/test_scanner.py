import os
import socket

import pytest
from PIL import Image

from engine.library import Library
from engine.scanner import ScanSkip, is_hidden_path, scan_folder


def test_scan_extensions_hidden_and_links(tmp_path, make_image):
    root = tmp_path / "photos"
    make_image("a.JPG")
    make_image("b.Jpeg")
    make_image("c.png")
    make_image("sub/d.tif")
    make_image(".hid/e.jpg")
    make_image("sub/.f.jpg")
    (root / "g.txt").write_text("x")
    (root / "h.raw").write_bytes(b"x")
    os.symlink(root, root / "sub" / "loop")
    os.symlink(root / "sub", root / "again")  # same dir through a link: listed once
    os.symlink(tmp_path / "nowhere.jpg", root / "dangling.jpg")
    found = sorted(os.path.relpath(e.path, root) for e in scan_folder(root))
    assert len(found) == 4
    assert {os.path.basename(p) for p in found} == {"a.JPG", "b.Jpeg", "c.png", "d.tif"}
    entry = next(e for e in scan_folder(root) if e.path.endswith("c.png"))
    assert entry.size == os.path.getsize(root / "c.png") and entry.mtime_ns > 0
    assert list(scan_folder(tmp_path / "missing")) == []
    assert is_hidden_path(str(root / ".hid" / "e.jpg"), str(root))
    assert not is_hidden_path(str(root / "sub" / "d.tif"), str(root))


def test_photos_that_cannot_be_read_are_reported_with_a_reason(tmp_path, make_image):
    root = tmp_path / "photos"
    make_image("ok.jpg")
    make_image("sub/ok2.png")
    os.mkfifo(root / "pipe.jpg")
    os.mkfifo(root / "pipe-not-a-photo")  # not photo-like: passed over quietly
    os.symlink("/dev/null", root / "device.png")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "socket.jpeg"))
        os.symlink(tmp_path / "nowhere.jpg", root / "dangling.jpg")
        os.symlink(root, root / "sub" / "loop")  # back to an ancestor
        os.symlink(root / "self", root / "self")  # a link to itself
        (root / "raw.CR2").write_bytes(b"raw")
        (root / "next.jxl").write_bytes(b"jxl")
        (root / "notes.txt").write_text("x")
        (root / ".hidden.cr2").write_bytes(b"raw")
        os.symlink(root / "sub", root / "again")  # linked twice, not a loop: no report
        skipped: list = []
        found = {os.path.basename(e.path) for e in scan_folder(root, on_skip=skipped.append)}
    assert found == {"ok.jpg", "ok2.png"}
    reasons = {os.path.relpath(p, root): r for p, r in skipped}
    assert reasons == {
        "pipe.jpg": "not a regular file (a named pipe)",
        "device.png": "not a regular file (a device)",
        "socket.jpeg": "not a regular file (a socket)",
        "dangling.jpg": "broken symbolic link (its target is missing)",
        os.path.join("sub", "loop"): f"symbolic link loop (back to {root})",
        "self": "symbolic link loop",
        "raw.CR2": "unsupported format (.cr2)",
        "next.jxl": "unsupported format (.jxl)",
    }
    assert all(isinstance(s, ScanSkip) for s in skipped)


def test_unlistable_folder_is_reported(tmp_path, make_image, monkeypatch):
    # Faked rather than chmod 0: root (CI) can list any folder.
    make_image("locked/a.jpg")
    make_image("b.jpg")
    locked = tmp_path / "photos" / "locked"
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    skipped: list = []
    found = [os.path.basename(e.path) for e in scan_folder(tmp_path / "photos", skipped.append)]
    assert found == ["b.jpg"]
    assert skipped == [(str(locked), "cannot list folder (Permission denied)")]


def test_heic_photo_is_scanned_and_indexed(tmp_path, fake_embedder):
    pillow_heif = pytest.importorskip("pillow_heif")  # a pinned dependency: present in CI
    root = tmp_path / "photos"
    root.mkdir()
    pillow_heif.from_pillow(Image.new("RGB", (64, 48), "blue")).save(root / "IMG_0001.HEIC")
    assert [os.path.basename(e.path) for e in scan_folder(root)] == ["IMG_0001.HEIC"]
    with Library.open(tmp_path / "lib", fake_embedder) as lib:
        lib.add_folder(root)
        report = lib.index()
        assert report.indexed == 1 and report.failed == []
        assert lib.photo(root / "IMG_0001.HEIC").width == 64
        hits = lib.search_text("blue", top_k=1).hits
    assert [os.path.basename(h.path) for h in hits] == ["IMG_0001.HEIC"]
