"""Training-time image transforms (torchvision pipelines for the pixel path)."""

from __future__ import annotations

from torchvision import transforms as T


def train_transform(
    mean: tuple[float, ...], std: tuple[float, ...], size: int = 224
) -> T.Compose:
    """Random resized crop + flip, the VSE++ recipe for end-to-end training."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.5, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
