"""Benchmark `rapgen collect genius`: songs per second against the loopback fake of Genius.

The fake (tests/support/genius_fake.py) runs in its own process, so it does not share the collector's
interpreter lock. Every request to it (search, listing pages, song pages) waits a fixed latency
before it is answered, as a distant server would, and song pages are padded to a real page's size.
The collector runs with 1, 4 and 16 workers and no rate limit (pass --rate_limit to see the polite
default, 5 requests/s, at work). Nothing leaves 127.0.0.1.

    python bench/collect_bench.py                 # 192 songs, 250 kB pages, 50 ms latency, workers 1,4,16
    python bench/collect_bench.py --songs 96 --latency 0.1 --workers 1,8
"""

import argparse
import multiprocessing
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from rapgen.data.collect import collect_genius  # noqa: E402

from support.genius_fake import FakeGenius  # noqa: E402  (the test fixture doubles as the benchmark's server)

TOKEN = "bench-token-not-a-secret"


def serve(conn, songs: int, latency: float, padding: int) -> None:
    """The fake site in a child process: sends its URL, then the request count when asked to stop."""
    with FakeGenius(
        artists=["Lil Tofu"], songs_per_artist=songs, latency=latency, padding=padding, valid_token=TOKEN
    ) as fake:
        conn.send(fake.url)
        conn.recv()
        conn.send(len(fake.requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=192, help="songs to collect per run (one artist)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server waits before each answer")
    parser.add_argument("--page_kb", type=int, default=250, help="size of a song page (real ones: 200-500 kB)")
    parser.add_argument("--workers", default="1,4,16", help="comma-separated worker counts")
    parser.add_argument("--rate_limit", type=float, default=0.0, help="requests/s over all workers (0: none)")
    args = parser.parse_args()

    os.environ["GENIUS_ACCESS_TOKEN"] = TOKEN
    print(
        f"{args.songs} songs, {args.page_kb} kB pages, {args.latency * 1000:.0f} ms server latency, "
        f"rate limit {args.rate_limit or 'off'}; {os.cpu_count()} CPUs"
    )
    print(f"{'workers':>7}  {'seconds':>8}  {'songs/s':>8}  {'requests':>8}")
    context = multiprocessing.get_context("spawn")
    for workers in [int(w) for w in args.workers.split(",")]:
        ours, theirs = context.Pipe()
        server = context.Process(target=serve, args=(theirs, args.songs, args.latency, args.page_kb * 1000))
        server.start()
        try:
            if not ours.poll(60):
                raise SystemExit("the fake server did not start (see its error above)")
            url = ours.recv()
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                out = collect_genius(
                    artists="Lil Tofu",
                    out=os.path.join(folder, "rap.txt"),
                    api_url=url,
                    web_url=url,
                    workers=workers,
                    rate_limit=args.rate_limit,
                    tokens=False,
                    quiet=True,
                )
                seconds = time.perf_counter() - start
                with open(out, encoding="utf-8") as f:
                    assert f.read().count("<|endoftext|>") == args.songs
            ours.send("stop")
            requests = ours.recv()
        finally:
            server.join(timeout=10)
            if server.is_alive():
                server.terminate()
        print(f"{workers:>7}  {seconds:>8.2f}  {args.songs / seconds:>8.1f}  {requests:>8}")


if __name__ == "__main__":
    main()
