"""The VSE model: image and text encoders into one L2-normalised joint space."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from engine.model.backbones import build_backbone
from engine.model.image import ImageEncoder
from engine.model.text import GRUTextEncoder, MiniLMTextEncoder

TEXT_ENCODERS = ("gru", "bigru", "minilm")


@dataclass
class VSEConfig:
    """Everything needed to rebuild the network; stored as plain types in the checkpoint."""

    backbone: str = "efficientnet-lite2"
    image_size: int = 224
    finetune: bool = False
    pooling: str = "gap"  # gap | gpo
    fusion: bool = False  # concatenate pooled mid-stage maps (hierarchical fusion)
    img_head: str = "linear"  # linear | mlp
    text_encoder: str = "minilm"  # gru | bigru | minilm
    text_head: str = "linear"
    tuned_layers: int = 0  # MiniLM top layers trained
    text_pool_layers: int = 1  # MiniLM: mean-pool the top k layers and concatenate
    embed_dim: int = 1024
    grid_positions: int = 49
    feat_dropout: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VSEConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class VSEModel(nn.Module):
    def __init__(
        self,
        config: VSEConfig,
        vocab: Sequence[str] | None = None,
        backbone_weights: str | None = None,
        glove: tuple | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        backbone = build_backbone(config.backbone, backbone_weights)
        self.img = ImageEncoder(
            backbone,
            config.embed_dim,
            pooling=config.pooling,
            fusion=config.fusion,
            head=config.img_head,
            grid_positions=config.grid_positions,
            feat_dropout=config.feat_dropout,
        )
        if config.text_encoder in ("gru", "bigru"):
            if vocab is None:
                raise ValueError("a GRU text encoder needs the training vocabulary")
            self.txt: nn.Module = GRUTextEncoder(
                vocab, config.embed_dim, bidirectional=config.text_encoder == "bigru", glove=glove
            )
        elif config.text_encoder == "minilm":
            self.txt = MiniLMTextEncoder(
                config.embed_dim, config.tuned_layers, config.text_head, config.text_pool_layers
            )
        else:
            raise ValueError(f"unknown text encoder {config.text_encoder!r}")
        self.set_backbone_trainable(config.finetune)

    @property
    def vocab(self) -> list[str] | None:
        return list(self.txt.vocab.train_words) if isinstance(self.txt, GRUTextEncoder) else None

    def set_backbone_trainable(self, trainable: bool) -> None:
        for p in self.img.backbone.parameters():
            p.requires_grad = trainable

    def train(self, mode: bool = True) -> VSEModel:
        super().train(mode)
        # A frozen backbone keeps its BatchNorm statistics: eval mode even during training.
        if not self.config.finetune:
            self.img.backbone.eval()
        if isinstance(self.txt, MiniLMTextEncoder):
            # frozen transformer layers: no dropout noise in what the heads learn from
            self.txt.bert.eval()
            for layer in self.txt.bert.encoder.layer[self.txt.first_tuned :]:
                layer.train(mode)
        return self

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.img(images), dim=-1)

    def embed_features(self, grid: torch.Tensor, stages: torch.Tensor | None) -> torch.Tensor:
        return F.normalize(self.img.forward_features(grid, stages), dim=-1)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.txt(texts), dim=-1)

    def forward(
        self,
        images: torch.Tensor | None = None,
        grid: torch.Tensor | None = None,
        stages: torch.Tensor | None = None,
        texts: Sequence[str] | None = None,
        hidden: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        start: int = 0,
        text_feats: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step's embeddings. A single forward (rather than separate calls) is
        what DistributedDataParallel needs to synchronise gradients. Images come either as
        pixels or as cached backbone features; texts as strings or as cached MiniLM hidden
        states after layer `start`."""
        im = self.embed_images(images) if images is not None else self.embed_features(grid, stages)
        if texts is not None:
            s = self.embed_texts(texts)
        elif text_feats is not None:
            # precomputed pooled MiniLM features (frozen transformer): only the head trains
            s = F.normalize(self.txt.proj(text_feats), dim=-1)
        else:
            assert isinstance(self.txt, MiniLMTextEncoder)
            s = F.normalize(self.txt.forward_hidden(hidden, mask, start), dim=-1)
        return im, s

    def stored_keys(self) -> list[str]:
        """State-dict keys a checkpoint must hold: everything not re-read from a package."""
        keys = []
        for k in self.state_dict():
            if k.startswith("img.backbone.") and not self.config.finetune:
                continue
            if k.startswith("txt.bert."):
                txt = self.txt
                assert isinstance(txt, MiniLMTextEncoder)
                tuned = any(
                    k.startswith(f"txt.bert.encoder.layer.{i}.")
                    for i in range(txt.first_tuned, txt.bert.config.num_hidden_layers)
                )
                if not tuned:
                    continue
            keys.append(k)
        return keys
