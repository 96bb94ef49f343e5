"""fit_bank: beta chosen by val rsum, kept only when it beats plain cosine, and what evaluation
then reports is what the choice measured."""

import pytest
import torch

from engine.vse.model import VSEConfig, VSEModel
from training.bank import BETAS, add_bank_to_checkpoint, fit_bank
from training.data import CaptionDataset, load_dataset
from training.evaluate import evaluate_model


def test_fit_bank_choice_matches_evaluation(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model = VSEModel(VSEConfig(backbone="mobilenet_v2", text_encoder="minilm", embed_dim=32)).eval()
    ds = load_dataset(tiny_dataset)
    val = CaptionDataset("val", ds.items[:16])
    report = fit_bank(model, ds, val, size=48)
    assert report["bank_size"] == 48 and set(report["val_rsum_by_beta"]) == {f"{b:g}" for b in BETAS}
    after = evaluate_model(model, val)["rsum"]
    best = max(report["val_rsum_by_beta"].values())
    if report["beta"] is None:
        assert model.joint_dim == 32 and after == pytest.approx(report["val_rsum_plain"])
        assert best <= report["val_rsum_plain"]
    else:
        assert model.joint_dim == 34 and after == pytest.approx(best)
        assert best > report["val_rsum_plain"]
        assert report["val_rsum_by_beta"][f"{report['beta']:g}"] == best


def test_add_bank_to_checkpoint_rewrites_it(tiny_dataset, tmp_path):
    from engine.vse.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = VSEModel(VSEConfig(backbone="mobilenet_v2", text_encoder="minilm", embed_dim=32)).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, metrics={"val": {"rsum": 1.0}})
    ds = load_dataset(tiny_dataset)
    report = add_bank_to_checkpoint(path, ds, ds, size=32)
    loaded, ckpt = load_checkpoint(path)
    assert ckpt["metrics"]["val"] == {"rsum": 1.0}
    assert ckpt["metrics"]["bank_normalisation"]["bank_size"] == 32
    assert loaded.config.bank_size == (32 if report["beta"] is not None else 0)
