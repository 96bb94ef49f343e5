"""Chinese glosses (engine/vse/glossing.py): which texts are Chinese, how a dictionary sense is
chosen, segmentation, the real CC-CEDICT package, and the blend into the multilingual tower
against a written-out reference."""

import importlib.metadata
import logging
from collections import Counter

import numpy as np
import pytest
import torch

import engine.vse.glossing as glossing
from engine.vse.glossing import ChineseGlosser, choose_glosses, is_chinese, load_glosser, segment
from engine.vse.multilingual import MultilingualTextTower

# A few lines in CC-CEDICT's format, written for these tests.
CEDICT_LINES = [
    "# comment line",
    "站 站 [zhan4] /station/to stand/to halt/CL:個|个[ge4]/",
    "喝 喝 [he1] /to drink/",
    "喝 喝 [he4] /to shout/to yell/",
    "海灘 海滩 [hai3 tan1] /beach/CL:片[pian4]/",
    "狗 狗 [gou3] /dog/CL:隻|只[zhi1],條|条[tiao2]/",
    "北京 北京 [Bei3 jing1] /Beijing/",  # a proper noun: skipped
    "奔跑 奔跑 [ben1 pao3] /to run/",
    "奔 奔 [ben1] /to hurry/",
    "跑 跑 [pao3] /(bound form) to run; to escape/",
    "祇 只 [zhi3] /variant of 只[zhi3]/",
]


def test_chinese_is_han_without_kana_or_hangul():
    assert is_chinese("海滩上奔跑的狗")
    assert is_chinese("穿紅衣服的女孩騎自行車")  # traditional characters
    assert is_chinese("dog 海滩")
    assert not is_chinese("ラクダに餌をあげている女の子")  # Japanese: kanji with kana
    assert not is_chinese("낙타에게 먹이를 주는 소녀")
    assert not is_chinese("a dog running on the beach")
    assert not is_chinese("")


def test_the_most_caption_like_sense_wins_and_position_breaks_ties():
    counts = Counter({"stand": 500, "station": 3, "drink": 200, "shout": 40, "beach": 300, "dog": 900, "run": 100})
    chosen = choose_glosses(CEDICT_LINES, counts, senses=2, position_cost=0.25)
    assert chosen["站"] == "stand"  # second sense, far more common in captions
    assert chosen["喝"] == "drink"  # across readings
    assert chosen["海滩"] == chosen["海灘"] == "beach"  # simplified and traditional keys
    assert chosen["狗"] == "dog"  # the classifier note is not a sense
    assert chosen["跑"] == "run"  # brackets and the 'to ' of a verb go
    assert "北京" not in chosen and "只" not in chosen
    # with no caption counts every sense scores alike: the first one, by the position cost
    assert choose_glosses(CEDICT_LINES, Counter(), senses=2, position_cost=0.25)["站"] == "station"
    # one sense considered: the first
    assert choose_glosses(CEDICT_LINES, counts, senses=1, position_cost=0.25)["站"] == "station"


def test_longest_words_first_and_function_words_from_the_table():
    dictionary = choose_glosses(CEDICT_LINES, Counter(), senses=1, position_cost=0.25)
    assert segment("海滩上奔跑的狗", dictionary) == ["海滩", "上", "奔跑", "的", "狗"]
    glosser = ChineseGlosser(None, senses=1, position_cost=0.25)
    glosser._dictionary = dictionary
    # 上 -> on from the table, 的 dropped, punctuation and unknown characters dropped
    assert glosser.gloss("海滩上奔跑的狗！") == "beach on run dog"
    assert glosser.gloss("两只狗") == "two dog"
    assert glosser.gloss("穿T的狗") == "T dog"


def test_real_dictionary_glosses_everyday_queries(tmp_path):
    pytest.importorskip(glossing.CEDICT_PACKAGE)
    bank = tmp_path / "bank.txt"
    bank.write_text("Two men stand on the beach .\nA dog drinks water .\nA girl rides a bicycle .\n", encoding="utf-8")
    glosser = load_glosser(bank, senses=2, position_cost=0.25)
    assert glosser is not None
    words = set(glosser.gloss("海滩上奔跑的狗").split())
    assert {"beach", "dog", "run"} <= words
    assert {"red", "girl", "bicycle"} <= set(glosser.gloss("穿紅衣服的女孩騎自行車").split())
    assert "stand" in glosser.gloss("男人站在海滩上").split()


def test_missing_dictionary_package_means_no_glosses(monkeypatch, caplog):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(glossing.importlib.metadata, "version", missing)
    with caplog.at_level(logging.WARNING, logger="engine.vse.glossing"):
        assert load_glosser(None, 2, 0.25) is None
    assert any("not installed" in r.getMessage() for r in caplog.records)


class _FixedHead:
    """A head that returns fixed unit rows, one per text (the head is tested elsewhere)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = torch.from_numpy(rows)

    def __call__(self, use_vectors: torch.Tensor) -> torch.Tensor:
        return self.rows[: len(use_vectors)].clone()


class _FakeUSE:
    def encode(self, texts):
        return np.zeros((len(texts), 512), np.float32)


class _FakeGlosser:
    def gloss(self, text: str) -> str:
        return "" if text == "的了" else f"gloss of {text}"

    def warm_up(self) -> None:
        pass


def test_chinese_rows_add_the_weighted_english_reading_of_their_gloss():
    rng = np.random.default_rng(0)
    head_rows = rng.normal(size=(4, 8)).astype(np.float32)
    head_rows /= np.linalg.norm(head_rows, axis=1, keepdims=True)
    english_rows = {}

    def english(texts):
        out = []
        for t in texts:
            english_rows.setdefault(t, rng.normal(size=8).astype(np.float32) * 3)  # not unit: normalised
            out.append(english_rows[t])
        return np.stack(out)

    tower = MultilingualTextTower(_FixedHead(head_rows), encoder=_FakeUSE(), glosser=_FakeGlosser(), gloss_weight=0.4)
    texts = ["海滩上的狗", "un perro en la playa", "女の子と犬", "的了"]
    out = tower.embed(texts, english).numpy()
    expected = head_rows.astype(np.float64).copy()
    read = english_rows["gloss of 海滩上的狗"].astype(np.float64)
    expected[0] = expected[0] + 0.4 * read / np.linalg.norm(read)
    expected[0] /= np.linalg.norm(expected[0])
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # only the Chinese text with a gloss reached the English tower (的了 glosses to nothing)
    assert list(english_rows) == ["gloss of 海滩上的狗"]
    # without the English tower, or with weight 0, the head's rows are the answer
    np.testing.assert_allclose(tower.embed(texts).numpy(), head_rows, atol=1e-7)
    tower.gloss_weight = 0.0
    np.testing.assert_allclose(tower.embed(texts, english).numpy(), head_rows, atol=1e-7)
