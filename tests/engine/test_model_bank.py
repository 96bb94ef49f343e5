"""Bank normalisation: joint vectors reproduce the scoring rule, survive the checkpoint, and
photo-to-photo queries stay plain cosine."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.vse.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from engine.vse.inference import VSEEmbedder
from engine.vse.model import VSEConfig, VSEModel

DIM = 16


@pytest.fixture(scope="module")
def banked(tmp_path_factory):
    torch.manual_seed(0)
    model = VSEModel(VSEConfig(backbone="mobilenet_v2", text_encoder="minilm", embed_dim=DIM)).eval()
    text_bank = F.normalize(torch.randn(7, DIM), dim=-1)
    image_bank = F.normalize(torch.randn(7, DIM), dim=-1)
    model.set_banks(text_bank, image_bank, beta=12.0)
    path = tmp_path_factory.mktemp("bank") / "m.pt"
    save_checkpoint(path, model)
    return model, path


def naive_score(v, t, text_bank, image_bank, beta):
    """cos(v, t) minus each side's log-mean-exp similarity to the other modality's bank."""
    def softmean(x, bank):
        return math.log(sum(math.exp(beta * float(x @ b)) for b in bank) / len(bank)) / beta

    return float(v @ t) - softmean(v, text_bank) - softmean(t, image_bank)


def test_joint_vector_inner_product_is_the_bank_normalised_score(banked):
    model, _ = banked
    v = F.normalize(torch.randn(3, DIM), dim=-1)
    t = F.normalize(torch.randn(4, DIM), dim=-1)
    iv, tv = model.image_vectors(v), model.text_vectors(t)
    assert iv.shape == (3, DIM + 2) and model.joint_dim == DIM + 2
    tb, ib = model.bank_text.float(), model.bank_images.float()
    for i in range(3):
        for j in range(4):
            assert float(iv[i] @ tv[j]) == pytest.approx(naive_score(v[i], t[j], tb, ib, 12.0), abs=1e-5)


def test_hub_image_is_pushed_down():
    torch.manual_seed(1)
    model = VSEModel(VSEConfig(backbone="mobilenet_v2", text_encoder="minilm", embed_dim=DIM)).eval()
    e = torch.eye(DIM)
    # the caption bank clusters around e1; the query is e0
    bank = F.normalize(e[1] + 0.3 * torch.randn(50, DIM), dim=-1)
    query = e[:1]
    hub = F.normalize(0.5 * e[0] + e[1], dim=0)[None]  # like the query, and like every caption
    ordinary = F.normalize(0.4 * e[0] + e[2], dim=0)[None]  # a little less like the query
    assert float(hub @ query.T) > float(ordinary @ query.T)
    model.set_banks(bank, F.normalize(torch.randn(50, DIM), dim=-1), beta=20.0)
    scores = model.image_vectors(torch.cat([hub, ordinary])) @ model.text_vectors(query).T
    assert float(scores[1]) > float(scores[0])


def test_bank_round_trips_through_the_checkpoint(banked):
    model, path = banked
    raw = read_checkpoint(path)
    assert raw["config"]["bank_size"] == 7 and raw["config"]["bank_beta"] == 12.0
    assert raw["state_dict"]["bank_text"].dtype == torch.float16
    loaded, _ = load_checkpoint(path)
    v = F.normalize(torch.randn(2, DIM), dim=-1)
    torch.testing.assert_close(loaded.image_vectors(v), model.image_vectors(v))
    torch.testing.assert_close(loaded.text_vectors(v), model.text_vectors(v))


def test_clear_banks_restores_plain_cosine(banked):
    _, path = banked
    model, _ = load_checkpoint(path)
    model.clear_banks()
    v = F.normalize(torch.randn(2, DIM), dim=-1)
    assert torch.equal(model.image_vectors(v), v) and model.joint_dim == DIM
    assert not any(k.startswith("bank_") for k in model.state_dict())


def test_embedder_vectors_and_image_query(banked):
    _, path = banked
    emb = VSEEmbedder(path, device="cpu", threads=1)
    assert emb.dim == DIM + 2
    from PIL import Image

    imgs = emb.embed_images([Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "blue")])
    txt = emb.embed_texts(["a red ball"])
    assert imgs.shape == (2, DIM + 2) and txt.shape == (1, DIM + 2)
    np.testing.assert_allclose(np.linalg.norm(imgs[:, :DIM], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(imgs[:, DIM + 1], 1.0)
    np.testing.assert_allclose(txt[:, DIM], 1.0)
    q = emb.image_query(imgs[0])
    # photo-to-photo: plain cosine between the unit parts
    assert float(q @ imgs[1]) == pytest.approx(float(imgs[0, :DIM] @ imgs[1, :DIM]), abs=1e-6)
    assert float(q @ imgs[0]) == pytest.approx(1.0, abs=1e-5)


def test_set_banks_rejects_mismatched_banks():
    model = VSEModel(VSEConfig(backbone="mobilenet_v2", text_encoder="minilm", embed_dim=DIM))
    with pytest.raises(ValueError):
        model.set_banks(torch.zeros(3, DIM), torch.zeros(4, DIM), beta=10.0)
    with pytest.raises(ValueError):
        model.set_banks(torch.zeros(3, DIM), torch.zeros(3, DIM), beta=0.0)


def test_text_query_drops_only_the_texts_own_term(banked):
    _, path = banked
    emb = VSEEmbedder(path, device="cpu", threads=1)
    from PIL import Image

    imgs = emb.embed_images([Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "green")])
    t = emb.embed_texts(["a red ball"])[0]
    q = emb.text_query(t)
    # same ranking of photos, shifted by the text's bank term d(t) = -t[DIM + 1]
    np.testing.assert_allclose(imgs @ q, imgs @ t - t[DIM + 1], atol=1e-6)
    assert q[DIM + 1] == 0.0 and q[DIM] == 1.0


def test_banks_are_fp16_values_held_in_float32(banked):
    """set_banks rounds to fp16 (what the checkpoint stores) but keeps float32 in memory, so
    scores are bit-identical before and after a save/load round trip."""
    model, path = banked
    assert model.bank_text.dtype == torch.float32 and model.bank_images.dtype == torch.float32
    assert torch.equal(model.bank_text, model.bank_text.half().float())
    fresh = VSEModel(VSEConfig(backbone="mobilenet_v2", text_encoder="minilm", embed_dim=DIM)).eval()
    bank = F.normalize(torch.randn(5, DIM), dim=-1)
    assert not torch.equal(bank, bank.half().float())  # not representable in fp16 as it is
    fresh.set_banks(bank, bank, beta=12.0)
    assert torch.equal(fresh.bank_text, bank.half().float())
    loaded, _ = load_checkpoint(path)
    assert loaded.bank_text.dtype == torch.float32
    v = F.normalize(torch.randn(3, DIM), dim=-1)
    assert torch.equal(loaded.image_vectors(v), model.image_vectors(v))
    assert torch.equal(loaded.text_vectors(v), model.text_vectors(v))
