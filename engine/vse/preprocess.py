"""Evaluation-time image preprocessing, shared by the inference embedder and feature caching."""

from __future__ import annotations

import numpy as np
from PIL import Image


def eval_transform_pil(image: Image.Image, size: int = 224) -> Image.Image:
    """Resize the short side to `size` and centre-crop a square: keeps the aspect ratio."""
    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return image


def to_normalized_array(
    image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]
) -> np.ndarray:
    """(3, H, W) float32 normalised with the backbone's mean/std."""
    arr = np.asarray(image, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def prepare_eval(
    image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...], size: int = 224
) -> np.ndarray:
    return to_normalized_array(eval_transform_pil(image, size), mean, std)
