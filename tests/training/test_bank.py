"""Bank normalisation fitted after training: kept when it raises val rsum, dropped when it
does not. The model is real (MiniLM, cached image features, heads) but its weights are set so
that the embeddings are chosen by hand: the image head reads the first DIM channels of a
cached feature grid, the text head is fitted to send each caption to a chosen vector."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.vse.checkpoint import load_checkpoint, save_checkpoint
from engine.vse.model import VSEConfig, VSEModel
from training.bank import BETAS, add_bank_to_checkpoint
from training.data import CaptionDataset, ImageItem
from training.evaluate import embed_captions, evaluate_model

DIM = 8
E = torch.eye(DIM)
BANK_CAPTIONS = [
    "a dog runs along the beach", "two children play football in a park", "a man rides a red bicycle",
    "an old woman knits by the window", "a surfer rides a large wave", "people wait at a bus stop",
    "a cat sleeps on a sofa", "a boy jumps into a swimming pool", "a climber on a steep rock face",
    "a crowd watches a concert at night", "a horse grazes in a green field", "a chef cooks in a busy kitchen",
]
HUB_CAPTION = "a snowy mountain under a blue sky"
VAL_CAPTIONS = ["a girl in a yellow dress", "a brown dog catches a frisbee",
                "three men sit on a bench", "a baby laughs in a high chair"]


def _unit(v: torch.Tensor) -> torch.Tensor:
    return F.normalize(v, dim=-1)


def _rng_vectors(n: int, dims: list[int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, DIM)
    out[:, dims] = torch.randn(n, len(dims), generator=g)
    return _unit(out)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """A model and feature caches realising this layout (e0..e7 the axes):
    - bank captions (training set) lie near e0, bank images near e5, away from every val item;
    - val photos are e1..e4, each caption 0.6 e_k + 0.8 e0; the "hub" photo is e0 itself, with
      its own caption e0. Plain cosine ranks the hub first for every caption; the bank term
      c(hub) ~ 0.89 pushes it below e_k, whose bank term is 0."""
    root = tmp_path_factory.mktemp("bank")
    torch.manual_seed(0)
    model = VSEModel(VSEConfig(backbone="mobilenet_v2", text_encoder="minilm", embed_dim=DIM,
                               image_size=64, grid_positions=4)).eval()
    bank_text = _unit(E[0] + 0.5 * _rng_vectors(len(BANK_CAPTIONS), [5, 6, 7], 1))
    bank_img = _unit(E[5] + 0.5 * _rng_vectors(len(BANK_CAPTIONS), [6, 7], 2))
    wanted = dict(zip(BANK_CAPTIONS, bank_text, strict=True))
    wanted[HUB_CAPTION] = E[0]
    for k, cap in enumerate(VAL_CAPTIONS, start=1):
        wanted[cap] = _unit(0.6 * E[k] + 0.8 * E[0])
    with torch.no_grad():
        head = model.img.head
        head.weight.zero_()
        head.weight[:, :DIM] = torch.eye(DIM)
        head.bias.zero_()
        # text head: least squares from each caption's pooled MiniLM features to its vector
        proj = model.txt.proj
        width = proj.in_features
        model.txt.proj = nn.Linear(width, width)  # the identity: the head's input, exactly
        model.txt.proj.weight.copy_(torch.eye(width))
        model.txt.proj.bias.zero_()
        feats = model.txt(list(wanted)).double()
        model.txt.proj = proj
        a = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], dim=1)
        x = torch.linalg.pinv(a) @ torch.stack(list(wanted.values())).double()
        proj.weight.copy_(x[:-1].T.float())
        proj.bias.copy_(x[-1].float())
    got = torch.from_numpy(embed_captions(model, list(wanted)))
    torch.testing.assert_close(got, torch.stack(list(wanted.values())), atol=2e-3, rtol=0)

    def dataset(name, vectors, captions):
        items = [ImageItem(root / name / "images" / f"{i}.jpg", [c]) for i, c in enumerate(captions)]
        cache = root / name / "features"
        cache.mkdir(parents=True)
        grid = np.zeros((len(items), 1280, 1, 1), np.float16)
        grid[:, :DIM, 0, 0] = vectors.numpy()
        np.save(cache / "grid_orig.npy", grid)
        np.save(cache / "stages_orig.npy", np.zeros((len(items), 448), np.float16))
        (cache / "images.json").write_text(json.dumps([it.path.name for it in items]))
        (cache / "done_orig").write_text("{}")
        return CaptionDataset(name, items), cache

    train = dataset("train", bank_img, BANK_CAPTIONS)
    with_hub = dataset("val_hub", torch.stack([E[0], E[1], E[2], E[3], E[4]]), [HUB_CAPTION, *VAL_CAPTIONS])
    without_hub = dataset("val_plain", torch.stack([E[1], E[2], E[3], E[4]]), VAL_CAPTIONS)
    return model, train, with_hub, without_hub


def test_bank_is_kept_when_it_raises_val_rsum(crafted, tmp_path):
    model, (train, train_cache), (val, val_cache), _ = crafted
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, metrics={"val": {"rsum": 1.0}})
    report = add_bank_to_checkpoint(path, train, val, size=64, train_cache=train_cache, val_cache=val_cache)
    # plain: i2t all right; t2i only the hub's own caption finds its photo (1 of 5 at R@1)
    assert report["val_rsum_plain"] == pytest.approx(300 + 20 + 100 + 100)
    assert report["val_rsum_by_beta"] == {f"{b:g}": pytest.approx(600.0) for b in BETAS}
    assert report["beta"] == BETAS[0] and report["bank_size"] == len(BANK_CAPTIONS)
    loaded, ckpt = load_checkpoint(path)
    assert ckpt["metrics"]["val"] == {"rsum": 1.0}
    assert ckpt["metrics"]["bank_normalisation"]["beta"] == BETAS[0]
    assert loaded.config.bank_size == len(BANK_CAPTIONS) and loaded.joint_dim == DIM + 2
    assert evaluate_model(loaded, val, feature_cache=val_cache)["rsum"] == pytest.approx(600.0)


def test_bank_is_dropped_when_plain_cosine_is_as_good(crafted, tmp_path):
    model, (train, train_cache), _, (val, val_cache) = crafted
    path = tmp_path / "m.pt"
    save_checkpoint(path, model)
    report = add_bank_to_checkpoint(path, train, val, size=64, train_cache=train_cache, val_cache=val_cache)
    # no hub: every caption's photo already ranks first, nothing for the bank to fix
    assert report["val_rsum_plain"] == pytest.approx(600.0)
    assert max(report["val_rsum_by_beta"].values()) == pytest.approx(600.0)
    assert report["beta"] is None
    loaded, ckpt = load_checkpoint(path)
    assert loaded.config.bank_size == 0 and loaded.joint_dim == DIM
    assert not any(k.startswith("bank_") for k in ckpt["state_dict"])
    assert ckpt["metrics"]["bank_normalisation"]["beta"] is None
