import numpy as np
import pytest
import torch

from engine.vse.text_encoders import GloveVocab, GRUTextEncoder, tokenize


def fake_glove():
    words = ["the", "dog", "runs", "cat", "zebra", "."]
    rng = np.random.default_rng(0)
    return words, rng.standard_normal((len(words), 8)).astype(np.float32)


def test_tokenize():
    assert tokenize("A dog's ball, red!") == ["a", "dog's", "ball", ",", "red", "!"]


def test_vocab_maps_unseen_glove_words_to_their_vectors():
    words, _ = fake_glove()
    v = GloveVocab(["dog", "runs", "frisbee"], words)
    g, t = v.encode("the dog chases a frisbee zebra")
    # "the" and "zebra": GloVe only (no delta row); "frisbee": training-only; "chases", "a": unknown
    assert g == [0, 1, v.zero_row, v.zero_row, v.zero_row, 4]
    assert t == [0, v.train_index["dog"], 1, 1, v.train_index["frisbee"], 0]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru_encoder_shapes_and_unseen_words_differ(bidirectional):
    torch.manual_seed(0)
    enc = GRUTextEncoder(["dog", "runs"], 16, bidirectional=bidirectional, glove=fake_glove()).eval()
    out = enc(["the dog runs", "zebra", "cat"])
    assert out.shape == (3, 16)
    # zebra and cat were never in training captions but still get different (GloVe) vectors
    assert not torch.allclose(out[1], out[2])
    # the 400k GloVe matrix is a non-persistent buffer: never saved in a checkpoint
    assert "glove" not in enc.state_dict()


def test_real_glove_package_loads():
    pytest.importorskip("pyarrow")
    from engine.vse.text_encoders import load_glove

    words, matrix = load_glove()
    assert len(words) == 400_000 and matrix.shape == (400_000, 50)
    assert words[0] == "the"


def test_gru_checkpoint_round_trip(tmp_path):
    pytest.importorskip("pyarrow")
    from engine.vse.checkpoint import load_checkpoint, save_checkpoint
    from engine.vse.model import VSEConfig, VSEModel

    torch.manual_seed(0)
    model = VSEModel(VSEConfig(backbone="mobilenet_v2", text_encoder="bigru", embed_dim=16),
                     vocab=["dog", "runs", "qwxyz"]).eval()
    path = tmp_path / "g.pt"
    save_checkpoint(path, model)
    raw = torch.load(path, weights_only=True)
    assert raw["vocab"][:3] == ["<pad>", "<unk>", "dog"] and "glove" in raw["packages"]
    loaded, _ = load_checkpoint(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed_texts(["a dog runs"]), model.embed_texts(["a dog runs"]))

