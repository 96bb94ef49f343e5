"""`python main.py evaluate` reports R@K without and with attention re-ranking when there are
attention weights for the evaluated model (cli/training.py, training/evaluate.py)."""

from __future__ import annotations

import json

import pytest
import torch

from engine import settings
from engine.vse.attention import AttentionConfig, CrossAttention, export_weights
from engine.vse.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow


def _weights(path, model_id: str, alpha: float):
    torch.manual_seed(0)
    export_weights(CrossAttention(AttentionConfig(alpha=alpha, k=5)).eval(), path, model_id)
    return path


def test_evaluate_prints_both_tables(colour_dataset, tmp_path, capsys):
    from main import main

    model_id = read_checkpoint(settings.DEFAULT_CHECKPOINT)["model_id"]
    weights = _weights(tmp_path / "att.npz", model_id, alpha=5.0)
    rc = main(["evaluate", "--data", str(colour_dataset), "--attention", str(weights), "--json"])
    assert rc == 0
    m = json.loads(capsys.readouterr().out)
    rr = m["reranked"]
    assert rr["k"] == 5 and rr["alpha"] == 5.0 and rr["n_images"] == 16
    # one pass for regions and vectors gives the same global answer as the first table
    assert rr["without"]["rsum"] == pytest.approx(m["rsum"], abs=1e-6)
    assert rr["with"]["rsum"] != rr["without"]["rsum"]  # random weights at alpha 5 move things
    rc = main(["evaluate", "--data", str(colour_dataset), "--attention", str(weights)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "attention re-ranking of the top 5" in out
    assert "without re-ranking" in out and "with re-ranking" in out
    rc = main(["evaluate", "--data", str(colour_dataset), "--attention", str(weights), "--no-rerank"])
    assert rc == 0 and "re-ranking" not in capsys.readouterr().out


def test_evaluate_ignores_weights_of_another_model(colour_dataset, tmp_path, capsys):
    from main import main

    weights = _weights(tmp_path / "att.npz", "vse-another-model", alpha=1.0)
    rc = main(["evaluate", "--data", str(colour_dataset), "--attention", str(weights), "--json"])
    assert rc == 0
    assert "reranked" not in json.loads(capsys.readouterr().out)
