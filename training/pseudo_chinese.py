"""English captions put word by word into Chinese, to train the multilingual head on Chinese input.

The head (engine/vse/multilingual.py) learns a map from USE vectors into the joint space from
English captions only. A Chinese query's USE vector lands near, not on, its English version's
(cosine ~0.66 on val), and the head was never shown where Chinese text lands. These captions
show it: each English word becomes the Chinese word CC-CEDICT gives for it ("A dog runs on the
beach" -> "一个狗跑在海滩"), stilted but in Chinese characters, which is what USE reads. No
Chinese caption of any evaluation set is used to build them.

For an English word, the candidates are the dictionary entries that have it as a whole sense.
The chosen one has it earliest in its sense list and, among those, is tokenised by USE into the
fewest and most frequent sentencepiece pieces (USE's vocabulary was learnt on real text, so a
word that is one common piece is a word people write).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence

from engine.vse.glossing import cedict_lines, dictionary_entries
from engine.vse.multilingual import USEEncoder

log = logging.getLogger(__name__)

# English words captions use that a dictionary sense does not translate well: articles,
# copulas and prepositions as a person writing Chinese would put them ("" drops the word)
FUNCTION_WORDS: dict[str, str] = {
    "a": "一个", "an": "一个", "the": "", "is": "", "are": "", "am": "", "be": "", "being": "",
    "of": "的", "in": "在", "on": "在", "at": "在", "into": "进", "onto": "到", "to": "",
    "with": "带着", "and": "和", "while": "", "as": "", "his": "他的", "her": "她的", "its": "",
    "their": "他们的", "he": "他", "she": "她", "they": "他们", "it": "", "that": "", "who": "",
    "which": "", "some": "一些", "two": "两个", "three": "三个", "four": "四个", "five": "五个",
    "several": "几个", "many": "很多", "from": "从", "by": "在", "near": "附近", "under": "下面",
    "behind": "后面", "next": "旁边", "front": "前面", "over": "上方", "through": "穿过",
    "down": "下", "up": "上", "out": "出", "for": "", "has": "有", "have": "有", "wearing": "穿着",
    "there": "", "other": "另一个", "another": "另一个", "each": "", "one": "一个",
    # the commonest caption words, where the dictionary's shortest entry is not what people say
    "man": "男人", "men": "男人", "woman": "女人", "women": "女人", "people": "人们",
    "person": "人", "walk": "走", "walking": "走", "walks": "走", "dressed": "穿着",
    "holding": "拿着", "holds": "拿着", "background": "背景", "field": "草地", "grass": "草地",
    "street": "街上", "stool": "凳子", "sits": "坐", "sitting": "坐", "shirt": "衬衫",
    "jacket": "夹克", "child": "孩子", "children": "孩子们", "kid": "孩子", "kids": "孩子们",
    "playing": "玩", "plays": "玩", "looking": "看", "looks": "看", "standing": "站",
    "stands": "站", "water": "水", "crowd": "人群", "ball": "球", "air": "空中",
}
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_LONGEST_PHRASE = 3
# a sense counts as a translation of an English phrase of at most this many words
_SENSE_WORDS = 3


def _stems(word: str) -> list[str]:
    """Dictionary forms to try for an inflected English word, most likely first."""
    out = []
    if word.endswith("ies"):
        out.append(word[:-3] + "y")
    if word.endswith("es"):
        out.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        out.append(word[:-1])
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            base = word[: -len(suffix)]
            out += [base, base + "e"]
            if len(base) > 2 and base[-1] == base[-2]:
                out.append(base[:-1])
    return out


class PseudoChinese:
    """English text -> word-by-word Chinese."""

    def __init__(self, lines: Iterable[str], piece_cost: Callable[[str], float]) -> None:
        best: dict[str, tuple[float, str]] = {}
        for _, simplified, senses in dictionary_entries(lines):
            for place, sense in enumerate(senses[:4]):
                key = " ".join(sense.lower().split())
                if not key or len(key.split()) > _SENSE_WORDS or not _WORD.fullmatch(key.replace(" ", "-")):
                    continue
                score = PLACE_COST * place + piece_cost(simplified)
                if key not in best or score < best[key][0]:
                    best[key] = (score, simplified)
        self.words = {english: chinese for english, (_, chinese) in best.items()}
        self._scores = {english: score for english, (score, _) in best.items()}
        log.info("pseudo-Chinese: %d English words and phrases", len(self.words))

    def _word(self, word: str) -> str | None:
        """A word's Chinese: the hand table's, else the best-scored entry for it or its stems
        (a stem pays one sense place, so 'walking' is 走 for 'walk', not a rare entry for 'walking')."""
        if word in FUNCTION_WORDS:
            return FUNCTION_WORDS[word]
        forms = [(self._scores[word], word)] if word in self.words else []
        forms += [(self._scores[s] + PLACE_COST, s) for s in _stems(word) if s in self.words]
        return self.words[min(forms)[1]] if forms else None

    def translate(self, text: str) -> str:
        """Known words and phrases (longest first) in Chinese, unknown ones dropped."""
        words = _WORD.findall(text.lower())
        out, i = [], 0
        while i < len(words):
            for n in range(min(_LONGEST_PHRASE, len(words) - i), 0, -1):
                phrase = " ".join(words[i : i + n])
                chinese = self._word(phrase) if n == 1 else self.words.get(phrase)
                if chinese is not None or n == 1:
                    if chinese:
                        out.append(chinese)
                    i += n
                    break
        return "".join(out)

    def translate_all(self, texts: Sequence[str]) -> list[str]:
        return [self.translate(t) for t in texts]


# each place down an entry's sense list costs as much as this much rarer a word (in log-probability)
PLACE_COST = 3.0


def use_piece_cost(tokenize: Callable[[str], list[int]], piece_score: Callable[[int], float]) -> Callable[[str], float]:
    """Cost of a Chinese word as USE's sentencepiece sees it: minus its pieces' log-probabilities
    (a character outside USE's vocabulary costs the unknown piece's, which is the worst)."""

    def cost(word: str) -> float:
        return -sum(piece_score(p) for p in tokenize(word))

    return cost


def load_pseudo_chinese(tokenize: Callable[[str], list[int]], piece_score: Callable[[int], float]) -> PseudoChinese:
    with cedict_lines() as lines:
        return PseudoChinese(lines, use_piece_cost(tokenize, piece_score))


def use_pseudo_chinese(encoder: USEEncoder) -> PseudoChinese:
    """The translator, its word choice scored by `encoder`'s tokenizer."""
    tok = encoder.tokenizer
    unknown = float(tok._unk_score)

    def score(piece: int) -> float:
        return unknown if piece == tok._unk_id else float(tok._scores[piece])

    return load_pseudo_chinese(lambda w: tok.encode(w, out_type=int, add_bos=False, add_eos=False), score)
