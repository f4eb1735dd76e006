"""Build a lyrics dataset (`rapgen collect genius|csv|folder`): songs from Genius, a CSV dump or a folder.

Every source ends the same way: its songs go through one `Cleaner` and are streamed into a lyrics
file in the format of DESIGN.md (`rapgen.data.lyrics`), which replaces the output atomically (a temp
file in the same folder, then `os.replace`) once it is complete; then a table of songs and tokens
per artist is printed. The commands return the output path. Arguments the sources share are
checked in `arguments`; this module only re-exports the sources and dispatches `collect`.

* `genius` (`from_genius`): the Genius API (`genius`, `fetch`), with the token from
  `$GENIUS_ACCESS_TOKEN` or, on Colab, the secret of that name. Each fetched song is appended to a
  JSONL cache, by default `<out>.cache.jsonl` (e.g. `data/rap.txt.cache.jsonl`), so a run that dies
  loses nothing and the next run fetches only what is missing; delete the cache to fetch everything
  again.
* `csv` (`from_csv`): a CSV file (or `.csv.gz`) read row by row, never whole, so a dump of several
  GB is fine. The defaults fit the public Genius dumps (columns title, tag, artist, year, views,
  features, lyrics, id, language). `--where COLUMN=VALUE` keeps matching rows (case-insensitive;
  `a|b` for either value; several conditions, given as a list or joined by commas, must all hold).
* `folder` (`from_folder`): one `.txt` file per song, the artist taken from the folder that holds it
  and the title from the file name (`DIR/Lil Tofu/Soy Drip.txt`). A file already in the lyrics
  format (`<<Artist - Title>>` headers) contributes all its songs.

Cleaning (`clean`, which imports no source), the same for every source: newlines, spaces and curly
quotes normalised, page remnants ("Embed", "You might also like", contributor counts) removed,
section headers like `[Verse 1]` kept unless `--strip_sections`; empty and instrumental songs
dropped, and duplicates (the same artist and title, case aside, or the same lyrics); `--min_length`
drops songs of fewer characters; `--max_songs` keeps at most that many songs per artist.

Artist and title text only becomes a file name through `safe_filename` (the default output is
`data/<artists>.txt`). Token counts use the GPT-2 vocabulary from `--vocab_dir`, `$RAPGEN_VOCAB_DIR`,
`models/*/` or `../shared/gpt2`; without one the table counts words and says so.

>>> collect("genius", artists="Lil Tofu,MC Fjord", max_songs=50, out="data/rap.txt")   # doctest: +SKIP
'data/rap.txt'
>>> collect("csv", file="song_lyrics.csv", where=["tag=rap", "language=en"])          # doctest: +SKIP
'data/song_lyrics.txt'
"""

from __future__ import annotations

import inspect

from rapgen.errors import RapgenError
from rapgen.data.collect.arguments import parse_where
from rapgen.data.collect.from_csv import collect_csv
from rapgen.data.collect.from_folder import collect_folder
from rapgen.data.collect.from_genius import collect_genius

__all__ = ["collect", "collect_genius", "collect_csv", "collect_folder", "parse_where", "COMMANDS"]

COMMANDS = {"genius": collect_genius, "csv": collect_csv, "folder": collect_folder}


def collect(source: str = "genius", *args, **kwargs) -> str:
    """Build a lyrics dataset from `source` ("genius", "csv" or "folder") with that command's keyword
    arguments; return the output path.

    >>> collect("genius", artists=["Lil Tofu", "MC Fjord"], max_songs=20)   # doctest: +SKIP
    'data/lil_tofu_mc_fjord.txt'
    >>> collect("folder", "my_lyrics", out="data/mine.txt")                 # doctest: +SKIP
    'data/mine.txt'
    """
    from rapgen.cli.binder import closest, unknown_name

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
