"""Tuning the last backbone blocks: only the tail trains, and the checkpoint stores the tail
(not the frozen package weights). That training from cached inputs to the tail equals the
whole network is in tests/training/test_batches.py."""

import pytest
import torch

from engine.vse.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from engine.vse.model import VSEConfig, VSEModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = VSEConfig(backbone="efficientnet-lite0", fusion=True, img_head="mlp", tuned_blocks=2, embed_dim=16)
    return VSEModel(cfg).eval()


def test_only_the_tail_of_the_backbone_trains(model):
    bb = model.img.backbone
    tail = {id(p) for p in bb.tail_parameters(2)}
    for name, p in bb.named_parameters():
        assert p.requires_grad == (id(p) in tail), name
    assert any(name.startswith("blocks.0.") for name, _ in bb.named_parameters())


def test_checkpoint_keeps_the_tuned_tail(tmp_path, model):
    with torch.no_grad():
        model.img.backbone.head[0].weight.mul_(1.5)  # a "trained" change to the head conv
    path = tmp_path / "m.pt"
    save_checkpoint(path, model)
    keys = list(read_checkpoint(path)["state_dict"])
    last = len(model.img.backbone.blocks) - 1
    assert any(k.startswith("img.backbone.head.") for k in keys)
    assert any(k.startswith(f"img.backbone.blocks.{last}.") for k in keys)
    assert not any(k.startswith("img.backbone.blocks.0.") or k.startswith("img.backbone.stem.") for k in keys)
    loaded, _ = load_checkpoint(path)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed_images(x), model.embed_images(x))


def test_unsupported_backbone_is_refused():
    with pytest.raises(ValueError, match="EfficientNet-Lite"):
        VSEModel(VSEConfig(backbone="mobilenet_v2", tuned_blocks=1, embed_dim=16))
