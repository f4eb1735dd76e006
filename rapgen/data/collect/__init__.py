"""Build a lyrics dataset (`rapgen collect genius|csv|folder`): songs from Genius, a CSV dump or a folder.

One module per source (`from_genius`, `from_csv`, `from_folder`); every source ends the same way,
its songs through one `Cleaner` into a lyrics file written atomically (`clean`), then a table of
songs and tokens per artist. The shared argument checks are in `arguments`; this module re-exports
the sources and dispatches `collect`. The flags and what each source reads: docs/commands.md.

>>> collect("genius", artists="Lil Tofu,MC Fjord", max_songs=50, out="data/rap.txt")   # doctest: +SKIP
'data/rap.txt'
>>> collect("csv", file="song_lyrics.csv", where=["tag=rap", "language=en"])          # doctest: +SKIP
'data/song_lyrics.txt'
"""

from __future__ import annotations

import inspect

from rapgen.checks import closest, unknown_name
from rapgen.data.collect.arguments import parse_where
from rapgen.data.collect.from_csv import collect_csv
from rapgen.data.collect.from_folder import collect_folder
from rapgen.data.collect.from_genius import collect_genius
from rapgen.errors import RapgenError

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
