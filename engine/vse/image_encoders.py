"""Image side, split as VSE++ splits `EncoderImage`: `ImageFeatureEncoder` maps backbone
features to the joint space (pooling, optional stage fusion, head; VSE++'s EncoderImagePrecomp),
and `ImageEncoder` puts a CNN backbone under it for pixels (VSE++'s EncoderImageFull).

Training on cached features only needs the feature encoder; the app embeds pixels. Both share
one set of layers, so a checkpoint's keys (`img.head.*`, `img.backbone.*`) are the same
whichever way the model was trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.vse.backbones import Backbone
from engine.vse.heads import make_head


class GPO(nn.Module):
    """Generalised pooling (VSE-infinity): sort each channel over positions, take a learned
    weighted sum. Weights start uniform, i.e. exactly global average pooling, so training can
    only move away from GAP if that helps. A fixed 224-px crop always gives the same number of
    positions; other sizes get the weight profile resampled.
    """

    def __init__(self, positions: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(positions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, N)
        logits = self.logits
        if x.shape[-1] != logits.numel():
            logits = F.interpolate(logits[None, None], size=x.shape[-1], mode="linear").flatten()
        w = torch.softmax(logits, dim=0).to(x.dtype)
        return (x.sort(dim=-1, descending=True).values * w).sum(-1)


class ImageFeatureEncoder(nn.Module):
    """Backbone outputs -> joint space (unnormalised): pool the last grid, optionally fuse the
    pooled mid-stage maps, dropout, project."""

    def __init__(
        self,
        grid_channels: int,
        stage_channels: int,
        embed_dim: int,
        pooling: str = "gap",
        fusion: bool = False,
        head: str = "linear",
        grid_positions: int = 49,
        feat_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.fusion = fusion
        if pooling == "gpo":
            self.gpo = GPO(grid_positions)
        elif pooling != "gap":
            raise ValueError(f"unknown pooling {pooling!r}")
        in_dim = grid_channels + (stage_channels if fusion else 0)
        if fusion:
            # Mid-stage activations live on other scales than the head's; normalise each
            # stage's pooled vector before concatenation so none dominates.
            self.stage_norm = nn.LayerNorm(stage_channels)
        self.dropout = nn.Dropout(feat_dropout)
        self.head = make_head(in_dim, embed_dim, head)

    def pool(self, grid: torch.Tensor) -> torch.Tensor:
        flat = grid.flatten(2)
        return self.gpo(flat) if self.pooling == "gpo" else flat.mean(-1)

    def from_features(self, grid: torch.Tensor, stages: torch.Tensor | None) -> torch.Tensor:
        """grid (B, C, H, W): the backbone's last map; stages: its GAP'd stage maps concatenated
        (only read with fusion)."""
        x = self.pool(grid.float())
        if self.fusion:
            if stages is None:
                raise ValueError("stage fusion needs the pooled stage maps")
            x = torch.cat([x, self.stage_norm(stages.float())], dim=1)
        return self.head(self.dropout(x))

    def forward(self, grid: torch.Tensor, stages: torch.Tensor | None = None) -> torch.Tensor:
        return self.from_features(grid, stages)


class ImageEncoder(ImageFeatureEncoder):
    """Pixels -> joint space (unnormalised): the backbone, then the feature encoder's layers."""

    def __init__(
        self,
        backbone: Backbone,
        embed_dim: int,
        pooling: str = "gap",
        fusion: bool = False,
        head: str = "linear",
        grid_positions: int = 49,
        feat_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            backbone.out_channels, sum(backbone.stage_channels), embed_dim, pooling=pooling,
            fusion=fusion, head=head, grid_positions=grid_positions, feat_dropout=feat_dropout,
        )
        self.backbone = backbone
        # Backbone first, as before the split: parameter order is the summation order of the
        # clipped gradient norm, so training with tuned backbone blocks stays bit-for-bit.
        self._modules = {"backbone": self._modules.pop("backbone"), **self._modules}

    def pooled_stages(self, stages: list[torch.Tensor]) -> torch.Tensor | None:
        """The backbone's stage maps as the feature encoder reads them (GAP'd, concatenated)."""
        return torch.cat([s.mean(dim=(2, 3)) for s in stages], dim=1) if self.fusion else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grid, stages = self.backbone(images)
        return self.from_features(grid, self.pooled_stages(stages))
