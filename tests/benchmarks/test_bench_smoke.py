"""The benchmark code must keep running: a tiny run with the fake embedder, no timing checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import data, run


def _photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"s{i:03d}.jpg", quality=85)
    return folder


def test_smoke_run_writes_every_key(tmp_path, monkeypatch):
    sample = _photos(tmp_path / "sample", 6)
    monkeypatch.setattr(data, "SAMPLE_DIR", sample)
    monkeypatch.setattr(data, "MP12_SIZE", (400, 300))  # keep generation instant
    # ensure_* take the sample folder as a default argument bound at import: pass it on.
    orig_12mp, orig_sample, orig_tiny = (
        data.ensure_12mp_photos, data.ensure_sample_copy, data.ensure_tiny_files)
    monkeypatch.setattr(data, "ensure_12mp_photos", lambda n, w: orig_12mp(n, w, sample))
    monkeypatch.setattr(data, "ensure_sample_copy", lambda n, w: orig_sample(n, w, sample))
    monkeypatch.setattr(data, "ensure_tiny_files", lambda n, w: orig_tiny(n, w, sample))
    cfg = run.Config(
        n_12mp=4, n_sample=5, index_reps=2, text_queries=5,
        query_sizes=[300, 600], n_queries=10, n_brute={}, big_threshold=500,
        open_n=300, open_reps=1, rescan_reps=2, model="fake", big_build=True,
        runtime_batch=4, runtime_reps=2, runtime_min_s=0.0, text_runtime_queries=5,
        competitor=False, torch_pipeline=True, fidelity_set=None,
    )
    results = run.run(cfg, tmp_path / "work", "pytest")
    out = json.loads(json.dumps(results, default=str))
    for name in ("12mp", "sample"):
        r = out["indexing"][name]
        assert r["images_per_s"] > 0 and r["model_forward_images_per_s"] > 0 and r["ratio"] > 0
    for n in ("300", "600"):
        q = out["query"][n]
        assert 0 < q["p50_ms"] <= q["p99_ms"]
        assert 0.5 <= q["recall_at_10"] <= 1.0 and q["bruteforce_p50_ms"] > 0
    assert out["open_300_s"] > 0 and out["rescan_300_s"] > 0 and out["rss_300_mb"] > 0
    assert 0 < out["text_query_ms"]["p50"] <= out["text_query_ms"]["p99"]
    assert out["machine"]["cores"] == os.cpu_count()
    # issue 13 rows: both runtimes side by side (a fake stands in for torch), 12 MP against
    # the pure decode + prepare rate and the torch pipeline
    img, txt = out["runtimes"]["image"], out["runtimes"]["text"]
    assert img["ratio"] > 0 and len(img["per_rep_ratio"]) == 2
    assert img["cosine_to_torch"]["mean"] == 1.0  # the same fake on both sides
    assert 0 < txt["shipped_ms"]["p50"] <= txt["shipped_ms"]["p99"] and txt["queries"] == 5
    mp = out["indexing"]["12mp"]
    assert mp["vs_decode_prepare"] > 0 and mp["vs_torch_pipeline"] > 0
    assert set(mp["cpu_ms_per_photo"]) == {"index", "decode_prepare", "torch_pipeline"}
    assert mp["cpu_bound_vs_decode_prepare"] > 0
    assert out["indexing"]["sample"]["decode_prepare_images_per_s"] > 0
    modes = out["decode_modes"]["12mp"]
    assert modes["full_decode_ms"] > 0 and modes["with_preview_ge_256px"] == 0
    assert modes["model_ms"] >= 0 and modes["thumbnail_ms"] >= 0 and modes["prepare_ms"] >= 0
    assert 0 < modes["bound_vs_decode_prepare"] <= modes["bound_model_only"] <= 1
    assert out["open_detail"]["median"]["torch_imported"] in (0, 1)
    assert "measure" in run.table(results)
