"""Build a lyrics dataset (`rapgen collect genius|csv|folder`): songs from Genius, a CSV dump or a folder.

Every source ends the same way: its songs go through one `Cleaner` and are streamed into a lyrics
file in the format of DESIGN.md (`rapgen.lyrics`), which replaces the output atomically (a temp
file in the same folder, then `os.replace`) once it is complete; then a table of songs and tokens
per artist is printed. The commands return the output path.

* `genius`: the Genius API (`rapgen.collection.genius`, `rapgen.collection.fetch`), with the token from `$GENIUS_ACCESS_TOKEN` or, on
  Colab, the secret of that name. Each fetched song is appended to a JSONL cache, by default
  `<out>.cache.jsonl` (e.g. `data/rap.txt.cache.jsonl`), so a run that dies loses nothing and the
  next run fetches only what is missing; delete the cache to fetch everything again.
* `csv`: a CSV file (or `.csv.gz`) read row by row, never whole, so a dump of several GB is fine.
  The defaults fit the public Genius dumps (columns title, tag, artist, year, views, features,
  lyrics, id, language). `--where COLUMN=VALUE` keeps matching rows (case-insensitive; `a|b` for
  either value; several conditions, given as a list or joined by commas, must all hold).
* `folder`: one `.txt` file per song, the artist taken from the folder that holds it and the title
  from the file name (`DIR/Lil Tofu/Soy Drip.txt`). A file already in the lyrics format
  (`<<Artist - Title>>` headers) contributes all its songs.

Cleaning (`rapgen.collection.clean`), the same for every source: newlines, spaces and curly quotes normalised, page remnants
("Embed", "You might also like", contributor counts) removed, section headers like `[Verse 1]` kept
unless `--strip_sections`; empty and instrumental songs dropped, and duplicates (the same artist and
title, case aside, or the same lyrics); `--min_length` drops songs of fewer characters;
`--max_songs` keeps at most that many songs per artist.

Artist and title text only becomes a file name through `safe_filename` (the default output is
`data/<artists>.txt`). Token counts use the GPT-2 vocabulary from `--vocab_dir`, `$RAPGEN_VOCAB_DIR`,
`models/*/` or `../shared/gpt2`; without one the table counts words and says so.

>>> collect("genius", artists="Lil Tofu,MC Fjord", max_songs=50, out="data/rap.txt")   # doctest: +SKIP
'data/rap.txt'
>>> collect("csv", file="song_lyrics.csv", where=["tag=rap", "language=en"])          # doctest: +SKIP
'data/song_lyrics.txt'
"""

from __future__ import annotations

import codecs
import csv
import gzip
import inspect
import io
import os
import re
import sys
from typing import Dict, Iterator, List, Optional

from ..errors import RapgenError
from ..lyrics import Song, parse_header, split_songs
from ..options import check_output_file
from .clean import Cleaner, TokenCounter, clean_name, safe_filename, write_dataset
from .genius import API_URL, TOKEN_ENV, WEB_URL, BlockedError

DATA_DIR = "data"
CACHE_SUFFIX = ".cache.jsonl"

__all__ = ["collect", "collect_genius", "collect_csv", "collect_folder", "COMMANDS"]

# ----------------------------------------------------------------------------- arguments


def _names(value, flag: str = "--artists") -> List[str]:
    """`"A,B"`, `"A;B"` (for names holding commas), `["A", "B"]` or `("A", "B")` -> `["A", "B"]`."""
    if value is None:
        return []
    if isinstance(value, bool):
        raise RapgenError(f'{flag} needs names, e.g. {flag} "Lil Tofu,MC Fjord"')
    if isinstance(value, (list, tuple, set)):
        items = [str(v) for v in value]
    else:
        text = str(value)
        items = text.split(";") if ";" in text else text.split(",")
    names, seen = [], set()
    for item in items:
        name = clean_name(item)
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            names.append(name)
    return names


