"""CPU smoke runs of the training loop on 64 real images (seconds, small model)."""

import json

import numpy as np
import pytest
import torch

from engine.vse.checkpoint import load_checkpoint
from engine.vse.model import VSEConfig, VSEModel
from engine.vse.text_encoders import MiniLMTextEncoder
from training.data import CaptionDataset, load_dataset
from training.features import extract
from training.text_cache import build_hidden_cache
from training.train import TrainOptions, train


@pytest.mark.slow  # ~15 s on 2 free cores; test_cli_finetune_stores_the_backbone is the quick one
def test_finetune_end_to_end_loss_goes_down(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    ds = load_dataset(tiny_dataset)
    cfg = VSEConfig(backbone="mobilenet_v2", finetune=True, image_size=64, grid_positions=4,
                    text_encoder="minilm", embed_dim=64)
    opts = TrainOptions(epochs=4, batch_size=32, lr=1e-3, loss="sh", workers=0)
    out = tmp_path / "e2e.pt"
    val = CaptionDataset("val", ds.items[:16])  # small: MiniLM on many captions is the slow part
    summary = train(cfg, ds, val, out, opts, progress=False)
    losses = [h["loss"] for h in summary["history"]]
    assert losses[-1] < losses[0]
    assert all("rsum" in h for h in summary["history"])
    model, meta = load_checkpoint(out)
    # fine-tuned backbone weights live in the checkpoint, not in a package record
    assert any(k.startswith("img.backbone.") for k in meta["state_dict"])
    assert "backbone" not in meta["packages"]
    for suffix in (".log.csv", ".log.json", ".curves.png", ".resume.pt"):
        assert out.with_suffix(suffix).exists()


@pytest.mark.slow  # ~15 s on 2 free cores
def test_cached_features_with_tuned_minilm_layer(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    ds = load_dataset(tiny_dataset)
    cache = tmp_path / "feat"
    extract("mobilenet_v2", [it.path for it in ds.items], cache, ["orig", "crop1"], size=64, batch_size=64)
    grid = np.load(cache / "grid_orig.npy")
    assert grid.shape == (64, 1280, 2, 2) and grid.dtype == np.float16
    tc = build_hidden_cache(MiniLMTextEncoder(16, 0), ds.captions, 5)
    cfg = VSEConfig(backbone="mobilenet_v2", image_size=64, grid_positions=4, pooling="gpo",
                    fusion=True, img_head="mlp", text_encoder="minilm", tuned_layers=1, embed_dim=64)
    opts = TrainOptions(epochs=3, batch_size=64, lr=1e-3, cache_dir=str(cache), views=("orig", "crop1"),
                        text_dropout=0.1)
    out = tmp_path / "cached.pt"
    val = CaptionDataset("val", ds.items[:16])
    summary = train(cfg, ds, val, out, opts, text_cache=tc, progress=False)
    losses = [h["loss"] for h in summary["history"]]
    assert losses[-1] < losses[0]
    # resume continues from the saved epoch
    opts.epochs = 4
    again = train(cfg, ds, val, out, opts, resume=True, text_cache=tc, progress=False)
    assert [h["epoch"] for h in again["history"]] == list(range(1, 5))
    hist = json.loads(out.with_suffix(".log.json").read_text())
    assert len(hist) == 4


SMALL = ["--backbone", "mobilenet_v2", "--image-size", "64", "--embed-dim", "32", "--workers", "0"]


def test_cli_train_learns_what_chance_cannot(colour_dataset, tmp_path, capsys):
    """Frozen features + pooled MiniLM on generated shapes whose captions name colour and
    shape: a few epochs through the CLI beat the same network untrained by a wide margin."""
    from main import main
    from training.evaluate import evaluate_model

    out = tmp_path / "colours.pt"
    rc = main(["train", "--data", str(colour_dataset), "--val", str(colour_dataset), "--out", str(out),
               *SMALL, "--epochs", "4", "--batch-size", "16", "--lr", "1e-3", "--loss", "infonce",
               "--views", "orig", "--text-cache", "pooled", "--bank-size", "0",
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checkpoint"] == str(out)
    rc = main(["evaluate", "--checkpoint", str(out), "--data", str(colour_dataset), "--json"])
    assert rc == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n_images"] == 16 and set(m["i2t"]) >= {"r1", "r5", "r10", "medr"}
    torch.manual_seed(0)  # the training run's seed: the network it started from
    config = VSEConfig(backbone="mobilenet_v2", image_size=64, grid_positions=4, embed_dim=32)
    untrained = evaluate_model(VSEModel(config).eval(), load_dataset(colour_dataset))["rsum"]
    # chance is about 186 for 16 images with 3 captions each
    assert untrained < 300
    assert m["rsum"] >= 500 and m["rsum"] >= untrained + 250


def test_cli_finetune_stores_the_backbone(colour_dataset, tmp_path, capsys):
    from engine.vse.checkpoint import read_checkpoint
    from main import main

    out = tmp_path / "ft.pt"
    rc = main(["train", "--data", str(colour_dataset), "--val", str(colour_dataset), "--out", str(out),
               *SMALL, "--finetune", "--epochs", "1", "--max-steps", "2", "--batch-size", "8",
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0 and not (tmp_path / "cache").exists()  # end to end: nothing cached
    ckpt = read_checkpoint(out)
    # fine-tuned backbone weights live in the checkpoint, not in a package record
    assert any(k.startswith("img.backbone.") for k in ckpt["state_dict"])
    assert "backbone" not in ckpt["packages"]
    assert ckpt["training"]["args"]["options"]["max_steps"] == 2


def test_cli_missing_data_is_a_user_error(tmp_path, capsys):
    from main import main

    rc = main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path)])
    assert rc == 2
    assert "photosearch: error" in capsys.readouterr().err


def test_cli_impossible_recipe_is_a_user_error(tmp_path, capsys):
    from main import main

    rc = main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "x.pt"),
               "--text-cache", "pooled", "--tuned-layers", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("photosearch: error") and "frozen MiniLM" in err and "Traceback" not in err


def test_cli_train_frozen_with_pooled_layers_drops_a_bank_that_cannot_help(colour_dataset, tmp_path, capsys):
    """The shipped recipe's options through the CLI: cached features of two views, 2 pooled
    MiniLM layers, InfoNCE, MLP heads, then a bank fitted on val. The val set is one photo,
    where plain cosine already ranks everything right (rsum 600), so the bank must go.
    (tests/training/test_bank.py has a val set where the bank is kept.)"""
    from engine.vse.checkpoint import read_checkpoint
    from main import main

    val = tmp_path / "val"
    (val / "images").mkdir(parents=True)
    first = (colour_dataset / "captions.jsonl").read_text().splitlines()[0]
    (val / "captions.jsonl").write_text(first + "\n")
    name = json.loads(first)["image"]
    (val / "images" / name).symlink_to(colour_dataset / "images" / name)
    out = tmp_path / "frozen.pt"
    rc = main(["train", "--data", str(colour_dataset), "--val", str(val), "--out", str(out), *SMALL,
               "--epochs", "1", "--batch-size", "16", "--views", "orig,flip", "--loss", "infonce",
               "--text-pool-layers", "2", "--text-cache", "pooled", "--img-head", "mlp", "--text-head", "mlp",
               "--bank-size", "32", "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ckpt = read_checkpoint(out)
    assert ckpt["config"]["text_pool_layers"] == 2
    report = ckpt["metrics"]["bank_normalisation"]
    assert report["val_rsum_plain"] == 600.0 and report["bank_size"] == 16
    assert report["beta"] is None and result["bank_beta"] is None
    assert ckpt["config"]["bank_size"] == 0 and not any(k.startswith("bank_") for k in ckpt["state_dict"])


def test_cli_train_last_blocks_from_cached_inputs(tiny_dataset, tmp_path, capsys):
    """--tuned-blocks: activations entering the tuned blocks are cached once, training runs
    the tail on them, and the per-epoch val (from the cache) matches the pixel path."""
    from engine.vse.checkpoint import load_checkpoint, read_checkpoint
    from main import main
    from training.data import load_dataset
    from training.evaluate import evaluate_model

    out = tmp_path / "tail.pt"
    cache = tmp_path / "cache"
    rc = main(["train", "--data", str(tiny_dataset), "--val", str(tiny_dataset), "--out", str(out),
               "--backbone", "efficientnet-lite0", "--tuned-blocks", "1", "--fusion", "--epochs", "2",
               "--batch-size", "16", "--embed-dim", "32", "--image-size", "64", "--workers", "0",
               "--views", "orig", "--loss", "infonce", "--bank-size", "0", "--cache-dir", str(cache)])
    assert rc == 0
    capsys.readouterr()
    assert any(p.name == "done_pre1_orig" for p in cache.rglob("done_*"))
    log = json.loads(out.with_suffix(".log.json").read_text())
    assert log[-1]["loss"] < log[0]["loss"]
    assert any(k.startswith("img.backbone.head.") for k in read_checkpoint(out)["state_dict"])
    model, _ = load_checkpoint(out)
    ds = load_dataset(tiny_dataset)
    val_dir = next(p.parent for p in cache.rglob("done_pre1_orig"))
    paths = [it.path for it in ds.items]
    from training.evaluate import embed_dataset_images

    cached = embed_dataset_images(model, paths, feature_cache=val_dir)
    pixels = embed_dataset_images(model, paths)
    np.testing.assert_allclose(cached, pixels, atol=2e-2)
    assert evaluate_model(model, ds, feature_cache=val_dir)["rsum"] == pytest.approx(max(h["rsum"] for h in log))
