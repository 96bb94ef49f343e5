"""The shipped model's indexing rate against v1's (issue 12: at least 0.8x in the same run).

v1 (`vse-34fa7a3233a57baa`, session 3's shipped checkpoint) is kept under benchmarks/v1/ with
its int8 calibration, so its image graph is the same int8 kind the app builds. The two models
index the same photos on fresh libraries, alternated rep by rep, so both see the same
background load.
"""

from __future__ import annotations

import logging
import shutil
import statistics
from pathlib import Path

from engine import settings
from engine.embedder import Embedder, load_embedder

from .items import _index_once

log = logging.getLogger(__name__)

V1_DIR = Path(__file__).parent / "v1"
V1_CHECKPOINT = V1_DIR / "default_model.pt"
V1_CALIBRATION = V1_DIR / "default_model.int8-calibration.json"


def load_v1() -> Embedder | None:
    """v1 on ONNX Runtime with its int8 image graph, or None when benchmarks/v1 is absent."""
    if not V1_CHECKPOINT.is_file():
        return None
    from engine.vse.checkpoint import load_checkpoint

    _, ckpt = load_checkpoint(V1_CHECKPOINT)
    folder = settings.onnx_cache_dir() / ckpt["model_id"]
    folder.mkdir(parents=True, exist_ok=True)
    if V1_CALIBRATION.is_file():
        # where the graph builder looks for a non-default model's ranges (onnx_export.calibration_candidates)
        shutil.copyfile(V1_CALIBRATION, folder / "image.int8-calibration.json")
    return load_embedder(V1_CHECKPOINT, runtime="onnx")


def bench_versions(
    shipped: Embedder, photo_dir: Path, work: Path, reps: int, v1: Embedder | None = None
) -> dict[str, object] | None:
    """Median images/s of each model over `reps` alternated fresh-library passes, and their ratio."""
    v1 = v1 if v1 is not None else load_v1()
    if v1 is None:
        log.warning("no v1 checkpoint in %s: shipped vs v1 indexing skipped", V1_DIR)
        return None
    files = sorted(p for p in photo_dir.iterdir() if p.suffix.lower() == ".jpg")
    n = len(files)
    rates: dict[str, list[float]] = {"shipped": [], "v1": []}
    for rep in range(reps):
        for name, emb in (("shipped", shipped), ("v1", v1)):
            rates[name].append(_index_once(emb, photo_dir, work / "libs" / f"versions-{name}", n))
        log.info("versions rep %d: shipped %.2f img/s, v1 %.2f img/s", rep, rates["shipped"][-1], rates["v1"][-1])
    shipped_ips, v1_ips = (statistics.median(rates[k]) for k in ("shipped", "v1"))
    return {
        "images": n, "reps": reps,
        "shipped_model_id": shipped.model_id, "v1_model_id": v1.model_id,
        "shipped_images_per_s": round(shipped_ips, 2), "v1_images_per_s": round(v1_ips, 2),
        "ratio": round(shipped_ips / v1_ips, 3),
        "ratios_by_rep": [round(a / b, 3) for a, b in zip(rates["shipped"], rates["v1"], strict=True)],
    }
