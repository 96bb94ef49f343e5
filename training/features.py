"""Precomputed-feature cache for frozen backbones.

With the backbone frozen, every epoch would recompute the same convolutions, which on a
2-core CPU is ~15 images/s. So we compute, once, for every image and for a few augmented
views: the last spatial grid (fp16, e.g. 1280x7x7) and the global-average-pooled mid-stage
maps (fp16), and the training loop then only runs pooling + heads.

Layout under `out_dir/<split name>/`: `grid_<view>.npy` (N, C, H, W), `stages_<view>.npy`
(N, sum(stage channels)), `images.json` (file order), `done_<view>` markers.

The backbone runs on ONNX Runtime fp32 by default (issue 13: the same fast path as the engine's
image tower), exported once per extraction and checked against torch on the first batch of real
images; when the export fails or disagrees, torch runs instead (logged). fp32 only: int8 would
move the features the heads are trained on. `runtime="torch"` opts out.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.vse.backbones import Backbone, build_backbone
from engine.vse.preprocess import eval_transform_pil, to_normalized_array

log = logging.getLogger(__name__)

VIEWS = ("orig", "flip", "crop1", "crop2")
RUNTIMES = ("onnx", "torch")
# ONNX against torch on the first batch, relative to the largest |value|: the exporter gives
# ~1e-6; the features are stored as fp16 (relative step ~5e-4), so this is far below storage.
ONNX_MAX_REL_DIFF = 1e-4

Runner = Callable[[torch.Tensor], tuple[np.ndarray, ...]]


class _GridAndStages(torch.nn.Module):
    """Backbone -> (last grid, pooled mid-stage maps concatenated): what `extract` stores."""

    def __init__(self, net: Backbone) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g, st = self.net(x)
        return g, torch.cat([s.mean(dim=(2, 3)) for s in st], dim=1)


class _Until(torch.nn.Module):
    """The activations entering the last `n` blocks, for each `n` in `depths`
    (`extract_tail_inputs`): one pass of the frozen part serves several depths."""

    def __init__(self, net: Backbone, depths: Sequence[int]) -> None:
        super().__init__()
        self.net, self.depths = net, tuple(depths)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        blocks = self.net.blocks
        deepest = max(self.depths)
        x = self.net.forward_until(x, deepest)[0]
        outs = {deepest: x}
        for i in range(len(blocks) - deepest, len(blocks) - min(self.depths)):
            x = blocks[i](x)
            outs[len(blocks) - i - 1] = x
        return tuple(outs[n] for n in self.depths)


def _torch_runner(module: torch.nn.Module) -> Runner:
    def run(x: torch.Tensor) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            out = module(x)
        return tuple(o.numpy() for o in (out if isinstance(out, tuple) else (out,)))

    return run


def _onnx_runner(module: torch.nn.Module, size: int, threads: int, work: Path) -> Runner:
    """`module` exported to ONNX (dynamic batch) and run by ONNX Runtime on the CPU."""
    from engine.vse.onnx_export import OPSET, _quiet_exporter
    from engine.vse.onnx_inference import make_session

    path = work / "backbone.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(module.eval(), (torch.zeros(2, 3, size, size),), str(path), input_names=["x"],
                          dynamic_shapes={"x": {0: batch}}, dynamo=True, opset_version=OPSET,
                          external_data=False, verbose=False)
    session = make_session(path, threads, cuda=False)

    def run(x: torch.Tensor) -> tuple[np.ndarray, ...]:
        return tuple(session.run(None, {"x": np.ascontiguousarray(x.numpy(), np.float32)}))

    return run


def rel_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Largest |a - b| over all outputs, relative to the largest |b|."""
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
    scale = max(float(np.abs(y).max()) for y in b)
    return diff / max(scale, 1e-12)


class _Runner:
    """Runs `module` on ONNX Runtime once its first batch agrees with torch, else on torch."""

    def __init__(self, module: torch.nn.Module, size: int, threads: int, runtime: str, work: Path) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: choose {' or '.join(RUNTIMES)}")
        self.module, self.size, self.threads, self.work = module, size, threads, work
        self.torch = _torch_runner(module)
        self.fast: Runner | None = None
        self.pending = runtime == "onnx"
        self.runtime = "torch"
        self.check: dict[str, float] = {}

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, ...]:
        if self.fast is not None:
            return self.fast(x)
        if not self.pending:
            return self.torch(x)
        self.pending = False
        want = self.torch(x)
        try:
            fast = _onnx_runner(self.module, self.size, self.threads, self.work)
            got = fast(x)
            diff = rel_diff(got, want)
        except Exception as exc:  # noqa: BLE001 - any export/runtime failure: torch does it
            log.warning("backbone features on torch: ONNX export failed (%s)", exc)
            return want
        self.check = {"max_rel_diff_vs_torch": diff, "images": len(x)}
        if diff <= ONNX_MAX_REL_DIFF:
            self.fast, self.runtime = fast, "onnx"
            log.info("backbone features on ONNX Runtime (first batch within %.1g of torch)", diff)
        else:
            log.warning("backbone features on torch: ONNX differs by %.2g (> %.0e)", diff, ONNX_MAX_REL_DIFF)
        return want  # the first batch is stored as torch computed it


