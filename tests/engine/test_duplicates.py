"""Near-identical photos grouped (issue 14): generated copies of distinct photos."""

import os

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from engine import duplicates
from engine.duplicates import UnionFind, group_indices, representative_order
from engine.library import Library
from engine.testing import FakeEmbedder


def _pattern(seed: int, size=(160, 120)) -> Image.Image:
    """A distinct photo: random colour blocks, scaled up."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize(size, Image.Resampling.BICUBIC)


def _copies(img: Image.Image) -> dict[str, Image.Image]:
    w, h = img.size
    dx, dy = int(w * 0.04), int(h * 0.04)
    return {
        "resized": img.resize((w * 6 // 10, h * 6 // 10), Image.Resampling.LANCZOS),
        "cropped": img.crop((dx, dy, w - dx, h - dy)),
        "brighter": ImageEnhance.Brightness(img).enhance(1.08),
    }


def test_union_find_and_exact_pairs():
    uf = UnionFind(6)
    uf.union(0, 3)
    uf.union(3, 5)
    uf.union(1, 2)
    assert sorted(uf.groups()) == [[0, 3, 5], [1, 2]]
    v = np.eye(4, dtype=np.float32)
    v[1] = (0.99, 0.141, 0, 0)  # cosine 0.99 with row 0
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert group_indices(v, 0.95) == [[0, 1]]
    assert group_indices(v, 0.999) == []
    # neighbours from an index give the same groups as the exact product
    near = lambda i: [(j, float(v[i] @ v[j])) for j in range(4)]  # noqa: E731
    assert group_indices(v, 0.95, near) == [[0, 1]]


def test_threshold_is_the_models_own_else_the_calibrated_one():
    emb = FakeEmbedder()
    assert duplicates.threshold_for(emb) == duplicates.DUPLICATE_THRESHOLD
    emb.duplicate_threshold = 0.5
    assert duplicates.threshold_for(emb) == 0.5


def test_exact_pairs_over_several_blocks(monkeypatch):
    """Clusters of near copies among random photos: the product in 50-row blocks finds exactly
    the pairs of a plain all-pairs product (the first version reused its block size variable
    and failed from the second block on)."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 96)).astype(np.float32)
    base[:, :8] *= 6  # a few strong directions, as image embeddings have
    copies = base[:60] + rng.normal(0, 0.15, (60, 96)).astype(np.float32)
    v = np.concatenate([base, copies, copies[:20] + rng.normal(0, 0.1, (20, 96)).astype(np.float32)])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    full = v @ v.T
    want = sorted((i, j) for i, j in zip(*np.nonzero(np.triu(full >= 0.9, 1)), strict=True))
    assert len(want) >= 80
    monkeypatch.setattr(duplicates, "_BLOCK_ELEMENTS", 50 * len(v))  # 50-row blocks
    assert sorted(duplicates.exact_pairs(v, 0.9)) == want


def test_representative_is_the_largest_then_oldest():
    order = representative_order([0, 1, 2], [100, 400, 400], [5.0, 9.0, 2.0], ["a", "b", "c"])
    assert order == [2, 1, 0]


@pytest.mark.parametrize("via_index", [False, True])
def test_generated_copies_are_grouped(tmp_path, monkeypatch, via_index):
    if via_index:
        monkeypatch.setattr(duplicates, "EXACT_MAX", 0)  # neighbours from the HNSW index
    folder = tmp_path / "photos"
    folder.mkdir()
    expected = []
    for seed in range(4):  # four photos with copies
        original = _pattern(seed)
        original.save(folder / f"p{seed}.png")
        group = [str(folder / f"p{seed}.png")]
        for name, copy in _copies(original).items():
            copy.save(folder / f"p{seed}_{name}.png")
            group.append(str(folder / f"p{seed}_{name}.png"))
        original.save(folder / f"p{seed}_q60.jpg", quality=60)
        group.append(str(folder / f"p{seed}_q60.jpg"))
        expected.append(group)
    for seed in range(100, 112):  # distinct photos without copies
        _pattern(seed).save(folder / f"single{seed}.png")
    for i, group in enumerate(expected):  # make p0's group the newest
        for path in group:
            os.utime(path, (1_600_000_000 - i * 1000,) * 2)
    emb = FakeEmbedder()
    # the fake's cosines: copies >= 0.99, these distinct patterns <= 0.93 (the shipped
    # model's calibrated 0.85 would join some of them)
    emb.duplicate_threshold = 0.96
    with Library.open(tmp_path / "lib", emb) as lib:
        lib.add_folder(folder)
        lib.index()
        groups = lib.duplicate_groups()
        assert [sorted(g.paths) for g in groups] == [sorted(g) for g in expected]
        # the original comes first: the crop and the resize have fewer pixels, the brighter
        # copy and the re-encode as many, and the same time, so the path decides
        assert [os.path.basename(g.paths[0]) for g in groups] == [f"p{i}.png" for i in range(4)]
        assert groups[0].to_json()["count"] == 5
        assert lib.duplicate_groups(threshold=1.01) == []
