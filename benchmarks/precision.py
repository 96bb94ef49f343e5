"""Precision per tower (docs/MODEL.md "ONNX Runtime"): rsum and cosine of each candidate graph
of the shipped model against fp32 and torch, on the same prepared pixels and captions.

    python -m benchmarks.precision                   # f30k8k_val (where the choice is made)
    python -m benchmarks.precision --set f8k_extra   # reported once, never chosen on

The rule (issue 13): keep a lower precision only if its rsum stays within 2 of fp32's and its
mean cosine to fp32 is >= 0.99. Candidates: the image graph's static int8 (the shipped ranges)
and, for the text tower, dynamic int8 with per-channel or per-tensor weights, built here.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.embedder import load_embedder
from engine.vse.onnx_inference import (
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    TEXT_INPUTS,
    TEXT_OUTPUT,
    _unit_rows,
    make_session,
)

from .runtimes import captioned_set, cos_summary

log = logging.getLogger(__name__)

RSUM_MAX_LOSS = 2.0
MIN_MEAN_COSINE = 0.99


def _rsum(img: np.ndarray, txt: np.ndarray, caption_image: list[int]) -> float:
    from training.metrics import retrieval_metrics

    return round(retrieval_metrics(img @ txt.T, caption_image)["rsum"], 2)


def text_int8_graphs(fp32: Path, work: Path) -> dict[str, Path]:
    """Dynamic int8 text graphs (weights per channel / per tensor; activations at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "text.pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    out = {}
    for name, per_channel in (("int8 dynamic, per-channel", True), ("int8 dynamic, per-tensor", False)):
        path = work / f"text.{int(per_channel)}.onnx"
        quantize_dynamic(str(pre), str(path), per_channel=per_channel, weight_type=QuantType.QInt8)
        out[name] = path
    return out


def one_query_ms(run: Any, tokens: Any, n: int = 100) -> dict[str, float]:
    from .items import TEXT_QUERIES, ms_summary

    times = []
    for i in range(n):
        ids, mask = tokens([f"{TEXT_QUERIES[i % len(TEXT_QUERIES)]} {i}"])
        started = time.perf_counter()
        run(ids, mask)
        times.append(time.perf_counter() - started)
    return ms_summary(times)


def evaluate(name: str) -> dict[str, Any]:
    shipped = load_embedder(None)
    if getattr(shipped, "runtime", "torch") != "onnx":
        raise SystemExit("the shipped model did not load on ONNX Runtime")
    torch_emb = load_embedder(None, runtime="torch")
    images, captions, caption_image = captioned_set(name)
    pixels = []
    for p in images:
        with Image.open(p) as im:
            pixels.append(shipped.prepare_image(im.convert("RGB")))
    x = np.stack(pixels).astype(np.float32)
    folder, banks, threads = shipped.folder, shipped.banks, shipped.image_threads

    def image_units(session: Any) -> np.ndarray:
        return np.concatenate([_unit_rows(session.run([IMAGE_OUTPUT], {IMAGE_INPUT: x[s : s + 32]})[0])
                               for s in range(0, len(x), 32)])

    def text_units(session: Any) -> np.ndarray:
        out = []
        for s in range(0, len(captions), 128):
            ids, mask = shipped._tokens(captions[s : s + 128])
            out.append(_unit_rows(session.run([TEXT_OUTPUT], {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0]))
        return np.concatenate(out)

    d = shipped.embed_dim
    torch_img = np.concatenate([torch_emb.embed_prepared(x[s : s + 32]) for s in range(0, len(x), 32)])
    torch_txt = np.concatenate([torch_emb.embed_texts(captions[s : s + 128]) for s in range(0, len(captions), 128)])
    img = {"fp32": image_units(make_session(folder / "image.fp32.onnx", threads))}
    if (folder / "image.int8.onnx").exists():
        img["int8 static QDQ (shipped ranges)"] = image_units(make_session(folder / "image.int8.onnx", threads))
    text_fp32_session = make_session(folder / "text.fp32.onnx", shipped.text_threads)
    txt = {"fp32": text_units(text_fp32_session)}
    latency = {"fp32": one_query_ms(
        lambda i, m: text_fp32_session.run([TEXT_OUTPUT], {TEXT_INPUTS[0]: i, TEXT_INPUTS[1]: m}), shipped._tokens)}
    with tempfile.TemporaryDirectory(prefix="photosearch-precision-") as tmp:
        for label, path in text_int8_graphs(folder / "text.fp32.onnx", Path(tmp)).items():
            session = make_session(path, shipped.text_threads)
            txt[label] = text_units(session)
            latency[label] = one_query_ms(
                lambda i, m, s=session: s.run([TEXT_OUTPUT], {TEXT_INPUTS[0]: i, TEXT_INPUTS[1]: m}),
                shipped._tokens)
    ref_img, ref_txt = banks.image_vectors(img["fp32"]), banks.text_vectors(txt["fp32"])
    rsum_fp32 = _rsum(ref_img, ref_txt, caption_image)

    def verdict(rsum: float, cos_mean: float) -> str:
        ok = rsum >= rsum_fp32 - RSUM_MAX_LOSS and cos_mean >= MIN_MEAN_COSINE
        return "keep" if ok else "reject"

    rows: dict[str, Any] = {"torch": {"rsum": _rsum(torch_img, torch_txt, caption_image)}}
    for label, units in img.items():
        rsum = _rsum(banks.image_vectors(units), ref_txt, caption_image)
        c = cos_summary(units, img["fp32"])
        rows[f"image {label}"] = {"rsum": rsum, "cosine_to_fp32": c,
                                  "cosine_to_torch": cos_summary(units, torch_img[:, :d]),
                                  "verdict": verdict(rsum, c["mean"])}
    for label, units in txt.items():
        rsum = _rsum(ref_img, banks.text_vectors(units), caption_image)
        c = cos_summary(units, txt["fp32"])
        rows[f"text {label}"] = {"rsum": rsum, "cosine_to_fp32": c,
                                 "cosine_to_torch": cos_summary(units, torch_txt[:, :d]),
                                 "one_query_ms": latency[label], "verdict": verdict(rsum, c["mean"])}
    shipped_img = img.get("int8 static QDQ (shipped ranges)", img["fp32"])
    rows["shipped (image " + shipped.precision["image"] + ", text " + shipped.precision["text"] + ")"] = {
        "rsum": _rsum(banks.image_vectors(shipped_img), ref_txt, caption_image)}
    return {"set": name, "images": len(images), "captions": len(captions), "model_id": shipped.model_id,
            "threads": {"image": threads, "text": shipped.text_threads}, "rsum_fp32": rsum_fp32,
            "rule": f"keep if rsum >= fp32 - {RSUM_MAX_LOSS} and mean cosine to fp32 >= {MIN_MEAN_COSINE}",
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="f30k8k_val", help="captioned set under ../shared/data")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = evaluate(args.set)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
