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
import os
import struct
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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

BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

try:  # HEIC is optional: only when the plugin happens to be installed.
    import pillow_heif  # type: ignore[import-not-found]

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except Exception:  # noqa: BLE001 - any failure just means "no HEIC support"
    HEIF_AVAILABLE = False

SUPPORTED_EXTENSIONS = BASE_EXTENSIONS | ({".heic", ".heif"} if HEIF_AVAILABLE else frozenset())

_EXIF_IFD = 0x8769
_TAG_DATETIME_ORIGINAL = 36867
_TAG_DATETIME = 306
_TAG_ORIENTATION = 274

HASH_CHUNK = 1 << 20


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




def read_file(path: str | os.PathLike[str]) -> bytes:
    """Read a photo's bytes, mapping OS errors to readable reasons."""
    try:
        with open(path, "rb") as f:
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


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited on white (how viewers show it)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
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

    `target_size` only lets JPEGs decode at a reduced scale (the result is at least that
    large on its shorter side when the original is); other formats decode fully.
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
            raise ImageDecodeError(
                f"image too large ({width * height / 1e6:.0f} megapixels, "
                f"limit {MAX_PIXELS // 1_000_000})"
            )
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF/WebP: the first frame stands for the file
        taken_at = _exif_date(img)
        if _orientation(img) in (5, 6, 7, 8):
            width, height = height, width
        if img.format == "JPEG" and target_size:
            img.draft("RGB", (target_size, target_size))
        img.load()
        img = ImageOps.exif_transpose(img) or img
        rgb = to_rgb(img)
        rgb.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large ({exc})") from exc
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


def thumbnail_file(thumbs_dir: Path, digest: str) -> Path:
    return thumbs_dir / digest[:2] / f"{digest}.jpg"


def save_thumbnail(image: Image.Image, thumbs_dir: Path, digest: str) -> Path:
    """Write a ~256 px JPEG for `digest` atomically (readers never see half a file)."""
    dest = thumbnail_file(thumbs_dir, digest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    thumb = image.copy()
    thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            thumb.save(f, "JPEG", quality=85)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return dest

