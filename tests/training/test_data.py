import json

import pytest

from tests.conftest import shared_data
from training.data import DatasetError, load_dataset
from training.train import build_vocab


def test_jsonl_layout(tmp_path):
    (tmp_path / "images").mkdir()
    rows = [{"image": "a.jpg", "captions": ["A dog .", "a dog runs"]}, {"image": "b.jpg", "captions": ["x"] * 5}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_dataset(tmp_path)
    assert len(ds) == 2 and ds.items[0].path == tmp_path / "images" / "a.jpg"
    assert ds.caption_image == [0, 0, 1, 1, 1, 1, 1]
    assert len(ds.captions) == 7


def test_bad_jsonl_is_a_user_error(tmp_path):
    (tmp_path / "captions.jsonl").write_text('{"img": 1}\n')
    with pytest.raises(DatasetError):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError):
        load_dataset(tmp_path / "missing")


def _karpathy(tmp_path):
    images = []
    for i, split in enumerate(["train", "restval", "val", "test", "train"]):
        images.append({
            "filename": f"{i}.jpg", "split": split, "imgid": i,
            "sentences": [{"raw": f"caption {i} {k}", "tokens": ["caption", str(i), str(k)]} for k in range(5)],
        })
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    (tmp_path / "flickr30k-images").mkdir()
    return path


def test_karpathy_layout_splits_and_restval(tmp_path):
    path = _karpathy(tmp_path)
    train = load_dataset(path, split="train")
    assert [it.path.name for it in train.items] == ["0.jpg", "1.jpg", "4.jpg"]
    assert train.items[0].path.parent == tmp_path / "flickr30k-images"
    assert train.items[0].captions[0] == "caption 0 0"
    assert [it.path.name for it in load_dataset(path, split="val").items] == ["2.jpg"]
    assert [it.path.name for it in load_dataset(tmp_path, split="test").items] == ["3.jpg"]
    other = tmp_path / "imgs"
    other.mkdir()
    assert load_dataset(path, images=other).items[0].path == other / "0.jpg"


def test_coco_captions_layout(tmp_path):
    data = {
        "images": [{"id": 7, "file_name": "c7.jpg"}, {"id": 9, "file_name": "c9.jpg"}, {"id": 3, "file_name": "none.jpg"}],
        "annotations": [
            {"image_id": 7, "id": 1, "caption": "a cat "},
            {"image_id": 9, "id": 2, "caption": "two dogs"},
            {"image_id": 7, "id": 3, "caption": "cat on a mat"},
        ],
    }
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps(data))
    ds = load_dataset(path, images=tmp_path)
    assert [it.path.name for it in ds.items] == ["c7.jpg", "c9.jpg"]  # no captions -> skipped
    assert ds.items[0].captions == ["a cat", "cat on a mat"]


def test_vocab_from_training_captions_only():
    words, stats = build_vocab(["A dog runs .", "a dog sleeps"])
    assert words[:2] == ["a", "dog"]
    assert set(words) == {"a", "dog", "runs", ".", "sleeps"}
    assert stats["n_captions"] == 2 and stats["max_length"] == 4


def test_shared_val_set_loads():
    ds = load_dataset(shared_data("f30k8k_val"))
    assert len(ds) == 242 and all(len(it.captions) == 5 for it in ds.items)
    assert ds.items[0].path.exists()