def _count(value, flag: str, minimum: int = 1, allow_none: bool = True) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or not str(value).strip().isdigit() \
            or int(value) < minimum:
        raise RapgenError(f"{flag} must be a whole number of at least {minimum}, not {value!r}")
    return int(value)


def _number(value, flag: str, minimum: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number >= minimum:
        raise RapgenError(f"{flag} must be a number of at least {minimum:g}, not {value!r}")
    return number


_CONDITION_SPLIT = re.compile(r",\s*(?=[^,=|]+=)")


def parse_where(where) -> Dict[str, set]:
    """`["tag=rap|trap", "language=en"]` or `"tag=rap,language=en"` -> `{column: accepted values}`.

    >>> sorted(parse_where("tag=rap|Trap, language=en")["tag"])
    ['rap', 'trap']
    """
    if where is None:
        return {}
    # Each item may join several conditions by commas (`--where a=1,b=2 --where c=3`).
    items = [part for w in (where if isinstance(where, (list, tuple)) else [where]) for part in _CONDITION_SPLIT.split(str(w))]
    conditions: Dict[str, set] = {}
    for item in items:
        column, equals, value = item.partition("=")
        if not equals or not column.strip():
            raise RapgenError(f"--where expects COLUMN=VALUE (e.g. --where tag=rap), not {item!r}")
        conditions.setdefault(column.strip(), set()).update(v.strip().casefold() for v in value.split("|"))
    return conditions


def _first_nul(path: str, size: int = 8192) -> Optional[int]:
    """Offset of the first NUL byte in the file's first `size` bytes (decompressed for .gz), else None."""
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
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


def _default_out(name: str) -> str:
    return os.path.join(DATA_DIR, safe_filename(name) + ".txt")


# ----------------------------------------------------------------------------- sources


def collect_genius(artists=None, out: Optional[str] = None, max_songs: Optional[int] = None,
                   include_features: bool = False, sort: str = "popularity", min_length: int = 0,
                   strip_sections: bool = False, workers: int = 4, rate_limit: float = 5.0, timeout: float = 15.0,
                   retries: int = 5, backoff: float = 1.0, cache: Optional[str] = None, api_url: str = API_URL,
                   web_url: str = WEB_URL, vocab_dir: Optional[str] = None, tokens: bool = True,
                   quiet: bool = False) -> str:
    """Collect the songs of `artists` from Genius into `out`; return `out`.

    The API token is read from $GENIUS_ACCESS_TOKEN or, in a Colab notebook, the secret of that name.
    Running the same command again fetches only the songs missing from the cache.

    Args:
        artists: artist names, "A,B" (or "A;B" when a name holds a comma) or a list.
        out: the dataset file to write (default: data/<artists>.txt).
        max_songs: at most this many songs with lyrics per artist, most popular first (default: all).
        include_features: also keep songs where the artist is featured, not the primary artist.
        sort: the order Genius lists songs in: popularity or title.
        min_length: drop songs with fewer characters of lyrics.
        strip_sections: drop section header lines such as [Verse 1: …].
        workers: threads fetching song pages at once.
        rate_limit: requests per second over all threads (0: no limit).
        timeout: seconds to wait for an answer.
        retries: tries after the first on 429, 5xx, timeouts and malformed answers.
        backoff: seconds of the first pause between tries (doubled each time, with jitter).
        cache: the JSONL file of fetched songs (default: <out>.cache.jsonl).
        api_url: the API's base URL (https; http only for a 127.0.0.1 test server).
        web_url: the base URL of song pages.
        vocab_dir: a folder with encoder.json and vocab.bpe to count tokens (default: found).
        tokens: count GPT-2 tokens in the summary (False: count words).
        quiet: no progress bars and no summary table.

    >>> collect_genius(artists="Lil Tofu,MC Fjord", max_songs=50, out="data/rap.txt")  # doctest: +SKIP
    'data/rap.txt'
    """
    from ..colab import get_secret
    from .fetch import SongCache, fetch_artists
    from .genius import GeniusClient

    names = _names(artists)
    if not names:
        raise RapgenError('name the artists to collect, e.g. rapgen collect genius --artists "Lil Tofu,MC Fjord"')
    max_songs = _count(max_songs, "--max_songs")
    min_length = _count(min_length, "--min_length", 0, allow_none=False)
    workers = _count(workers, "--workers", allow_none=False)
    if sort not in ("popularity", "title"):
        raise RapgenError(f"--sort must be popularity or title, not {sort!r}")
    out = check_output_file(out if out else _default_out(", ".join(names)), "--out")
    cache_path = str(cache) if cache else out + CACHE_SUFFIX
    token = (get_secret(TOKEN_ENV) or "").strip()
    if not token:
        raise RapgenError(f"no Genius API token: set {TOKEN_ENV} (on Colab, a secret of that name) to a client access "
                          "token from https://genius.com/api-clients, or import a dump with `rapgen collect csv`")
    client = GeniusClient(token, api_url=api_url, web_url=web_url, timeout=_number(timeout, "--timeout", 0.001),
                          retries=_count(retries, "--retries", 0, False), backoff=_number(backoff, "--backoff"),
                          rate_limit=_number(rate_limit, "--rate_limit"))
    counter = TokenCounter(vocab_dir, tokens)  # before any request: a bad --vocab_dir fails at once
    with SongCache(cache_path) as song_cache:
        try:
            reports = fetch_artists(client, names, song_cache, max_songs=max_songs, include_features=include_features,
                                    workers=workers, sort=sort, quiet=quiet)
        except BlockedError as e:
            raise BlockedError(f"{e} ({len(song_cache):,} songs fetched so far stay in {cache_path})") from None
        finally:
            client.close()
    notes = []
    for r in reports:
        if r.error:
            notes.append(f"{r.query}: {r.error}")
            continue
        if not r.artist.exact:
            notes.append(f"{r.query}: no Genius artist has exactly that name; took {r.artist.name!r} (id {r.artist.id})")
        facts = [f"{r.cached:,} from the cache"] if r.cached else []
        facts += [f"{r.no_lyrics:,} without lyrics on their page"] if r.no_lyrics else []
        facts += [f"{r.failed:,} could not be fetched (run the same command again to retry them)"] if r.failed else []
        if r.blocked:  # pages the site blocked one by one: named, so the user knows what is missing
            n, shown = len(r.blocked), ", ".join(repr(t) for t in r.blocked[:5])
            more = f" and {n - 5:,} more" if n > 5 else ""
            facts.append(f"{n:,} page{'s' if n > 1 else ''} blocked by the site ({shown}{more}; "
                         f"run the same command again to retry {'them' if n > 1 else 'it'})")
        if facts:
            notes.append(f"{r.artist.name}: " + ", ".join(facts))
    songs = (Song(rec.get("artist") or r.artist.name, rec.get("title", ""), rec.get("lyrics", ""))
             for r in reports for rec in (song_cache.songs[i] for i in r.ids))
    write_dataset(songs, out, Cleaner(min_length, strip_sections, max_songs), counter, notes, quiet)
    return out


def collect_csv(file: str, out: Optional[str] = None, artist_col: str = "artist", title_col: str = "title",
                lyrics_col: str = "lyrics", where=None, artists=None, max_songs: Optional[int] = None,
                min_length: int = 0, strip_sections: bool = False, delimiter: str = ",", encoding: str = "utf-8",
                vocab_dir: Optional[str] = None, tokens: bool = True, quiet: bool = False) -> str:
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
    max_songs = _count(max_songs, "--max_songs")
    min_length = _count(min_length, "--min_length", 0, allow_none=False)
    try:
        codecs.lookup(str(encoding))
    except LookupError:
        raise RapgenError(f"--encoding {encoding!r} is not a text encoding Python knows: try utf-8 or latin-1") from None
    if len(str(delimiter)) != 1:
        raise RapgenError(f"--delimiter must be one character, not {delimiter!r}")
    if not os.path.isfile(path):
        raise RapgenError(f"{path} is not a file: give the path of a CSV file with lyrics")
    nul = _first_nul(path)
    if nul is not None:
        raise RapgenError(f"{path} looks binary (a NUL byte at offset {nul}), not a CSV text file: give a CSV (or .csv.gz) of lyrics")
    stem = os.path.basename(path).split(".")[0]
    out = check_output_file(out if out else _default_out(stem), "--out")
    if os.path.abspath(out) == os.path.abspath(path):
        raise RapgenError(f"--out {out} is the input file: choose another output path")
    conditions = parse_where(where)
    wanted = {n.casefold() for n in _names(artists)}
    counter = TokenCounter(vocab_dir, tokens)
    columns = {"--artist_col": artist_col, "--title_col": title_col, "--lyrics_col": lyrics_col}
    notes: List[str] = []
    songs = _csv_songs(path, columns, conditions, wanted, str(delimiter), str(encoding), quiet, notes)
    write_dataset(songs, out, Cleaner(min_length, strip_sections, max_songs), counter, notes, quiet)
    return out


def _csv_songs(path, columns, conditions, wanted, delimiter, encoding, quiet, notes) -> Iterator[Song]:
    from tqdm import tqdm

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
            with tqdm(total=size, unit="B", unit_scale=True, desc=os.path.basename(path)[:30], disable=quiet,
                      file=sys.stderr, dynamic_ncols=True) as bar:
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


def collect_folder(folder: str, out: Optional[str] = None, artists=None, max_songs: Optional[int] = None,
                   min_length: int = 0, strip_sections: bool = False, vocab_dir: Optional[str] = None,
                   tokens: bool = True, quiet: bool = False) -> str:
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
    max_songs = _count(max_songs, "--max_songs")
    min_length = _count(min_length, "--min_length", 0, allow_none=False)
    if not os.path.isdir(root):
        raise RapgenError(f"{root} is not a folder: give a folder holding one .txt file per song, "
                          "in a folder per artist (DIR/Lil Tofu/Soy Drip.txt)")
    out = check_output_file(out if out else _default_out(os.path.basename(os.path.abspath(root))), "--out")
    wanted = {n.casefold() for n in _names(artists)}
    counter = TokenCounter(vocab_dir, tokens)
    files = _text_files(root, skip=os.path.abspath(out))
    if not files:
        raise RapgenError(f"no .txt files under {root}: put one file per song in a folder named after the artist, "
                          "e.g. DIR/Lil Tofu/Soy Drip.txt")
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


# ----------------------------------------------------------------------------- entry points

COMMANDS = {"genius": collect_genius, "csv": collect_csv, "folder": collect_folder}


def collect(source: str = "genius", *args, **kwargs) -> str:
    """Build a lyrics dataset from `source` ("genius", "csv" or "folder") with that command's keyword
    arguments; return the output path.

    >>> collect("genius", artists=["Lil Tofu", "MC Fjord"], max_songs=20)   # doctest: +SKIP
    'data/lil_tofu_mc_fjord.txt'
    >>> collect("folder", "my_lyrics", out="data/mine.txt")                 # doctest: +SKIP
    'data/mine.txt'
    """
    from ..options import closest, unknown_name

    if source not in COMMANDS:
        raise unknown_name("lyrics source", source, list(COMMANDS))
    command = COMMANDS[source]
    accepted = inspect.signature(command).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        near = closest(unknown[0], accepted)
        hint = f" (did you mean {near}?)" if near else ""
        raise RapgenError(f"collect({source!r}) has no option {unknown[0]}{hint}; it takes {', '.join(accepted)}")
    return command(*args, **kwargs)
