"""The issue-14 bench rows run (fake model, tiny libraries; no timing checks)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks import app_rows, data
from benchmarks.model import load_bench_model


@pytest.mark.slow
def test_app_rows_run_with_the_fake_model(tmp_path, monkeypatch):
    sample = tmp_path / "sample"
    sample.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(sample / f"s{i}.jpg")
    monkeypatch.setattr(data, "SAMPLE_DIR", sample)
    work = tmp_path / "work"
    bm = load_bench_model(work, "fake")
    vectors = rng.standard_normal((300, bm.embedder.dim)).astype(np.float32)
    data.build_synthetic_library(work / "libs" / f"synth-300-{bm.embedder.dim}", vectors, data.SYNTH_MODEL_ID)
    out = app_rows.bench_app_rows(bm, work, 300)
    c = out["captions"]
    assert c["captions"] == 10 and c["first_answer_s"] > 0 and c["stored_bank"] is False
    assert c["ready_before"] is False  # the fake ships no caption vectors: it embeds them
    b = out["browse"]["median"]
    assert b["photos"] == 300 and b["page"] == 100 and b["deep_page"] == 100
    rows = app_rows.table_rows({"app": out})
    assert [r[0].split(" ")[0] for r in rows] == ["captions", "captions:", "browse", "browse:"]
