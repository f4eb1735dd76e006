"""`rapgen collect csv` (streamed, filtered) and `rapgen collect folder`. All rows and lyrics are invented."""

import csv
import gzip
import os
import subprocess
import sys
import tracemalloc

import pytest

from rapgen.data.collect import collect_csv, collect_folder
from rapgen.data.lyrics import parse_songs
from rapgen.errors import RapgenError

COLUMNS = ["title", "tag", "artist", "year", "views", "features", "lyrics", "id", "language"]
ARTISTS = ["Lil Tofu", "MC Fjord", "Doña Ruido", "Grandpa Static", "Kid Pixel", "Velvet Ghost", "Tofu, The Creator"]
WORDS = "soy drip fjord static pixel velvet ghost tofu neon gravel comet lantern marble thunder".split()


def invented_row(i):
    artist = ARTISTS[i % 7]
    lines = [
        f'{WORDS[(i + k) % 14]} {WORDS[(i * 3 + k) % 14]}, "{WORDS[k % 14]}" line {k} of {i}' for k in range(6 + i % 30)
    ]
    lyrics = f"[Verse 1: {artist}]\n" + "\n".join(lines[:4]) + "\n\n[Hook]\n" + "\n".join(lines[4:])
    return {
        "title": f"Track {i}",
        "tag": ["rap", "pop", "rb", "rock"][(i // 7) % 4],
        "artist": artist,
        "year": str(1990 + i % 30),
        "views": str(i * 37),
        "features": "{}" if i % 5 else '{"MC Fjord"}',
        "lyrics": lyrics,
        "id": str(i),
        "language": ["en", "fr", "es"][(i // 28) % 3],
    }


def special_rows():
    return [
        {**invented_row(0), "title": "TRACK 0", "id": "900001"},  # same artist and title as row 0
        {**invented_row(28 * 3), "title": "Copy Cat", "id": "900002"},  # same lyrics as row 84
        {**invented_row(0), "title": "Silence", "lyrics": "  \n [Instrumental] \n", "id": "900003"},
        {**invented_row(0), "title": "Long One", "lyrics": "[Verse]\n" + "tofu tofu soy\n" * 25000, "id": "900004"},
        {**invented_row(0), "title": "Curly", "lyrics": "it\u2019s \u201ccold\u201d\r\nhere", "id": "900005"},
    ]


def write_csv(path, n, extra=()):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for i in range(n):
            writer.writerow(invented_row(i))
        for row in extra:
            writer.writerow(row)


def expected_titles(rows, tags, languages, artists=None):
    titles, seen_titles, seen_lyrics = [], set(), set()
    for r in rows:
        if r["tag"] not in tags or r["language"] not in languages or (artists and r["artist"] not in artists):
            continue
        if "Instrumental" in r["lyrics"]:
            continue
        key, text = (r["artist"].casefold(), r["title"].casefold()), " ".join(r["lyrics"].split())
        if key in seen_titles or text in seen_lyrics:
            continue
        seen_titles.add(key)
        seen_lyrics.add(text)
        titles.append(r["title"])
    return titles


def titles_of(path):
    with open(path, encoding="utf-8") as f:
        return [s.title for s in parse_songs(f.read())]


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    path = tmp_path_factory.mktemp("dump") / "song_lyrics.csv"
    write_csv(path, 3000, special_rows())
    return path


def test_csv_filters_by_where_and_artists(dump, tmp_path):
    rows = [invented_row(i) for i in range(3000)] + special_rows()
    out = collect_csv(
        str(dump), out=str(tmp_path / "rap.txt"), where=["tag=rap", "language=en"], tokens=False, quiet=True
    )
    assert titles_of(out) == expected_titles(rows, {"rap"}, {"en"})
    assert {"Long One", "Curly"} <= set(titles_of(out)) and "TRACK 0" not in titles_of(out)
    with open(out, encoding="utf-8") as f:
        text = f.read()
    assert 'it\'s "cold"\nhere' in text and "\r" not in text
    out2 = collect_csv(
        str(dump),
        out=str(tmp_path / "two.txt"),
        where="tag=rap|rb,language=fr",
        artists="Lil Tofu;Tofu, The Creator",
        tokens=False,
        quiet=True,
    )
    assert titles_of(out2) == expected_titles(rows, {"rap", "rb"}, {"fr"}, {"Lil Tofu", "Tofu, The Creator"})
    assert len(titles_of(out2)) > 20


def test_csv_gz_and_max_songs(tmp_path):
    path = tmp_path / "dump.csv.gz"
    write_csv(path, 400)
    out = collect_csv(str(path), out=str(tmp_path / "gz.txt"), max_songs=3, tokens=False, quiet=True)
    with open(out, encoding="utf-8") as f:
        songs = parse_songs(f.read())
    assert len(songs) == 3 * len(ARTISTS)
    assert [s.title for s in songs][:7] == [f"Track {i}" for i in range(7)]


def test_csv_is_streamed_not_loaded(tmp_path):
    peaks, sizes = [], []
    for n in (300, 300, 1200):  # the first run only imports what the others would count
        path = tmp_path / f"dump{n}.csv"
        write_csv(path, n)
        sizes.append(os.path.getsize(path))
        tracemalloc.start()
        collect_csv(
            str(path),
            out=str(tmp_path / f"out{n}.txt"),
            where="tag=rap,language=en",
            artists="Lil Tofu",
            tokens=False,
            quiet=True,
        )
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    peaks, sizes = peaks[1:], sizes[1:]
    assert sizes[1] > 3.5 * sizes[0]
    # 4x the file (+750 kB): the peak stays where it was; loading the file would add megabytes
    assert peaks[1] < 1.3 * peaks[0] + 32_000, (peaks, sizes)
    assert peaks[1] < sizes[1] / 8, (peaks, sizes)


def test_csv_mistakes_are_one_line_errors(dump, tmp_path):
    with pytest.raises(RapgenError, match="is not a file"):
        collect_csv(str(tmp_path / "missing.csv"))
    with pytest.raises(RapgenError, match=r"no column 'song' for --lyrics_col \(its columns: title, tag"):
        collect_csv(str(dump), lyrics_col="song", out=str(tmp_path / "x.txt"), tokens=False, quiet=True)
    with pytest.raises(RapgenError, match="no column 'genre' for --where"):
        collect_csv(str(dump), where="genre=rap", out=str(tmp_path / "x.txt"), tokens=False, quiet=True)
    with pytest.raises(RapgenError, match="no songs"):
        collect_csv(str(dump), where="tag=polka", out=str(tmp_path / "x.txt"), tokens=False, quiet=True)
    assert not os.path.exists(tmp_path / "x.txt")


def make_folder(root):
    def put(rel, text):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    put("Lil Tofu/Soy Drip.txt", "[Hook]\nsoy on my wrist\ntofu in the fridge\n")
    put("Lil Tofu/Cold_Water.txt", "\ufeffcold water, cold fjord\r\nstill cold\r\n")
    put("Lil Tofu/Blank.txt", "\n\n")
    put("Lil Tofu/.draft.txt", "a hidden draft")
    put("Lil Tofu/notes.md", "not lyrics")
    put("MC Fjord/Fjord Song.txt", "fjord fjord, the boat is slow")
    put(".git/stray.txt", "not a song")
    put(
        "tape.txt",
        "<<Kid Pixel - Eight Bit>>\npixel pixel\n<|endoftext|>\n<<Kid Pixel - Sprite>>\nsprite life\n<|endoftext|>\n",
    )
    put("loose.txt", "a song with no artist folder")


def test_folder_takes_artists_from_folder_names(tmp_path):
    root = tmp_path / "my_lyrics"
    make_folder(root)
    out = root / "all.txt"  # inside the folder: must not be read back as a song
    for _ in range(2):
        collect_folder(str(root), out=str(out), tokens=False, quiet=True)
        with open(out, encoding="utf-8") as f:
            songs = parse_songs(f.read())
        assert [(s.artist, s.title) for s in songs] == [
            ("my_lyrics", "loose"),
            ("Kid Pixel", "Eight Bit"),
            ("Kid Pixel", "Sprite"),
            ("Lil Tofu", "Cold Water"),
            ("Lil Tofu", "Soy Drip"),
            ("MC Fjord", "Fjord Song"),
        ]
    assert songs[3].lyrics == "cold water, cold fjord\nstill cold"
    only = collect_folder(str(root), out=str(tmp_path / "tofu.txt"), artists="lil tofu", tokens=False, quiet=True)
    assert titles_of(only) == ["Cold Water", "Soy Drip"]
    with pytest.raises(RapgenError, match="not a folder"):
        collect_folder(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RapgenError, match="no .txt files"):
        collect_folder(str(tmp_path / "empty"))


def test_cli_csv_and_folder(dump, tmp_path):
    env = dict(os.environ)
    make_folder(tmp_path / "mine")

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "rapgen", "collect", *args],
            env=env,
            cwd=str(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = cli(
        "csv",
        str(dump),
        "--where",
        "tag=rap,language=en",
        "--artists",
        "Lil Tofu,MC Fjord",
        "--tokens",
        "False",
        "--min_length",
        "10",
    )
    assert r.returncode == 0, r.stderr
    out = os.path.join("data", "song_lyrics.txt")
    assert r.stdout.strip().splitlines()[-1] == out
    assert "Lil Tofu" in r.stdout and "MC Fjord" in r.stdout and "total" in r.stdout
    rows = [invented_row(i) for i in range(3000)] + special_rows()
    assert titles_of(tmp_path / out) == expected_titles(rows, {"rap"}, {"en"}, {"Lil Tofu", "MC Fjord"})

    r = cli("folder", "mine", "--out", "data/mine.txt", "--tokens", "False")
    assert r.returncode == 0, r.stderr
    assert len(titles_of(tmp_path / "data" / "mine.txt")) == 6

    r = cli("csv", "nowhere.csv")
    assert r.returncode == 2 and r.stderr.strip().startswith("rapgen: error: nowhere.csv is not a file")
    assert "Traceback" not in r.stderr
