"""Fetching many Genius songs at once, resumably: a thread pool over `GeniusClient` and a JSONL cache.

`fetch_artists` lists each artist's songs and sends the missing ones' pages through a thread pool;
every song is appended to the `SongCache` (one JSON object per line, flushed) the moment it
arrives, so a run that is killed loses nothing and the next run fetches only what is missing. The
main thread is the cache's only writer, so no song is written twice.

A blocked song page is skipped, counted and named in the report (and asked again by the next
run); only when the site as a whole refuses this machine does the run stop (`BlockWatch`).

>>> with SongCache("data/rap.txt.cache.jsonl") as cache:                     # doctest: +SKIP
...     reports = fetch_artists(client, ["Lil Tofu"], cache, max_songs=10)
>>> [cache.songs[i]["title"] for i in reports[0].ids]                        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Dict, Iterable, List, Optional

from rapgen.data.collect.genius import Artist, BlockedError, FetchError, GeniusClient, PageBlockedError
from rapgen.errors import RapgenError

# Song pages blocked one after another before the site itself is suspected. One page can be
# blocked on its own (a takedown, a region); a site that refuses a machine blocks every page.
BLOCKS_IN_A_ROW = 3


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
    blocked: List[str] = dataclasses.field(default_factory=list)  # titles of pages blocked on their own
    error: str = ""


class BlockWatch:
    """Tells a blocked page from a blocked site, from the song pages' answers as they come in.

    `fetch_song` runs in the worker threads and counts each answer there, at once (the main thread
    would see them too late to stop the other threads' next requests). A page served normally
    resets the count. After `BLOCKS_IN_A_ROW` blocked pages in a row, a page that was served before
    (in this run, else one from the cache) is asked again, while the other threads wait: blocked
    too, the site refuses this machine, every thread stops and `BlockedError` is raised; served, the
    blocks were pages of their own and the run goes on. With no such page (the first pages of a run
    all blocked) the site is taken as blocked.

    >>> watch = BlockWatch(client, cache)                               # doctest: +SKIP
    >>> record = watch.fetch_song(song)   # PageBlockedError for a page, BlockedError for the site   # doctest: +SKIP
    """

    def __init__(self, client: GeniusClient, cache: SongCache):
        self.client = client
        self.in_a_row = 0
        self.good_path: Optional[str] = None
        self.site_error: Optional[BlockedError] = None
        self._lock = threading.Lock()  # one verdict at a time; the others wait for it
        for record in reversed(list(cache.songs.values())):  # read here: the main thread writes the cache
            if _page_served(record):
                self.good_path = record["path"]
                break

    def fetch_song(self, song: dict) -> dict:
        """`client.fetch_song`, with its answer counted."""
        try:
            record = self.client.fetch_song(song)
        except PageBlockedError as e:
            self._blocked(e)
            raise
        with self._lock:
            self.in_a_row = 0
            if _page_served(record):
                self.good_path = record["path"]
        return record

    def _blocked(self, error: PageBlockedError) -> None:
        with self._lock:
            if self.site_error is not None:  # decided by another thread meanwhile
                raise BlockedError(str(self.site_error))
            self.in_a_row += 1
            if self.in_a_row < BLOCKS_IN_A_ROW:
                return
            if self.good_path is not None and self.client.page_works(self.good_path):
                self.in_a_row = 0
                return
            self.site_error = self.client.site_blocked(f"{error.detail}, {self.in_a_row} song pages in a row")
            raise self.site_error


def _page_served(record: dict) -> bool:
    path = record.get("path")
    return isinstance(path, str) and path.startswith("/") and bool(str(record.get("lyrics") or "").strip())


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


def fetch_artists(
    client: GeniusClient,
    queries: Iterable[str],
    cache: SongCache,
    max_songs: Optional[int] = None,
    include_features: bool = False,
    workers: int = 4,
    sort: str = "popularity",
    quiet: bool = False,
) -> List[ArtistReport]:
    """Fetch up to `max_songs` songs with lyrics per artist (None: all), reusing `cache`.

    Songs come in the order Genius lists them (`sort`: "popularity" or "title"); a song already
    in the cache is not fetched again, and a song taken by an earlier artist is not taken twice.
    A blocked song page is skipped and named in its report (`blocked`); a site that refuses this
    machine (`BlockWatch`), a refused token or Ctrl-C stops every thread at once (what was fetched
    stays in the cache).

    >>> reports = fetch_artists(client, ["Lil Tofu"], cache, max_songs=10)   # doctest: +SKIP
    >>> [cache.songs[i]["title"] for i in reports[0].ids]                     # doctest: +SKIP
    """
    from tqdm import tqdm  # tqdm: off the CLI's fast path (a test keeps it so)

    taken: set = set()
    reports = []
    watch = BlockWatch(client, cache)  # across artists: a site block does not wait for the next one
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
            with tqdm(
                total=max_songs,
                desc=report.artist.name[:30],
                unit="song",
                disable=quiet,
                file=sys.stderr,
                leave=True,
                dynamic_ncols=True,
            ) as bar:
                _fetch_one_artist(
                    client, report, cache, pool, workers, taken, max_songs, include_features, sort, bar, watch
                )
    except BaseException:
        client.stop()  # threads still at work give up before their next request or pause
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return reports


def _fetch_one_artist(
    client, report, cache, pool, workers, taken, max_songs, include_features, sort, bar, watch
) -> None:
    """Take the artist's songs in listing order until `max_songs` have lyrics, keeping up to two
    fetches per worker in flight; the listing's next page is read only when needed. `report.ids`
    gets the songs with lyrics in listing order, also when the listing fails half-way."""
    artist_id = report.artist.id
    listing = client.artist_songs(artist_id, sort=sort)
    order: List[int] = []  # candidates in listing order
    pending: set = set()
    songs: Dict[object, dict] = {}  # future -> the listed song it fetches
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
                        future = pool.submit(watch.fetch_song, song)
                        songs[future] = song
                        pending.add(future)
                    elif has_lyrics(song["id"]):
                        have, report.cached = have + 1, report.cached + 1
                        bar.update(1)
                    else:
                        report.no_lyrics += 1
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                song = songs.pop(future)
                try:
                    record = future.result()
                except PageBlockedError:  # this page only (BlockWatch raised BlockedError for the site)
                    report.blocked.append(str(song.get("title") or song["id"]))  # not cached: asked again next run
                    continue
                except FetchError:  # a BlockedError or a refused token stops the run instead
                    report.failed += 1
                    continue
                cache.add(record)
                if record["lyrics"].strip():
                    have += 1
                    bar.update(1)
                else:
                    report.no_lyrics += 1
    except BlockedError:
        _keep_arrived(pending, cache)
        raise
    finally:
        for future in pending:
            future.cancel()
        report.ids = [i for i in order if has_lyrics(i)][:max_songs]


def _keep_arrived(pending: set, cache: SongCache) -> None:
    """After a site block (every thread told to stop): songs whose pages were in flight and
    arrived all the same go to the cache; the rest are dropped."""
    running = [f for f in pending if not f.cancel()]
    done, _ = wait(running)  # each ends after its current request: the client stopped them
    for future in done:
        try:
            cache.add(future.result())
        except (FetchError, RapgenError):
            pass
