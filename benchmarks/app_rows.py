"""Issue 14 rows: the app's first answers.

(h) captions first answer: a fresh process loads the model, opens a small library indexed with
    it, and asks "find similar captions" for one photo; the row is the time of that first call
    (target <= 2 s after model load). With the shipped model the bank's vectors come from
    engine/assets/default_model.captions.npz; a model without them embeds the bank here.
(i) browse open at 100K: the synthetic 100K library of the query item, opened in a fresh
    process; the row is count_photos + the first page of 100 (target <= 0.5 s), with the
    library open and a page deep in the library (offset 99,900) beside it.

    python -m benchmarks.app_rows [--model auto|fake]   # these rows alone
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from . import data

log = logging.getLogger(__name__)

TARGETS = {"captions_first_answer_s": 2.0, "browse_first_page_100k_s": 0.5}
CAPTION_PHOTOS = 12
PAGE = 100
FAKE_BANK = 2000


def _probe(*args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.app_rows", "--probe", *args],
        cwd=data.REPO, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"app_rows probe failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def captions_library(embedder: object, work: Path) -> tuple[Path, str]:
    """A library of a dozen photos_sample photos indexed with `embedder` (cached per model)."""
    from engine.library import Library

    model_id = embedder.model_id  # type: ignore[attr-defined]
    lib_dir = work / "libs" / f"captions-{model_id}"
    photos = work / "caption_photos"
    if not photos.exists():
        photos.mkdir(parents=True)
        for src in data.sample_photos(data.SAMPLE_DIR)[:CAPTION_PHOTOS]:
            (photos / src.name).write_bytes(src.read_bytes())
    with Library.open(lib_dir, embedder) as lib:  # type: ignore[arg-type]
        lib.add_folder(photos)
        lib.index()
        photo = lib.browse(0, 1)[0].path
    return lib_dir, photo


def fake_bank(work: Path) -> Path:
    """The fake model's caption bank: the first FAKE_BANK shipped captions (the fake embeds
    them in Python; the row only checks that the code runs)."""
    from engine import settings

    path = work / "caption_bank_fake.txt"
    if not path.exists():
        lines = settings.CAPTION_BANK.read_text(encoding="utf-8").splitlines()[:FAKE_BANK]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _probe_captions(
    lib_dir: str, photo: str, kind: str, bank: str = "", dim: str = "0"
) -> dict[str, object]:
    from engine.library import Library

    t0 = time.perf_counter()
    if kind == "fake":
        from engine.testing import FakeEmbedder

        embedder = FakeEmbedder(dim=int(dim))
        embedder.caption_bank_path = Path(bank)  # type: ignore[attr-defined]
    else:
        from engine.embedder import load_embedder

        embedder = load_embedder()
    t1 = time.perf_counter()
    with Library.open(lib_dir, embedder, read_only=True) as lib:
        t2 = time.perf_counter()
        ready = lib.caption_bank_ready()
        t3 = time.perf_counter()
        hits = lib.similar_captions(photo, top_k=10)
        t4 = time.perf_counter()
        lib.similar_captions(photo, top_k=10)
        t5 = time.perf_counter()
    return {
        "model_load_s": round(t1 - t0, 3), "library_open_s": round(t2 - t1, 3),
        "ready_before": ready, "ready_check_s": round(t3 - t2, 3),
        # from the open library to the first answer: the ready check loads the stored bank
        "first_answer_s": round(t4 - t2, 3), "second_answer_s": round(t5 - t4, 3),
        "captions": len(hits), "top": hits[0].caption if hits else None,
        "stored_bank": lib.searcher.caption_store(embedder) is not None,
    }


def _probe_browse(lib_dir: str, dim: int) -> dict[str, object]:
    from engine.library import Library
    from engine.testing import FakeEmbedder

    # browse needs no model: a fake one stamped with the synthetic library's model id
    embedder = FakeEmbedder(dim=dim, model_id=data.SYNTH_MODEL_ID)
    t0 = time.perf_counter()
    with Library.open(lib_dir, embedder, read_only=True) as lib:
        t1 = time.perf_counter()
        count = lib.count_photos()
        t2 = time.perf_counter()
        page = lib.browse(0, PAGE)
        t3 = time.perf_counter()
        deep = lib.browse(max(0, count - PAGE), PAGE)
        t4 = time.perf_counter()
    return {
        "library_open_s": round(t1 - t0, 3), "count_s": round(t2 - t1, 4),
        "first_page_s": round(t3 - t2, 4), "first_paint_s": round(t3 - t1, 4),
        "deep_page_s": round(t4 - t3, 4), "photos": count, "page": len(page),
        "deep_page": len(deep),
    }


def bench_captions(bm: object, work: Path) -> dict[str, object]:
    kind = getattr(bm, "kind", "fake")
    embedder = bm.embedder  # type: ignore[attr-defined]
    bank = ""
    if kind == "fake":
        bank = str(fake_bank(work))
        embedder.caption_bank_path = Path(bank)
    lib_dir, photo = captions_library(embedder, work)
    out = _probe("captions", str(lib_dir), photo, "fake" if kind == "fake" else "shipped", bank,
                 str(embedder.dim))
    out["model"] = kind
    return out


def bench_browse(bm: object, work: Path, n: int) -> dict[str, object]:
    dim = int(bm.embedder.dim)  # type: ignore[attr-defined]
    lib_dir = work / "libs" / f"synth-{n}-{dim}"
    if not (lib_dir / "catalog.db").exists():
        return {"skipped": f"{lib_dir} not built (run the query item for {n} first)"}
    runs = [_probe("browse", str(lib_dir), str(dim)) for _ in range(3)]
    med = sorted(runs, key=lambda r: r["first_paint_s"])[1]  # type: ignore[arg-type, return-value]
    return {"median": med, "runs": runs}


def bench_app_rows(bm: object, work: Path, n: int) -> dict[str, object]:
    out: dict[str, object] = {"captions": bench_captions(bm, work)}
    log.info("captions first answer: %s", out["captions"])
    out["browse"] = bench_browse(bm, work, n)
    log.info("browse %d: %s", n, out["browse"])
    return out


def table_rows(results: dict[str, object]) -> list[tuple[str, str, str]]:
    app: dict = results.get("app", {})  # type: ignore[assignment]
    rows: list[tuple[str, str, str]] = []
    c = app.get("captions")
    if c:
        ok = "met" if c["first_answer_s"] <= 2.0 else "MISSED"
        src = "stored bank" if c.get("stored_bank") else "bank embedded here"
        rows.append((f"captions first answer after model load s ({src})",
                     f"{c['first_answer_s']:.3g}", f"<= 2 {ok}"))
        rows.append(("captions: model load / library open s",
                     f"{c['model_load_s']:.3g} / {c['library_open_s']:.3g}", ""))
    b = app.get("browse", {}).get("median")
    if b:
        ok = "met" if b["first_paint_s"] <= 0.5 else "MISSED"
        rows.append((f"browse {b['photos']:,}: count + first page s", f"{b['first_paint_s']:.3g}",
                     f"<= 0.5 {ok}"))
        rows.append(("browse: library open / deep page s",
                     f"{b['library_open_s']:.3g} / {b['deep_page_s']:.3g}", ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--model", choices=("auto", "fallback", "fake"), default="auto")
    ap.add_argument("--work", type=Path, default=data.WORK)
    ap.add_argument("--n", type=int, default=100_000)
    args = ap.parse_args(argv)
    if args.probe:
        what, *rest = args.probe
        result = _probe_captions(*rest) if what == "captions" else _probe_browse(rest[0], int(rest[1]))
        print(json.dumps(result))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from .model import load_bench_model

    bm = load_bench_model(args.work, args.model)
    results = {"app": bench_app_rows(bm, args.work, args.n)}
    print(json.dumps(results, indent=1))
    for name, value, target in table_rows(results):
        print(f"{name:<55} {value:>10}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
