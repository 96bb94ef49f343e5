"""Training recipes as data: which network to build and how to train it.

A `Recipe` holds everything that decides a trained model's weights apart from the data and
the machine: the network (`VSEConfig`), the optimisation (`TrainOptions`), how the frozen
parts are cached, and the bank fitted afterwards. `python main.py train` builds one from its
flags; `python main.py default-model` (`make default-model`) trains `DEFAULT_RECIPE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.vse.model import TRANSFORMER_TEXT_ENCODERS, VSEConfig
from training.train import TrainOptions

TEXT_CACHES = ("hidden", "pooled")


@dataclass(frozen=True)
class Recipe:
    model: VSEConfig = field(default_factory=VSEConfig)
    options: TrainOptions = field(default_factory=TrainOptions)
    # Frozen backbone: train on cached backbone features of `options.views` (False: decode and
    # augment every image at every step, as end-to-end training does).
    cached_features: bool = True
    # With cached features and MiniLM: "hidden" caches token states below the lowest layer
    # that trains or is pooled (those layers then run at every step); "pooled" caches each
    # pooled layer's mean-pooled output, so only the text head runs (frozen transformer only).
    text_cache: str = "hidden"
    # After training, fit bank normalisation with this many training captions and images on
    # the val set (kept only if it raises val rsum; 0 = off).
    bank_size: int = 4096

    def __post_init__(self) -> None:
        if self.text_cache not in TEXT_CACHES:
            raise ValueError(f"text_cache must be one of {TEXT_CACHES}, not {self.text_cache!r}")
        if self.text_cache == "pooled" and (
            self.model.text_encoder not in TRANSFORMER_TEXT_ENCODERS or self.model.tuned_layers > 0 or self.options.text_dropout > 0
        ):
            raise ValueError("pooled text features need a frozen MiniLM or MPNet text tower and no token dropout")
        if self.model.finetune and self.cached_features:
            raise ValueError("cached features need a frozen backbone")


# The shipped model (engine/assets/default_model.pt, v2), chosen by val rsum among the variants
# in docs/MODEL.md ("TB2"): EfficientNet-Lite2 with stage fusion and its last two blocks tuned
# (lr x0.1, from cached inputs of those blocks), frozen MiniLM with its top three layers
# pooled, residual-MLP heads, InfoNCE, batch 256 over original + flipped views, 10 epochs (lr
# halved after 5), early stop after 3 epochs without val improvement.
DEFAULT_RECIPE = Recipe(
    model=VSEConfig(
        backbone="efficientnet-lite2", pooling="gap", fusion=True, img_head="mlp",
        text_encoder="minilm", text_head="mlp", tuned_layers=0, tuned_blocks=2,
        text_pool_layers=3, embed_dim=1024, feat_dropout=0.4,
    ),
    options=TrainOptions(
        epochs=10, batch_size=256, lr=2e-4, lr_scale_pretrained=0.1, lr_decay_epoch=5,
        weight_decay=0.0, warmup_steps=0, loss="infonce", views=("orig", "flip"),
        text_dropout=0.0, early_stop=3, seed=0,
    ),
    cached_features=True,
    text_cache="pooled",
    bank_size=4096,
)
