"""Projection heads from an encoder's features into the joint space."""

from __future__ import annotations

import torch
from torch import nn


class ResidualMLPHead(nn.Module):
    """Linear projection plus a 2-layer MLP residual (VSE-infinity style), MLP starts near zero."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = hidden or out_dim // 2
        self.fc = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + self.mlp(x)


def make_head(in_dim: int, out_dim: int, kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        return ResidualMLPHead(in_dim, out_dim)
    raise ValueError(f"unknown head {kind!r}")
