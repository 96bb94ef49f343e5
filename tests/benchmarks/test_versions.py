"""benchmarks/versions.py: the shipped model against v1, alternated (fake embedders; no timing checks)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks import versions
from engine.testing import FakeEmbedder


def test_ratio_is_the_ratio_of_the_median_rates(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(photos / f"p{i}.jpg")
    shipped, v1 = FakeEmbedder(dim=8), FakeEmbedder(dim=8)
    rates = iter([10.0, 20.0, 30.0, 20.0, 12.0, 40.0])  # shipped, v1, shipped, v1, ...
    seen = []

    def index_once(emb, photo_dir, lib_dir, n):
        seen.append((emb, n))
        return next(rates)

    monkeypatch.setattr(versions, "_index_once", index_once)
    out = versions.bench_versions(shipped, photos, tmp_path, reps=3, v1=v1)
    assert [e for e, _ in seen] == [shipped, v1] * 3 and {n for _, n in seen} == {4}
    assert out["shipped_images_per_s"] == 12.0 and out["v1_images_per_s"] == 20.0
    assert out["ratio"] == 0.6 and out["ratios_by_rep"] == [0.5, 1.5, 0.3]


def test_without_a_v1_checkpoint_the_item_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(versions, "V1_CHECKPOINT", tmp_path / "missing.pt")
    assert versions.load_v1() is None
    assert versions.bench_versions(FakeEmbedder(dim=8), tmp_path, tmp_path, reps=1) is None
