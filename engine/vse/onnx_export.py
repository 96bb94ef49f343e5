"""Checkpoint -> ONNX graphs for engine/vse/onnx_inference.py (the only part that needs torch).

`build_runtime_cache` exports both towers of a checkpoint, checks each graph against torch on
fixed inputs, builds the int8 image graph when calibration ranges for that exact fp32 graph
exist, and writes the cache folder described in onnx_inference.py.

int8 needs activation ranges measured on real photos, which users' machines do not have. The
ranges of the shipped model's image graph (measured on 100 f30k8k_val photos) are shipped
instead: 23 KB of JSON (settings.IMAGE_INT8_CALIBRATION), where the int8 graph itself would be
9 MB of derived weights in the repository for every retrain. They apply only to the fp32 graph
they were measured on (its sha256 is recorded; the export is deterministic for a given torch
and onnxscript), and the int8 graph built from them must still agree with fp32 on generated
images (`int8_self_check`, which catches CPUs whose int8 kernels saturate) or fp32 is used.

    python -m engine.vse.onnx_export --photos ../shared/data/f30k8k_val/images

re-measures the ranges for the shipped checkpoint (run it after shipping a new model).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter
from torch import nn

from engine import settings
from engine.vse.checkpoint import load_checkpoint
from engine.vse.model import VSEModel
from engine.vse.onnx_inference import (
    BANKS_FILE,
    FORMAT,
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    META_MODEL_ID,
    META_PRECISION,
    META_TOWER,
    SIDECAR,
    TEXT_INPUTS,
    TEXT_OUTPUT,
    OnnxUnsupported,
    file_sha256,
    graph_file,
    make_session,
    minilm_tokenizer_file,
    onnxruntime_version,
)
from engine.vse.preprocess import prepare_eval
from engine.vse.text_encoders import MiniLMTextEncoder

log = logging.getLogger(__name__)

OPSET = 18
CALIBRATION_FORMAT = "photosearch-int8-calibration/1"
# Chosen on f30k8k_val (docs/MODEL.md, "ONNX Runtime (inference)"): percentile ranges kept the worst
# photo's cosine to fp32 at 0.94 where min/max gave 0.80; U8S8 is what x86 runs fast (S8S8
# was no faster than fp32); 7-bit weights (reduce_range) fell to a mean cosine of 0.986.
QUANT_SETTINGS = {
    "format": "QDQ",
    "calibrate_method": "Percentile",
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,
}
# int8 against fp32 on `synthetic_pixels`: 0.995 here with the shipped ranges, 0.980 with
# 7-bit weights (which lose 2.3 rsum on val), so below this the int8 kernels are off.
SELF_CHECK_MIN_COSINE = 0.985
# fp32 graph against torch, unit vectors: the exporter gives ~2e-7
PARITY_MAX_ABS = 1e-4
PARITY_TEXTS = ("a dog running on the beach", "two children", "")


class OnnxExportError(Exception):
    """An exported graph disagrees with torch, or export itself failed."""


# ------------------------------------------------------------------ export


class _ImageTower(nn.Module):
    def __init__(self, model: VSEModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.embed_images(pixels)


class _TextTower(nn.Module):
    """MiniLMTextEncoder.forward after tokenisation, normalised as VSEModel.embed_texts."""

    def __init__(self, encoder: MiniLMTextEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        n = encoder.bert.config.num_hidden_layers
        self.start = min(encoder.first_tuned, n - encoder.pool_layers + 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder.frozen_hidden(input_ids, attention_mask, self.start)
        return F.normalize(self.encoder.forward_hidden(hidden, attention_mask, self.start), dim=-1)


def _from_onnx_tooling(record: logging.LogRecord) -> bool:
    # onnxruntime.quantization logs through the root logger, a line per rescaled weight; the
    # exporter's passes log a line per deduplicated initializer
    if record.name == "root":
        return "onnxruntime" in record.pathname
    return record.levelno < logging.WARNING and record.name.startswith(("onnx_ir", "onnxscript", "torch.onnx"))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter prints progress to stdout, where CLI commands write their JSON.
    out = io.StringIO()
    root = logging.getLogger()
    mute = logging.Filter()
    mute.filter = lambda record: not _from_onnx_tooling(record)  # type: ignore[method-assign]
    handlers = list(root.handlers)
    for handler in handlers:
        handler.addFilter(mute)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out):
            warnings.simplefilter("ignore")
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(mute)
    if out.getvalue():
        log.debug("torch.onnx: %s", out.getvalue().strip())


def stamp_graph(path: Path, model_id: str, tower: str, precision: str) -> None:
    """Record which model, tower and precision a graph is (checked by onnx_inference)."""
    import onnx

    proto = onnx.load(str(path))
    # The exporter annotates every node with its Python stack trace (absolute paths, line
    # numbers): dropped, so that a graph's bytes, and the sha256 its int8 ranges are keyed
    # by, depend on the computation only, not on where or from which lines it was exported.
    for node in proto.graph.node:
        del node.metadata_props[:]
    del proto.metadata_props[:]
    for key, value in ((META_MODEL_ID, model_id), (META_TOWER, tower), (META_PRECISION, precision)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def export_image_graph(model: VSEModel, path: Path, model_id: str) -> None:
    """Prepared pixels (N, 3, S, S) -> unit image embeddings (N, D), fp32."""
    size = model.config.image_size
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(
            _ImageTower(model).eval(), (example,), str(path), input_names=[IMAGE_INPUT],
            output_names=[IMAGE_OUTPUT], dynamic_shapes={"pixels": {0: batch}}, dynamo=True,
            opset_version=OPSET, external_data=False, verbose=False,
        )
    stamp_graph(path, model_id, "image", "fp32")


def export_text_graph(model: VSEModel, path: Path, model_id: str) -> None:
    """MiniLM token ids and mask (N, L) int64 -> unit text embeddings (N, D), fp32."""
    if not isinstance(model.txt, MiniLMTextEncoder):
        raise OnnxUnsupported(f"the {model.config.text_encoder} text encoder runs on torch only")
    tok = model.txt.tokenize(list(PARITY_TEXTS[:2]))
    batch = torch.export.Dim("batch", min=1, max=65536)
    length = torch.export.Dim("length", min=1, max=512)
    shapes = {"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}}
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(
            _TextTower(model.txt).eval(), (tok["input_ids"], tok["attention_mask"]), str(path),
            input_names=list(TEXT_INPUTS), output_names=[TEXT_OUTPUT], dynamic_shapes=shapes,
            dynamo=True, opset_version=OPSET, external_data=False, verbose=False,
        )
    stamp_graph(path, model_id, "text", "fp32")


# ------------------------------------------------------------------ checks


def synthetic_pixels(
    n: int, size: int, mean: Sequence[float], std: Sequence[float], seed: int = 0
) -> np.ndarray:
    """Generated photo-like inputs (smooth colour fields, shapes, edges, grain), prepared as
    `prepare_image` would: activations in the ranges real photos reach, without photos."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        field = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        im = Image.fromarray(field).resize((size, size), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            x0, y0 = (int(v) for v in rng.integers(0, size, 2))
            x1, y1 = x0 + int(rng.integers(20, 120)), y0 + int(rng.integers(20, 120))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([x0, y0, x1, y1], fill=colour)
        im = im.filter(ImageFilter.GaussianBlur(1.0))
        grain = np.asarray(im, np.float32) + rng.normal(0, 8, (size, size, 3))
        im = Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8))
        images.append(prepare_eval(im, tuple(mean), tuple(std), size))
    return np.stack(images).astype(np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def check_image_graph(model: VSEModel, path: Path) -> dict[str, float]:
    bb = model.img.backbone
    x = synthetic_pixels(3, model.config.image_size, bb.mean, bb.std, seed=1)
    with torch.no_grad():
        want = model.embed_images(torch.from_numpy(x)).numpy()
    got = make_session(path, 1).run([IMAGE_OUTPUT], {IMAGE_INPUT: x})[0]
    diff = float(np.abs(got - want).max())
    if not diff <= PARITY_MAX_ABS:
        raise OnnxExportError(f"the exported image graph differs from torch by {diff:.2g}")
    return {"max_abs_diff_vs_torch": diff}


def check_text_graph(model: VSEModel, path: Path) -> dict[str, float]:
    from engine.vse.onnx_inference import MiniLMTokens

    texts = list(PARITY_TEXTS)
    with torch.no_grad():
        want = model.embed_texts(texts).numpy()
    ids, mask = MiniLMTokens(minilm_tokenizer_file(), model.txt.max_length)(texts)
    got = make_session(path, 1).run([TEXT_OUTPUT], {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0]
    diff = float(np.abs(got - want).max())
    if not diff <= PARITY_MAX_ABS:
        raise OnnxExportError(f"the exported text graph differs from torch by {diff:.2g}")
    return {"max_abs_diff_vs_torch": diff}


def int8_self_check(
    fp32_path: Path, int8_path: Path, size: int, mean: Sequence[float], std: Sequence[float]
) -> dict[str, float]:
    """Cosine of int8 to fp32 embeddings on 16 generated images, on this machine's kernels."""
    x = synthetic_pixels(16, size, mean, std)
    ref = make_session(fp32_path, 1).run([IMAGE_OUTPUT], {IMAGE_INPUT: x})[0]
    got = make_session(int8_path, 1).run([IMAGE_OUTPUT], {IMAGE_INPUT: x})[0]
    cos = _cosines(got, ref)
    return {"synthetic_cos_mean": round(float(cos.mean()), 5), "synthetic_cos_min": round(float(cos.min()), 5)}


# ------------------------------------------------------------------ int8


def _quant_args() -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    q = QUANT_SETTINGS
    return {
        "quant_format": getattr(QuantFormat, q["format"]),
        "calibrate_method": getattr(CalibrationMethod, q["calibrate_method"]),
        "activation_type": getattr(QuantType, q["activation_type"]),
        "weight_type": getattr(QuantType, q["weight_type"]),
        "per_channel": q["per_channel"],
        "reduce_range": q["reduce_range"],
    }


def _preprocessed(fp32_path: Path, work: Path) -> Path:
    """The graph quantisation starts from (batch norms folded into convolutions)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = work / "pre.onnx"
    # symbolic shape inference fails on the exporter's Expand of the dynamic batch
    with _quiet_exporter():
        quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
    return out


class _PixelReader:
    """onnxruntime CalibrationDataReader over prepared pixel batches."""

    def __init__(self, pixels: np.ndarray, batch: int = 10) -> None:
        self.pixels, self.batch, self.pos = pixels, batch, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.pixels):
            return None
        x = np.ascontiguousarray(self.pixels[self.pos : self.pos + self.batch])
        self.pos += self.batch
        return {IMAGE_INPUT: x}

    def rewind(self) -> None:
        self.pos = 0

    def __len__(self) -> int:
        return len(self.pixels)


def measure_ranges(fp32_path: Path, pixels: np.ndarray) -> dict[str, Any]:
    """Activation ranges of the image graph on calibration pixels (onnxruntime's cache JSON)."""
    from onnxruntime.quantization import quantize_static

    with tempfile.TemporaryDirectory(prefix="photosearch-calib-") as tmp:
        work = Path(tmp)
        cache = work / "ranges.json"
        with _quiet_exporter():
            quantize_static(
                str(_preprocessed(fp32_path, work)), str(work / "q.onnx"), _PixelReader(pixels),
                calibration_cache_path=str(cache), **_quant_args(),
            )
        return json.loads(cache.read_text())


def quantize_image_graph(fp32_path: Path, out_path: Path, ranges: dict[str, Any], model_id: str) -> None:
    """int8 static QDQ image graph from the fp32 one and its measured ranges."""
    import onnx
    from onnxruntime.quantization import quantize_static

    with tempfile.TemporaryDirectory(prefix="photosearch-int8-") as tmp:
        work = Path(tmp)
        pre = _preprocessed(fp32_path, work)
        graph = onnx.load(str(pre), load_external_data=False).graph
        names = {v for n in graph.node for v in n.output} | {i.name for i in graph.input}
        missing = set(ranges.get("data", {})) - names
        if missing:
            raise OnnxExportError(f"{len(missing)} calibrated tensors are not in the graph (e.g. {min(missing)})")
        cache = work / "ranges.json"
        cache.write_text(json.dumps(ranges))
        with _quiet_exporter():
            quantize_static(str(pre), str(out_path), None, calibration_cache_path=str(cache), **_quant_args())
    stamp_graph(out_path, model_id, "image", "int8")


def read_calibration(path: Path, model_id: str, fp32_sha256: str) -> dict[str, Any] | None:
    """The ranges in a calibration file when they were measured on exactly this fp32 graph."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("int8 calibration %s is not readable (%s): ignored", path, exc)
        return None
    if record.get("format") != CALIBRATION_FORMAT or record.get("model_id") != model_id:
        return None
    if record.get("fp32_graph_sha256") != fp32_sha256:
        log.warning(
            "int8 calibration %s was measured on another export of %s (torch or onnxscript "
            "differ from the pinned ones?): the image graph stays fp32", path, model_id,
        )
        return None
    if record.get("settings") != QUANT_SETTINGS:
        log.warning("int8 calibration %s used other quantisation settings: ignored", path)
        return None
    return record["ranges"]


def prepare_photos(paths: Sequence[Path], model: VSEModel) -> np.ndarray:
    bb = model.img.backbone
    arrays = []
    for p in paths:
        with Image.open(p) as im:
            arrays.append(prepare_eval(im, bb.mean, bb.std, model.config.image_size))
    return np.stack(arrays).astype(np.float32)


def calibration_record(
    fp32_path: Path, model_id: str, pixels: np.ndarray, photos: dict[str, Any]
) -> dict[str, Any]:
    """Measured int8 ranges of an fp32 image graph, with what they apply to (`read_calibration`)."""
    started = time.perf_counter()
    ranges = measure_ranges(fp32_path, pixels)
    return {
        "format": CALIBRATION_FORMAT,
        "model_id": model_id,
        "fp32_graph_sha256": file_sha256(fp32_path),
        "settings": QUANT_SETTINGS,
        "photos": photos,
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime_version()},
        "seconds": round(time.perf_counter() - started, 1),
        "ranges": ranges,
    }


def write_image_calibration(checkpoint: Path, photos: Sequence[Path], out: Path) -> dict[str, Any]:
    """Measure int8 ranges for the checkpoint's image graph on `photos` and write them to `out`
    (atomically): what `build_runtime_cache` needs to build the int8 graph elsewhere."""
    model, ckpt = load_checkpoint(checkpoint)
    model_id = ckpt["model_id"]
    described = {
        "count": len(photos),
        "folder": Path(photos[0]).parent.parent.name if photos else None,
        "first": Path(photos[0]).name if photos else None,
        "last": Path(photos[-1]).name if photos else None,
    }
    with tempfile.TemporaryDirectory(prefix="photosearch-calib-") as tmp:
        fp32 = Path(tmp) / graph_file("image", "fp32")
        export_image_graph(model, fp32, model_id)
        record = calibration_record(fp32, model_id, prepare_photos(photos, model), described)
    _atomic_write_text(out, json.dumps(record, sort_keys=True) + "\n")
    return record


# ------------------------------------------------------------------ the cache folder


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shipped asset must be readable by all
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def calibration_candidates(folder: Path, explicit: Path | None) -> list[Path]:
    """Where int8 ranges for a model may be: given, measured for it locally, or shipped."""
    paths = [explicit] if explicit is not None else []
    return [*paths, folder / "image.int8-calibration.json", settings.IMAGE_INT8_CALIBRATION]


def build_int8_image_graph(
    fp32_path: Path,
    out_path: Path,
    model_id: str,
    candidates: Sequence[Path],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, Any] | None:
    """Write the int8 image graph from the first calibration made for exactly this fp32 graph
    and return its check, or None (logged) when there is none or int8 does not hold here."""
    fp32_sha = file_sha256(fp32_path)
    for candidate in candidates:
        ranges = read_calibration(candidate, model_id, fp32_sha)
        if ranges is None:
            continue
        try:
            quantize_image_graph(fp32_path, out_path, ranges, model_id)
        except OnnxExportError as exc:
            log.warning("int8 image graph not built from %s: %s", candidate, exc)
            return None
        check = int8_self_check(fp32_path, out_path, size, mean, std)
        if check["synthetic_cos_mean"] < SELF_CHECK_MIN_COSINE:
            log.warning(
                "the int8 image graph disagrees with fp32 on this machine (cosine %.4f < %.3f): "
                "using fp32", check["synthetic_cos_mean"], SELF_CHECK_MIN_COSINE,
            )
            out_path.unlink(missing_ok=True)
            return None
        return {**check, "calibration": str(candidate)}
    return None


def build_runtime_cache(
    checkpoint: Path,
    root: Path,
    checkpoint_sha256: str | None = None,
    calibration: Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Export, check and write the ONNX cache folder of `checkpoint` under `root`.

    ModelLoadError when the checkpoint cannot be read; OnnxUnsupported for models ONNX does not
    cover; OnnxExportError when a graph disagrees with torch."""
    started = time.perf_counter()
    checkpoint = Path(checkpoint)
    checkpoint_sha256 = checkpoint_sha256 or file_sha256(checkpoint)
    model, ckpt = load_checkpoint(checkpoint)
    model_id = ckpt["model_id"]
    if not isinstance(model.txt, MiniLMTextEncoder):
        raise OnnxUnsupported(f"the {model.config.text_encoder} text encoder runs on torch only")
    log.info("building the ONNX Runtime graphs of model %s (once per model)", model_id)
    folder = root / model_id
    folder.mkdir(parents=True, exist_ok=True)
    bb = model.img.backbone
    with tempfile.TemporaryDirectory(dir=root, prefix=f".build-{model_id}-") as tmp:
        work = Path(tmp)
        graphs: dict[str, dict[str, Any]] = {}
        image_fp32 = work / graph_file("image", "fp32")
        export_image_graph(model, image_fp32, model_id)
        graphs["image.fp32"] = {"check": check_image_graph(model, image_fp32)}
        text_fp32 = work / graph_file("text", "fp32")
        export_text_graph(model, text_fp32, model_id)
        graphs["text.fp32"] = {"check": check_text_graph(model, text_fp32)}
        int8 = build_int8_image_graph(
            image_fp32, work / graph_file("image", "int8"), model_id,
            calibration_candidates(folder, calibration), model.config.image_size, bb.mean, bb.std,
        )
        if int8 is not None:
            graphs["image.int8"] = {"check": int8}
        banks = None
        if model.config.bank_size > 0:
            np.savez(
                work / BANKS_FILE,
                bank_text=model.bank_text.detach().cpu().numpy().astype(np.float16),
                bank_images=model.bank_images.detach().cpu().numpy().astype(np.float16),
            )
            banks = {"file": BANKS_FILE, "sha256": file_sha256(work / BANKS_FILE),
                     "beta": float(model.config.bank_beta), "size": int(model.config.bank_size)}
        for key, rec in graphs.items():
            tower, precision = key.split(".")
            rec.update(file=graph_file(tower, precision), tower=tower, precision=precision,
                       sha256=file_sha256(work / graph_file(tower, precision)))
        meta = {
            "format": FORMAT,
            "model_id": model_id,
            "checkpoint_sha256": checkpoint_sha256,
            "checkpoint": str(checkpoint.resolve()),
            "onnxruntime": onnxruntime_version(),
            "graphs": graphs,
            "banks": banks,
            "embed_dim": int(model.config.embed_dim),
            "joint_dim": int(model.joint_dim),
            "image": {"mean": list(bb.mean), "std": list(bb.std), "size": int(model.config.image_size)},
            "text": {"tokenizer_sha256": file_sha256(minilm_tokenizer_file()),
                     "max_length": int(model.txt.max_length)},
            "calibration": ckpt.get("calibration") or {},
            "metrics": ckpt.get("metrics") or {},
            "built": {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__,
                      "seconds": round(time.perf_counter() - started, 1)},
        }
        # the old sidecar goes first, so no reader pairs it with the new files
        (folder / SIDECAR).unlink(missing_ok=True)
        keep = {rec["file"] for rec in graphs.values()} | ({BANKS_FILE} if banks else set())
        for name in keep:
            os.replace(work / name, folder / name)
        for stale in (graph_file("image", "int8"), BANKS_FILE):
            if stale not in keep:
                (folder / stale).unlink(missing_ok=True)
        _atomic_write_text(folder / SIDECAR, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    log.info("ONNX Runtime graphs of %s ready in %.0f s: %s", model_id,
             time.perf_counter() - started, ", ".join(sorted(graphs)))
    return folder, meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="measure the int8 activation ranges of a model's image graph")
    ap.add_argument("--photos", type=Path, required=True, help="folder of calibration photos (e.g. f30k8k_val/images)")
    ap.add_argument("--count", type=int, default=100, help="how many photos, in name order (default 100)")
    ap.add_argument("--checkpoint", type=Path, default=settings.DEFAULT_CHECKPOINT)
    ap.add_argument("--out", type=Path, default=None,
                    help="default: the shipped asset for the default checkpoint, else next to its cache")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.count]
    if not photos:
        ap.error(f"no photos in {args.photos}")
    out = args.out
    if out is None:
        if args.checkpoint.resolve() == settings.DEFAULT_CHECKPOINT.resolve():
            out = settings.IMAGE_INT8_CALIBRATION
        else:
            _, ckpt = load_checkpoint(args.checkpoint)
            out = settings.onnx_cache_dir() / ckpt["model_id"] / "image.int8-calibration.json"
    record = write_image_calibration(args.checkpoint, photos, out)
    print(json.dumps({"out": str(out), "model_id": record["model_id"], "photos": record["photos"],
                      "tensors": len(record["ranges"].get("data", {})), "seconds": record["seconds"]}))
    return 0


if __name__ == "__main__":
    # through the package, not __main__: the exported graph names the module of its wrappers
    from engine.vse.onnx_export import main as _main

    raise SystemExit(_main())
