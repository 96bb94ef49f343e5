"""Fresh process: load the model, open a library, answer one search; print JSON timings.

Run by items.bench_open so that the open time and peak RSS are those of a cold engine
process (nothing imported or cached), as when the app starts.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float | None:
    """A /proc/self/status size field (VmRSS: current, VmHWM: peak of this process)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _vm_rss_mb() -> float | None:
    return _status_mb("VmRSS")


def main() -> None:
    lib_dir, model_kind, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    t0 = time.perf_counter()
    from engine.library import Library

    from . import data
    from .model import RekeyedEmbedder, load_bench_model

    bm = load_bench_model(work, model_kind)
    model_ready = time.perf_counter()
    rss_model = _rss_mb()
    rss_now_model = _vm_rss_mb()
    emb = RekeyedEmbedder(bm.embedder, data.SYNTH_MODEL_ID)
    started = time.perf_counter()
    lib = Library.open(lib_dir, emb)
    opened = time.perf_counter()
    result = lib.search_text("a dog running on the beach", top_k=50)
    answered = time.perf_counter()
    assert result.hits, "first search found nothing"
    second = time.perf_counter()
    lib.search_text("children playing in the snow", top_k=50)
    second_s = time.perf_counter() - second
    rss_now_searched = _vm_rss_mb()
    # issue 13: searching needs no torch (the ONNX text session only)
    torch_imported = "torch" in sys.modules
    lib.close()
    print(json.dumps({
        "open_to_first_search_s": answered - started,
        "library_open_s": opened - started,
        "first_search_s": answered - opened,
        "second_search_s": second_s,
        "model_load_s": model_ready - t0,
        "rss_after_model_mb": rss_model,
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a probe
        # started by the 2+ GB benchmark runner reported the runner's peak (2313 MB).
        "peak_rss_mb": _status_mb("VmHWM") or _rss_mb(),
        "ru_maxrss_mb": _rss_mb(),
        "rss_now_after_model_mb": rss_now_model,
        "rss_now_after_search_mb": rss_now_searched,
        "torch_imported": int(torch_imported),
        "runtime": getattr(bm.embedder, "runtime", "torch"),
    }))


if __name__ == "__main__":
    main()
