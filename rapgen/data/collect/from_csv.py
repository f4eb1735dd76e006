"""`rapgen collect csv`: songs from a CSV file (or `.csv.gz`), read row by row, never whole.

A dump of several GB is fine. The defaults fit the public Genius dumps (columns title, tag,
artist, year, views, features, lyrics, id, language); `--where COLUMN=VALUE` keeps matching rows.

>>> collect_csv("song_lyrics.csv", where=["tag=rap", "language=en"])  # doctest: +SKIP
'data/song_lyrics.txt'
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import sys
from typing import Iterator, List, Optional

from rapgen.checks import check_output_file
from rapgen.data.collect.arguments import default_out, parse_count, parse_names, parse_where
from rapgen.data.collect.clean import Cleaner, TokenCounter, clean_name, write_dataset
from rapgen.data.lyrics import Song
from rapgen.errors import RapgenError


def collect_csv(
    file: str,
    out: Optional[str] = None,
    artist_col: str = "artist",
    title_col: str = "title",
    lyrics_col: str = "lyrics",
    where=None,
    artists=None,
    max_songs: Optional[int] = None,
    min_length: int = 0,
    strip_sections: bool = False,
    delimiter: str = ",",
    encoding: str = "utf-8",
    vocab_dir: Optional[str] = None,
    tokens: bool = True,
    quiet: bool = False,
) -> str:
    """Import songs from a CSV file (plain or .gz), streaming it row by row; return `out`.

    Args:
        file: the CSV file; the first row names the columns.
        out: the dataset file to write (default: data/<file name>.txt).
        artist_col: the column holding the artist.
        title_col: the column holding the title.
        lyrics_col: the column holding the lyrics.
        where: keep rows whose column holds a value, case aside: "tag=rap", "tag=rap|trap" (either),
            "tag=rap,language=en" or a list of conditions (all must hold).
        artists: keep only these artists, "A,B" (or "A;B") or a list.
        max_songs: at most this many songs per artist, in file order.
        min_length: drop songs with fewer characters of lyrics.
        strip_sections: drop section header lines such as [Verse 1: …].
        delimiter: the field separator.
        encoding: the file's text encoding.
        vocab_dir: a folder with encoder.json and vocab.bpe to count tokens (default: found).
        tokens: count GPT-2 tokens in the summary (False: count words, faster on big dumps).
        quiet: no progress bar and no summary table.

    >>> collect_csv("song_lyrics.csv", where=["tag=rap", "language=en"], artists="Lil Tofu")  # doctest: +SKIP
    'data/song_lyrics.txt'
    """
    path = str(file)
    max_songs = parse_count(max_songs, "--max_songs")
    min_length = parse_count(min_length, "--min_length", 0, allow_none=False)
    try:
        codecs.lookup(str(encoding))
    except LookupError:
        raise RapgenError(
            f"--encoding {encoding!r} is not a text encoding Python knows: try utf-8 or latin-1"
        ) from None
    if len(str(delimiter)) != 1:
        raise RapgenError(f"--delimiter must be one character, not {delimiter!r}")
    if not os.path.isfile(path):
        raise RapgenError(f"{path} is not a file: give the path of a CSV file with lyrics")
    nul = _first_nul(path)
    if nul is not None:
        raise RapgenError(
            f"{path} looks binary (a NUL byte at offset {nul}), not a CSV text file: give a CSV (or .csv.gz) of lyrics"
        )
    stem = os.path.basename(path).split(".")[0]
    out = check_output_file(out if out else default_out(stem), "--out")
    if os.path.abspath(out) == os.path.abspath(path):
        raise RapgenError(f"--out {out} is the input file: choose another output path")
    conditions = parse_where(where)
    wanted = {n.casefold() for n in parse_names(artists)}
    counter = TokenCounter(vocab_dir, tokens)
    columns = {"--artist_col": artist_col, "--title_col": title_col, "--lyrics_col": lyrics_col}
    notes: List[str] = []
    songs = _csv_songs(path, columns, conditions, wanted, str(delimiter), str(encoding), quiet, notes)
    write_dataset(songs, out, Cleaner(min_length, strip_sections, max_songs), counter, notes, quiet)
    return out


def _csv_songs(path, columns, conditions, wanted, delimiter, encoding, quiet, notes) -> Iterator[Song]:
    from tqdm import tqdm  # tqdm: off the CLI's fast path (a test keeps it so)

    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # lyrics fields can be long
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        text = io.TextIOWrapper(stream, encoding=encoding, errors="replace", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        try:
            header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
            index = {name: i for i, name in enumerate(header)}
            for flag, name in [*columns.items(), *(("--where", c) for c in conditions)]:
                if name not in index:
                    raise RapgenError(f"{path} has no column {name!r} for {flag} (its columns: {_shown(header)})")
            a, t, ly = (index[c] for c in columns.values())
            tests = [(index[c], values) for c, values in conditions.items()]
            width, short, size = len(header), 0, os.path.getsize(path)
            with tqdm(
                total=size,
                unit="B",
                unit_scale=True,
                desc=os.path.basename(path)[:30],
                disable=quiet,
                file=sys.stderr,
                dynamic_ncols=True,
            ) as bar:
                for n, row in enumerate(reader):
                    if n % 1000 == 0:
                        bar.update(raw.tell() - bar.n)
                    if len(row) < width:
                        short += int(any(row))
                        continue
                    if any(row[i].strip().casefold() not in values for i, values in tests):
                        continue
                    if wanted and clean_name(row[a]).casefold() not in wanted:
                        continue
                    yield Song(row[a], row[t], row[ly])
                bar.update(size - bar.n)
        except csv.Error as e:
            raise RapgenError(f"{path}, line {reader.line_num}: not readable as CSV ({e}): check --delimiter") from None
        except (OSError, EOFError) as e:  # a truncated or corrupt .gz
            raise RapgenError(f"cannot read {path} ({e}): is the file complete?") from None
    if short:
        notes.append(f"{short:,} rows with fewer than {width} fields were skipped")


def _first_nul(path: str, size: int = 8192) -> Optional[int]:
    """Offset of the first NUL byte in the file's first `size` bytes (decompressed for .gz), else None."""
    try:
        with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
            head = f.read(size)
    except (OSError, EOFError):
        return None  # a damaged .gz: reading it says so, with its own message
    nul = head.find(b"\0")
    return nul if nul >= 0 else None


def _shown(names: List[str], most: int = 12, width: int = 30) -> str:
    """Column names for an error line: at most `most`, each cut to `width` characters, printable only."""
    clean = ["".join(c if c.isprintable() else "?" for c in n)[:width] for n in names[:most]]
    more = f", … {len(names) - most} more" if len(names) > most else ""
    return (", ".join(clean) + more) if clean else "none"
