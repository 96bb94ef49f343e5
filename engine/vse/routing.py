"""Which text tower a query needs: English (the model's own) or multilingual (USE + head).

Kept apart from engine/vse/multilingual.py and free of torch, so that routing an English
query never loads the multilingual tower: English-only sessions (indexing, status, English
search on the ONNX runtime) do not import torch at all.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Container
from pathlib import Path


def _is_latin_letter(ch: str) -> bool:
    o = ord(ch)
    # Basic Latin .. Latin Extended-B, IPA, Latin Extended Additional (Vietnamese), fullwidth
    return o < 0x2B0 or 0x1E00 <= o <= 0x1EFF or 0xFF21 <= o <= 0xFF5A


_WORD = re.compile(r"[^\W\d_]+")

# Words that say "this is English" in a photo description: function words and the commonest
# caption nouns. Counted against `_FOREIGN_WORDS`.
_ENGLISH_WORDS = frozenset(
    """a an the of in on at with and or is are was be being by for from to into onto near under
    over through while who which that this these those there some his her their its he she they
    it one two three four five several many young old little small big large man men woman women
    person people boy boys girl girls child children kid kids dog dogs baby lady guy group
    standing sitting walking running playing wearing holding looking""".split()
)

# Function words (and a few caption staples) of USE's other Latin-script languages: es fr de it
# pt nl pl tr. Words that are also English (a, in, is, man, van, met, no, do, die, due, hay,
# pies, per, am, kind, on, an, i, son) are left out so they cannot misroute an English query.
_FOREIGN_WORDS = frozenset(
    """el la los las un una unos unas del al y en con de por para sobre junto su sus que es
    está están muy sin entre hombre mujer gente niño niña niños perro perros playa calle agua
    le les une des du et avec sur dans sous est sont qui au aux deux trois chien homme femme
    enfant enfants devant près pour plage rue
    der das den dem des ein eine einer einem einen und mit auf im ist sind vor zwei drei hund
    mann frau kinder beim zum zur neben unter über von bei strand straße
    il lo gli uno di della dei sul sulla nel nella è sono tre cane uomo donna bambino bambini
    tra fra spiaggia
    o os um uma uns umas da dos das na nos nas em com e é são dois duas cão cachorro homem
    mulher menino menina pela pelo praia rua
    het een op zijn twee drie hond vrouw bij naast onder voor
    w z się jest są dwa dwie mężczyzna kobieta dziecko przy pod nad obok
    bir ve ile bu iki üç köpek adam kadın çocuk üzerinde yanında içinde""".split()
)


def needs_multilingual(text: str, english_lexicon: Container[str] | None = None) -> bool:
    """Whether a query should go to the multilingual tower rather than the English one.

    Any letter outside the Latin script (CJK, kana, Hangul, Cyrillic, Arabic, Thai, ...) means
    yes. Latin-script text is English unless it has more foreign than English function words
    (diacritics count as one foreign word); with no evidence either way (keyword queries such as
    "perro playa"), it is English when at least half its words are in `english_lexicon`, or
    always when no lexicon is given. A misrouted English query still works (USE reads English
    too), while a misrouted Spanish one would not, so doubt leans towards the multilingual side
    only where the lexicon says the words are not English.
    """
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return False
    if not all(_is_latin_letter(ch) for ch in letters):
        return True
    words = _WORD.findall(text.lower())
    english = sum(w in _ENGLISH_WORDS for w in words)
    foreign = sum(w in _FOREIGN_WORDS for w in words) + any(ord(ch) > 127 for ch in letters)
    if foreign != english:
        return foreign > english
    if english_lexicon is None or not words:
        return False
    known = sum(w in english_lexicon for w in words)
    return 2 * known < len(words)


def lexicon_from_captions(path: Path) -> frozenset[str]:
    """The words of a caption file (one caption a line): the English vocabulary of photo
    descriptions, for `needs_multilingual`'s keyword-query case."""
    with open(path, encoding="utf-8") as fh:
        return frozenset(w for line in fh for w in _WORD.findall(line.lower()))


class CaptionLexicon:
    """`lexicon_from_captions(path)`, read on the first lookup: most queries never need it
    (function words decide), and reading 35K captions costs most of a second."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._words: frozenset[str] | None = None
        self._lock = threading.Lock()

    def __contains__(self, word: object) -> bool:
        if self._words is None:
            with self._lock:
                if self._words is None:
                    self._words = lexicon_from_captions(self.path)
        return word in self._words
