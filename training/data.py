"""Caption datasets: the shared captions.jsonl layout, Karpathy's Flickr30K/COCO json, COCO captions.

Everything is read into `CaptionDataset`: a list of `ImageItem(path, captions)`. Loaders only
read metadata; images are decoded lazily by the training loop or the feature cache.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import PhotosearchError

log = logging.getLogger(__name__)


class DatasetError(PhotosearchError):
    """The --data argument does not point at a readable caption dataset."""


@dataclass
class ImageItem:
    path: Path
    captions: list[str]


@dataclass
class CaptionDataset:
    name: str
    items: list[ImageItem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def captions(self) -> list[str]:
        """All captions, flattened image-major (caption j of image i at i*k + j when uniform)."""
        return [c for it in self.items for c in it.captions]

    @property
    def caption_image(self) -> list[int]:
        """For each caption in `captions`, the index of its image."""
        return [i for i, it in enumerate(self.items) for _ in it.captions]

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "n_images": len(self.items), "n_captions": len(self.captions)}


def load_jsonl(path: Path) -> CaptionDataset:
    """`DIR/captions.jsonl` lines {"image": file, "captions": [...]}, images in DIR/images/."""
    jsonl = path / "captions.jsonl" if path.is_dir() else path
    root = jsonl.parent / "images"
    if not root.is_dir():
        root = jsonl.parent
    items = []
    with open(jsonl, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                items.append(ImageItem(root / row["image"], [str(c) for c in row["captions"]]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(f"{jsonl}:{lineno}: not a caption record ({exc})") from exc
    return CaptionDataset(jsonl.parent.name, items)


def _karpathy_split_matches(image_split: str, wanted: str) -> bool:
    # Karpathy's 'restval' images are conventionally added to training.
    if wanted == "train":
        return image_split in ("train", "restval")
    return image_split == wanted


def _find_image_root(json_path: Path, images: Path | None, candidates: tuple[str, ...]) -> Path:
    if images is not None:
        if not images.is_dir():
            raise DatasetError(f"image folder {images} does not exist")
        return images
    for name in candidates:
        cand = json_path.parent / name
        if cand.is_dir():
            return cand
    return json_path.parent


def load_karpathy(json_path: Path, split: str = "train", images: Path | None = None) -> CaptionDataset:
    """Karpathy split file (dataset_flickr30k.json / dataset_coco.json) + an image folder."""
    data = json.loads(json_path.read_text(encoding="utf-8"))
    root = _find_image_root(json_path, images, ("flickr30k-images", "images", "Images"))
    items = []
    for img in data["images"]:
        if not _karpathy_split_matches(img.get("split", "train"), split):
            continue
        caps = [s.get("raw") or " ".join(s["tokens"]) for s in img["sentences"]]
        # COCO's Karpathy file keeps images in train2014/ val2014/ subfolders.
        rel = Path(img["filepath"]) / img["filename"] if img.get("filepath") else Path(img["filename"])
        items.append(ImageItem(root / rel, caps))
    if not items:
        raise DatasetError(f"{json_path} has no images in split {split!r}")
    return CaptionDataset(f"{json_path.stem}:{split}", items)


def load_coco(json_path: Path, images: Path | None = None) -> CaptionDataset:
    """COCO captions annotation file (captions_train2014.json style) + its image folder."""
    data = json.loads(json_path.read_text(encoding="utf-8"))
    root = _find_image_root(json_path, images, ("images",))
    caps: dict[int, list[str]] = defaultdict(list)
    for ann in data["annotations"]:
        caps[ann["image_id"]].append(ann["caption"].strip())
    items = [
        ImageItem(root / img["file_name"], caps[img["id"]])
        for img in data["images"]
        if caps.get(img["id"])
    ]
    return CaptionDataset(json_path.stem, items)


def load_dataset(path: Path, split: str | None = None, images: Path | None = None) -> CaptionDataset:
    """Open any supported layout; `split` applies to Karpathy files (default 'train')."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if path.is_dir():
        if (path / "captions.jsonl").exists():
            return load_jsonl(path)
        karpathy = sorted(path.glob("dataset_*.json"))
        if karpathy:
            return load_karpathy(karpathy[0], split or "train", images)
        raise DatasetError(f"{path} has neither captions.jsonl nor a dataset_*.json Karpathy file")
    if path.suffix == ".jsonl":
        return load_jsonl(path)
    if path.suffix == ".json":
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON ({exc})") from exc
        if isinstance(head, dict) and "annotations" in head:
            return load_coco(path, images)
        if isinstance(head, dict) and "images" in head:
            return load_karpathy(path, split or "train", images)
    raise DatasetError(f"{path}: unknown dataset format")
