"""`rapgen collect folder`: one `.txt` file per song, in a folder per artist (`DIR/Lil Tofu/Soy Drip.txt`).

A file already in the lyrics format (`<<Artist - Title>>` headers) contributes all its songs.

>>> collect_folder("my_lyrics", out="data/mine.txt")  # doctest: +SKIP
'data/mine.txt'
"""

from __future__ import annotations

import os
import re
from typing import Iterator, List, Optional

from rapgen.checks import check_output_file
from rapgen.data.collect.arguments import default_out, parse_count, parse_names
from rapgen.data.collect.clean import Cleaner, TokenCounter, clean_name, write_dataset
from rapgen.data.lyrics import Song, parse_header, split_songs
from rapgen.errors import RapgenError


def collect_folder(
    folder: str,
    out: Optional[str] = None,
    artists=None,
    max_songs: Optional[int] = None,
    min_length: int = 0,
    strip_sections: bool = False,
    vocab_dir: Optional[str] = None,
    tokens: bool = True,
    quiet: bool = False,
) -> str:
    """Import one `.txt` per song, the artist named by the file's folder: `DIR/Lil Tofu/Soy Drip.txt`.

    The title is the file name ("_" read as a space). A file in the lyrics format (`<<Artist -
    Title>>` headers, `<|endoftext|>` lines) gives all its songs. Returns `out`.

    Args:
        folder: the folder to read (its sub-folders too; hidden files and folders are skipped).
        out: the dataset file to write (default: data/<folder name>.txt).
        artists: keep only these artists, "A,B" (or "A;B") or a list.
        max_songs: at most this many songs per artist.
        min_length: drop songs with fewer characters of lyrics.
        strip_sections: drop section header lines such as [Verse 1: …].
        vocab_dir: a folder with encoder.json and vocab.bpe to count tokens (default: found).
        tokens: count GPT-2 tokens in the summary (False: count words).
        quiet: no summary table.

    >>> collect_folder("my_lyrics", out="data/mine.txt")                  # doctest: +SKIP
    'data/mine.txt'
    """
    root = str(folder)
    max_songs = parse_count(max_songs, "--max_songs")
    min_length = parse_count(min_length, "--min_length", 0, allow_none=False)
    if not os.path.isdir(root):
        raise RapgenError(
            f"{root} is not a folder: give a folder holding one .txt file per song, "
            "in a folder per artist (DIR/Lil Tofu/Soy Drip.txt)"
        )
    out = check_output_file(out if out else default_out(os.path.basename(os.path.abspath(root))), "--out")
    wanted = {n.casefold() for n in parse_names(artists)}
    counter = TokenCounter(vocab_dir, tokens)
    files = _text_files(root, skip=os.path.abspath(out))
    if not files:
        raise RapgenError(
            f"no .txt files under {root}: put one file per song in a folder named after the artist, "
            "e.g. DIR/Lil Tofu/Soy Drip.txt"
        )
    songs = (s for s in _folder_songs(root, files) if not wanted or clean_name(s.artist).casefold() in wanted)
    write_dataset(songs, out, Cleaner(min_length, strip_sections, max_songs), counter, quiet=quiet)
    return out


def _text_files(root: str, skip: str) -> List[str]:
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name.lower().endswith(".txt") and not name.startswith(".") and os.path.abspath(path) != skip:
                found.append(path)
    return found


def _folder_songs(root: str, files: List[str]) -> Iterator[Song]:
    top = os.path.basename(os.path.abspath(root))
    for path in files:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            text = f.read()
        artist = os.path.basename(os.path.dirname(os.path.abspath(path))) or top
        title = os.path.splitext(os.path.basename(path))[0].replace("_", " ")
        first = text.lstrip().partition("\n")[0]
        if parse_header(first) is None and not re.search(r"^[ \t]*<\|endoftext\|>[ \t]*$", text, re.M):
            yield Song(artist, title, text)
            continue
        for number, piece in enumerate(split_songs(text), 1):  # a file in the lyrics format: all its songs
            head, _, rest = piece.partition("\n")
            parsed = parse_header(head)
            yield Song(*parsed, rest) if parsed else Song(artist, f"{title} {number}", piece)
