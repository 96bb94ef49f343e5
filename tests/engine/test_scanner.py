import os

from engine.scanner import is_hidden_path, scan_folder


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
