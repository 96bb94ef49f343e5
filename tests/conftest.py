"""Shared fixtures: small generated photos and a model-free embedder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.testing import FakeEmbedder

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """A data set under ../shared/data. Missing: skip locally, but fail in CI, which always has
    it, so a broken checkout never turns real tests into silent skips."""
    path = SHARED_DATA / name
    if not path.exists():
        message = f"shared data not found: {path}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class CountingEmbedder(FakeEmbedder):
    """FakeEmbedder that counts how many images it embedded (to prove reuse)."""

    def __init__(self, *args: object, delay_s: float = 0.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.embedded = 0
        self.delay_s = delay_s

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        self.embedded += len(batch)
        return super().embed_prepared(batch)


@pytest.fixture
def fake_embedder() -> CountingEmbedder:
    return CountingEmbedder(dim=32)


MakeImage = Callable[..., Path]


@pytest.fixture
def make_image(tmp_path: Path) -> MakeImage:
    """make_image(relpath, colour=..., size=(w, h), mode='RGB', fmt=None, seed=None, **save_kw).

    Writes a small image under tmp_path/'photos' (unless relpath is absolute) and returns
    its path. A seed adds noise so that two images of the same colour differ in content.
    """
    root = tmp_path / "photos"

    def make(
        relpath: str | os.PathLike[str],
        colour: str | tuple[int, ...] = "red",
        size: tuple[int, int] = (64, 48),
        mode: str = "RGB",
        fmt: str | None = None,
        seed: int | None = None,
        **save_kw: object,
    ) -> Path:
        path = Path(relpath) if Path(relpath).is_absolute() else root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", size, colour)
        if seed is not None:
            rng = np.random.default_rng(seed)
            arr = np.asarray(img, dtype=np.int16) + rng.integers(-20, 20, (size[1], size[0], 3))
            img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        if mode != "RGB":
            img = img.convert(mode)
        fmt = fmt or {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
        img.save(path, format=fmt, **save_kw)
        return path

    return make
