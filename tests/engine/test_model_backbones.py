import pytest
import torch

from engine.vse.backbones import build_backbone
from engine.vse.image_encoders import GPO, ImageEncoder


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "mobilenet_v2"])
def test_package_backbones_shapes(name):
    bb = build_backbone(name).eval()
    with torch.no_grad():
        grid, stages = bb(torch.randn(1, 3, 224, 224))
    assert grid.shape == (1, bb.out_channels, 7, 7)
    assert [s.shape[1] for s in stages] == list(bb.stage_channels)


@pytest.mark.slow
@pytest.mark.parametrize("name,channels", [("vgg19", 512), ("resnet152", 2048)])
def test_torchvision_backbones_construct_random(name, channels):
    bb = build_backbone(name, pretrained="none").eval()
    with torch.no_grad():
        grid, stages = bb(torch.randn(1, 3, 64, 64))
    assert grid.shape[1] == channels == bb.out_channels
    assert [s.shape[1] for s in stages] == list(bb.stage_channels)
    enc = ImageEncoder(bb, 16, fusion=True)
    with torch.no_grad():
        assert enc(torch.randn(1, 3, 64, 64)).shape == (1, 16)


def test_unknown_backbone():
    with pytest.raises(ValueError):
        build_backbone("alexnet")


def test_gpo_starts_as_average_pooling_and_handles_other_sizes():
    gpo = GPO(49)
    x = torch.randn(2, 5, 49)
    torch.testing.assert_close(gpo(x), x.mean(-1))
    with torch.no_grad():
        gpo.logits.copy_(torch.linspace(3, -3, 49))
    y = gpo(torch.randn(2, 5, 16))
    assert y.shape == (2, 5)
