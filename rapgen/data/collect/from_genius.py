"""`rapgen collect genius`: the songs of named artists from the Genius API, through a resumable cache.

The API token comes from `$GENIUS_ACCESS_TOKEN` or, on Colab, the secret of that name. Each
fetched song is appended to a JSONL cache (`<out>.cache.jsonl` by default), so a run that dies
loses nothing and the next run fetches only what is missing. The client is
`rapgen.data.collect.genius`; the threads fetching pages are `rapgen.data.collect.fetch`.

>>> collect_genius(artists="Lil Tofu,MC Fjord", max_songs=50, out="data/rap.txt")  # doctest: +SKIP
'data/rap.txt'
"""

from __future__ import annotations

from typing import Optional

from rapgen.checks import check_output_file, one_of
from rapgen.colab import get_secret
from rapgen.data.collect.arguments import default_out, parse_count, parse_names, parse_number
from rapgen.data.collect.clean import Cleaner, TokenCounter, write_dataset
from rapgen.data.collect.fetch import SongCache, fetch_artists
from rapgen.data.collect.genius import API_URL, TOKEN_ENV, WEB_URL, BlockedError, GeniusClient
from rapgen.data.lyrics import Song
from rapgen.errors import RapgenError

CACHE_SUFFIX = ".cache.jsonl"


def collect_genius(
    artists=None,
    out: Optional[str] = None,
    max_songs: Optional[int] = None,
    include_features: bool = False,
    sort: str = "popularity",
    min_length: int = 0,
    strip_sections: bool = False,
    workers: int = 4,
    rate_limit: float = 5.0,
    timeout: float = 15.0,
    retries: int = 5,
    backoff: float = 1.0,
    cache: Optional[str] = None,
    api_url: str = API_URL,
    web_url: str = WEB_URL,
    vocab_dir: Optional[str] = None,
    tokens: bool = True,
    quiet: bool = False,
) -> str:
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
    names = parse_names(artists)
    if not names:
        raise RapgenError('name the artists to collect, e.g. rapgen collect genius --artists "Lil Tofu,MC Fjord"')
    max_songs = parse_count(max_songs, "--max_songs")
    min_length = parse_count(min_length, "--min_length", 0, allow_none=False)
    workers = parse_count(workers, "--workers", allow_none=False)
    one_of("--sort", sort, ("popularity", "title"))
    out = check_output_file(out if out else default_out(", ".join(names)), "--out")
    cache_path = str(cache) if cache else out + CACHE_SUFFIX
    token = (get_secret(TOKEN_ENV) or "").strip()
    if not token:
        raise RapgenError(
            f"no Genius API token: set {TOKEN_ENV} (on Colab, a secret of that name) to a client access "
            "token from https://genius.com/api-clients, or import a dump with `rapgen collect csv`"
        )
    client = GeniusClient(
        token,
        api_url=api_url,
        web_url=web_url,
        timeout=parse_number(timeout, "--timeout", positive=True),
        retries=parse_count(retries, "--retries", 0, False),
        backoff=parse_number(backoff, "--backoff"),
        rate_limit=parse_number(rate_limit, "--rate_limit"),
    )
    counter = TokenCounter(vocab_dir, tokens)  # before any request: a bad --vocab_dir fails at once
    with SongCache(cache_path) as song_cache:
        try:
            reports = fetch_artists(
                client,
                names,
                song_cache,
                max_songs=max_songs,
                include_features=include_features,
                workers=workers,
                sort=sort,
                quiet=quiet,
            )
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
            notes.append(
                f"{r.query}: no Genius artist has exactly that name; took {r.artist.name!r} (id {r.artist.id})"
            )
        facts = [f"{r.cached:,} from the cache"] if r.cached else []
        facts += [f"{r.no_lyrics:,} without lyrics on their page"] if r.no_lyrics else []
        facts += [f"{r.failed:,} could not be fetched (run the same command again to retry them)"] if r.failed else []
        if r.blocked:  # pages the site blocked one by one: named, so the user knows what is missing
            n, shown = len(r.blocked), ", ".join(repr(t) for t in r.blocked[:5])
            more = f" and {n - 5:,} more" if n > 5 else ""
            facts.append(
                f"{n:,} page{'s' if n > 1 else ''} blocked by the site ({shown}{more}; "
                f"run the same command again to retry {'them' if n > 1 else 'it'})"
            )
        if facts:
            notes.append(f"{r.artist.name}: " + ", ".join(facts))
    songs = (
        Song(rec.get("artist") or r.artist.name, rec.get("title", ""), rec.get("lyrics", ""))
        for r in reports
        for rec in (song_cache.songs[i] for i in r.ids)
    )
    write_dataset(songs, out, Cleaner(min_length, strip_sections, max_songs), counter, notes, quiet)
    return out
