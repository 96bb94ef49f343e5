import io
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from engine import imaging
from engine.imaging import ImageDecodeError, decode_image


def _reason(data_or_path) -> str:
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(data_or_path)
    return exc.value.reason


def test_exif_orientation_is_applied(make_image, tmp_path):
    img = Image.new("RGB", (60, 30), "red")
    img.paste((0, 0, 255), (0, 0, 30, 30))  # left half blue
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 CW on display
    exif.get_ifd(0x8769)[36867] = "2021:07:04 12:30:00"
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes())
    d = decode_image(path)
    assert d.image.size == (30, 60)
    assert (d.width, d.height) == (30, 60)
    top = np.asarray(d.image)[5, 15]
    assert top[2] > 200 and top[0] < 60  # blue half now on top
    assert d.taken_at == datetime(2021, 7, 4, 12, 30)


@pytest.mark.parametrize(
    "mode,colour",
    [("CMYK", "red"), ("P", "green"), ("L", "white"), ("LA", "blue"), ("RGBA", "blue")],
)
def test_modes_become_rgb(tmp_path, mode, colour):
    img = Image.new("RGB", (20, 20), colour).convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    d = decode_image(path)
    assert d.image.mode == "RGB" and d.image.size == (20, 20)


def test_alpha_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    path = tmp_path / "a.png"
    img.save(path)
    assert np.asarray(decode_image(path).image)[0, 0].tolist() == [255, 255, 255]


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    path = tmp_path / "p.png"
    img.save(path, transparency=0)
    assert np.asarray(decode_image(path).image)[0, 0].tolist() == [255, 255, 255]


def test_16_bit_greyscale(tmp_path):
    arr = np.full((16, 16), 65535 // 2, dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(decode_image(path).image)
    assert 120 <= out[0, 0, 0] <= 135  # mid-grey, not clipped to white


def test_gif_first_frame(tmp_path):
    frames = [Image.new("P", (10, 10), i) for i in (1, 2)]
    for f in frames:
        f.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert np.asarray(decode_image(path).image)[0, 0].tolist() == [255, 0, 0]


def test_large_jpeg_uses_draft_mode(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 4000), "blue").save(path, quality=70)
    d = decode_image(path)
    assert (d.width, d.height) == (6000, 4000)
    assert max(d.image.size) <= 1500 and min(d.image.size) >= imaging.DEFAULT_DECODE_SIZE


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file (0 bytes)"),
        (b"<!DOCTYPE html><html><body>404 not found</body></html>", "not an image (looks like text/HTML)"),
        (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not an image (unrecognised file format)"),
    ],
)
def test_bad_bytes_give_readable_reasons(tmp_path, data, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(data)
    assert _reason(path) == reason


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), "red").save(buf, "JPEG")
    path = tmp_path / "t.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    assert _reason(path) == "truncated or corrupt image data"


def test_decompression_bomb_rejected(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 10000)).save(path)  # 120 MP, a few KB on disk
    assert _reason(path).startswith("image too large (120 megapixels, limit 100)")


def test_permission_denied_and_vanished(tmp_path, monkeypatch):
    path = tmp_path / "x.jpg"
    assert _reason(path) == "file vanished during scan"
    path.write_bytes(b"x")

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", deny)
    assert _reason(path) == "permission denied"


def test_thumbnail_is_small_jpeg(tmp_path):
    img = Image.new("RGB", (1000, 500), "red")
    thumb = imaging.save_thumbnail(img, tmp_path / "thumbs", "ab" * 20)
    assert thumb.exists() and thumb.parent.name == "ab"
    with Image.open(thumb) as t:
        assert t.format == "JPEG" and max(t.size) == imaging.THUMBNAIL_SIZE


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2020:01:02 03:04:05", datetime(2020, 1, 2, 3, 4, 5)),
        (b"2020:01:02 03:04:05\x00", datetime(2020, 1, 2, 3, 4, 5)),
        ("0000:00:00 00:00:00", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_exif_datetime_parsing(value, expected):
    assert imaging.parse_exif_datetime(value) == expected
