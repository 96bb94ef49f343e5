"""What one training step feeds the network, as typed inputs.

The image side of a batch comes as pixels (end-to-end training), as cached backbone features
(frozen backbone) or as cached activations entering the tuned backbone blocks; the text side as
caption strings, as cached MiniLM token states after the frozen layers, or as cached pooled
MiniLM features (frozen transformer: only the text head trains). Each input embeds itself with
a `VSEModel`, so `TrainingStep` has one forward per step, which is what DistributedDataParallel
synchronises. Nothing here is needed to use a trained model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from engine.vse.model import VSEModel
from engine.vse.text_encoders import MiniLMTextEncoder
from training.distributed import gather_rows


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t.to(device, non_blocking=True)


@dataclass
class PixelImages:
    """Normalised, augmented pixel batches (B, 3, H, W)."""

    pixels: torch.Tensor

    def to(self, device: torch.device) -> PixelImages:
        return PixelImages(_to(self.pixels, device))

    def embed(self, model: VSEModel) -> torch.Tensor:
        return model.embed_images(self.pixels)


@dataclass
class CachedImageFeatures:
    """A frozen backbone's outputs: the last grid (B, C, H, W) and the GAP'd stage maps."""

    grid: torch.Tensor
    stages: torch.Tensor

    def to(self, device: torch.device) -> CachedImageFeatures:
        return CachedImageFeatures(_to(self.grid, device), _to(self.stages, device))

    def embed(self, model: VSEModel) -> torch.Tensor:
        return F.normalize(model.img.from_features(self.grid, self.stages), dim=-1)


@dataclass
class CachedTailInputs:
    """Activations entering the last `VSEConfig.tuned_blocks` backbone blocks, and the GAP'd
    stage maps tapped before them (see training.features.early_stage_channels)."""

    pre: torch.Tensor
    early_stages: torch.Tensor

    def to(self, device: torch.device) -> CachedTailInputs:
        return CachedTailInputs(_to(self.pre, device), _to(self.early_stages, device))

    def embed(self, model: VSEModel) -> torch.Tensor:
        img = model.img
        grid, tail = img.backbone.forward_tail(self.pre.float(), model.config.tuned_blocks)
        stages = None
        if img.fusion:
            stages = torch.cat([self.early_stages.float(), *(s.mean(dim=(2, 3)) for s in tail)], dim=1)
        return F.normalize(img.from_features(grid, stages), dim=-1)


@dataclass
class CaptionTexts:
    """Caption strings, encoded by the whole text encoder."""

    texts: list[str]

    def to(self, device: torch.device) -> CaptionTexts:
        return self

    def embed(self, model: VSEModel) -> torch.Tensor:
        return model.embed_texts(self.texts)


@dataclass
class CachedTokenStates:
    """MiniLM token states after its first `start` layers (padded), with their mask."""

    hidden: torch.Tensor
    mask: torch.Tensor
    start: int

    def to(self, device: torch.device) -> CachedTokenStates:
        return CachedTokenStates(_to(self.hidden, device), _to(self.mask, device), self.start)

    def embed(self, model: VSEModel) -> torch.Tensor:
        if not isinstance(model.txt, MiniLMTextEncoder):
            raise TypeError("cached token states need a MiniLM text encoder")
        return F.normalize(model.txt.forward_hidden(self.hidden, self.mask, self.start), dim=-1)


@dataclass
class PooledTextFeatures:
    """Mean-pooled MiniLM layer outputs, concatenated: what the text head reads when the whole
    transformer is frozen (training.text_cache.pooled_features)."""

    features: torch.Tensor

    def to(self, device: torch.device) -> PooledTextFeatures:
        return PooledTextFeatures(_to(self.features, device))

    def embed(self, model: VSEModel) -> torch.Tensor:
        if not isinstance(model.txt, MiniLMTextEncoder):
            raise TypeError("pooled text features need a MiniLM text encoder")
        return F.normalize(model.txt.proj(self.features), dim=-1)


class ImageInput(Protocol):
    def to(self, device: torch.device) -> ImageInput: ...
    def embed(self, model: VSEModel) -> torch.Tensor: ...


class TextInput(Protocol):
    def to(self, device: torch.device) -> TextInput: ...
    def embed(self, model: VSEModel) -> torch.Tensor: ...


@dataclass
class Batch:
    """Row i of `images` matches row i of `texts`."""

    images: ImageInput
    texts: TextInput

    def to(self, device: torch.device) -> Batch:
        return Batch(self.images.to(device), self.texts.to(device))


class TrainingStep(nn.Module):
    """The model and its loss as one module, so one forward call covers a whole step:
    DistributedDataParallel synchronises the gradients of everything in it, the loss's learned
    temperature included. Under torchrun each process embeds its share of the batch and the
    loss sees every process's rows (`gather_rows`), so it is the loss of the whole batch."""

    def __init__(self, model: VSEModel, criterion: nn.Module, use_amp: bool = False) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.use_amp = use_amp

    def forward(self, batch: Batch) -> torch.Tensor:
        device_type = "cuda" if self.use_amp else "cpu"
        with torch.autocast(device_type, enabled=self.use_amp, dtype=torch.float16):
            im = batch.images.embed(self.model)
            s = batch.texts.embed(self.model)
        # the loss in float32, outside autocast
        return self.criterion(gather_rows(im.float()), gather_rows(s.float()))
