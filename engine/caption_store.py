"""The caption bank's vectors, computed once when a model is shipped and stored beside it.

Without it, the first "find similar captions" on a new machine embedded the whole bank
(34,688 captions, ~10 minutes on one CPU thread) before answering. The training command
(training/ship.py) now embeds the bank with the model it ships and writes
`<checkpoint stem>.captions.npz` next to the checkpoint (`engine/assets/default_model.captions.npz`
for the shipped model); the library reads it and needs no text-encoder work for the bank.

A separate file rather than a key inside the checkpoint: the checkpoint's bytes (and so the
sha256 that keys the ONNX graph cache, engine/vse/onnx_inference.py) stay the same, and this
module needs only numpy (the ONNX route never imports torch).

Format (`np.savez`, no pickles): `meta` (JSON: format, model id, count, dims, sha256 of the
captions), `texts` (the captions, UTF-8, newline-joined), `q` (int8, the first
`quantized_dims` columns, one scale per row), `scale` (float32) and `tail` (float32, the
remaining columns: the two bank-normalisation terms of the shipped model, whose values are
not on the unit vector's scale and would swamp an int8 row scale). Scores from the int8 rows
agree with the float32 ones to ~1e-3 (docs/MODEL.md "Caption bank").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "photosearch-captions/1"
SUFFIX = ".captions.npz"
_CHUNK = 4096  # rows converted from int8 at a time: a 16 MB float32 temporary at 1024-d


def captions_sha256(captions: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(captions).encode("utf-8")).hexdigest()


def bank_file_captions(path: Path | str) -> list[str]:
    """The captions of a caption_bank.txt as the catalog imports them (stripped, non-empty)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [t for t in (line.strip() for line in lines) if t]


def store_path_for(checkpoint: Path | str) -> Path:
    """Where the stored caption vectors of `checkpoint` live: beside it, `<stem>.captions.npz`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SUFFIX)


class CaptionStore:
    """Stored caption vectors of one model; `scores(vector)` is `vectors @ vector`."""

    def __init__(
        self, meta: dict, captions: list[str], q: np.ndarray, scale: np.ndarray, tail: np.ndarray
    ) -> None:
        self.meta = meta
        self.model_id: str = str(meta["model_id"])
        self.captions = captions
        self._q = q
        self._scale = scale.astype(np.float32)
        self._tail = tail.astype(np.float32)
        self.dim = int(q.shape[1] + tail.shape[1])

    def __len__(self) -> int:
        return len(self.captions)

    @classmethod
    def load(cls, path: Path | str) -> CaptionStore:
        """Raises ValueError (or OSError) for a file that is not a readable caption store."""
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not a caption store ({meta.get('format')!r})")
            captions = bytes(z["texts"]).decode("utf-8").split("\n") if z["texts"].size else []
            q, scale, tail = z["q"], z["scale"], z["tail"]
        if not (len(captions) == len(q) == len(scale) == len(tail) == int(meta["count"])):
            raise ValueError(f"{path}: caption store parts disagree in length")
        if captions_sha256(captions) != meta.get("captions_sha256"):
            raise ValueError(f"{path}: caption texts do not match their checksum")
        if q.dtype != np.int8:
            raise ValueError(f"{path}: caption vectors are {q.dtype}, not int8")
        return cls(meta, captions, q, scale, tail)

    def vectors(self) -> np.ndarray:
        """All rows as float32 (n, dim): for tests and tools; searches use `scores`."""
        return np.concatenate(
            [self._q.astype(np.float32) * self._scale[:, None], self._tail], axis=1
        )

    def scores(self, vector: np.ndarray) -> np.ndarray:
        """Inner product of every stored caption with `vector` (dim,), float32 (n,)."""
        v = np.asarray(vector, np.float32).reshape(-1)
        k = self._q.shape[1]
        head, rest = v[:k], v[k:]
        out = np.empty(len(self.captions), np.float32)
        # numpy's own loop, not BLAS: under load OpenBLAS's threads made this 3x slower
        # (182 vs 58 ms for 34,688 rows on the busy 2-core machine; see search.matvec)
        for s in range(0, len(out), _CHUNK):
            out[s : s + _CHUNK] = np.einsum(
                "ij,j->i", self._q[s : s + _CHUNK].astype(np.float32), head
            )
        out *= self._scale
        if rest.size:
            out += np.einsum("ij,j->i", self._tail, rest)
        return out


def quantize_rows(x: np.ndarray, quantized_dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 head, per-row scale, float32 tail) of float rows: symmetric int8 per row."""
    x = np.asarray(x, np.float32)
    head, tail = x[:, :quantized_dims], x[:, quantized_dims:]
    scale = np.abs(head).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(head / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale, np.ascontiguousarray(tail, np.float32)


def write_caption_store(
    path: Path | str,
    model_id: str,
    captions: Sequence[str],
    vectors: np.ndarray,
    quantized_dims: int | None = None,
) -> dict:
    """Write the store atomically; returns its meta. `vectors` are the model's `embed_texts`
    rows for `captions`; `quantized_dims` (default: all) are stored as int8."""
    captions = [str(c) for c in captions]
    if any("\n" in c for c in captions):
        raise ValueError("captions must not contain newlines")
    vectors = np.asarray(vectors, np.float32)
    if vectors.shape[0] != len(captions):
        raise ValueError("one vector per caption")
    k = vectors.shape[1] if quantized_dims is None else int(quantized_dims)
    q, scale, tail = quantize_rows(vectors, k)
    meta = {
        "format": FORMAT,
        "model_id": model_id,
        "count": len(captions),
        "dim": int(vectors.shape[1]),
        "quantized_dims": k,
        "captions_sha256": captions_sha256(captions),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(
            tmp,
            meta=np.array(json.dumps(meta)),
            texts=np.frombuffer("\n".join(captions).encode("utf-8"), np.uint8),
            q=q,
            scale=scale,
            tail=tail,
        )
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return meta


def store_for_embedder(embedder: object) -> CaptionStore | None:
    """The stored caption vectors that belong to `embedder`, or None: no store beside its
    checkpoint, another model's, or one whose captions differ from its caption bank file."""
    path = getattr(embedder, "caption_store_path", None)
    if path is None:
        checkpoint = getattr(embedder, "checkpoint_path", None)
        if checkpoint is None:
            return None
        path = store_path_for(checkpoint)
    path = Path(path)
    if not path.is_file():
        return None
    try:
        store = CaptionStore.load(path)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("caption store %s ignored: %s", path, exc)
        return None
    model_id = getattr(embedder, "model_id", None)
    if store.model_id != model_id:
        log.info("caption store %s is for model %s, not %s: ignored", path, store.model_id, model_id)
        return None
    if store.dim != int(getattr(embedder, "dim", store.dim)):
        log.warning("caption store %s has %d-d vectors, the model %d: ignored", path, store.dim,
                    getattr(embedder, "dim", 0))
        return None
    bank = getattr(embedder, "caption_bank_path", None)
    if bank:
        try:
            same = captions_sha256(bank_file_captions(bank)) == store.meta["captions_sha256"]
        except OSError:
            same = True  # no bank file to compare with: the store carries its own texts
        if not same:
            log.info("caption store %s was made for another caption bank than %s: ignored",
                     path, bank)
            return None
    return store
