"""The training command stores the caption bank's vectors beside the checkpoint it ships."""

import pytest

from engine import settings
from engine.caption_store import CaptionStore, bank_file_captions


@pytest.mark.slow  # loads the shipped model in torch (~10 s)
def test_ship_caption_store_embeds_the_bank_as_the_app_does(tmp_path):
    import numpy as np

    from engine.vse.inference import VSEEmbedder
    from training.ship import ship_caption_store

    bank = tmp_path / "bank.txt"
    bank.write_text("a dog runs on the grass\n\ntwo children play in a fountain\na red car at night\n")
    out = tmp_path / "m.captions.npz"
    meta = ship_caption_store(settings.DEFAULT_CHECKPOINT, bank, out)
    store = CaptionStore.load(out)
    emb = VSEEmbedder(settings.DEFAULT_CHECKPOINT)
    assert meta["model_id"] == store.model_id == emb.model_id and meta["path"] == str(out)
    assert store.captions == bank_file_captions(bank) and len(store) == 3
    exact = emb.embed_texts(store.captions)
    assert store.dim == exact.shape[1] and store.meta["quantized_dims"] == exact.shape[1] - 2
    rng = np.random.default_rng(0)
    for v in rng.standard_normal((4, exact.shape[1])).astype(np.float32):
        v[:-2] /= np.linalg.norm(v[:-2])
        np.testing.assert_allclose(store.scores(v), exact @ v, atol=5e-3)
