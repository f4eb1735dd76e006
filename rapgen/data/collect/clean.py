"""From songs to the dataset file, the same for every source: cleaning, writing, the summary table.

`Cleaner` normalises newlines, spaces and curly quotes, removes page remnants ("Embed", "You might
also like", contributor counts), keeps section headers like `[Verse 1]` unless asked to strip
them, and drops empty and instrumental songs, duplicates (the same artist and title, case aside,
or the same lyrics), songs shorter than `min_length` characters and songs past `max_songs` per
artist. `write_dataset` streams the kept songs, in the lyrics format of `rapgen.data.lyrics`, through
`rapgen.fileio.atomic_open` (a temp file beside the output, renamed over it only when complete),
then prints the songs and GPT-2 tokens (or words, without a vocabulary) per artist.

It imports no source (Genius, CSV, folder): the sources import it.

>>> write_dataset([Song("Lil Tofu", "Soy Drip", "[Hook]\\nsoy on my wrist")], "data/demo.txt")  # doctest: +SKIP
{'Lil Tofu': [1, 5]}
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import unicodedata
from typing import Dict, Iterable, List, Optional

from rapgen.data.lyrics import SEPARATOR, Song, format_song
from rapgen.errors import RapgenError
from rapgen.fileio import atomic_open
from rapgen.model import folders
from rapgen.model.encoder import load_encoder

MAX_TABLE_ROWS = 30

# ----------------------------------------------------------------------------- cleaning

_CHARS = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u02bc": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',
    "\u2028": "\n",
    "\u2029": "\n",
    "\x0b": "\n",
    "\x0c": "\n",
    "\x85": "\n",
}
_CHARS.update({c: " " for c in "\t\u00a0\u1680\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))})
_CHARS.update({c: None for c in "\u200b\u2060\ufeff\u00ad\x7f"})
_CHARS.update({chr(c): None for c in range(32) if chr(c) not in "\n\t\x0b\x0c"})
_CHAR_TABLE = str.maketrans(_CHARS)
_SPECIAL_CHAR = re.compile("[" + re.escape("".join(_CHARS)) + "]")  # finding them is faster than translating
_SECTION = re.compile(r"\[[^\[\]\n]*\]")
_SPACES = re.compile(" {2,}")
_LINE_EDGES = re.compile(" ?\n ?")  # after _SPACES, at most one space is left on either side
_SECTION_LINE = re.compile(r"^\[[^\[\]\n]*\](?:\n|\Z)", re.M)
_BLANK_LINES = re.compile(r"\n{3,}")
_INSTRUMENTAL = re.compile(
    r"\W*(instrumental|no lyrics|lyrics for this song have yet to be (released|transcribed)\b.*)\W*", re.I | re.S
)
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}

# What lyrics pages (Genius's, and the dumps scraped from them) put inside or around the lyrics,
# and older scrapers kept: whole lines. Here, not in the Genius module, so that no source is imported.
_REMNANT_LINES = re.compile(
    r"^[ \t]*(?:\d+\s*Contributors?\b.*|Translations\b.*|See .{1,80} Live\s*Get tickets as low as \$\d+.*|"
    r"You might also like|\d*\s*Embed|Share URL\s*Copy\s*Embed\s*Copy)[ \t]*(?:\n|\Z)",
    re.I | re.M,
)
_TITLE_HEADING = re.compile(r"\A\s*[^\n\[]{1,200} Lyrics[ \t]*(?:\n|\Z)")  # "<Title> Lyrics", first line only
_YOU_MIGHT = re.compile(r"[ \t]*You might also like[ \t]*(?=(\[)|\n|\Z)")
_TRAILING_EMBED = re.compile(r"(?:\d*\s*Embed(?:Share URLCopyEmbedCopy)?|Share URLCopyEmbedCopy)\s*\Z")


def strip_remnants(text: str) -> str:
    """Remove what a song page leaves around the lyrics: contributor counts, the title heading,
    "You might also like", ticket adverts and the trailing "Embed".

    >>> strip_remnants("12 Contributors\\n[Hook]\\nsoy on my wrist\\nYou might also like[Verse]\\nyeah3Embed")
    '[Hook]\\nsoy on my wrist\\n\\n[Verse]\\nyeah'
    """
    text = text.rstrip()
    if "Embed" in text[-60:]:
        text = text[:-60] + _TRAILING_EMBED.sub("", text[-60:])
    text = _YOU_MIGHT.sub(lambda m: "\n\n" if m.group(1) else "\n", text)  # a stanza ends there
    text = _TITLE_HEADING.sub("", _REMNANT_LINES.sub("", text))
    return _BLANK_LINES.sub("\n\n", text).strip()


def clean_text(text: str, strip_sections: bool = False) -> str:
    """Lyrics with normalised newlines, spaces and quotes, page remnants removed, at most one blank
    line in a row, and no `<|endoftext|>` (it would end the song early).

    >>> clean_text("[Hook]\\r\\n  soy\\u00a0on my  \\u201cwrist\\u201d\\n\\n\\n\\nyeah  ")
    '[Hook]\\nsoy on my "wrist"\\n\\nyeah'
    >>> clean_text("[Hook]\\nsoy on my wrist", strip_sections=True)
    'soy on my wrist'
    """
    text = str(text).replace("\r\n", "\n").replace("\r", "\n").replace(SEPARATOR, "")
    if _SPECIAL_CHAR.search(text):
        text = text.translate(_CHAR_TABLE)
    text = _LINE_EDGES.sub("\n", _SPACES.sub(" ", strip_remnants(text)))
    if strip_sections:
        text = _SECTION_LINE.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def clean_name(name: str, artist: bool = False) -> str:
    """An artist or title on one line, spaces and quotes normalised. In an artist, ` - ` becomes
    ` – `, since the header's first ` - ` ends the artist.

    >>> clean_name("  Lil\\nTofu - Jr ", artist=True)
    'Lil Tofu – Jr'
    """
    name = " ".join(str(name).translate(_CHAR_TABLE).replace(SEPARATOR, "").split())
    return name.replace(" - ", " – ") if artist else name


def is_instrumental(lyrics: str) -> bool:
    """True for lyrics that hold no words: empty, only section headers, or a note such as "Instrumental".

    >>> is_instrumental("[Intro]\\n\\n[Instrumental]"), is_instrumental("soy on my wrist")
    (True, False)
    """
    words = _SECTION.sub(lambda m: m.group()[1:-1] if "instrumental" in m.group().casefold() else " ", lyrics)
    return not words.strip() or bool(_INSTRUMENTAL.fullmatch(words.strip()))


def safe_filename(text: str, default: str = "lyrics", max_length: int = 60) -> str:
    """A file name made from any text (an artist, a title): letters, digits, `_` and `-` only.

    >>> safe_filename("../../etc/Lil Tofu, MC Fjord"), safe_filename("CON"), safe_filename("??")
    ('etc_lil_tofu_mc_fjord', 'con_', 'lyrics')
    """
    name = re.sub(r"[^\w-]+", "_", unicodedata.normalize("NFKC", str(text)).casefold())
    name = name.strip("_-")[:max_length].strip("_-") or default
    return name + "_" if name.upper() in _WINDOWS_RESERVED else name


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class Cleaner:
    """Cleans one song at a time; drops (returns None for) empty, instrumental, short, duplicate and
    over-the-limit songs, and counts why in `dropped`.

    Only 8-byte digests of what it has seen are kept, so memory grows slowly with the songs kept.

    >>> cleaner = Cleaner()
    >>> cleaner(Song("Lil Tofu", "Soy Drip", "[Hook]\\nsoy")).lyrics, cleaner(Song("LIL TOFU", "soy drip", "x"))
    ('[Hook]\\nsoy', None)
    """

    def __init__(self, min_length: int = 0, strip_sections: bool = False, max_songs: Optional[int] = None):
        self.min_length = int(min_length or 0)
        self.strip_sections = bool(strip_sections)
        self.max_songs = max_songs
        self.read = 0
        self.dropped: collections.Counter = collections.Counter()
        self._titles: set = set()
        self._lyrics: set = set()
        self._per_artist: collections.Counter = collections.Counter()

    def __call__(self, song: Song) -> Optional[Song]:
        self.read += 1
        artist = clean_name(song.artist, artist=True) or "Unknown"
        title = clean_name(song.title)
        lyrics = clean_text(song.lyrics, self.strip_sections)
        if is_instrumental(lyrics):
            return self._drop("empty or instrumental")
        if len(lyrics) < self.min_length:
            return self._drop("shorter than --min_length")
        key = artist.casefold()
        title_key = _digest(key + "\0" + title.casefold()) if title else None
        lyrics_key = _digest(" ".join(lyrics.casefold().split()))
        if (title_key is not None and title_key in self._titles) or lyrics_key in self._lyrics:
            return self._drop("duplicates")
        if self.max_songs is not None and self._per_artist[key] >= self.max_songs:
            return self._drop("over --max_songs")
        if title_key is not None:  # songs without a title are told apart by their lyrics only
            self._titles.add(title_key)
        self._lyrics.add(lyrics_key)
        self._per_artist[key] += 1
        return Song(artist, title, lyrics)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        return None

    def describe(self) -> str:
        parts = [f"{n:,} {reason}" for reason, n in self.dropped.most_common()]
        return f"read {self.read:,} songs, dropped " + (", ".join(parts) if parts else "none")


# ----------------------------------------------------------------------------- counting and writing


def find_vocab_dir(vocab_dir: Optional[str] = None) -> Optional[str]:
    """The folder to count tokens with (`--vocab_dir`, `$RAPGEN_VOCAB_DIR` or a downloaded model,
    as `rapgen.model.folders.find_vocab_dir` looks); None, to count words, when none holds it.
    A `--vocab_dir` without the vocabulary is an error."""
    try:
        return folders.find_vocab_dir(vocab_dir)
    except RapgenError:
        if vocab_dir:
            raise
        return None


class TokenCounter:
    """Counts GPT-2 tokens of a song as the training file holds it (separator = 1 token), or its
    words when no vocabulary is found or `tokens=False`. `unit` names what it counts."""

    def __init__(self, vocab_dir: Optional[str] = None, tokens: bool = True):
        folder = find_vocab_dir(vocab_dir) if tokens else None
        self.encoder = None
        self.unit, self.note = "words", ""
        if folder is not None:
            self.encoder = load_encoder(folder)
            self.unit = "tokens"
        elif tokens:
            self.note = "no GPT-2 vocabulary found, so words are counted: pass --vocab_dir MODEL_DIR for tokens"

    def __call__(self, song: Song) -> int:
        if self.encoder is None:
            return len(song.lyrics.split())
        return len(self.encoder.encode(f"{song.header()}\n{song.lyrics}\n")) + 1


def write_dataset(
    songs: Iterable[Song],
    out: str,
    cleaner: Optional[Cleaner] = None,
    counter: Optional[TokenCounter] = None,
    notes: Iterable[str] = (),
    quiet: bool = False,
) -> dict:
    """Clean `songs` and stream them into `out` atomically; print the table; return
    `{artist: [songs, tokens]}`. Raises RapgenError (and leaves `out` untouched) if no song is left.

    >>> write_dataset([Song("Lil Tofu", "Soy Drip", "soy on my wrist")], "data/demo.txt")  # doctest: +SKIP
    {'Lil Tofu': [1, 14]}
    """
    cleaner = cleaner or Cleaner()
    counter = counter or TokenCounter(tokens=False)
    notes = list(notes)
    folder = os.path.dirname(os.path.abspath(out))
    stats: Dict[str, List[int]] = {}
    made = not os.path.isdir(folder)  # removed again if no dataset comes of it
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise RapgenError(f"cannot write into {folder} ({e.strerror or e}): choose another --out") from None
    try:
        with atomic_open(out) as f:
            for song in songs:
                kept = cleaner(song)
                if kept is not None:
                    f.write(format_song(kept))
                    row = stats.setdefault(kept.artist, [0, 0])
                    row[0] += 1
                    row[1] += counter(kept)
            if not stats:  # raised inside the block: the temp file goes, `out` stays as it was
                raise RapgenError(
                    f"no songs to write to {out} ({'; '.join([*notes, cleaner.describe()])}): "
                    "check the artists and filters"
                )
    except OSError as e:
        raise RapgenError(
            f"cannot write {out} ({e.strerror or e}): free some disk space or choose another --out"
        ) from None
    finally:
        if made and not os.path.exists(out) and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)  # a failed collection leaves no empty data/ behind
    if not quiet:
        print_table(stats, counter, cleaner, notes)
    return stats


def print_table(stats: dict, counter: TokenCounter, cleaner: Cleaner, notes: Iterable[str] = ()) -> None:
    """The summary: songs and tokens (or words) per artist, totals, what was dropped, notes."""
    shown, hidden = list(stats.items()), []
    if len(shown) > MAX_TABLE_ROWS + 5:  # a big dump: the largest artists, then one line for the rest
        ranked = sorted(shown, key=lambda r: -r[1][0])
        shown, hidden = ranked[:MAX_TABLE_ROWS], ranked[MAX_TABLE_ROWS:]
    width = min(40, max([len("artist")] + [len(a) for a, _ in shown]))
    unit = counter.unit + ("*" if counter.note else "")
    lines = [f"{'artist':<{width}}  {'songs':>8}  {unit:>12}"]
    lines += [f"{a[:width]:<{width}}  {n:>8,}  {t:>12,}" for a, (n, t) in shown]
    if hidden:
        lines.append(
            f"{f'… {len(hidden):,} more artists':<{width}}  {sum(r[1][0] for r in hidden):>8,}  "
            f"{sum(r[1][1] for r in hidden):>12,}"
        )
    lines.append(
        f"{'total':<{width}}  {sum(r[0] for r in stats.values()):>8,}  {sum(r[1] for r in stats.values()):>12,}"
    )
    if counter.note:
        lines.append(f"* {counter.note}")
    lines.append(cleaner.describe())
    lines += list(notes)
    print("\n".join(lines), flush=True)
