"""training/attention.py on generated bundles: the attention re-ranker learns a word-region
signal the global vectors do not carry, and the chosen scoring goes with the weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.vse.attention import load_attention
from training.attention import Bundle, main, reranked_metrics

WORD_DIM, REGION_DIM, CONCEPTS = 12, 20, 40


def _bundle(n_images: int, seed: int) -> Bundle:
    """Each photo shows 3 of 40 'concepts' in random regions of a 4x4 grid; each of its two
    captions names 2 of them as word states (a fixed linear map of the concept, plus noise).
    The global vectors are pure noise, so only attention can find the right photo."""
    rng = np.random.default_rng(seed)
    region_of = np.random.default_rng(99).normal(size=(CONCEPTS, REGION_DIM))  # fixed across splits
    word_of = np.random.default_rng(98).normal(size=(CONCEPTS, WORD_DIM))
    regions = rng.normal(scale=0.3, size=(n_images, 16, REGION_DIM))
    hidden, offsets, cap_img = [], [0], []
    for i in range(n_images):
        shown = rng.choice(CONCEPTS, 3, replace=False)
        cells = rng.choice(16, 3, replace=False)
        regions[i, cells] += region_of[shown]
        for _ in range(2):
            named = rng.choice(shown, 2, replace=False)
            tokens = np.concatenate([rng.normal(size=(1, WORD_DIM)),  # [CLS]
                                     word_of[named] + rng.normal(scale=0.2, size=(2, WORD_DIM)),
                                     rng.normal(size=(1, WORD_DIM))])  # [SEP]
            hidden.append(tokens)
            offsets.append(offsets[-1] + len(tokens))
            cap_img.append(i)
    img = rng.normal(size=(n_images, 8)).astype(np.float32) * 0.01
    txt = rng.normal(size=(len(cap_img), 8)).astype(np.float32) * 0.01
    return Bundle(regions.astype(np.float16), img, txt, np.concatenate(hidden).astype(np.float16),
                  np.array(offsets), np.array(cap_img))


def test_bundle_rejects_inconsistent_lengths() -> None:
    b = _bundle(4, 0)
    with pytest.raises(ValueError):
        Bundle(b.regions, b.img, b.txt, b.hidden, b.offsets[:-1], b.caption_image)


def test_reranking_only_reorders_the_top_k() -> None:
    rng = np.random.default_rng(0)
    glob = rng.normal(size=(6, 12))
    att = rng.normal(size=(6, 12))
    cap = np.repeat(np.arange(6), 2)
    base = reranked_metrics(glob, att, 0.0, 3, cap)
    # alpha 0 is the global answer; a huge alpha with K = all is the attention answer alone
    from training.metrics import retrieval_metrics

    assert base["rsum"] == pytest.approx(retrieval_metrics(glob, cap)["rsum"])
    assert reranked_metrics(glob, att, 1e6, 12, cap)["rsum"] == pytest.approx(retrieval_metrics(att, cap)["rsum"])
    # K = 1 cannot change anyone's first answer
    assert reranked_metrics(glob, att, 1e6, 1, cap)["i2t"]["r1"] == base["i2t"]["r1"]


@pytest.mark.slow
def test_train_learns_the_attention_signal(tmp_path) -> None:
    _bundle(320, 1).save(tmp_path / "train.npz")
    _bundle(40, 2).save(tmp_path / "val.npz")
    out, report = tmp_path / "att.pt", tmp_path / "report.json"
    rc = main(["train", "--train", str(tmp_path / "train.npz"), "--val", str(tmp_path / "val.npz"),
               "--out", str(out), "--json", str(report), "--dim", "16", "--epochs", "20",
               "--batch-size", "32", "--lr", "1e-2", "--k", "20", "--threads", "1"])
    assert rc == 0
    r = json.loads(report.read_text())
    # 40 val photos, global vectors are noise: rsum near chance (6 recalls of 1/40..10/40 ~ 80)
    assert r["val_global"]["rsum"] < 150
    assert r["val_best"]["rsum"] > r["val_global"]["rsum"] + 60
    assert r["val_best"]["alpha"] > 0
    module, extra = load_attention(out)
    assert module.config.word_dim == WORD_DIM and module.config.region_dim == REGION_DIM
    assert module.config.alpha == r["val_best"]["alpha"] and module.config.direction == r["val_best"]["direction"]
    assert extra["val_best"]["rsum"] == r["val_best"]["rsum"]
    # evaluate re-reads the weights and reproduces the chosen figure, float and int8 regions
    assert main(["evaluate", "--val", str(tmp_path / "val.npz"), "--weights", str(out),
                 "--json", str(tmp_path / "eval.json")]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    chosen = [row for row in ev["float"]["chosen"] if row["k"] == 20]
    assert chosen[0]["rsum"] == pytest.approx(r["val_best"]["rsum"])
    assert abs([row for row in ev["int8"]["chosen"] if row["k"] == 20][0]["rsum"] - chosen[0]["rsum"]) < 15


def test_missing_bundle_is_one_clear_error(tmp_path, capsys) -> None:
    rc = main(["train", "--train", str(tmp_path / "nope.npz"), "--val", str(tmp_path / "nope.npz"),
               "--out", str(tmp_path / "a.pt")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
