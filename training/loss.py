"""VSE++ contrastive hinge loss over the in-batch similarity matrix."""

from __future__ import annotations

import torch
from torch import nn


class ContrastiveLoss(nn.Module):
    """Hinge loss in both directions (image->caption and caption->image).

    Row i of `im` matches row i of `s`; every other row in the batch is a negative.
    max_violation=True is VSE++'s MH loss (only the hardest negative per query counts),
    False is the SH loss (sum over all negatives).
    """

    def __init__(self, margin: float = 0.2, max_violation: bool = True) -> None:
        super().__init__()
        self.margin = margin
        self.max_violation = max_violation

    def forward(self, im: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        scores = im @ s.t()
        diagonal = scores.diag().view(-1, 1)
        d1 = diagonal.expand_as(scores)  # positive score of each image (row)
        d2 = diagonal.t().expand_as(scores)  # positive score of each caption (column)
        # caption retrieval: for image i, negatives are captions j != i
        cost_s = (self.margin + scores - d1).clamp(min=0)
        # image retrieval: for caption j, negatives are images i != j
        cost_im = (self.margin + scores - d2).clamp(min=0)
        eye = torch.eye(scores.size(0), dtype=torch.bool, device=scores.device)
        cost_s = cost_s.masked_fill(eye, 0)
        cost_im = cost_im.masked_fill(eye, 0)
        if self.max_violation:
            cost_s = cost_s.max(dim=1).values
            cost_im = cost_im.max(dim=0).values
        return cost_s.sum() + cost_im.sum()


class InfoNCELoss(nn.Module):
    """Symmetric softmax contrastive loss (CLIP-style) with a learnable temperature.

    Not part of VSE++; offered because with frozen features every in-batch negative carries
    gradient (like SH) while hard negatives still dominate through the softmax (like MH).
    """

    def __init__(self, init_temperature: float = 0.05) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(-torch.log(torch.tensor(init_temperature)))))

    def forward(self, im: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        logits = (im @ s.t()) * self.log_scale.clamp(max=4.6).exp()  # scale <= 100
        target = torch.arange(len(im), device=im.device)
        ce = nn.functional.cross_entropy
        # summed over the batch, like the hinge losses, so learning rates stay comparable
        return (ce(logits, target, reduction="sum") + ce(logits.t(), target, reduction="sum")) / 2
