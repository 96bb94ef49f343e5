"""Decoding photos into RGB images the models can use, with readable failure reasons.

Everything that can go wrong with a file on a user's disk ends up as an `ImageDecodeError`
whose message is a short sentence ("empty file (0 bytes)") that the catalog stores and
the app shows; nothing here raises Pillow's own exceptions to the caller.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import os
import re
import stat
import struct
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError, features

log = logging.getLogger(__name__)

# 100 MP covers every consumer camera (the largest are ~60 MP); beyond that a file is far
# more likely a decompression bomb than a photo. Pillow's own guard is aligned with ours so
# that its warning/error never fires first with a less readable message.
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# The model needs a 224 px short side and thumbnails 256 px, so decode JPEGs at a reduced
# scale (DCT scaling is nearly free) with the shorter side kept >= 256. 512 made a 12 MP
# photo decode at 1/4 (1000x750) instead of 1/8 (500x375): ~165 vs ~100 ms of CPU per
# photo (decode + thumbnail + prepare), which on 2 cores is slower than the model and
# capped indexing at ~0.72 of the model's forward rate (see BENCHMARKS.md).
DEFAULT_DECODE_SIZE = 256
THUMBNAIL_SIZE = 256
THUMBNAIL_QUALITY = 85  # JPEG quality of the cached thumbnails

# Formats without draft mode (PNG, TIFF, HEIC, ...) decode at full size; a large one is then
# shrunk by an integer box filter (Image.reduce) to at least REDUCING_GAP x target_size on
# its shorter side - Pillow's thumbnail() default, after which the final resize looks the
# same as one from the original - and converted to RGB in strips of STRIP_PIXELS, so the
# memory on top of the decoded pixels is one strip plus the small result. Converting the
# whole image at once made a 99.9 MP RGBA PNG peak at 2.2 GB and a 16-bit one at 2.5 GB.
REDUCING_GAP = 2
STRIP_PIXELS = 1_000_000

BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

try:  # HEIC/HEIF (iPhone photos): pillow-heif is a dependency, but a broken wheel must not
    # stop photosearch from indexing everything else.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except Exception:  # noqa: BLE001 - any failure just means "no HEIC support"
    log.warning("HEIC/HEIF support unavailable (pillow-heif failed to load)", exc_info=True)
    HEIF_AVAILABLE = False

AVIF_AVAILABLE = bool(features.check("avif"))  # Pillow's own plugin, when built with libavif

SUPPORTED_EXTENSIONS = (
    BASE_EXTENSIONS
    | ({".heic", ".heif"} if HEIF_AVAILABLE else frozenset())
    | ({".avif"} if AVIF_AVAILABLE else frozenset())
)

# Photo formats photosearch cannot read: files with these names are reported ("unsupported
# format") instead of being passed over as if they were not photos.
PHOTO_LIKE_EXTENSIONS = frozenset(
    {
        ".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".psd", ".svg", ".ico",
        # camera raw
        ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf",
        ".rw2", ".raf", ".pef", ".srw", ".x3f", ".3fr", ".erf", ".kdc", ".mrw", ".raw",
    }
) - SUPPORTED_EXTENSIONS

_EXIF_IFD = 0x8769
_TAG_DATETIME_ORIGINAL = 36867
_TAG_DATETIME = 306
_TAG_ORIENTATION = 274

HASH_CHUNK = 1 << 20

_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_PILLOW_BOMB_SIZE = re.compile(r"Image size \((\d+) pixels\)")


class ImageDecodeError(Exception):
    """A file could not be turned into an image; str(exc) is the user-facing reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class DecodedImage:
    image: Image.Image  # RGB, orientation applied, possibly reduced by draft mode
    width: int  # full-resolution size after orientation
    height: int
    taken_at: datetime | None


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def too_large_reason(pixels: int) -> str:
    """'too large: 180 MP, the limit is 100 MP' (a decimal when rounding would hide why)."""
    megapixels = pixels / 1e6
    limit = MAX_PIXELS // 1_000_000
    shown = f"{megapixels:.0f}" if round(megapixels) > limit else f"{megapixels:.1f}"
    return f"too large: {shown} MP, the limit is {limit} MP"


