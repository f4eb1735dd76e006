"""A loopback imitation of the Genius API and song pages, for tests and the benchmark.

`FakeGenius` serves, on `http://127.0.0.1:<port>` from a thread:

* `/search?q=`: song hits whose primary artist's name contains the query (a decoy artist's hits first);
* `/artists/:id/songs?per_page=&page=&sort=`: the artist's songs (primary or featured), paged with
  `next_page` (pages hold `min(per_page, page_size)` songs);
* `/songs/:id`: one song;
* `/<Artist>-<title>-lyrics`: a song page in Genius' layout: `data-lyrics-container` divs, `<br>`,
  `data-exclude-from-selection` boxes, "You might also like", contributor and "Embed" remnants.

Every artist, title and lyric line is invented here (real lyrics are copyrighted). The expected
clean lyrics of a song are `fake.songs[id].lyrics`.

Misbehaviour on demand: `fault(path, kind, times)` (path may end in `?page=N`) with kind one of `429` (with `Retry-After`),
`408`, `500`, `slow` (answers after `slow_s`), `403` (a block page), `challenge` (a 200 challenge page),
`badjson`, `404`; `block_pages` makes every song page answer 403 with a block page, and
`block_after = n` does so from the (n+1)-th song page on (a site that starts refusing mid-run);
`latency` / `page_latency` delay every request / every song page;
`valid_token` answers 401 to any other bearer token; `padding` makes song pages that many characters
longer (menus, scripts), like real pages of a few hundred kB. Every request is logged in `requests`.

    with FakeGenius(page_size=4) as fake:
        collect_genius(artists="Lil Tofu", api_url=fake.url, web_url=fake.url, ...)
"""

from __future__ import annotations

import dataclasses
import functools
import html
import http.server
import json
import threading
import time
import urllib.parse
from typing import Dict, List, Optional

from support.loopback import LoopbackServer

ARTISTS = ["Lil Tofu", "MC Fjord", "Doña Ruido", "Grandpa Static", "Kid Pixel", "Velvet Ghost"]
DECOY = "Lil Tofu Jr"
_WORDS = [
    "soy",
    "drip",
    "fjord",
    "static",
    "pixel",
    "velvet",
    "ghost",
    "tofu",
    "neon",
    "gravel",
    "comet",
    "lantern",
    "marble",
    "thunder",
    "pepper",
    "harbor",
    "cobalt",
    "meadow",
    "rocket",
    "saffron",
]
KINDS = ("429", "408", "500", "slow", "403", "challenge", "badjson", "404")

BLOCK_PAGE = (
    "<!DOCTYPE html><html><head><title>Access denied | genius.com used Cloudflare to restrict access</title>"
    "</head><body><h1>Sorry, you have been blocked</h1><p>Attention Required! Cloudflare Ray ID</p></body></html>"
)
CHALLENGE_PAGE = (
    "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
    "<div id='cf-browser-verification'>Checking your browser</div>"
    "<form id='challenge-form'></form></body></html>"
)


@dataclasses.dataclass
class FakeSong:
    id: int
    artist_id: int
    artist: str
    title: str
    lyrics: str  # what the collector should end up with (clean)
    path: str
    featured: List[int] = dataclasses.field(default_factory=list)
    instrumental: bool = False  # flagged in the listing
    no_lyrics: bool = False  # the page holds no lyrics container
    hide_path: bool = False  # listing without path/url: the client must ask /songs/:id


@dataclasses.dataclass
class Logged:
    path: str
    query: dict
    time: float
    auth: Optional[str]
    status: int = 0


def _slug(text: str) -> str:
    return "-".join("".join(c for c in w if c.isalnum()) for w in text.split()).capitalize()


def invented_lyrics(song_id: int, artist: str, lines: int = 4) -> str:
    """Deterministic nonsense verses, different for every song id."""
    w = _WORDS
    verse = [
        f"{w[(song_id + i) % 20]} and {w[(song_id * 7 + i) % 20]} in the {w[(song_id * 3 + i) % 20]} light {song_id}-{i}"
        for i in range(lines)
    ]
    verse[1] = f'don\'t stop the {w[song_id % 20]} & "keep" it cold'
    hook = [f"{w[(song_id + 5) % 20]} {w[(song_id + 9) % 20]}, yeah, number {song_id}", "we ride, we ride"]
    return f"[Verse 1: {artist}]\n" + "\n".join(verse) + "\n\n[Hook]\n" + "\n".join(hook)


