"""The preview's decoding (worker side)."""

from __future__ import annotations

from PIL import Image

from desktop.preview import load_preview_image


def test_preview_applies_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("RGB", (40, 20), (200, 0, 0)).save(path, exif=exif)
    img = load_preview_image(str(path))
    assert img is not None and (img.width(), img.height()) == (20, 40)
    assert load_preview_image(str(tmp_path / "gone.jpg")) is None
