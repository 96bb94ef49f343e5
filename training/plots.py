"""PNG curves of training loss and validation recall (both directions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_history(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(epochs, [h["loss"] for h in history], marker="o")
    axes[0].set_title("training loss")
    for ax, d in zip(axes[1:], ("i2t", "t2i"), strict=True):
        for k in ("r1", "r5", "r10"):
            ys = [h.get(f"{d}_{k}") for h in history]
            if any(y is not None for y in ys):
                ax.plot(epochs, ys, marker="o", label=f"R@{k[1:]}")
        ax.set_title(f"val {'image->text' if d == 'i2t' else 'text->image'} recall")
        ax.legend()
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_compare(histories: dict[str, Sequence[dict[str, Any]]], path: Path) -> None:
    """Overlay several runs (e.g. MH vs SH): loss and R@1 in both directions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["loss"] for h in hist], marker="o", label=name)
        axes[1].plot(ep, [h.get("i2t_r1") for h in hist], marker="o", label=f"{name} R@1")
        axes[1].plot(ep, [h.get("i2t_r10") for h in hist], ls="--", label=f"{name} R@10")
        axes[2].plot(ep, [h.get("t2i_r1") for h in hist], marker="o", label=f"{name} R@1")
        axes[2].plot(ep, [h.get("t2i_r10") for h in hist], ls="--", label=f"{name} R@10")
    for ax, t in zip(axes, ("training loss", "val image->text", "val text->image"), strict=True):
        ax.set_title(t)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
