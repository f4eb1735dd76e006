"""The lyrics text format (docs/architecture.md): songs behind `<<Artist - Title>>` headers.

Songs are separated by a line holding only `<|endoftext|>`. Every song rapgen writes is
followed by that line, the last one included, so a model learns to end a song with the
token 50256 and sampling can stop there.

>>> text = format_songs([Song("Lil Tofu", "Soy Drip", "[Hook]\\nsoy on my wrist")])
>>> print(text, end="")
<<Lil Tofu - Soy Drip>>
[Hook]
soy on my wrist
<|endoftext|>
>>> parse_songs(text)[0].artist
'Lil Tofu'
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, List, Optional

SEPARATOR = "<|endoftext|>"
_HEADER = re.compile(r"^<<(?P<body>.*?)>>[ \t]*$")
_SEPARATOR_LINE = re.compile(r"^[ \t]*<\|endoftext\|>[ \t\r]*$", re.M)  # \r: Windows line ends


@dataclasses.dataclass
class Song:
    artist: str
    title: str
    lyrics: str

    def header(self) -> str:
        return f"<<{self.artist} - {self.title}>>" if self.title else f"<<{self.artist}>>"


def prompt_for(artist: str) -> str:
    """The prompt that asks a fine-tuned model for a song by `artist`: `<<Artist`."""
    return "<<" + artist.strip()


def format_song(song: Song) -> str:
    """One song followed by its separator line."""
    return f"{song.header()}\n{song.lyrics.strip()}\n{SEPARATOR}\n"


def format_songs(songs: Iterable[Song]) -> str:
    return "".join(format_song(s) for s in songs)


def split_songs(text: str) -> List[str]:
    """The songs of a lyrics text (separator lines removed, empty pieces dropped)."""
    return [piece.strip("\r\n") for piece in _SEPARATOR_LINE.split(text) if piece.strip()]


def missing_separators(text: str, max_song_chars: int = 20_000) -> bool:
    """True when a text holds no separator line yet looks like several songs run together.

    Several `<<…>>` header lines, or more text than a song has (a rap song is a few thousand
    characters), without one `<|endoftext|>` line: it would train as a single song.

    >>> missing_separators("<<A - B>>\\nline\\n<<C - D>>\\nline\\n")
    True
    """
    if _SEPARATOR_LINE.search(text):
        return False
    headers = sum(1 for line in text.splitlines() if _HEADER.match(line.strip()))
    return headers > 1 or len(text) > max_song_chars


def parse_header(line: str) -> Optional[tuple]:
    """`'<<A - B>>'` -> `('A', 'B')`; `'<<A>>'` -> `('A', '')`; anything else -> None.

    The first ` - ` splits artist from title, since titles often hold a dash of their own.
    """
    match = _HEADER.match(line.strip())
    if not match:
        return None
    artist, _, title = match.group("body").partition(" - ")
    return artist.strip(), title.strip()


def parse_songs(text: str) -> List[Song]:
    """Every song of a lyrics text; a song without a header gets an empty artist and title."""
    songs = []
    for piece in split_songs(text):
        first, _, rest = piece.partition("\n")
        parsed = parse_header(first)
        if parsed is None:
            songs.append(Song("", "", piece))
        else:
            songs.append(Song(parsed[0], parsed[1], rest))
    return songs
