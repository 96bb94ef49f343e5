"""Image side: backbone grid -> pooling (GAP or GPO) [+ pooled mid stages] -> head -> joint space."""

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


class ImageEncoder(nn.Module):
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
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.fusion = fusion
        if pooling == "gpo":
            self.gpo = GPO(grid_positions)
        elif pooling != "gap":
            raise ValueError(f"unknown pooling {pooling!r}")
        in_dim = backbone.out_channels + (sum(backbone.stage_channels) if fusion else 0)
        if fusion:
            # Mid-stage activations live on other scales than the head's; normalise each
            # stage's pooled vector before concatenation so none dominates.
            self.stage_norm = nn.LayerNorm(sum(backbone.stage_channels))
        self.dropout = nn.Dropout(feat_dropout)
        self.head = make_head(in_dim, embed_dim, head)

    def pool(self, grid: torch.Tensor) -> torch.Tensor:
        flat = grid.flatten(2)
        return self.gpo(flat) if self.pooling == "gpo" else flat.mean(-1)

    def forward_features(self, grid: torch.Tensor, stages: torch.Tensor | None) -> torch.Tensor:
        """From backbone outputs: grid (B, C, H, W), stages = GAP'd stage maps concatenated."""
        x = self.pool(grid.float())
        if self.fusion:
            x = torch.cat([x, self.stage_norm(stages.float())], dim=1)
        return self.head(self.dropout(x))

    def early_stage_channels(self, tuned_blocks: int) -> int:
        """Width of the pooled stage maps tapped before the last `tuned_blocks` blocks."""
        first = len(self.backbone.blocks) - tuned_blocks
        return sum(c for t, c in zip(self.backbone._taps, self.backbone.stage_channels, strict=True) if t < first)

    def forward_tail_features(
        self, pre: torch.Tensor, early_stages: torch.Tensor | None, tuned_blocks: int
    ) -> torch.Tensor:
        """Run the tuned tail of the backbone on cached activations, then pool and project."""
        grid, tail = self.backbone.forward_tail(pre.float(), tuned_blocks)
        stages = None
        if self.fusion:
            stages = torch.cat([early_stages.float(), *(s.mean(dim=(2, 3)) for s in tail)], dim=1)
        return self.forward_features(grid, stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid, stages = self.backbone(images)
        pooled_stages = torch.cat([s.mean(dim=(2, 3)) for s in stages], dim=1) if self.fusion else None
        return self.forward_features(grid, pooled_stages)