def _view_image(image: Image.Image, view: str, index: int, size: int) -> Image.Image:
    """Deterministic augmented views so the cache is reproducible."""
    base = eval_transform_pil(image, size)
    if view == "orig":
        return base
    if view == "flip":
        return base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if view.startswith("crop"):
        # a seeded random-resized-crop (scale 0.5-1, aspect 3/4-4/3), flipped half the time
        rng = np.random.default_rng(zlib.crc32(f"{view}:{index}".encode()))
        w, h = image.size
        area = w * h * rng.uniform(0.5, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw = int(round(min(w, np.sqrt(area * ratio))))
        ch = int(round(min(h, np.sqrt(area / ratio))))
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        crop = image.convert("RGB").crop((x0, y0, x0 + cw, y0 + ch))
        crop = crop.resize((size, size), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return crop
    raise ValueError(f"unknown view {view}")


def _view_batches(
    image_paths: Sequence[Path], view: str, size: int, mean: tuple, std: tuple, batch_size: int,
    label: str,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start index, normalised batch) of one view of every image, logging the rate."""
    n = len(image_paths)
    t0 = time.time()
    for start in range(0, n, batch_size):
        arrs = []
        for i in range(start, min(n, start + batch_size)):
            with Image.open(image_paths[i]) as im:
                arrs.append(to_normalized_array(_view_image(im, view, i, size), mean, std))
        yield start, torch.from_numpy(np.stack(arrs))
        done = start + len(arrs)
        log.info("%s %d/%d %.1f img/s", label, done, n, done / (time.time() - t0))


@torch.no_grad()
def extract(
    backbone_name: str,
    image_paths: Sequence[Path],
    out_dir: Path,
    views: Sequence[str] = ("orig",),
    batch_size: int = 32,
    size: int = 224,
    threads: int = 2,
    runtime: str = "onnx",
) -> dict[str, object]:
    """Compute and store grid + pooled-stage features for each view (skips finished views).
    Returns which runtime computed them, with its check against torch."""
    torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "images.json").write_text(json.dumps([p.name for p in image_paths]))
    net = build_backbone(backbone_name).eval()
    n = len(image_paths)
    with torch.no_grad():
        g, st = net(torch.zeros(1, 3, size, size))
    grid_shape = (n, *g.shape[1:])
    stage_dim = sum(s.shape[1] for s in st)
    tmp = tempfile.TemporaryDirectory(prefix="photosearch-features-")
    runner = _Runner(_GridAndStages(net), size, threads, runtime, Path(tmp.name))
    for view in views:
        if (out_dir / f"done_{view}").exists():
            log.info("%s %s already cached", out_dir, view)
            continue
        grid = np.lib.format.open_memmap(
            out_dir / f"grid_{view}.npy", mode="w+", dtype=np.float16, shape=grid_shape
        )
        stages = np.lib.format.open_memmap(
            out_dir / f"stages_{view}.npy", mode="w+", dtype=np.float16, shape=(n, stage_dim)
        )
        t0 = time.time()
        label = f"{out_dir.name} {view}"
        for start, x in _view_batches(image_paths, view, size, net.mean, net.std, batch_size, label):
            g, st = runner(x)
            grid[start : start + len(x)] = g.astype(np.float16)
            stages[start : start + len(x)] = st.astype(np.float16)
        grid.flush()
        stages.flush()
        del grid, stages
        (out_dir / f"done_{view}").write_text(json.dumps(
            {"seconds": time.time() - t0, "runtime": runner.runtime, "check": runner.check}))
    return {"runtime": runner.runtime, "check": runner.check}


@torch.no_grad()
def extract_tail_inputs(
    backbone_name: str,
    image_paths: Sequence[Path],
    out_dir: Path,
    tuned_blocks: int | Sequence[int],
    views: Sequence[str] = ("orig",),
    batch_size: int = 32,
    size: int = 224,
    threads: int = 2,
    runtime: str = "onnx",
) -> dict[str, object]:
    """For training the last `tuned_blocks` backbone blocks on cached inputs: store the
    activation entering them, `pre<k>_<view>.npy` (N, C, 7, 7) fp16. The frozen mid-stage maps
    come from `stages_<view>.npy` (see `extract`). Several depths (`tuned_blocks=[1, 2]`) are
    stored from one pass over the images, each exactly as a pass for that depth alone would."""
    depths = sorted({tuned_blocks} if isinstance(tuned_blocks, int) else set(tuned_blocks))
    if not depths or min(depths) < 1:
        raise ValueError(f"tuned_blocks {tuned_blocks!r}: need depths >= 1")
    torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "images.json").write_text(json.dumps([p.name for p in image_paths]))
    net = build_backbone(backbone_name).eval()
    n = len(image_paths)
    tmp = tempfile.TemporaryDirectory(prefix="photosearch-features-")
    runner: _Runner | None = None
    for view in views:
        todo = [k for k in depths if not (out_dir / f"done_pre{k}_{view}").exists()]
        for k in sorted(set(depths) - set(todo)):
            log.info("%s pre%d_%s already cached", out_dir, k, view)
        if not todo:
            continue
        if runner is None or tuple(todo) != runner.module.depths:  # type: ignore[union-attr]
            runner = _Runner(_Until(net, todo), size, threads, runtime, Path(tmp.name))
        with torch.no_grad():
            shapes = [a.shape for a in runner.module(torch.zeros(1, 3, size, size))]
        pres = [
            np.lib.format.open_memmap(out_dir / f"pre{k}_{view}.npy", mode="w+", dtype=np.float16,
                                      shape=(n, *shape[1:]))
            for k, shape in zip(todo, shapes, strict=True)
        ]
        t0 = time.time()
        label = f"{out_dir.name} {'+'.join(f'pre{k}' for k in todo)}_{view}"
        for start, x in _view_batches(image_paths, view, size, net.mean, net.std, batch_size, label):
            for pre, a in zip(pres, runner(x), strict=True):
                pre[start : start + len(x)] = a.astype(np.float16)
        for k, pre in zip(todo, pres, strict=True):
            pre.flush()
            (out_dir / f"done_pre{k}_{view}").write_text(json.dumps(
                {"seconds": time.time() - t0, "runtime": runner.runtime, "check": runner.check}))
        del pres
    if runner is None:  # everything was cached already
        return {"runtime": "torch", "check": {}}
    return {"runtime": runner.runtime, "check": runner.check}


def cache_features(
    backbone_name: str, image_paths: Sequence[Path], out_dir: Path, views: Sequence[str],
    tuned_blocks: int = 0, size: int = 224, threads: int = 2, runtime: str = "onnx",
) -> None:
    """What cached training needs for one split: grid and stage features of each view, plus the
    activations entering the tuned blocks when there are any."""
    extract(backbone_name, image_paths, out_dir, views, size=size, threads=threads, runtime=runtime)
    if tuned_blocks:
        extract_tail_inputs(backbone_name, image_paths, out_dir, tuned_blocks, views, size=size,
                            threads=threads, runtime=runtime)


def early_stage_channels(backbone: Backbone, tuned_blocks: int) -> int:
    """Width of the pooled stage maps tapped before the last `tuned_blocks` blocks: the part of
    `stages_<view>.npy` that stays valid when those blocks are trained."""
    first = len(backbone.blocks) - tuned_blocks
    return sum(c for t, c in zip(backbone._taps, backbone.stage_channels, strict=True) if t < first)


def load_cached(out_dir: Path, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map a finished view: (grid, stages)."""
    if not (out_dir / f"done_{view}").exists():
        raise FileNotFoundError(f"view {view} not cached in {out_dir}")
    return (
        np.load(out_dir / f"grid_{view}.npy", mmap_mode="r"),
        np.load(out_dir / f"stages_{view}.npy", mmap_mode="r"),
    )


def load_tail_inputs(out_dir: Path, view: str, tuned_blocks: int) -> np.ndarray:
    """Memory-map the cached activations entering the last `tuned_blocks` blocks."""
    tag = f"pre{tuned_blocks}_{view}"
    if not (out_dir / f"done_{tag}").exists():
        raise FileNotFoundError(f"{tag} not cached in {out_dir} (training.features.extract_tail_inputs)")
    return np.load(out_dir / f"{tag}.npy", mmap_mode="r")
