"""Weak-match threshold and caption bank for a trained model.

Threshold: on a validation set, every caption is used as a query; we record the top-1 image
score and whether that top image is the caption's own. A 1-D logistic regression of
correctness on the score gives P(top hit correct | score); the threshold is the score where
that probability is 0.5, i.e. below it the top result is more often wrong than right.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def fit_logistic_1d(x: np.ndarray, y: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """Newton-Raphson for p(y=1|x) = sigmoid(a + b x); a tiny ridge keeps it finite when separable."""
    xs = (x - x.mean()) / (x.std() + 1e-9)
    X = np.stack([np.ones_like(xs), xs], 1)
    w = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-X @ w))
        grad = X.T @ (p - y) + 1e-3 * w
        H = (X * (p * (1 - p))[:, None]).T @ X + 1e-3 * np.eye(2)
        w -= np.linalg.solve(H, grad)
    # back to the raw scale
    b = w[1] / (x.std() + 1e-9)
    a = w[0] - b * x.mean()
    return float(a), float(b)


def weak_match_threshold(sims: np.ndarray, caption_image: Sequence[int]) -> dict[str, float]:
    """sims: (n_images, n_captions). Returns the threshold and the figures behind it."""
    cap_img = np.asarray(caption_image)
    top = sims.argmax(axis=0)
    best = sims.max(axis=0)
    correct = (top == cap_img).astype(np.float64)
    a, b = fit_logistic_1d(best, correct)
    thr = -a / b if b > 0 else float(np.median(best))
    below = best < thr
    return {
        "weak_match_threshold": round(float(thr), 4),
        "method": "logistic fit of top-1 text->image correctness on top-1 score, p=0.5 crossing",
        "n_queries": int(len(best)),
        "top1_accuracy": float(correct.mean()),
        "accuracy_below": float(correct[below].mean()) if below.any() else float("nan"),
        "accuracy_above": float(correct[~below].mean()) if (~below).any() else float("nan"),
        "fraction_below": float(below.mean()),
    }


def write_caption_bank(captions: Sequence[str], path: Path) -> int:
    """Deduplicated (case-insensitive) training captions, one per line, first-seen order."""
    seen: set[str] = set()
    lines = []
    for c in captions:
        c = " ".join(c.split())
        if c.endswith(" ."):
            c = c[:-2]  # Flickr8k's tokenised full stop reads oddly as a suggestion
        if c and c.lower() not in seen:
            seen.add(c.lower())
            lines.append(c)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)
