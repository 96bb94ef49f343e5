"""English captions put word by word into Chinese for the multilingual head's training:
word choice by sense place and USE piece cost, inflections, phrases, the hand table, and the
pseudo-Chinese vectors carried through the selection split."""

import numpy as np
import pytest

from training.pseudo_chinese import PseudoChinese, use_piece_cost

LINES = [
    "# CC-CEDICT test lines",
    "狗 狗 [gou3] /dog/CL:隻|只[zhi1]/",
    "獀 獀 [sou1] /dog (old)/dog/",  # 'dog' second, and a rare character
    "海灘 海滩 [hai3 tan1] /beach/",
    "跑 跑 [pao3] /to run/to escape/",
    "跑步 跑步 [pao3 bu4] /to run/to jog/",
    "冰淇淋 冰淇淋 [bing1 qi2 lin2] /ice cream/",
    "冰 冰 [bing1] /ice/",
    "奶油 奶油 [nai3 you2] /cream/butter/",
    "紅 红 [hong2] /red/",
    "北京 北京 [Bei3 jing1] /Beijing/",  # a proper noun: not a candidate
]
# a stand-in for USE's sentencepiece: each character one piece, rare ones expensive
PIECE_LOGPROB = {"狗": -9.0, "獀": -28.0, "海": -8.0, "滩": -10.0, "跑": -9.0, "步": -9.5, "冰": -9.0,
                 "淇": -14.0, "淋": -12.0, "奶": -9.0, "油": -9.0, "红": -8.0, "北": -8.0, "京": -8.0}


def translator() -> PseudoChinese:
    chars = sorted(PIECE_LOGPROB)
    cost = use_piece_cost(lambda w: [chars.index(c) for c in w], lambda i: PIECE_LOGPROB[chars[i]])
    return PseudoChinese(LINES, cost)


def test_words_are_put_into_chinese_with_the_hand_table_for_grammar():
    # "a" is 一个 and "on" 在 from the hand table; "the" and "." say nothing
    assert translator().translate("A dog runs on the beach.") == "一个狗跑在海滩"


def test_a_word_takes_its_cheapest_entry_with_each_sense_place_costing_more():
    pz = translator()
    assert pz.words["dog"] == "狗"  # first sense and a common piece, over 獀
    # 跑 and 跑步 both have 'run' first; 跑 is one piece, 跑步 two
    assert pz.words["run"] == "跑"
    cost = use_piece_cost(lambda w: list(range(len(w))), lambda i: -10.0)
    assert PseudoChinese(["甲 甲 [jia3] /cat/", "乙 乙 [yi3] /x/cat/"], cost).words["cat"] == "甲"
    # a second place costs PLACE_COST: a much cheaper word there still wins
    cheap = use_piece_cost(lambda w: [0] if w == "乙" else [0, 1, 2], lambda i: -10.0)
    assert PseudoChinese(["甲 甲 [jia3] /cat/", "乙 乙 [yi3] /x/cat/"], cheap).words["cat"] == "乙"
    assert "beijing" not in pz.words


def test_inflected_words_find_their_stem_and_phrases_go_first():
    pz = translator()
    assert pz.translate("dogs running") == "狗跑"
    assert pz.translate("red ice cream") == "红冰淇淋"  # the phrase, not 冰 + 奶油
    assert pz.translate("ice") == "冰"
    assert pz.translate("zebra") == ""  # unknown words are dropped


def test_pseudo_vectors_follow_their_captions_into_the_selection_split():
    from training.multilingual import SplitArrays, selection_photos, split_selection

    caption_image = np.repeat(np.arange(20), 2)
    rng = np.random.default_rng(1)
    use = rng.standard_normal((40, 4)).astype(np.float32)
    train = SplitArrays(use=use, texts=use, images=rng.standard_normal((20, 4)).astype(np.float32),
                        caption_image=caption_image, pseudo=use * 2)
    fit, held, _ = split_selection(train, selection_photos(20, every=5))
    for part in (fit, held):
        assert part.pseudo is not None
        np.testing.assert_array_equal(part.pseudo, part.use * 2)


def test_a_head_asked_to_train_on_pseudo_chinese_needs_the_vectors():
    from training.multilingual import HeadOptions, SplitArrays, train_head

    caption_image = np.repeat(np.arange(4), 2)
    x = np.eye(8, 4, dtype=np.float32)
    train = SplitArrays(use=x, texts=x, images=x[:4], caption_image=caption_image)
    with pytest.raises(ValueError, match="pseudo-Chinese"):
        train_head(None, train, x[:4], [], HeadOptions(pseudo=0.5, epochs=1))  # type: ignore[arg-type]