def not_regular_file_reason(mode: int) -> str:
    """Why a photo-named path that is not a regular file cannot be read."""
    if stat.S_ISFIFO(mode):
        kind = "a named pipe"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISDIR(mode):
        kind = "a folder"
    else:
        kind = "a special file"
    return f"not a regular file ({kind})"


def _open_nonblocking(path: str, flags: int) -> int:
    # Opening a FIFO for reading blocks until a writer appears; with O_NONBLOCK it returns
    # at once and fstat tells what it is (no effect on regular files).
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def read_file(path: str | os.PathLike[str]) -> bytes:
    """Read a photo's bytes, mapping OS errors to readable reasons.

    Only regular files are read: a FIFO would block forever and a device never end."""
    try:
        with open(path, "rb", opener=_open_nonblocking) as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise ImageDecodeError(not_regular_file_reason(mode))
            data = f.read()
    except FileNotFoundError as exc:
        raise ImageDecodeError("file vanished during scan") from exc
    except PermissionError as exc:
        raise ImageDecodeError("permission denied") from exc
    except IsADirectoryError as exc:
        raise ImageDecodeError("not a file") from exc
    except OSError as exc:
        raise ImageDecodeError(f"could not read file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    return data


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable / max(len(text), 1) > 0.95


def parse_exif_datetime(value: object) -> datetime | None:
    """Parse EXIF's 'YYYY:MM:DD HH:MM:SS' (tolerating junk, which cameras do write)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    if not isinstance(value, str):
        return None
    value = value.strip().strip("\x00")
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y:%m:%d"):
        try:
            dt = datetime.strptime(value[: len(datetime(2000, 1, 1).strftime(fmt))], fmt)
        except ValueError:
            continue
        if dt.year < 1800:  # "0000:00:00" placeholders and similar
            return None
        return dt
    return None


def _exif_date(img: Image.Image) -> datetime | None:
    try:
        exif = img.getexif()
        value = exif.get_ifd(_EXIF_IFD).get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME)
    except Exception:  # noqa: BLE001 - broken EXIF must never fail the photo
        return None
    return parse_exif_datetime(value)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_TAG_ORIENTATION, 1) or 1)
    except Exception:  # noqa: BLE001
        return 1


def to_rgb(img: Image.Image, value_max: float | None = None) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited on white (how viewers show it).

    For 16/32-bit modes `value_max` is the brightest value of the whole image (the scale
    must not change from one strip of an image to the next); default: this image's."""
    if img.mode == "RGB":
        return img
    if img.mode in _HIGH_BIT_MODES:
        arr = np.asarray(img, dtype=np.float32)
        hi = value_max if value_max is not None else float(arr.max()) if arr.size else 0.0
        # 16-bit data is usually full-range; scale by the container's range unless the
        # values clearly use only 8 bits (some encoders store 8-bit data as mode I).
        scale = 255.0 / (65535.0 if hi > 255 else 255.0) if hi <= 65535 else 255.0 / hi
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(
    source: str | os.PathLike[str] | bytes, target_size: int = DEFAULT_DECODE_SIZE
) -> DecodedImage:
    """Decode a photo to RGB with EXIF orientation applied.

    With a `target_size` the result may be smaller than the original (JPEG draft mode,
    or an integer reduction of other formats), but its shorter side stays at least
    `target_size` when the original's is; 0 decodes at full size.
    """
    data = read_file(source) if not isinstance(source, bytes) else source
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise ImageDecodeError(too_large_reason(width * height))
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF/WebP: the first frame stands for the file
        if img.format == "JPEG" and target_size:
            img.draft("RGB", (target_size, target_size))
        img.load()
        # After load(): PNG may keep its EXIF chunk after the pixel data.
        taken_at = _exif_date(img)
        orientation = _orientation(img)
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        rgb = _shrink_to_rgb(img, target_size)
        del img  # the full-size pixels can go before the transpose makes another copy
        method = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
        if method is not None:
            rgb = rgb.transpose(method)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (at twice our limit) fires inside open(), before we see a size.
        found = _PILLOW_BOMB_SIZE.search(str(exc))
        reason = too_large_reason(int(found.group(1))) if found else "too large to decode"
        raise ImageDecodeError(reason) from exc
    except UnidentifiedImageError as exc:
        if _looks_like_text(data[:512]):
            raise ImageDecodeError("not an image (looks like text/HTML)") from exc
        raise ImageDecodeError("not an image (unrecognised file format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        log.debug("decode failed: %s", exc)
        raise ImageDecodeError("truncated or corrupt image data") from exc
    except MemoryError as exc:
        raise ImageDecodeError("image too large to decode (out of memory)") from exc
    return DecodedImage(image=rgb, width=width, height=height, taken_at=taken_at)


def _shrink_to_rgb(img: Image.Image, target_size: int) -> Image.Image:
    """The loaded image as RGB, box-reduced by an integer factor when it is large."""
    factor = max(1, min(img.size) // (target_size * REDUCING_GAP)) if target_size else 1
    if img.mode == "RGB" and factor > 1:
        return img.reduce(factor)
    if img.mode == "RGB" or img.width * img.height <= STRIP_PIXELS:
        rgb = to_rgb(img)
        return rgb.reduce(factor) if factor > 1 else rgb
    value_max = float(img.getextrema()[1]) if img.mode in _HIGH_BIT_MODES else None
    width, height = img.size
    rows = max(1, STRIP_PIXELS // width)
    rows += -rows % factor  # whole blocks per strip, so strips reduce like the whole image
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        # Convert before reducing: palette indices cannot be averaged, and transparency
        # is composited on white before pixels are mixed.
        strip = to_rgb(img.crop((0, top, width, min(height, top + rows))), value_max)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    return out


def thumbnail_file(thumbs_dir: Path, digest: str) -> Path:
    return thumbs_dir / digest[:2] / f"{digest}.jpg"


def thumbnail_size(width: int, height: int, box: int = THUMBNAIL_SIZE) -> tuple[int, int]:
    """The size that fits (width, height) in a `box` square, aspect kept: the size
    Pillow's Image.thumbnail() picks (same rounding); never larger than the input."""
    if width <= box and height <= box:
        return width, height
    aspect = width / height
    if aspect <= 1:
        x = max(min(math.floor(box * aspect), math.ceil(box * aspect),
                    key=lambda n: abs(aspect - n / box)), 1)
        return x, box
    y = max(min(math.floor(box / aspect), math.ceil(box / aspect),
                key=lambda n: 0 if n == 0 else abs(aspect - box / n)), 1)
    return box, y


def thumbnail_image(image: Image.Image) -> Image.Image:
    """`image` shrunk to fit THUMBNAIL_SIZE, at Image.thumbnail()'s size; `image` itself
    when it already fits (it is never modified).

    One resize, without the copy Image.thumbnail() needs, and bicubic instead of Lanczos:
    from the draft-decoded 500x375 of a 12 MP JPEG, save_thumbnail went from 2.6 to 1.8 ms
    of CPU, and at 256 px the two filters look the same (mean pixel difference 0.5 of 255;
    BENCHMARKS.md). Bilinear (1.1 ms less than Lanczos) was softer on small text.
    """
    size = thumbnail_size(image.width, image.height)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def save_thumbnail(image: Image.Image, thumbs_dir: Path, digest: str) -> Path:
    """Write a ~256 px JPEG for `digest` atomically (readers never see half a file)."""
    dest = thumbnail_file(thumbs_dir, digest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    thumb = thumbnail_image(image)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            thumb.save(f, "JPEG", quality=THUMBNAIL_QUALITY)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return dest

