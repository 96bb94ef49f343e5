"""Run the issue-5 benchmarks, print a table, write benchmarks/results*.json.

    python -m benchmarks.run            # everything (~25 min on 2 cores; first run builds caches)
    python -m benchmarks.run --quick    # item 1 (12 MP indexing ratio) + item 6 (text encode)

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

from . import data, items
from .model import load_bench_model

log = logging.getLogger("benchmarks")

TARGETS = {
    "indexing_ratio_12mp": 0.85,
    "query_p99_ms": {"100000": 30.0, "1000000": 50.0},
    "recall_at_10": 0.98,
    "open_100k_s": 1.5,
    "rescan_100k_s": 10.0,
    "rss_100k_mb": 1536.0,
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
    model: str = "auto"  # auto | fallback | fake

    @classmethod
    def quick_config(cls) -> Config:
        return cls(n_12mp=200, index_reps=3, text_queries=200, quick=True)


def size_key(n: int) -> str:
    """100000 -> '100k' (the issue's key names); sizes under 1000 stay as they are."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def run(cfg: Config, work: Path, others: str, out: Path | None = None) -> dict[str, object]:
    """All configured items; with `out`, the partial results are rewritten after each one
    (a long run that is interrupted still leaves what it measured)."""
    work.mkdir(parents=True, exist_ok=True)

    def checkpoint() -> None:
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
    if mp12 is not None:
        indexing = {"12mp": items.bench_indexing(bm.embedder, mp12, work, cfg.index_reps, "12mp")}
        if not cfg.quick:
            sample = data.ensure_sample_copy(cfg.n_sample, work)
            indexing["sample"] = items.bench_indexing(
                bm.embedder, sample, work, cfg.index_reps, "sample")
        results["indexing"] = indexing
        checkpoint()

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
            checkpoint()
    results["total_s"] = round(time.perf_counter() - started, 1)
    return results


def _fmt(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def table(results: dict[str, object]) -> str:
    rows: list[tuple[str, str, str]] = []
    for name, r in results.get("indexing", {}).items():  # type: ignore[union-attr]
        rows.append((f"indexing {name}: images/s", _fmt(r["images_per_s"]), ""))
        rows.append((f"indexing {name}: forward images/s", _fmt(r["model_forward_images_per_s"]), ""))
        rows.append((f"indexing {name}: ratio", _fmt(r["ratio"]),
                     ">= 0.85" if name == "12mp" else ""))
    for n, q in results.get("query", {}).items():  # type: ignore[union-attr]
        tgt = {"100000": "<= 30", "1000000": "<= 50"}.get(n, "")
        rows.append((f"query {n}: p50 / p99 ms", f"{_fmt(q['p50_ms'])} / {_fmt(q['p99_ms'])}", f"p99 {tgt}"))
        hc = q.get("hnsw_catalog_ms")
        if hc:
            rows.append((f"query {n}: HNSW+catalog p50 / p99 ms",
                         f"{_fmt(hc['p50'])} / {_fmt(hc['p99'])}", ""))
        rows.append((f"query {n}: recall@10", _fmt(q["recall_at_10"]), ">= 0.98"))
        rows.append((f"query {n}: brute-force p50 ms", _fmt(q["bruteforce_p50_ms"]), ""))
    for key, label, tgt in (("open_100k_s", "open 100K -> first search s", "<= 1.5"),
                            ("rescan_100k_s", "re-scan unchanged 100K s", "<= 10"),
                            ("rss_100k_mb", "peak RSS 100K MB", "<= 1536")):
        if key in results:
            rows.append((label, _fmt(results[key]), tgt))
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
