import io
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

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


@pytest.mark.parametrize(
    "size,reason",
    [
        ((12000, 10000), "too large: 120 MP, the limit is 100 MP"),  # our own check
        ((10001, 10000), "too large: 100.0 MP, the limit is 100 MP"),  # just over
        ((20000, 12000), "too large: 240 MP, the limit is 100 MP"),  # Pillow's guard fires first
    ],
)
def test_decompression_bomb_states_the_limit(tmp_path, size, reason):
    path = tmp_path / "bomb.png"
    Image.new("1", size).save(path)  # a few KB on disk
    assert _reason(path) == reason


def test_heic_is_decoded(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")  # a pinned dependency: present in CI
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, 32, 48))  # left half blue
    path = tmp_path / "iphone.HEIC"
    pillow_heif.from_pillow(img).save(path, quality=95)
    assert ".heic" in imaging.SUPPORTED_EXTENSIONS
    d = decode_image(path)
    assert d.image.mode == "RGB" and d.image.size == (64, 48) == (d.width, d.height)
    left, right = np.asarray(d.image)[24, 8], np.asarray(d.image)[24, 56]
    assert left[2] > 150 and left[0] < 80 and right[0] > 150 and right[2] < 80


def _reference_shrink(img, target):
    """The naive route: convert the whole image, then box-reduce it (no strips)."""
    factor = max(1, min(img.size) // (target * imaging.REDUCING_GAP))
    rgb = imaging.to_rgb(img.copy())
    return rgb.reduce(factor) if factor > 1 else rgb


def _striped(mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 4000, (1300, 1100), dtype=np.uint16))
    rgba = Image.fromarray(rng.integers(0, 256, (1300, 1100, 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        img = rgba.convert("RGB").quantize(16)
        img.info["transparency"] = 3
        return img
    return rgba.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "CMYK", "I;16", "L"])
def test_large_images_are_reduced_in_strips_like_the_whole_image(monkeypatch, mode):
    # Strips of ~3 rows' worth force many strips; the result must equal converting and
    # reducing the whole image at once (the strips hold whole reduction blocks).
    monkeypatch.setattr(imaging, "STRIP_PIXELS", 1100 * 3)
    img = _striped(mode)
    img.load()
    got = imaging._shrink_to_rgb(img, 256)
    want = _reference_shrink(img, 256)
    assert got.mode == "RGB" and got.size == want.size == (550, 650)
    assert np.array_equal(np.asarray(got), np.asarray(want))


def test_large_png_is_reduced_but_keeps_its_size_and_colour(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGBA", (3000, 2000), (0, 0, 255, 255)).save(path)
    d = decode_image(path)
    assert (d.width, d.height) == (3000, 2000)
    assert min(d.image.size) >= 2 * imaging.DEFAULT_DECODE_SIZE and max(d.image.size) < 3000
    assert np.asarray(d.image)[10, 10].tolist() == [0, 0, 255]
    full = decode_image(path, target_size=0)  # 0: full size, for callers that need it
    assert full.image.size == (3000, 2000)


_PEAK_PROBE = """
import sys
from engine import imaging

def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))

data = imaging.read_file(sys.argv[1])
before = hwm()
imaging.decode_image(data)
print((hwm() - before) * 1024)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_decoding_a_large_image_needs_little_beyond_its_pixels(tmp_path):
    # A 24 MP RGBA PNG (96 MB of pixels, a small file): whole-image conversion took ~5x
    # the pixels (RGBA + white background + composite + RGB + transposed copy).
    path = tmp_path / "big.png"
    Image.new("RGBA", (6000, 4000), (10, 200, 30, 128)).save(path)
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_PROBE, str(path)], capture_output=True, text=True,
        timeout=120, cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    pixel_bytes = 6000 * 4000 * 4
    assert int(proc.stdout) < 1.5 * pixel_bytes


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
    "size", [(500, 375), (375, 500), (257, 256), (256, 257), (4000, 1), (1, 4000), (300, 300),
             (256, 256), (100, 50), (1024, 683), (683, 1024), (511, 337)]
)
def test_thumbnail_size_and_pixels_as_pillow_thumbnail(size):
    # the one-resize thumbnail keeps Image.thumbnail()'s size (same rounding), leaves the
    # source alone, and its pixels stay within a small margin of the former Lanczos result
    rng = np.random.default_rng(sum(size))
    smooth = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(smooth).resize(size, Image.Resampling.BICUBIC)
    before = img.tobytes()
    expected = img.copy()
    expected.thumbnail((imaging.THUMBNAIL_SIZE, imaging.THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    thumb = imaging.thumbnail_image(img)
    assert thumb.size == expected.size == imaging.thumbnail_size(*size)
    assert img.tobytes() == before and img.size == size
    diff = np.abs(np.asarray(thumb, np.int16) - np.asarray(expected, np.int16))
    assert diff.mean() < 2.0

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


def test_reading_a_fifo_returns_at_once(tmp_path):
    # open() on a FIFO blocks until a writer appears: the watcher handing one over used to
    # hang the indexing pass for good.
    import threading

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    result: list = []

    def read():
        try:
            imaging.read_file(fifo)
        except ImageDecodeError as exc:
            result.append(exc.reason)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert result == ["not a regular file (a named pipe)"]
