"""Fetching many Genius songs at once, resumably: a thread pool over `GeniusClient` and a JSONL cache.

`fetch_artists` lists each artist's songs and sends the missing ones' pages through a thread pool;
every song is appended to the `SongCache` (one JSON object per line, flushed) the moment it
arrives, so a run that is killed loses nothing and the next run fetches only what is missing. The
main thread is the cache's only writer, so no song is written twice.

>>> with SongCache("data/rap.txt.cache.jsonl") as cache:                     # doctest: +SKIP
...     reports = fetch_artists(client, ["Lil Tofu"], cache, max_songs=10)
>>> [cache.songs[i]["title"] for i in reports[0].ids]                        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Dict, Iterable, List, Optional

from ..errors import RapgenError
from .genius import Artist, FetchError, GeniusClient

class SongCache:
    """Fetched songs, one JSON object per line, appended and flushed as each song arrives.

    On opening, an unreadable line (the half-written last line of a killed run) is ignored and cut
    off, so the next append starts on a fresh line. `songs` maps song id to its record.

    >>> cache = SongCache("data/rap.txt.cache.jsonl")              # doctest: +SKIP
    >>> cache.add({"id": 1, "artist": "Lil Tofu", "title": "Soy Drip", "lyrics": "…"})  # doctest: +SKIP
    """

    def __init__(self, path: str):
        self.path = path
        self.songs: Dict[int, dict] = {}
        self.ignored_lines = 0
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
            self._load()
            self._file = open(path, "a", encoding="utf-8", newline="\n")
        except OSError as e:
            raise RapgenError(f"cannot use the cache {path} ({e.strerror or e}): choose another --cache") from None

    def _load(self) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            data = f.read()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a line cut short by a crash: drop it so appends stay whole
            with open(self.path, "r+b") as f:
                f.truncate(complete)
            self.ignored_lines += 1
        for line in data[:complete].splitlines():
            try:
                record = json.loads(line.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                self.ignored_lines += int(bool(line.strip()))
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), int):
                self.songs[record["id"]] = record

    def __contains__(self, song_id) -> bool:
        return song_id in self.songs

    def __len__(self) -> int:
        return len(self.songs)

    def add(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()  # survives a killed process; close() also fsyncs for power loss
        self.songs[record["id"]] = record

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> "SongCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- fetching


@dataclasses.dataclass
class ArtistReport:
    query: str
    artist: Optional[Artist] = None
    ids: List[int] = dataclasses.field(default_factory=list)  # songs with lyrics, listing order
    cached: int = 0  # of those, taken from the cache
    no_lyrics: int = 0
    failed: int = 0
    error: str = ""


def _wanted(song: dict, artist_id: int, include_features: bool) -> bool:
    if song.get("instrumental") is True:
        return False
    if ((song.get("primary_artist") or {}).get("id")) == artist_id:
        return True
    if not include_features:
        return False
    featured = song.get("featured_artists")
    if not isinstance(featured, list):
        return True  # the listing does not say: the artist is on it somehow
    return any(isinstance(a, dict) and a.get("id") == artist_id for a in featured)


def fetch_artists(client: GeniusClient, queries: Iterable[str], cache: SongCache, max_songs: Optional[int] = None,
                  include_features: bool = False, workers: int = 4, sort: str = "popularity",
                  quiet: bool = False) -> List[ArtistReport]:
    """Fetch up to `max_songs` songs with lyrics per artist (None: all), reusing `cache`.

    Songs come in the order Genius lists them (`sort`: "popularity" or "title"); a song already
    in the cache is not fetched again, and a song taken by an earlier artist is not taken twice.
    A `BlockedError`, a refused token or Ctrl-C stops every thread at once (what was fetched stays
    in the cache).

    >>> reports = fetch_artists(client, ["Lil Tofu"], cache, max_songs=10)   # doctest: +SKIP
    >>> [cache.songs[i]["title"] for i in reports[0].ids]                     # doctest: +SKIP
    """
    from tqdm import tqdm

    taken: set = set()
    reports = []
    workers = max(1, int(workers))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="genius")
    try:
        for query in queries:
            report = ArtistReport(query)
            reports.append(report)
            try:
                report.artist = client.search_artist(query)
            except FetchError as e:
                report.error = f"search failed: {e}"
                continue
            if report.artist is None:
                report.error = "not found on Genius"
                continue
            with tqdm(total=max_songs, desc=report.artist.name[:30], unit="song", disable=quiet,
                      file=sys.stderr, leave=True, dynamic_ncols=True) as bar:
                _fetch_one_artist(client, report, cache, pool, workers, taken, max_songs, include_features, sort,
                                  bar)
    except BaseException:
        client.stop()  # threads still at work give up before their next request or pause
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return reports


def _fetch_one_artist(client, report, cache, pool, workers, taken, max_songs, include_features, sort, bar) -> None:
    """Take the artist's songs in listing order until `max_songs` have lyrics, keeping up to two
    fetches per worker in flight; the listing's next page is read only when needed. `report.ids`
    gets the songs with lyrics in listing order, also when the listing fails half-way."""
    artist_id = report.artist.id
    listing = client.artist_songs(artist_id, sort=sort)
    order: List[int] = []  # candidates in listing order
    pending: set = set()
    have, more = 0, True  # candidates with lyrics; whether the listing may hold more

    def has_lyrics(song_id) -> bool:
        record = cache.songs.get(song_id)
        return bool(record and str(record.get("lyrics") or "").strip())

    try:
        while True:
            while more and len(pending) < 2 * workers and (max_songs is None or have + len(pending) < max_songs):
                try:
                    song = next(listing, None)
                except FetchError as e:
                    report.error, song = f"listing songs failed: {e}", None
                if song is None:
                    more = False
                elif song["id"] not in taken and _wanted(song, artist_id, include_features):
                    taken.add(song["id"])
                    order.append(song["id"])
                    if song["id"] not in cache:
                        pending.add(pool.submit(client.fetch_song, song))
                    elif has_lyrics(song["id"]):
                        have, report.cached = have + 1, report.cached + 1
                        bar.update(1)
                    else:
                        report.no_lyrics += 1
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    record = future.result()
                except FetchError:  # a BlockedError or a refused token stops the run instead
                    report.failed += 1
                    continue
                cache.add(record)
                if record["lyrics"].strip():
                    have += 1
                    bar.update(1)
                else:
                    report.no_lyrics += 1
    finally:
        for future in pending:
            future.cancel()
        report.ids = [i for i in order if has_lyrics(i)][:max_songs]
