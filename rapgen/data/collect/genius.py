"""The Genius site: its API client, and lyrics taken from its song pages.

`GeniusClient` finds an artist (`/search?q=`), pages through their songs (`/artists/:id/songs`)
and fetches a song's page, whose lyrics `extract_lyrics` takes (`fetch` runs many at once).

Polite and safe: one session per thread, a rate limit shared by all threads, retries with
backoff on what `rapgen.http` calls retryable (a 429 pauses every thread for its `Retry-After`).
A 403 from the API (`BlockedError`) or a blocked song page (`PageBlockedError`; `fetch` decides
whether the whole site refuses us) is never retried, nor kept. The token goes only to the API host,
as a Bearer header over https, and is never printed or written.

>>> client = GeniusClient(token)                                        # doctest: +SKIP
>>> client.search_artist("Lil Tofu")                                   # doctest: +SKIP
Artist(id=17, name='Lil Tofu', exact=True)
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import threading
import unicodedata
import urllib.parse
from typing import Dict, Iterator, Optional

from rapgen.data.collect.clean import strip_remnants
from rapgen.errors import RapgenError
from rapgen.http import RateLimiter, RetryPolicy, retryable

API_URL = "https://api.genius.com"
WEB_URL = "https://genius.com"
TOKEN_ENV = "GENIUS_ACCESS_TOKEN"
USER_AGENT = "rapgen/0.1 (lyrics dataset collector for personal GPT-2 fine-tuning; python-requests)"
PER_PAGE = 50
MAX_BACKOFF_S = 60.0  # longest pause between two tries of one request
MAX_RETRY_AFTER_S = 300.0  # a 429 asking for a longer wait ends the run instead
JITTER = 0.5  # each pause is 0.5 to 1.5 times the backoff, so threads do not retry in step
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_CSV_ADVICE = "sites often block cloud machines (Colab included): collect on your own computer, or import a lyrics dump with `rapgen collect csv FILE`"


class BlockedError(RapgenError):
    """The site refused this machine (403 or a challenge page): retrying will not help."""


class FetchError(Exception):
    """A request failed for good (after its retries, or with an unexpected status)."""


class NotFoundError(FetchError):
    """HTTP 404."""


class PageBlockedError(FetchError):
    """One song page came back as a block page (`detail`: "HTTP 403, a block page" or the like)."""

    def __init__(self, url: str, detail: str):
        super().__init__(f"{url}: {detail}")
        self.detail = detail


# ----------------------------------------------------------------------------- lyrics pages

_BLOCK_MARKERS = re.compile(
    r"cf-browser-verification|cf-chl-|challenge-form|Just a moment\.\.\.|Attention Required!|"
    r"<title>\s*Access denied|captcha|Please verify you are a human|Request blocked",
    re.I,
)


def looks_blocked(html: str) -> bool:
    """True for a block or challenge page (Cloudflare and the like) served instead of a song page."""
    return bool(_BLOCK_MARKERS.search(html[:20000]))


_CONTAINER_START = re.compile(r"<div\b[^>]*\bdata-lyrics-container\b", re.I)
_DIV_TAG = re.compile(r"<(/?)div\b[^>]*?(/?)>", re.I)


def _container_markup(html: str) -> str:
    """Just the markup of the lyrics containers, found by counting `<div>`s: a song page runs to
    hundreds of kB, and parsing only these few kB keeps extraction fast (it holds the GIL)."""
    pieces, pos = [], 0
    while True:
        start = _CONTAINER_START.search(html, pos)
        if start is None:
            return "".join(pieces)
        depth, end = 0, len(html)
        for tag in _DIV_TAG.finditer(html, start.start()):
            depth += -1 if tag.group(1) else (0 if tag.group(2) else 1)
            if depth == 0:
                end = tag.end()
                break
        pieces.append(html[start.start() : end])
        pos = end


def extract_lyrics(html: str) -> Optional[str]:
    """The lyrics of a Genius song page, or None if the page holds none.

    Takes the `data-lyrics-container` elements, turns `<br>` into newlines, drops every element
    marked `data-exclude-from-selection` (headers, "You might also like" boxes) and the remnants
    of `strip_remnants`. Section headers such as `[Verse 1: Lil Tofu]` are kept.

    >>> extract_lyrics('<div data-lyrics-container="true">[Hook]<br/>soy on my <i>wrist</i></div>')
    '[Hook]\\nsoy on my wrist'
    """
    markup = _container_markup(html)
    if not markup:
        return None
    from bs4 import BeautifulSoup, SoupStrainer, Tag  # bs4: heavy, and only a page with lyrics needs it

    soup = BeautifulSoup(markup, "html.parser", parse_only=SoupStrainer(attrs={"data-lyrics-container": True}))
    parts = []
    for box in soup.find_all(attrs={"data-lyrics-container": True}):
        if box.find_parent(attrs={"data-lyrics-container": True}) is not None:
            continue  # nested inside a container already taken
        for hidden in box.find_all(attrs={"data-exclude-from-selection": True}):
            if isinstance(hidden, Tag):
                hidden.decompose()
        for br in box.find_all("br"):
            br.replace_with("\n")
        parts.append(box.get_text())
    text = strip_remnants("\n".join(parts))
    return text or None


# ----------------------------------------------------------------------------- HTTP


def _check_base_url(url: str, flag: str, carries_token: bool) -> str:
    parsed = urllib.parse.urlsplit(str(url))
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise RapgenError(f"{flag} {url!r} is not an http(s) URL: give e.g. {API_URL if carries_token else WEB_URL}")
    if carries_token and parsed.scheme != "https" and parsed.hostname not in _LOOPBACK:
        raise RapgenError(
            f"{flag} must use https:// so the access token travels encrypted "
            "(plain http is accepted only for a 127.0.0.1 test server)"
        )
    return str(url).rstrip("/")


@dataclasses.dataclass
class Artist:
    id: int
    name: str
    exact: bool  # False: no hit had this exact name; the most frequent primary artist was taken


def _name_key(name: str) -> str:
    """'Doña  Ruido!' -> 'donaruido': case, accents, spaces and punctuation ignored."""
    decomposed = unicodedata.normalize("NFKD", str(name).casefold())
    return "".join(c for c in decomposed if c.isalnum())


class GeniusClient:
    """The Genius API and song pages, with retries, a global rate limit and one session per thread.

    `timeout` is in seconds per request; `backoff` is the first pause between tries (doubled each
    time, with jitter); `rate_limit` is requests per second over all threads (0: unlimited).

    >>> client = GeniusClient(token, rate_limit=5)                        # doctest: +SKIP
    >>> client.search_artist("Lil Tofu")                                 # doctest: +SKIP
    Artist(id=17, name='Lil Tofu', exact=True)
    """

    def __init__(
        self,
        token: str,
        api_url: str = API_URL,
        web_url: str = WEB_URL,
        timeout: float = 15.0,
        retries: int = 5,
        backoff: float = 1.0,
        rate_limit: float = 5.0,
    ):
        if not token:
            raise RapgenError(f"no Genius access token: set {TOKEN_ENV}")
        self.api_url = _check_base_url(api_url, "--api_url", carries_token=True)
        self.web_url = _check_base_url(web_url, "--web_url", carries_token=False)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.policy = RetryPolicy(
            retries=self.retries,
            first_wait=self.backoff,
            max_wait=MAX_BACKOFF_S,
            jitter=JITTER,
            max_retry_after=MAX_RETRY_AFTER_S,
        )
        self._stopped = threading.Event()
        self._limiter = RateLimiter(rate_limit, self._stopped)
        self._api_headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._web_headers = {"Accept": "text/html,application/xhtml+xml"}
        self._local = threading.local()
        self._blocked = ""  # set by the first block: every thread stops instead of asking again
        self._sessions: list = []
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the token
        return f"GeniusClient(api_url={self.api_url!r}, web_url={self.web_url!r})"

    def stop(self, reason: str = "") -> None:
        """Make every thread stop before its next request (and wake those pausing between tries)."""
        self._blocked = self._blocked or reason
        self._stopped.set()

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            import requests  # requests: off the CLI's fast path

            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _get(self, url: str, params: Optional[dict] = None, api: bool = True):
        """GET with retries: the API's `response` object (a dict) or a page's text."""
        import requests  # requests: off the CLI's fast path

        session = self._session()
        host = urllib.parse.urlsplit(url).netloc
        problem = "no answer"
        for attempt in range(self.retries + 1):
            self._limiter.wait()
            if self._stopped.is_set():
                if self._blocked:
                    raise BlockedError(self._blocked)
                raise FetchError("stopped")
            try:
                # API calls never follow redirects: the Authorization header must not travel on.
                r = session.get(
                    url,
                    params=params,
                    headers=self._api_headers if api else self._web_headers,
                    timeout=self.timeout,
                    allow_redirects=not api,
                )
                status = r.status_code
                body = r.content
            except requests.Timeout:
                problem = f"no answer within {self.timeout:g} s"
            except (
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as e:
                problem = f"connection failed ({type(e).__name__})"
            except requests.RequestException as e:  # too many redirects, a bad URL: trying again will not help
                raise FetchError(f"{url}: {type(e).__name__}") from None
            else:
                text = (
                    r.text
                    if "charset=" in r.headers.get("Content-Type", "").lower()
                    else body.decode("utf-8", "replace")
                )
                if status == 200 and api:
                    try:
                        response = json.loads(text)["response"]
                        if isinstance(response, dict):
                            return response
                    except (ValueError, KeyError, TypeError):
                        pass
                    problem = "malformed JSON"
                elif status == 200:
                    return text
                elif status == 401 and api:
                    raise RapgenError(
                        f"the Genius API refused the access token (HTTP 401): check {TOKEN_ENV} "
                        "(a client access token from https://genius.com/api-clients)"
                    )
                elif status == 403 or (status in (429, 503) and looks_blocked(text)):
                    if not api:  # maybe this page alone: the caller tells a blocked page from a blocked site
                        raise PageBlockedError(url, f"HTTP {status}, a block page")
                    self.stop(f"{host} refused this machine (HTTP {status}, a block page): {_CSV_ADVICE}")
                    raise BlockedError(self._blocked)
                elif status == 429:
                    pause = self.policy.server_wait_s(r.headers.get("Retry-After"), attempt)
                    if self.policy.too_long(pause):
                        raise FetchError(f"{host} asks to wait {pause:.0f} s (HTTP 429): try again later")
                    self._limiter.pause(pause)  # every thread waits, not only this one
                    problem = "rate-limited (HTTP 429)"
                    continue
                elif status == 404:
                    raise NotFoundError(f"{url}: not found (HTTP 404)")
                elif retryable(status):  # 5xx, 408
                    problem = f"HTTP {status}"
                else:
                    raise FetchError(f"{url}: unexpected HTTP {status}")
            if attempt < self.retries:
                self._stopped.wait(self.policy.wait_s(attempt))
        raise FetchError(f"{url}: gave up after {self.retries + 1} tries ({problem})")

    def search_artist(self, name: str) -> Optional[Artist]:
        """The Genius artist for `name`: a hit whose primary artist has that name (case, accents and
        punctuation aside), else the most frequent primary artist among the hits; None if no hits."""
        response = self._get(f"{self.api_url}/search", params={"q": name})
        found: Dict[int, str] = {}
        counts: collections.Counter = collections.Counter()
        for hit in response.get("hits") or []:
            artist = ((hit or {}).get("result") or {}).get("primary_artist") or {}
            artist_id = artist.get("id")
            if isinstance(artist_id, int) and isinstance(artist.get("name"), str):
                found.setdefault(artist_id, artist["name"])
                counts[artist_id] += 1
        want = _name_key(name)
        for artist_id, artist_name in found.items():
            if _name_key(artist_name) == want:
                return Artist(artist_id, artist_name, exact=True)
        if not counts:
            return None
        artist_id = counts.most_common(1)[0][0]
        return Artist(artist_id, found[artist_id], exact=False)

    def artist_songs(self, artist_id: int, sort: str = "popularity") -> Iterator[dict]:
        """The artist's songs as the API lists them, page after page until `next_page` is null."""
        page = 1
        while page:
            response = self._get(
                f"{self.api_url}/artists/{int(artist_id)}/songs",
                params={"per_page": PER_PAGE, "page": page, "sort": sort},
            )
            for song in response.get("songs") or []:
                if isinstance(song, dict) and isinstance(song.get("id"), int):
                    yield song
            following = response.get("next_page")
            page = following if isinstance(following, int) and following > page else None

    def site_blocked(self, detail: str) -> BlockedError:
        """Stop every thread, the song pages' site having refused this machine; the error to raise."""
        host = urllib.parse.urlsplit(self.web_url).netloc
        self.stop(f"{host} refused this machine ({detail}): {_CSV_ADVICE}")
        return BlockedError(self._blocked)

    def page_works(self, path: str) -> bool:
        """Whether the song page at `path`, one that was served before, still comes without a block:
        after several blocked pages, this tells a site that refuses this machine (False) from pages
        blocked on their own (True). Any other failure is no evidence of a block (True)."""
        try:
            html = self._get(self.web_url + path, api=False)
        except PageBlockedError:
            return False
        except FetchError:
            return True
        return extract_lyrics(html) is not None or not looks_blocked(html)

    def song(self, song_id: int) -> dict:
        """`/songs/:id`: the song's full description."""
        return self._get(f"{self.api_url}/songs/{int(song_id)}").get("song") or {}

    def fetch_song(self, song: dict) -> dict:
        """Fetch a listed song's page: a cache record `{id, artist_id, artist, title, path, lyrics}`.

        `lyrics` is "" for a page without lyrics (instrumental, unreleased, gone).
        """
        path = _song_path(song)
        if path is None:
            path = _song_path(self.song(song["id"]))
        if path is None:
            raise FetchError(f"song {song['id']} has no page URL")
        artist = song.get("primary_artist") or {}
        record = {
            "id": song["id"],
            "artist_id": artist.get("id"),
            "artist": str(artist.get("name") or ""),
            "title": str(song.get("title") or ""),
            "path": path,
            "lyrics": "",
        }
        try:
            html = self._get(self.web_url + path, api=False)
        except NotFoundError:
            return record
        lyrics = extract_lyrics(html)
        if lyrics is None and looks_blocked(html):
            raise PageBlockedError(self.web_url + path, "a challenge page instead of lyrics")
        record["lyrics"] = lyrics or ""
        return record


def _song_path(song: dict) -> Optional[str]:
    """The path of a song's page ('/Lil-tofu-soy-drip-lyrics'), from `path` or `url`; None if neither."""
    path = song.get("path")
    if not (isinstance(path, str) and path.startswith("/")):
        url = song.get("url")
        path = urllib.parse.urlsplit(url).path if isinstance(url, str) else None
    if not path or not path.startswith("/") or path.startswith("//"):
        return None
    return urllib.parse.quote(path, safe="/%-._~!$&'()*+,;=:@")
