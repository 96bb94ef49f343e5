"""The VSE model: image and text encoders into one L2-normalised joint space.

Inference embeds pixels (`embed_images`) and caption strings (`embed_texts`). Training feeds
other inputs as well (cached backbone features, cached MiniLM states); those, and the one
forward per step that DistributedDataParallel needs, live in training/ (training/batches.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from engine.vse.backbones import build_backbone
from engine.vse.image_encoders import ImageEncoder
from engine.vse.text_encoders import GRUTextEncoder, MiniLMTextEncoder

TEXT_ENCODERS = ("gru", "bigru", "minilm", "mpnet")
# frozen-or-tuned sentence transformers (engine/vse/text_encoders.TRANSFORMER_TEXT_MODELS)
TRANSFORMER_TEXT_ENCODERS = ("minilm", "mpnet")


@dataclass
class VSEConfig:
    """Everything needed to rebuild the network; stored as plain types in the checkpoint."""

    backbone: str = "efficientnet-lite2"
    image_size: int = 224
    finetune: bool = False
    # Train only the last N backbone blocks and its 1x1 head (EfficientNet-Lite); the rest
    # stays frozen, so training can start from cached activations (training/features.py).
    tuned_blocks: int = 0
    pooling: str = "gap"  # gap | gpo
    fusion: bool = False  # concatenate pooled mid-stage maps (hierarchical fusion)
    img_head: str = "linear"  # linear | mlp
    text_encoder: str = "minilm"  # gru | bigru | minilm | mpnet
    text_head: str = "linear"
    tuned_layers: int = 0  # MiniLM top layers trained
    text_pool_layers: int = 1  # MiniLM: mean-pool the top k layers and concatenate
    embed_dim: int = 1024
    grid_positions: int = 49
    feat_dropout: float = 0.0
    # Bank normalisation (hubness correction): with bank_size > 0 the model carries that many
    # training captions and images, embedded, and scores a pair as its cosine minus each side's
    # soft-max similarity to the other modality's bank. 0 = plain cosine.
    bank_size: int = 0
    bank_beta: float = 20.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VSEConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class VSEModel(nn.Module):
    # stored as fp16 in checkpoints (halves the file; they are rounded to fp16 when set)
    HALF_KEYS = frozenset({"bank_text", "bank_images"})

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
        if config.tuned_blocks > 0 and not hasattr(backbone, "forward_tail"):
            raise ValueError(f"tuning the last blocks is supported for EfficientNet-Lite, not {config.backbone}")
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
        elif config.text_encoder in TRANSFORMER_TEXT_ENCODERS:
            self.txt = MiniLMTextEncoder(
                config.embed_dim, config.tuned_layers, config.text_head, config.text_pool_layers,
                name=config.text_encoder,
            )
        else:
            raise ValueError(f"unknown text encoder {config.text_encoder!r}")
        self.set_backbone_trainable(config.finetune)
        if config.bank_size > 0:
            shape = (config.bank_size, config.embed_dim)
            self.register_buffer("bank_text", torch.zeros(shape))
            self.register_buffer("bank_images", torch.zeros(shape))

    @property
    def joint_dim(self) -> int:
        """Length of the vectors `image_vectors` / `text_vectors` return."""
        return self.config.embed_dim + (2 if self.config.bank_size > 0 else 0)

    def set_banks(self, text_bank: torch.Tensor, image_bank: torch.Tensor, beta: float) -> None:
        """Switch bank normalisation on with unit embeddings of training captions and images."""
        if text_bank.shape != image_bank.shape or text_bank.shape[1] != self.config.embed_dim:
            raise ValueError("text and image banks must both be (n, embed_dim)")
        if beta <= 0 or len(text_bank) == 0:
            raise ValueError("bank normalisation needs a non-empty bank and beta > 0")
        dev = next(self.parameters()).device
        self.config.bank_size, self.config.bank_beta = int(text_bank.shape[0]), float(beta)
        # rounded to fp16 now, so scores are the same before and after a checkpoint round trip
        for name, bank in (("bank_text", text_bank), ("bank_images", image_bank)):
            self.register_buffer(name, bank.detach().to(dev, torch.float16).float())

    def clear_banks(self) -> None:
        """Back to plain cosine scores."""
        self.config.bank_size = 0
        for name in ("bank_text", "bank_images"):
            if name in self._buffers:
                del self._buffers[name]

    def _bank_softmax(self, x: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        # log-mean-exp of beta * similarity, over the bank: how much x looks like "everything"
        beta = self.config.bank_beta
        sims = x.float() @ bank.T
        return (torch.logsumexp(beta * sims, dim=1) - math.log(bank.shape[0])) / beta

    def image_vectors(self, im: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings -> the vectors stored for search. With bank normalisation,
        [v, -c(v), 1] against a text's [t, 1, -d(t)] gives v.t - c(v) - d(t): images that are
        close to every caption (hubs) stop crowding the top of every result list."""
        if self.config.bank_size <= 0:
            return im
        c = self._bank_softmax(im, self.bank_text)
        return torch.cat([im.float(), -c[:, None], torch.ones_like(c)[:, None]], dim=1)

    def text_vectors(self, s: torch.Tensor) -> torch.Tensor:
        """Unit text embeddings -> query vectors (see `image_vectors`)."""
        if self.config.bank_size <= 0:
            return s
        d = self._bank_softmax(s, self.bank_images)
        return torch.cat([s.float(), torch.ones_like(d)[:, None], -d[:, None]], dim=1)

    def text_query_vectors(self, s: torch.Tensor) -> torch.Tensor:
        """Unit text embeddings -> queries for photos (see `as_text_queries`)."""
        return self.as_text_queries(self.text_vectors(s))

    def as_text_queries(self, vectors: torch.Tensor) -> torch.Tensor:
        """`text_vectors` rows as queries for photos: without the text's own bank term, which is
        the same for every photo (so ranking is unchanged) but would make a common description
        ("a dog running on grass") look like a weak match just for being common."""
        q = vectors.clone()
        q[..., self.config.embed_dim + 1 :] = 0.0
        return q

    def as_image_queries(self, vectors: torch.Tensor) -> torch.Tensor:
        """`image_vectors` rows as queries for similar photos: plain cosine, because the bank
        terms describe how an image relates to captions, not to other images."""
        q = vectors.clone()
        q[..., self.config.embed_dim :] = 0.0
        return q

    @property
    def vocab(self) -> list[str] | None:
        return list(self.txt.vocab.train_words) if isinstance(self.txt, GRUTextEncoder) else None

    def set_backbone_trainable(self, trainable: bool) -> None:
        for p in self.img.backbone.parameters():
            p.requires_grad = trainable
        if not trainable and self.config.tuned_blocks > 0:
            for p in self.img.backbone.tail_parameters(self.config.tuned_blocks):
                p.requires_grad = True

    def _tuned_backbone_key(self, key: str) -> bool:
        n = self.config.tuned_blocks
        if n <= 0:
            return False
        first = len(self.img.backbone.blocks) - n
        return key.startswith("img.backbone.head.") or any(
            key.startswith(f"img.backbone.blocks.{i}.") for i in range(first, len(self.img.backbone.blocks))
        )

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
        """Unit embeddings of normalised pixel batches (B, 3, H, W) (engine/vse/preprocess.py)."""
        return F.normalize(self.img(images), dim=-1)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit embeddings of caption strings."""
        return F.normalize(self.txt(texts), dim=-1)

    def stored_keys(self) -> list[str]:
        """State-dict keys a checkpoint must hold: everything not re-read from a package."""
        keys = []
        for k in self.state_dict():
            if k.startswith("img.backbone.") and not self.config.finetune and not self._tuned_backbone_key(k):
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
