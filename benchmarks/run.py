"""Run the issue-5 benchmarks, print a table, write benchmarks/results*.json.

    python -m benchmarks.run            # everything (~35 min on 2 cores; first run builds caches)
    python -m benchmarks.run --quick    # 12 MP indexing, text encode, both runtimes (a, b)

Issue 13 rows, all in the same run: (a) image tower, shipped runtime vs torch eager; (b) text
tower one query at a time, shipped vs torch; (c) ours vs OpenCLIP ViT-B/32's image tower on
ONNX Runtime (random weights); (d) 12 MP indexing vs the pure decode + prepare rate of the same
files and vs today's torch pipeline; (e) photos_sample indexing; (f) 100K query p99 and peak
RSS with torch not imported; (g) f8k_extra rsum of the shipped runtime vs torch.

Inputs and synthetic libraries are cached in benchmarks/work/ (gitignored).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import app_rows, data, items, runtimes
from .model import load_bench_model
from .versions import bench_versions

log = logging.getLogger("benchmarks")

TARGETS = {
    "indexing_ratio_12mp": 0.85,
    "query_p99_ms": {"100000": 30.0, "1000000": 50.0},
    "recall_at_10": 0.98,
    "open_100k_s": 1.5,
    "rescan_100k_s": 10.0,
    "rss_100k_mb": 1536.0,
    # issue 13
    "image_runtime_ratio": 5.0,
    "competitor_ratio": 8.0,
    "text_p99_ms": 12.0,
    "vs_decode_prepare_12mp": 0.85,
    "vs_torch_pipeline_12mp": 2.5,
    "sample_images_per_s": 40.0,
    "query_p99_100k_ms": 15.0,
    "rss_100k_mb_issue13": 1024.0,
    "rsum_diff_max": 2.0,
    # issue 12: the shipped model indexes at least this fraction of v1's rate
    "vs_v1_indexing": 0.8,
}


@dataclass
class Config:
    """Sizes of every item; the smoke test shrinks them."""

    n_12mp: int = 200
    n_sample: int = 200  # photos_sample has 200
    index_reps: int = 3
    text_queries: int = 300
    query_sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    n_queries: int = 200
    n_brute: dict[int, int] = field(default_factory=lambda: {10_000: 100, 100_000: 50, 1_000_000: 10})
    # Past this size the index is built with reduced settings and no embeddings table.
    big_threshold: int = 500_000
    big_m: int = 12
    big_ef_construction: int = 40
    # Build the big index when it is not cached? On 2 busy cores it did not finish in 18 min.
    big_build: bool = False
    open_n: int = 100_000  # the library used by items 3, 4, 5 (and query at that size)
    open_reps: int = 3
    rescan_reps: int = 3
    quick: bool = False
    query_only: bool = False  # items 6 + 2 only (e.g. to add the 1M row once its cache is built)
    versions_only: bool = False  # text encode + the shipped model against v1 (issue 12) only
    model: str = "auto"  # auto | fallback | fake
    # issue 13: runtimes side by side
    runtime_batch: int = 16
    runtime_reps: int = 5
    runtime_min_s: float = 2.0  # each timed repetition runs at least this long
    text_runtime_queries: int = 300
    competitor: bool = True  # OpenCLIP ViT-B/32 image tower (needs the bench extra)
    torch_pipeline: bool = True  # 12 MP indexing with today's torch pipeline too
    fidelity_set: str | None = "f8k_extra"

    @classmethod
    def quick_config(cls) -> Config:
        return cls(n_12mp=200, index_reps=3, text_queries=200, quick=True, runtime_reps=3,
                   runtime_min_s=1.0, text_runtime_queries=200, competitor=False,
                   torch_pipeline=False, fidelity_set=None)


def _reference_embedder(bm: object) -> object:
    """torch eager for the shipped / fallback model; for the fake, another fake."""
    if getattr(bm, "kind", "") == "fake":
        from engine.testing import FakeEmbedder

        return FakeEmbedder(dim=bm.embedder.dim)  # type: ignore[attr-defined]
    if getattr(bm.embedder, "runtime", "torch") != "onnx":  # type: ignore[attr-defined]
        return bm.embedder  # type: ignore[attr-defined]
    if getattr(bm, "kind", "") == "shipped":
        return runtimes.load_torch_embedder()
    from engine.embedder import load_embedder

    return load_embedder(bm.checkpoint, runtime="torch")  # type: ignore[attr-defined]


def size_key(n: int) -> str:
    """100000 -> '100k' (the issue's key names); sizes under 1000 stay as they are."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def run(cfg: Config, work: Path, others: str, out: Path | None = None) -> dict[str, object]:
    """All configured items; with `out`, the partial results are rewritten after each one
    (a long run that is interrupted still leaves what it measured)."""
    work.mkdir(parents=True, exist_ok=True)

    def checkpoint(item: str = "") -> None:
        # the load average after each item: other processes share these cores (ratios are
        # interleaved so they hold; absolute figures move with this)
        results.setdefault("load_avg", {})[item or f"t{len(results.get('load_avg', {}))}"] = [  # type: ignore[index, union-attr]
            round(x, 2) for x in os.getloadavg()]
        if out is not None:
            results["total_s"] = round(time.perf_counter() - started, 1)
            out.write_text(json.dumps(results, indent=1, default=str) + "\n")

    started = time.perf_counter()
    results: dict[str, object] = {
        "machine": items.machine_info(others),
        "config": asdict(cfg),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "targets": TARGETS,
    }
    mp12 = None if cfg.query_only else data.ensure_12mp_photos(cfg.n_12mp, work)
    bm = load_bench_model(work, cfg.model)
    results["model"] = {"kind": bm.kind, "description": bm.description,
                        "load_s": round(bm.load_s, 2), "checkpoint": bm.checkpoint,
                        "model_id": bm.embedder.model_id, "dim": bm.embedder.dim}
    results["machine"]["torch_threads"] = items.torch.get_num_threads()  # type: ignore[index]
    log.info("model: %s", bm.description)

    results["text_query_ms"] = items.bench_text(bm.embedder, cfg.text_queries)
    log.info("text query: %s", results["text_query_ms"])
    if cfg.versions_only:
        sample = data.ensure_sample_copy(cfg.n_sample, work)
        results["versions"] = bench_versions(bm.embedder, sample, work, cfg.index_reps)
        results["total_s"] = round(time.perf_counter() - started, 1)
        results.setdefault("load_avg", {})["end"] = [round(x, 2) for x in os.getloadavg()]  # type: ignore[union-attr]
        return results
    torch_emb = None
    if not cfg.query_only:
        # today's runtime, the same checkpoint (a second fake stands in for it in the smoke test)
        torch_emb = _reference_embedder(bm)
        rt: dict[str, object] = {
            "image": runtimes.bench_image_runtimes(
                bm.embedder, torch_emb, cfg.runtime_batch, cfg.runtime_reps, cfg.runtime_min_s),
            "text": runtimes.bench_text_runtimes(bm.embedder, torch_emb, cfg.text_runtime_queries),
        }
        log.info("runtimes: image %s, text %s", rt["image"], rt["text"])
        if cfg.competitor:
            rt["competitor"] = runtimes.bench_competitor(
                bm.embedder, work, cfg.runtime_batch, cfg.runtime_reps, cfg.runtime_min_s)
            log.info("competitor: %s", rt["competitor"])
        results["runtimes"] = rt
        checkpoint("runtimes")
    if mp12 is not None:
        mp12_files = sorted(mp12.glob("*.jpg"))
        results["decode_modes"] = {"12mp": items.bench_decode_modes(mp12_files, bm.embedder)}
        indexing = {"12mp": items.bench_indexing(
            bm.embedder, mp12, work, cfg.index_reps, "12mp",
            torch_embedder=torch_emb if cfg.torch_pipeline else None, decode_reference=True)}
        if not cfg.quick:
            sample = data.ensure_sample_copy(cfg.n_sample, work)
            indexing["sample"] = items.bench_indexing(
                bm.embedder, sample, work, cfg.index_reps, "sample", decode_reference=True)
        results["indexing"] = indexing
        checkpoint("indexing")
        if not cfg.quick and bm.kind == "shipped":
            results["versions"] = bench_versions(bm.embedder, sample, work, cfg.index_reps)
            log.info("shipped vs v1: %s", results["versions"])
            checkpoint("versions")
    if cfg.fidelity_set and torch_emb is not None and bm.kind != "fake":
        results["fidelity"] = runtimes.bench_fidelity(bm.embedder, torch_emb, cfg.fidelity_set)
        log.info("fidelity: %s", results["fidelity"])
        checkpoint("fidelity")
    del torch_emb

    if not cfg.quick:
        files = data.ensure_tiny_files(cfg.open_n, work)
        query: dict[str, object] = {}
        for n in cfg.query_sizes:
            big = n >= cfg.big_threshold
            query[str(n)] = items.bench_query(
                n, bm.embedder, results["text_query_ms"], work,  # type: ignore[arg-type]
                n_queries=cfg.n_queries, n_brute=cfg.n_brute.get(n, 20),
                files_dir=files if n == cfg.open_n else None,
                hnsw_m=cfg.big_m if big else None,
                hnsw_ef_construction=cfg.big_ef_construction if big else None,
                via_library=not big,
                build=cfg.big_build or not big,
            )
            log.info("query %d: %s", n, {k: query[str(n)].get(k) for k in  # type: ignore[union-attr]
                     ("p50_ms", "p99_ms", "recall_at_10", "bruteforce_p50_ms")})
            if n == cfg.open_n and not cfg.query_only:
                # items 3-5 use this library while it is the newest one on disk
                lib_dir = work / "libs" / f"synth-{n}-{bm.embedder.dim}"
                rescan = items.bench_rescan(lib_dir, bm.embedder, n, cfg.rescan_reps)
                opened = items.bench_open(lib_dir, cfg.model, work, cfg.open_reps)
                results[f"open_{size_key(n)}_s"] = opened["median"]["open_to_first_search_s"]
                results[f"rss_{size_key(n)}_mb"] = opened["median"]["peak_rss_mb"]
                results[f"rescan_{size_key(n)}_s"] = rescan["rescan_s"]
                results["open_detail"] = opened
                results["rescan_detail"] = rescan
            results["query"] = query
            checkpoint(f"query_{n}")
    if not cfg.query_only:  # issue 14: captions first answer, browse at 100K (app_rows.py)
        results["app"] = app_rows.bench_app_rows(bm, work, cfg.open_n)
        checkpoint()
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results.setdefault("load_avg", {})["end"] = [round(x, 2) for x in os.getloadavg()]  # type: ignore[union-attr]
    return results


def _fmt(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _verdict(value: object, target: float, higher: bool) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return "met" if (value >= target if higher else value <= target) else "MISSED"


def issue13_rows(results: dict[str, object]) -> list[tuple[str, str, str]]:
    """The issue-13 figures with their targets (each ratio from one interleaved run)."""
    rows: list[tuple[str, str, str]] = []
    rt: dict = results.get("runtimes", {})  # type: ignore[assignment]
    if "image" in rt:
        a = rt["image"]
        rows.append((f"image: shipped {a['precision']} vs torch eager (batch {a['batch']}, "
                     f"{a['threads']} thr)", f"{_fmt(a['ratio'])}x",
                     f">= 5x {_verdict(a['ratio'], 5.0, True)}"))
        rows.append(("image: shipped / torch images/s",
                     f"{_fmt(a['shipped_images_per_s'])} / {_fmt(a['torch_eager_images_per_s'])}", ""))
        c = a["cosine_to_torch"]
        rows.append(("image: cosine to torch mean / min", f"{c['mean']:.4f} / {c['min']:.4f}", ""))
    if "text" in rt:
        b = rt["text"]
        rows.append((f"text: shipped {b['precision']} p50 / p99 ms",
                     f"{_fmt(b['shipped_ms']['p50'])} / {_fmt(b['shipped_ms']['p99'])}",
                     f"p99 <= 12 {_verdict(b['shipped_ms']['p99'], 12.0, False)}"))
        rows.append(("text: torch p50 / p99 ms",
                     f"{_fmt(b['torch_ms']['p50'])} / {_fmt(b['torch_ms']['p99'])}", ""))
        c = b["cosine_to_torch"]
        rows.append(("text: cosine to torch mean / min", f"{c['mean']:.4f} / {c['min']:.4f}", ""))
    if "competitor" in rt:
        c = rt["competitor"]
        rows.append((f"ours vs OpenCLIP ViT-B/32 image (ORT, batch {c['batch']})",
                     f"{_fmt(c['ratio'])}x", f">= 8x {_verdict(c['ratio'], 8.0, True)}"))
        rows.append(("ours / OpenCLIP images/s",
                     f"{_fmt(c['ours_images_per_s'])} / {_fmt(c['openclip_images_per_s'])}", ""))
    mp = results.get("indexing", {}).get("12mp", {})  # type: ignore[union-attr]
    if "vs_decode_prepare" in mp:
        rows.append(("12 MP indexing / pure decode+prepare", _fmt(mp["vs_decode_prepare"]),
                     f">= 0.85 {_verdict(mp['vs_decode_prepare'], 0.85, True)}"))
        rows.append(("12 MP indexing / decode+prepare images/s",
                     f"{_fmt(mp['images_per_s'])} / {_fmt(mp['decode_prepare_images_per_s'])}", ""))
    if "cpu_bound_vs_decode_prepare" in mp:
        c = mp["cpu_ms_per_photo"]
        rows.append(("12 MP CPU ms/photo: indexing / decode+prepare",
                     f"{_fmt(c['index'])} / {_fmt(c['decode_prepare'])}",
                     f"bound {_fmt(mp['cpu_bound_vs_decode_prepare'])}"))
    if "vs_torch_pipeline" in mp:
        rows.append(("12 MP indexing vs torch pipeline", f"{_fmt(mp['vs_torch_pipeline'])}x",
                     f">= 2.5x {_verdict(mp['vs_torch_pipeline'], 2.5, True)}"))
        rows.append(("12 MP torch pipeline images/s", _fmt(mp["torch_pipeline_images_per_s"]), ""))
    sample = results.get("indexing", {}).get("sample", {})  # type: ignore[union-attr]
    if sample:
        rows.append(("photos_sample indexing images/s", _fmt(sample["images_per_s"]),
                     f">= 40 {_verdict(sample['images_per_s'], 40.0, True)}"))
    q = results.get("query", {}).get("100000")  # type: ignore[union-attr]
    if q:
        rows.append(("100K end-to-end query p99 ms", _fmt(q["p99_ms"]),
                     f"<= 15 {_verdict(q['p99_ms'], 15.0, False)}"))
    if "rss_100k_mb" in results:
        med = results.get("open_detail", {}).get("median", {})  # type: ignore[union-attr]
        torch_in = med.get("torch_imported")
        rows.append(("peak RSS 100K opened + searched MB", _fmt(results["rss_100k_mb"]),
                     f"<= 1024 {_verdict(results['rss_100k_mb'], 1024.0, False)}"
                     + ("" if torch_in is None else f" (torch imported: {bool(torch_in)})")))
    f = results.get("fidelity")
    if f:
        rows.append((f"{f['set']} rsum shipped / torch",  # type: ignore[index]
                     f"{_fmt(f['rsum_shipped'])} / {_fmt(f['rsum_torch'])}",  # type: ignore[index]
                     f"within 2 {_verdict(abs(f['rsum_diff']), 2.0, False)}"))  # type: ignore[index]
    dm = results.get("decode_modes", {}).get("12mp")  # type: ignore[union-attr]
    if dm:
        draft = next(v for k, v in dm.items() if k.startswith("draft_") and k != "draft_1_8_ms")
        rows.append(("12 MP decode ms: full / draft (1 thread CPU)",
                     f"{_fmt(dm['full_decode_ms'])} / {_fmt(draft)}", ""))
        if "bound_model_only" in dm:
            rows.append(("12 MP ratio to decode+prepare CPU allows: all / model only",
                         f"{_fmt(dm['bound_vs_decode_prepare'])} / {_fmt(dm['bound_model_only'])}",
                         f"model {_fmt(dm['model_ms'])} ms/photo"))
    return rows


def table(results: dict[str, object]) -> str:
    rows: list[tuple[str, str, str]] = []
    rows += issue13_rows(results)
    rows += app_rows.table_rows(results)
    for name, r in results.get("indexing", {}).items():  # type: ignore[union-attr]
        rows.append((f"indexing {name}: images/s", _fmt(r["images_per_s"]),
                     ">= 40" if name == "sample" else ""))
        rows.append((f"indexing {name}: forward images/s", _fmt(r["model_forward_images_per_s"]), ""))
        rows.append((f"indexing {name}: vs forward", _fmt(r["ratio"]), ""))
    for n, q in results.get("query", {}).items():  # type: ignore[union-attr]
        tgt = {"100000": "<= 15", "1000000": "<= 50"}.get(n, "")
        rows.append((f"query {n}: p50 / p99 ms", f"{_fmt(q['p50_ms'])} / {_fmt(q['p99_ms'])}", f"p99 {tgt}"))
        hc = q.get("hnsw_catalog_ms")
        if hc:
            rows.append((f"query {n}: HNSW+catalog p50 / p99 ms",
                         f"{_fmt(hc['p50'])} / {_fmt(hc['p99'])}", ""))
        rows.append((f"query {n}: recall@10", _fmt(q["recall_at_10"]), ">= 0.98"))
        rows.append((f"query {n}: brute-force p50 ms", _fmt(q["bruteforce_p50_ms"]), ""))
    for key, label, tgt in (("open_100k_s", "open 100K -> first search s", "<= 1.5"),
                            ("rescan_100k_s", "re-scan unchanged 100K s", "<= 10"),
                            ("rss_100k_mb", "peak RSS 100K MB", "<= 1024")):
        if key in results:
            rows.append((label, _fmt(results[key]), tgt))
    v = results.get("versions")
    if v:
        rows.append((f"photos_sample indexing: shipped / v1 images/s ({v['v1_model_id']})",  # type: ignore[index]
                     f"{_fmt(v['shipped_images_per_s'])} / {_fmt(v['v1_images_per_s'])}",  # type: ignore[index]
                     f">= 0.8x {_verdict(v['ratio'], 0.8, True)} ({_fmt(v['ratio'])}x)"))  # type: ignore[index]
    if "text_query_ms" in results:
        t = results["text_query_ms"]
        rows.append(("text encode p50 / p99 ms", f"{_fmt(t['p50'])} / {_fmt(t['p99'])}", ""))  # type: ignore[index]
    w = max(len(r[0]) for r in rows)
    lines = [f"{'measure':<{w}}  {'value':>18}  target", "-" * (w + 30)]
    lines += [f"{a:<{w}}  {b:>18}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="items 1 (12 MP) and 6 only")
    ap.add_argument("--model", choices=("auto", "fallback", "fake"), default="auto")
    ap.add_argument("--work", type=Path, default=data.WORK)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--sizes", default=None,
                    help="comma-separated library sizes for the query item (default 10K,100K,1M)")
    ap.add_argument("--query-only", action="store_true",
                    help="only items 6 and 2; with --merge, update the query rows of --out")
    ap.add_argument("--versions-only", action="store_true",
                    help="only the text encode and the shipped model's indexing rate against v1's")
    ap.add_argument("--build-big", action="store_true",
                    help="build the 1M HNSW index if it is not cached (slow: see BENCHMARKS.md)")
    ap.add_argument("--merge", action="store_true",
                    help="merge into the existing output file instead of replacing it")
    ap.add_argument("--others", default=os.environ.get("BENCH_OTHER_LOAD", "not recorded"),
                    help="what else was running (recorded in the results)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = Config.quick_config() if args.quick else Config()
    cfg.model = args.model
    cfg.query_only = args.query_only
    cfg.versions_only = args.versions_only
    cfg.big_build = args.build_big
    if args.sizes:
        cfg.query_sizes = [int(x) for x in args.sizes.split(",")]
    out = args.out or data.REPO / "benchmarks" / ("results-quick.json" if args.quick else "results.json")
    previous = json.loads(out.read_text()) if args.merge and out.exists() else None
    results = run(cfg, args.work, args.others, None if previous else out)
    if previous is not None:
        merged_query = {**previous.get("query", {}), **results.get("query", {})}
        runs = previous.setdefault("merged_runs", [])
        runs.append({k: results[k] for k in ("machine", "config", "started_at", "total_s",
                                               "text_query_ms") if k in results})
        previous["query"] = merged_query
        results = previous
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(table(results))
    print(f"\nwrote {out} in {results['total_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