@functools.lru_cache(maxsize=8)
def filler(size: int) -> str:
    """About `size` characters of the markup around a real page's lyrics: menus, data scripts, links."""
    item = "<li class='Nav__Item'><a href='/tags/{0}'><span>Tag {0}</span></a></li>"
    menu = "<nav><ul>" + "".join(item.format(i) for i in range(size // 140 + 1)) + "</ul></nav>"
    data = "<script>window.__STATE__ = " + json.dumps({"songs": ["x" * 60] * (size // 130 + 1)}) + ";</script>"
    return menu + data


def song_page(song: FakeSong, padding: int = 0) -> str:
    """The song's page in Genius' layout; extraction plus cleaning must give back `song.lyrics`.
    `padding` adds that many characters of other markup around the lyrics, as a real page has."""
    if song.no_lyrics:
        return (
            f"<html><head><title>{html.escape(song.title)} Lyrics</title></head><body><main>"
            "<div class='LyricsPlaceholder'>This song is an instrumental</div></main></body></html>"
        )
    verse, hook = song.lyrics.split("\n\n")

    def lines(text: str, annotate: bool) -> str:
        out = []
        for i, line in enumerate(text.split("\n")):
            # typographic quotes and spaces, as the site sends them; cleaning straightens them
            line = html.escape(line, quote=False).replace("don't", "don\u2019t").replace('"keep"', "\u201ckeep\u201d")
            line = line.replace(" and ", " and&nbsp;", 1)
            if annotate and i == 2:
                line = f'<a href="/{song.id}/annotated" class="ReferentFragment"><span>{line}</span></a>'
            out.append(line)
        return "<br/>".join(out)

    header = (
        '<div data-exclude-from-selection="true" class="LyricsHeader"><div>7 Contributors</div>'
        f"<div>Translations</div><h2>{html.escape(song.title)} Lyrics</h2></div>"
    )
    style = song.id % 3
    if style == 0:  # two containers, a recommendation box inside the second
        body = (
            f'<div data-lyrics-container="true" class="Lyrics__Container">{header}{lines(verse, True)}<br/></div>'
            '<div data-lyrics-container="true" class="Lyrics__Container">'
            '<div data-exclude-from-selection="true">You might also like<a href="/x">Other Song</a></div>'
            f"{lines(hook, False)}</div>"
        )
    elif style == 1:  # one container with the remnants older pages leave in the text
        body = (
            f'<div data-lyrics-container="true">{header}{lines(verse, False)}<br/>You might also like'
            f"{lines(hook, True)}12Embed</div>"
        )
    else:  # one container, <i>/<b> inside, a blank line made of two <br>
        body = (
            f'<div data-lyrics-container="true">{header}<i>{lines(verse, True)}</i><br/><br/>'
            f"<b>{lines(hook, False)}</b></div>"
        )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(song.artist)} \u2013 {html.escape(song.title)} Lyrics | Genius Lyrics</title></head>"
        f"<body><div id='application'><header>Genius{filler(padding // 2) if padding else ''}</header><main>{body}"
        "<div data-exclude-from-selection='true' class='Sidebar'>You might also like<ul><li>Elsewhere</li></ul></div>"
        "<div class='Embed'>3Embed</div></main>"
        + (filler(padding // 2) if padding else "")
        + "</div><script src='/cdn-cgi/challenge-platform/scripts/jsd/main.js'></script></body></html>"
    )


class FakeGenius(LoopbackServer):
    thread_name = "fake-genius"

    """The fake site (a context manager). `songs_per_artist` songs each for `artists`."""

    def __init__(
        self,
        artists=None,
        songs_per_artist: int = 12,
        page_size: int = 50,
        latency: float = 0.0,
        page_latency: float = 0.0,
        slow_s: float = 1.0,
        retry_after: str = "0.2",
        valid_token: Optional[str] = None,
        padding: int = 0,
    ):
        self.page_size = page_size
        self.padding = padding
        self.latency = latency
        self.page_latency = page_latency
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.valid_token = valid_token
        self.block_pages = False  # every song page answers 403
        self.block_after: Optional[int] = None  # song pages served before block_pages turns on
        self._pages_served = 0
        self.requests: List[Logged] = []
        self.artists: Dict[int, str] = {}
        self.songs: Dict[int, FakeSong] = {}
        self._faults: Dict[str, list] = {}
        self._lock = threading.Lock()
        names = list(artists or ARTISTS[:3])
        for a, name in enumerate([DECOY] + names):
            artist_id = 100 + a
            self.artists[artist_id] = name
            count = 2 if name == DECOY else songs_per_artist
            for k in range(count):
                song_id = artist_id * 1000 + k
                title = f"{_WORDS[(a * 5 + k) % 20].title()} {_WORDS[(a + 3 * k) % 20].title()} {k}"
                self.songs[song_id] = FakeSong(
                    song_id,
                    artist_id,
                    name,
                    title,
                    invented_lyrics(song_id, name),
                    f"/{_slug(name)}-{_slug(title).lower()}-lyrics",
                )
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, address: None  # clients that gave up (timeouts, kills)
        self._thread = None

    # ---- set-up helpers
    def artist_id(self, name: str) -> int:
        return next(i for i, n in self.artists.items() if n == name)

    def songs_of(self, name: str) -> List[FakeSong]:
        artist_id = self.artist_id(name)
        return [s for s in self.songs.values() if s.artist_id == artist_id]

    def add_song(self, song: FakeSong) -> FakeSong:
        self.songs[song.id] = song
        return song

    def fault(self, path: str, kind: str, times: int = 1) -> None:
        assert kind in KINDS, kind
        with self._lock:
            self._faults.setdefault(path, []).extend([kind] * times)

    # ---- what happened
    def hits(self, path: str) -> List[Logged]:
        return [r for r in self.requests if r.path == path]

    def page_requests(self) -> List[Logged]:
        return [r for r in self.requests if r.path.endswith("-lyrics")]

    # ---- answers: (status, content type, body, extra headers)
    def _song_json(self, song: FakeSong) -> dict:
        data = {
            "id": song.id,
            "title": song.title,
            "instrumental": song.instrumental,
            "lyrics_state": "complete",
            "primary_artist": {"id": song.artist_id, "name": song.artist},
            "featured_artists": [{"id": f, "name": self.artists[f]} for f in song.featured],
        }
        if not song.hide_path:
            data.update(path=song.path, url="https://genius.com" + song.path)
        return data

    def answer(self, path: str, query: dict, auth: Optional[str]):
        def api(response):
            return 200, "application/json", json.dumps({"meta": {"status": 200}, "response": response}), {}

        is_api = path == "/search" or path.startswith(("/artists/", "/songs/"))
        if is_api and self.valid_token is not None and auth != f"Bearer {self.valid_token}":
            return 401, "application/json", json.dumps({"meta": {"status": 401, "message": "invalid token"}}), {}
        with self._lock:
            page = f"{path}?page={query['page'][0]}" if "page" in query else None
            queue = self._faults.get(page) or self._faults.get(path)
            kind = queue.pop(0) if queue else None
        if kind == "slow":
            time.sleep(self.slow_s)
        elif kind == "429":
            return 429, "application/json", "{}", {"Retry-After": self.retry_after}
        elif kind == "408":
            return 408, "text/html", "<html><body>Request Timeout</body></html>", {}
        elif kind == "500":
            return 500, "text/html", "<html><body>Internal Server Error</body></html>", {}
        elif kind == "403":
            return 403, "text/html; charset=utf-8", BLOCK_PAGE, {}
        elif kind == "challenge":
            return 200, "text/html; charset=utf-8", CHALLENGE_PAGE, {}
        elif kind == "badjson":
            return 200, "application/json", '{"meta": {"status": 200}, "response": {"hits": [', {}
        elif kind == "404":
            return 404, "text/html", "<html>not found</html>", {}
        if path == "/search":
            q = query.get("q", [""])[0].casefold()
            found = [s for s in self.songs.values() if q and q in s.artist.casefold()]
            found.sort(key=lambda s: (s.artist != DECOY, s.id))  # the decoy ranks first, as a fuzzy search might
            return api({"hits": [{"type": "song", "index": "song", "result": self._song_json(s)} for s in found[:10]]})
        if path.startswith("/artists/") and path.endswith("/songs"):
            artist_id = int(path.split("/")[2])
            per_page = min(int(query.get("per_page", ["20"])[0]), self.page_size)
            page = int(query.get("page", ["1"])[0])
            mine = sorted(
                (s for s in self.songs.values() if s.artist_id == artist_id or artist_id in s.featured),
                key=lambda s: s.id,
            )
            chunk = mine[(page - 1) * per_page : page * per_page]
            more = page * per_page < len(mine)
            return api({"songs": [self._song_json(s) for s in chunk], "next_page": page + 1 if more else None})
        if path.startswith("/songs/"):
            song = self.songs.get(int(path.split("/")[2]))
            if song is None:
                return 404, "application/json", json.dumps({"meta": {"status": 404}}), {}
            return api({"song": dict(self._song_json(song), path=song.path, url="https://genius.com" + song.path)})
        song = next((s for s in self.songs.values() if s.path == path), None)
        if song is not None:
            if self.page_latency:
                time.sleep(self.page_latency)
            with self._lock:
                self._pages_served += 1
                if self.block_after is not None and self._pages_served > self.block_after:
                    self.block_pages = True
            if self.block_pages:
                return 403, "text/html; charset=utf-8", BLOCK_PAGE, {}
            return 200, "text/html; charset=utf-8", song_page(song, self.padding), {}
        return 404, "text/html", "<html>not found</html>", {}


def _handler(fake: FakeGenius):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real site
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def do_GET(self):
            split = urllib.parse.urlsplit(self.path)
            entry = Logged(
                urllib.parse.unquote(split.path),
                urllib.parse.parse_qs(split.query),
                time.monotonic(),
                self.headers.get("Authorization"),
            )
            with fake._lock:
                fake.requests.append(entry)
            if fake.latency:
                time.sleep(fake.latency)
            status, ctype, body, extra = fake.answer(entry.path, entry.query, entry.auth)
            entry.status = status
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


if __name__ == "__main__":  # try the command line by hand against it
    with FakeGenius(page_size=4) as fake:
        print(f"fake Genius on {fake.url}: --api_url {fake.url} --web_url {fake.url}; Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
