"""`rapgen collect genius` against a loopback fake of the Genius API and song pages (no other network).

Faults are injected (429 with Retry-After, 500s, a response slower than the timeout, malformed
JSON, block pages, a page without lyrics); retry pauses and timeouts are made tiny so the file
runs in seconds. All lyrics are invented by `genius_fake`.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from rapgen.data.collect import collect_genius
from rapgen.data.collect.fetch import BLOCKS_IN_A_ROW, SongCache
from rapgen.data.collect.genius import GeniusClient
from rapgen.data.lyrics import parse_songs
from rapgen.errors import RapgenError
from rapgen.http import RateLimiter, retry_after_seconds

from support.genius_fake import FakeGenius, FakeSong, invented_lyrics

TOKEN = "rg-FAKE-TOKEN-q7Zx93kLw0pT"  # recognisable, so a leak is easy to find


@pytest.fixture(autouse=True)
def token_env(monkeypatch):
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", TOKEN)


@pytest.fixture
def fake():
    with FakeGenius(page_size=4, valid_token=TOKEN, slow_s=0.6, retry_after="0.2") as server:
        yield server


def run(fake, tmp_path, **options):
    kwargs = dict(
        artists="Lil Tofu",
        out=str(tmp_path / "rap.txt"),
        api_url=fake.url,
        web_url=fake.url,
        workers=2,
        rate_limit=0,
        timeout=2.0,
        retries=3,
        backoff=0.005,
        tokens=False,
        quiet=True,
    )
    kwargs.update(options)
    return collect_genius(**kwargs)


def read_songs(path):
    with open(path, encoding="utf-8") as f:
        return parse_songs(f.read())


def cache_ids(path):
    ids = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                ids.append(json.loads(line)["id"])
            except ValueError:
                pass  # a line cut short by a kill
    return ids


def assert_token_nowhere(folder, *texts):
    for text in texts:
        assert TOKEN not in text
    for base, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(base, name), "rb") as f:
                assert TOKEN.encode() not in f.read(), name


def test_collects_every_song_once_with_clean_lyrics(fake, tmp_path, capsys):
    names = ["Lil Tofu", "MC Fjord", "Doña Ruido"]
    out = run(fake, tmp_path, artists=",".join(names), quiet=False)
    songs = read_songs(out)
    expected = [s for name in names for s in fake.songs_of(name)]
    assert [(s.artist, s.title) for s in songs] == [(e.artist, e.title) for e in expected]
    assert [s.lyrics for s in songs] == [e.lyrics for e in expected]
    # paged to the end: 12 songs, 4 a page
    assert [r.query["page"] for r in fake.hits(f"/artists/{fake.artist_id('MC Fjord')}/songs")] == [["1"], ["2"], ["3"]]
    # the token went only to the API, as a bearer header
    for r in fake.requests:
        assert r.auth == (None if r.path.endswith("-lyrics") else f"Bearer {TOKEN}"), r.path
    captured = capsys.readouterr()
    assert "Doña Ruido" in captured.out and "total" in captured.out
    assert_token_nowhere(tmp_path, captured.out, captured.err)
    assert os.path.exists(out + ".cache.jsonl")
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_faults_are_retried_and_nothing_is_fetched_twice(fake, tmp_path, capsys):
    lil = fake.songs_of("Lil Tofu")
    fake.fault(lil[0].path, "429")
    fake.fault(lil[1].path, "500", times=2)
    fake.fault(lil[2].path, "slow")
    fake.fault("/search", "badjson")
    fake.fault(f"/artists/{fake.artist_id('Lil Tofu')}/songs", "badjson")
    fake.fault(f"/artists/{fake.artist_id('Lil Tofu')}/songs", "500")
    lil[3].no_lyrics = True
    lil[4].hide_path = True
    lil[5].instrumental = True
    out = run(fake, tmp_path, timeout=0.25, quiet=False)

    kept = [s for s in lil if s not in (lil[3], lil[5])]
    assert [s.title for s in read_songs(out)] == [s.title for s in kept]
    assert [s.lyrics for s in read_songs(out)] == [s.lyrics for s in kept]
    first, retry = fake.hits(lil[0].path)
    assert first.status == 429 and retry.time - first.time >= 0.19  # Retry-After: 0.2 honoured
    assert [r.status for r in fake.hits(lil[1].path)] == [500, 500, 200]
    assert len(fake.hits(lil[2].path)) == 2  # timed out once
    assert len(fake.hits(f"/songs/{lil[4].id}")) == 1  # no path in the listing: asked the song
    assert not fake.hits(lil[5].path)  # flagged instrumental: never fetched
    assert "1 without lyrics" in capsys.readouterr().out

    before = len(fake.page_requests())
    run(fake, tmp_path)  # everything is cached, the page without lyrics included
    assert len(fake.page_requests()) == before
    ids = cache_ids(out + ".cache.jsonl")
    assert len(ids) == len(set(ids)) == len(lil) - 1


def test_a_408_is_retried_like_downloads_retry_it(fake, tmp_path):
    """One policy (rapgen.http) says what is retryable, for the Genius client and downloads alike."""
    lil = fake.songs_of("Lil Tofu")
    fake.fault(lil[2].path, "408", times=2)
    out = run(fake, tmp_path)
    assert [r.status for r in fake.hits(lil[2].path)] == [408, 408, 200]
    assert lil[2].lyrics in [s.lyrics for s in read_songs(out)]


def test_a_page_that_keeps_failing_is_retried_by_the_next_run(fake, tmp_path, capsys):
    lil = fake.songs_of("Lil Tofu")
    fake.fault(lil[6].path, "500", times=3)  # the first run's 3 tries
    out = run(fake, tmp_path, retries=2, quiet=False)
    assert lil[6].title not in [s.title for s in read_songs(out)]
    assert "1 could not be fetched" in capsys.readouterr().out
    before = [r.path for r in fake.page_requests()]
    run(fake, tmp_path, retries=2)
    assert [r.path for r in fake.page_requests()][len(before) :] == [lil[6].path]
    assert [s.title for s in read_songs(out)] == [s.title for s in lil]


@pytest.mark.parametrize("how", ["403", "challenge", "api"])
def test_a_block_stops_at_once_with_one_clear_line(fake, tmp_path, how):
    if how == "403":
        fake.block_pages = True
    elif how == "challenge":
        for song in fake.songs.values():
            fake.fault(song.path, "challenge", times=5)
    else:
        fake.fault("/search", "403", times=5)
    with pytest.raises(RapgenError) as caught:
        run(fake, tmp_path, artists="Lil Tofu,MC Fjord")
    message = str(caught.value)
    assert "\n" not in message and "rapgen collect csv" in message and "Colab" in message
    pages = [r.path for r in fake.page_requests()]
    # three block pages in a row, the first ones at that, stop the run: at most one more request was
    # in flight on the other worker; none was retried
    assert len(pages) <= BLOCKS_IN_A_ROW + 1 and len(set(pages)) == len(pages)
    assert len(fake.hits("/search")) == 1
    assert not os.path.exists(tmp_path / "rap.txt")
    cache = tmp_path / "rap.txt.cache.jsonl"
    assert not cache.exists() or cache.read_text() == ""  # no block page saved as lyrics


@pytest.mark.parametrize("kind", ["403", "challenge"])
def test_one_blocked_page_is_skipped_named_and_retried_by_the_next_run(fake, tmp_path, capsys, kind):
    lil = fake.songs_of("Lil Tofu")
    fake.fault(lil[4].path, kind, times=1000)  # blocked for good, as a page can be on its own
    out = run(fake, tmp_path, artists="Lil Tofu,MC Fjord", quiet=False)
    expected = [s for s in lil + fake.songs_of("MC Fjord") if s is not lil[4]]
    assert [(s.title, s.lyrics) for s in read_songs(out)] == [(s.title, s.lyrics) for s in expected]
    summary = capsys.readouterr().out
    assert f"Lil Tofu: 1 page blocked by the site ({lil[4].title!r}; run the same command again to retry it)" in summary
    assert len(fake.hits(lil[4].path)) == 1  # a block is not retried within the run
    cache = out + ".cache.jsonl"
    assert lil[4].id not in cache_ids(cache)  # the block page was not saved as lyrics

    seen = len(fake.requests)
    assert run(fake, tmp_path, artists="Lil Tofu,MC Fjord", quiet=False) == out  # finishes again
    assert [r.path for r in fake.requests[seen:] if r.path.endswith("-lyrics")] == [lil[4].path]
    assert "1 page blocked by the site" in capsys.readouterr().out

    with fake._lock:
        fake._faults.clear()  # the page is served again
    run(fake, tmp_path, artists="Lil Tofu,MC Fjord")
    assert [s.title for s in read_songs(out)] == [s.title for s in lil + fake.songs_of("MC Fjord")]


def test_blocked_pages_in_a_row_are_told_from_a_blocked_site_by_a_page_that_worked(fake, tmp_path, capsys):
    lil = fake.songs_of("Lil Tofu")
    blocked = [lil[1], lil[5], lil[9]]  # apart in the first run, in a row on the re-run
    for song in blocked:
        fake.fault(song.path, "403", times=1000)
    out = run(fake, tmp_path)
    assert [s.title for s in read_songs(out)] == [s.title for s in lil if s not in blocked]
    seen = len(fake.requests)
    run(fake, tmp_path, workers=1, quiet=False)  # the three, one after another: then a page that worked is asked
    pages = [r for r in fake.requests[seen:] if r.path.endswith("-lyrics")]
    assert [r.path for r in pages[:3]] == [s.path for s in blocked]
    assert len(pages) == 4 and pages[3].status == 200 and pages[3].path in {s.path for s in lil}
    assert "3 pages blocked by the site" in capsys.readouterr().out
    assert [s.title for s in read_songs(out)] == [s.title for s in lil if s not in blocked]


def test_a_site_that_starts_blocking_mid_run_stops_and_keeps_what_it_fetched(fake, tmp_path):
    fake.block_after = 5  # the sixth song page and every one after it answer 403
    with pytest.raises(RapgenError) as caught:
        run(fake, tmp_path, artists="Lil Tofu,MC Fjord")
    message = str(caught.value)
    assert "rapgen collect csv" in message and "403" in message and "\n" not in message
    kept = cache_ids(tmp_path / "rap.txt.cache.jsonl")
    served = {r.path for r in fake.page_requests() if r.status == 200}  # the first 5 to arrive (2 workers)
    assert len(served) == 5 and sorted(kept) == sorted(s.id for s in fake.songs.values() if s.path in served)
    assert "5 songs fetched so far" in message
    # told by three blocks in a row, then a page that worked before, now blocked too. With 2
    # workers, a served page still being parsed on one worker can reset the count after up to 2
    # blocks on the other, and one more request may be in flight when the verdict comes:
    # at most 2 + 3 + 1 (the page asked again) + 1 after the 5 served.
    assert len(fake.page_requests()) <= 5 + (BLOCKS_IN_A_ROW - 1) + BLOCKS_IN_A_ROW + 1 + 1
    fake.block_pages, fake.block_after = False, None
    seen = len(fake.requests)
    out = run(fake, tmp_path, artists="Lil Tofu,MC Fjord")
    refetched = {r.path for r in fake.requests[seen:] if r.path.endswith("-lyrics")}
    assert not refetched & {fake.songs[i].path for i in kept}
    assert len(read_songs(out)) == 24


def test_max_songs_reads_only_the_pages_it_needs_and_resumes(fake, tmp_path):
    lil = fake.songs_of("Lil Tofu")
    lil[2].no_lyrics = True
    out = run(fake, tmp_path, max_songs=5)
    assert [s.title for s in read_songs(out)] == [s.title for s in lil[:2] + lil[3:6]]
    listing = f"/artists/{fake.artist_id('Lil Tofu')}/songs"
    assert len(fake.hits(listing)) == 2  # songs 0-7 of 12
    before = len(fake.page_requests())
    run(fake, tmp_path, max_songs=7)
    assert sorted(r.path for r in fake.page_requests()[before:]) == sorted(s.path for s in lil[6:8])
    assert [s.title for s in read_songs(out)] == [s.title for s in lil[:2] + lil[3:8]]


def test_the_artist_is_found_by_name_and_misses_are_reported(fake, tmp_path, capsys):
    out = run(fake, tmp_path, artists="lil tofu, Tofu, Nobody At All", quiet=False)
    songs = read_songs(out)
    # the decoy "Lil Tofu Jr" ranks first in the search but is not the artist asked for
    assert {s.artist for s in songs} == {"Lil Tofu"} and len(songs) == 12
    text = capsys.readouterr().out
    assert "Tofu: no Genius artist has exactly that name; took 'Lil Tofu'" in text
    assert "Nobody At All: not found on Genius" in text
    with pytest.raises(RapgenError, match="not found on Genius"):
        run(fake, tmp_path, artists="Nobody At All", out=str(tmp_path / "none.txt"))


def test_features_are_kept_only_on_request(fake, tmp_path):
    fjord, lil_id = fake.artist_id("MC Fjord"), fake.artist_id("Lil Tofu")
    feature = fake.add_song(
        FakeSong(
            999001,
            fjord,
            "MC Fjord",
            "Guest Spot",
            invented_lyrics(999001, "MC Fjord"),
            "/Mc-fjord-guest-spot-lyrics",
            featured=[lil_id],
        )
    )
    plain = read_songs(run(fake, tmp_path))
    assert feature.title not in [s.title for s in plain] and len(plain) == 12
    with_features = read_songs(run(fake, tmp_path, include_features=True, out=str(tmp_path / "f.txt")))
    assert ("MC Fjord", "Guest Spot") in [(s.artist, s.title) for s in with_features]


def test_token_rules(fake, tmp_path, monkeypatch):
    with pytest.raises(RapgenError, match="https"):
        run(fake, tmp_path, api_url="http://api.genius.com")
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", "not-the-right-one")
    with pytest.raises(RapgenError, match="HTTP 401") as caught:
        run(fake, tmp_path)
    assert "not-the-right-one" not in str(caught.value)
    monkeypatch.delenv("GENIUS_ACCESS_TOKEN")
    with pytest.raises(RapgenError, match="GENIUS_ACCESS_TOKEN"):
        run(fake, tmp_path)
    assert not [r for r in fake.requests if r.auth == f"Bearer {TOKEN}"]
    assert TOKEN not in repr(GeniusClient(TOKEN, api_url=fake.url))


def test_a_listing_that_fails_half_way_keeps_what_was_fetched(fake, tmp_path, capsys):
    listing = f"/artists/{fake.artist_id('Lil Tofu')}/songs"
    fake.fault(listing + "?page=1", "500")  # retried
    fake.fault(listing + "?page=2", "500", times=2)  # given up (retries=1)
    out = run(fake, tmp_path, retries=1, quiet=False)
    assert "Lil Tofu: listing songs failed" in capsys.readouterr().out
    assert [s.title for s in read_songs(out)] == [s.title for s in fake.songs_of("Lil Tofu")[:4]]


def test_stop_wakes_threads_that_wait_between_tries(fake):
    path = fake.songs_of("Lil Tofu")[0].path
    fake.fault(path, "500", times=50)
    client = GeniusClient(TOKEN, api_url=fake.url, web_url=fake.url, retries=20, backoff=5.0, rate_limit=0)
    outcome = []

    def fetch():
        try:
            client.fetch_song({"id": 1, "path": path, "title": "x", "primary_artist": {"id": 1, "name": "x"}})
        except Exception as e:  # the test wants to see what the thread ended with
            outcome.append(e)

    thread = threading.Thread(target=fetch)
    thread.start()
    time.sleep(0.2)  # the thread now waits ~5 s before its second try
    started = time.monotonic()
    client.stop()
    thread.join(timeout=3)
    assert not thread.is_alive() and time.monotonic() - started < 1
    assert type(outcome[0]).__name__ == "FetchError" and len(fake.hits(path)) == 1


def test_a_half_written_cache_line_is_ignored_and_cut(tmp_path):
    path = tmp_path / "c.jsonl"
    good = [json.dumps({"id": i, "artist": "A", "title": f"T{i}", "lyrics": "x"}) for i in (1, 2)]
    path.write_text("\n".join(good) + '\n{"id": 3, "artist": "A", "tit')
    with SongCache(str(path)) as cache:
        assert sorted(cache.songs) == [1, 2] and cache.ignored_lines == 1
        cache.add({"id": 4, "artist": "A", "title": "T4", "lyrics": "y"})
    with SongCache(str(path)) as cache:
        assert sorted(cache.songs) == [1, 2, 4] and cache.ignored_lines == 0


def test_rate_limit_and_retry_after():
    limiter = RateLimiter(50.0)
    start = time.monotonic()
    threads = [threading.Thread(target=lambda: [limiter.wait() for _ in range(3)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start >= 11 / 50 - 0.01  # 12 calls, 20 ms apart, across threads
    limiter.pause(0.1)
    before = time.monotonic()
    limiter.wait()
    assert time.monotonic() - before >= 0.09
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") < 1  # a date in the past: no wait


def _cli_env():
    env = dict(os.environ, GENIUS_ACCESS_TOKEN=TOKEN)
    env.pop("RAPGEN_VOCAB_DIR", None)
    return env


def _cli_args(fake, out, *extra):
    return [
        sys.executable,
        "-m",
        "rapgen",
        "collect",
        "genius",
        "--artists",
        "Lil Tofu,MC Fjord,Doña Ruido",
        "--out",
        str(out),
        "--api_url",
        fake.url,
        "--web_url",
        fake.url,
        "--workers",
        "2",
        "--rate_limit",
        "0",
        "--backoff",
        "0.01",
        "--timeout",
        "5",
        "--tokens",
        "False",
        *extra,
    ]


def test_killed_mid_run_loses_and_duplicates_nothing(fake, tmp_path):
    out = tmp_path / "data" / "rap.txt"
    cache = str(out) + ".cache.jsonl"
    fake.page_latency = 0.08  # 36 pages, 2 at a time: about 1.5 s of fetching
    proc = subprocess.Popen(
        _cli_args(fake, out), env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp_path)
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(cache) and len(cache_ids(cache)) >= 6:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    stdout1, stderr1 = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, stderr1.decode()
    first = cache_ids(cache)
    assert 6 <= len(first) < 36 and not out.exists()

    fake.page_latency = 0.0
    seen = len(fake.requests)
    second = subprocess.run(
        _cli_args(fake, out), env=_cli_env(), capture_output=True, text=True, timeout=60, cwd=str(tmp_path)
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines()[-1] == str(out)
    refetched = {r.path for r in fake.requests[seen:] if r.path.endswith("-lyrics")}
    assert not refetched & {fake.songs[i].path for i in first}  # what the killed run saved is not asked again
    expected = [s for name in ("Lil Tofu", "MC Fjord", "Doña Ruido") for s in fake.songs_of(name)]
    songs = read_songs(out)
    assert [(s.artist, s.title, s.lyrics) for s in songs] == [(e.artist, e.title, e.lyrics) for e in expected]
    ids = cache_ids(cache)
    assert sorted(ids) == sorted(e.id for e in expected)  # each song once in the cache too
    assert_token_nowhere(tmp_path, stdout1.decode(), stderr1.decode(), second.stdout, second.stderr)


def test_cli_block_is_one_line_and_exit_status_2(fake, tmp_path):
    fake.block_pages = True
    r = subprocess.run(
        _cli_args(fake, tmp_path / "rap.txt"),
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("rapgen: error:")]
    assert len(errors) == 1 and "403" in errors[0] and "rapgen collect csv" in errors[0]
    assert "Traceback" not in r.stderr
    assert_token_nowhere(tmp_path, r.stdout, r.stderr)
