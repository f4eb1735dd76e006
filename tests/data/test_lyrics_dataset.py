"""The lyrics format (`rapgen.data.lyrics`) and training data (`rapgen.data.dataset`).

Token ids are checked against the real GPT-2 encoder, each song encoded on its own; all
lyrics here are invented for these tests.
"""

import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rapgen.data.dataset as ds
from rapgen.data.lyrics import (
    SEPARATOR,
    Song,
    format_song,
    format_songs,
    parse_header,
    parse_songs,
    prompt_for,
    split_songs,
)
from rapgen.errors import RapgenError

from support.helpers import run_cli

EOT = 50256

SONGS = [
    Song(
        "Lil Tofu",
        "Soy Drip",
        "[Hook: Lil Tofu]\nsoy on my wrist, tofu on my plate\nmarinate the beat, let the flavour wait",
    ),
    Song(
        "MC Quasar",
        "Redshift - Remix",
        "[Verse 1: MC Quasar]\nI orbit the block at a fraction of c\nmy rhymes have a spectrum you're too slow to see",
    ),
    Song(
        "Lil Tofu",
        "Bean Curd Boulevard",
        "[Verse 1]\ncurdled and cold on the boulevard\nbean counters counting, I'm counting the stars",
    ),
    Song(
        "Grandma Flex",
        "Knit Picks",
        "[Intro]\nyarn in the pocket, needles in the hand\nknitting a sweater for the whole damn band",
    ),
    Song(
        "MC Quasar",
        "Event Horizon",
        "[Chorus]\npast the horizon no light gets back\nspaghetti on the mic when I lay down a track",
    ),
    Song(
        "Lil Tofu",
        "Press Me Firm",
        "[Verse 2: Lil Tofu]\npress me firm, I hold my shape\nsilken on the outside, extra firm on tape",
    ),
]
HEADERLESS = "no header on this one\njust a loose verse about a lost umbrella"


def song_text(song):
    """A song as the encoder sees it: header and lyrics, without the separator line."""
    return format_song(song)[: -len(SEPARATOR) - 2]


def expected_tokens(enc, texts):
    ids = [EOT]
    for text in texts:
        ids += enc.encode(text) + [EOT]
    return ids


def write(path, text, encoding="utf-8"):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return str(path)


def one_line(error):
    message = str(error.value)
    assert message and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def enc(vocab_dir):
    from rapgen.model.encoder import load_encoder

    return load_encoder(vocab_dir)


@pytest.fixture
def lyrics_file(tmp_path):
    return write(tmp_path / "rap.txt", format_songs(SONGS) + HEADERLESS + "\n" + SEPARATOR + "\n")


# -- the lyrics format ----------------------------------------------------------------

artists = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$.-' "), max_size=20)
titles = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30)
lyric_lines = st.lists(
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="|"), max_size=40),
    max_size=6,
)


@st.composite
def songs(draw):
    artist = draw(artists).strip()
    title = draw(titles).strip()
    # The first " - " of a header splits artist from title, so an artist cannot hold one itself.
    assume(" - " not in artist + " " and not artist.endswith(" -"))
    lyrics = "\n".join(draw(lyric_lines)).strip()
    return Song(artist, title, lyrics)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.lists(songs(), min_size=1, max_size=5))
def test_format_then_parse_gives_the_songs_back(items):
    text = format_songs(items)
    assert text.endswith(SEPARATOR + "\n")
    assert text.count(SEPARATOR + "\n") == len(items)
    assert parse_songs(text) == items


def test_format_song_layout():
    assert format_song(Song("Lil Tofu", "Soy Drip", "\n[Hook]\nsoy on my wrist\n\n")) == (
        "<<Lil Tofu - Soy Drip>>\n[Hook]\nsoy on my wrist\n<|endoftext|>\n"
    )
    assert format_song(Song("Grandma Flex", "", "yarn")) == "<<Grandma Flex>>\nyarn\n<|endoftext|>\n"
    assert prompt_for("  Lil Tofu ") == "<<Lil Tofu"


@pytest.mark.parametrize(
    "line, parsed",
    [
        ("<<Lil Tofu - Soy Drip>>", ("Lil Tofu", "Soy Drip")),
        ("<<MC Quasar - Redshift - Remix>>", ("MC Quasar", "Redshift - Remix")),  # the first " - " splits
        ("<<MC Quasar - Redshift - Remix - Extended>>", ("MC Quasar", "Redshift - Remix - Extended")),
        ("<<Jay-Zed - Dash-Board>>", ("Jay-Zed", "Dash-Board")),  # hyphens without spaces are not a split
        ("<<Grandma Flex>>", ("Grandma Flex", "")),
        ("  <<Lil Tofu - Soy Drip>>  ", ("Lil Tofu", "Soy Drip")),
        ("<<Lil Tofu - Soy Drip>>\r", ("Lil Tofu", "Soy Drip")),
        ("<<Lil Tofu - >>Soy>> Drip>>", ("Lil Tofu", ">>Soy>> Drip")),
        ("[Verse 1: Lil Tofu]", None),
        ("<<Lil Tofu - Soy Drip>> and then some words", None),
        ("<<Lil Tofu - Soy Drip", None),
        ("", None),
    ],
)
def test_parse_header(line, parsed):
    assert parse_header(line) == parsed


def test_songs_without_headers_keep_all_their_lines():
    text = (
        "just a verse\nwith no header\n<|endoftext|>\n<<Lil Tofu - Soy Drip>>\nsoy\n<|endoftext|>\nanother loose one\n"
    )
    assert parse_songs(text) == [
        Song("", "", "just a verse\nwith no header"),
        Song("Lil Tofu", "Soy Drip", "soy"),
        Song("", "", "another loose one"),
    ]


def test_split_songs_separator_lines():
    text = (
        "<|endoftext|>\n\n<<A - B>>\nline one\n  <|endoftext|>\t\n<|endoftext|>\n\n"
        "<<C - D>>\r\nline two\r\n<|endoftext|>\r\n"
        "<<E - F>>\nsays <|endoftext|> mid-line\n<|endoftext|>"
    )
    assert split_songs(text) == [
        "<<A - B>>\nline one",
        "<<C - D>>\r\nline two",
        "<<E - F>>\nsays <|endoftext|> mid-line",
    ]
    assert split_songs("") == [] and split_songs("\n<|endoftext|>\n \n<|endoftext|>") == []


# -- encoding: separators and layout ---------------------------------------------------


def test_layout_is_eot_song_eot_with_each_song_encoded_alone(enc, lyrics_file):
    tokens = ds.load_tokens(lyrics_file, enc, quiet=True)
    assert tokens.dtype == np.uint16
    texts = [song_text(s) for s in SONGS] + [HEADERLESS]
    assert tokens.tolist() == expected_tokens(enc, texts)
    assert int(np.sum(tokens == EOT)) == len(texts) + 1
    assert [tokens[s].tolist() for s in ds.song_slices(tokens)] == [enc.encode(t) for t in texts]
    assert enc.decode(tokens[ds.song_slices(tokens)[1]].tolist()).startswith("<<MC Quasar - Redshift - Remix>>\n")


def _no_literal_separator(enc, tokens):
    """True when no `<|endoftext|>` was encoded as text (the seven tokens of the literal string)."""
    return "endoftext" not in enc.decode([t for t in tokens.tolist() if t != EOT])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from([0, 1, 2, 3, 4, 5]), min_size=1, max_size=5),
    st.lists(
        st.sampled_from(["<|endoftext|>", "  <|endoftext|>", "<|endoftext|>\t ", "\t<|endoftext|> "]),
        min_size=6,
        max_size=6,
    ),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_separator_lines_are_always_the_single_token(
    enc, tmp_path_factory, picks, seps, newline, bom, leading, doubled, final_newline
):
    parts = [SEPARATOR + newline] if leading else []
    for i, k in enumerate(picks):
        parts.append(song_text(SONGS[k]).replace("\n", newline) + newline + seps[i] + newline)
        if doubled:
            parts.append(seps[-1] + newline + newline)
    text = "".join(parts)
    if not final_newline:
        text = text.rstrip("\r\n")
    path = write(tmp_path_factory.mktemp("sep") / "songs.txt", ("\ufeff" if bom else "") + text)
    tokens = ds.load_tokens(path, enc, quiet=True)
    assert _no_literal_separator(enc, tokens)
    assert len(ds.song_slices(tokens)) == len(picks)
    assert tokens[0] == EOT and tokens[-1] == EOT
    assert not np.any((tokens[1:] == EOT) & (tokens[:-1] == EOT))
    if newline == "\n":
        assert tokens.tolist() == expected_tokens(enc, [song_text(SONGS[k]) for k in picks])
    assert ds.song_artists(tokens, enc) == [SONGS[k].artist for k in picks]


def test_byte_order_mark_is_not_part_of_the_first_song(enc, tmp_path):
    plain = write(tmp_path / "plain.txt", format_songs(SONGS[:2]))
    marked = write(tmp_path / "marked.txt", "\ufeff" + format_songs(SONGS[:2]))
    assert ds.load_tokens(marked, enc, quiet=True).tolist() == ds.load_tokens(plain, enc, quiet=True).tolist()


# -- inputs: file, folder, glob, npz --------------------------------------------------


def test_file_folder_glob_and_npz_give_the_same_tokens(enc, vocab_dir, tmp_path, lyrics_file):
    reference = ds.load_tokens(lyrics_file, enc, quiet=True).tolist()

    folder = tmp_path / "folder"
    write(folder / "a.txt", format_songs(SONGS[:2]))
    write(folder / "b" / "c.txt", format_songs(SONGS[2:4]))
    write(folder / "b" / "d" / "e.lyrics", format_songs(SONGS[4:]) + HEADERLESS + "\n")  # no final separator
    write(folder / "b" / "notes.md", "not lyrics")
    (folder / "b" / "cover.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    # A cache made by loading one file of the folder alone lies inside it: it is not data.
    ds.load_tokens(str(folder / "a.txt"), enc, quiet=True)
    assert os.path.exists(str(folder / "a.txt") + ds.CACHE_SUFFIX)
    assert ds.expand_paths(str(folder)) == [
        str(folder / "a.txt"),
        str(folder / "b" / "c.txt"),
        str(folder / "b" / "d" / "e.lyrics"),
    ]
    assert ds.load_tokens(str(folder), enc, quiet=True).tolist() == reference
    assert ds.load_tokens(str(folder) + "/", enc, quiet=True).tolist() == reference

    split = tmp_path / "split"
    for i, song in enumerate(SONGS):
        write(split / f"part{i}.txt", format_song(song))
    write(split / "part9.txt", HEADERLESS)
    assert ds.load_tokens(str(split / "part*.txt"), enc, quiet=True).tolist() == reference
    assert ds.load_tokens(str(tmp_path / "**" / "part*.txt"), enc, quiet=True).tolist() == reference

    out = str(tmp_path / "encoded.npz")
    assert ds.encode(lyrics_file, out, model=vocab_dir, quiet=True) == out
    assert ds.load_tokens(out, enc, quiet=True).tolist() == reference
    with np.load(out) as data:
        assert data.files == ["tokens"] and data["tokens"].dtype == np.uint16


def test_gpt2_simple_npz_chunks_load_as_separate_documents(enc, tmp_path):
    texts = [song_text(SONGS[0]), song_text(SONGS[1]) + "\n" + song_text(SONGS[2])]
    path = str(tmp_path / "simple.npz")
    np.savez_compressed(path, np.stack(enc.encode(texts[0])), np.stack(enc.encode(texts[1])))  # arr_0, arr_1
    tokens = ds.load_tokens(path, enc, quiet=True)
    assert tokens.dtype == np.uint16
    assert tokens.tolist() == expected_tokens(enc, texts)
    assert not os.path.exists(path + ds.CACHE_SUFFIX)  # pre-encoded: nothing to cache


def test_mixed_folder_of_text_and_npz(enc, tmp_path):
    folder = tmp_path / "mixed"
    write(folder / "a.txt", format_songs(SONGS[:2]))
    np.savez_compressed(str(folder / "z.npz"), np.array(enc.encode(song_text(SONGS[3])), np.int32))
    tokens = ds.load_tokens(str(folder), enc, quiet=True)
    assert tokens.tolist() == expected_tokens(enc, [song_text(SONGS[0]), song_text(SONGS[1]), song_text(SONGS[3])])


# -- the encoding cache ---------------------------------------------------------------


class EncoderCalled(Exception):
    pass


def refuse(*args, **kwargs):
    raise EncoderCalled


def test_cache_is_written_reused_and_invalidated_by_a_change(enc, tmp_path, monkeypatch):
    path = write(tmp_path / "rap.txt", format_songs(SONGS[:3]))
    cache = path + ds.CACHE_SUFFIX
    first = ds.load_tokens(path, enc, quiet=True)
    assert os.path.exists(cache)
    stamp = os.stat(cache).st_mtime_ns
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temp file left

    with monkeypatch.context() as m:
        m.setattr(enc, "encode", refuse)
        # Unchanged text: read from the cache, the encoder is never asked.
        assert ds.load_tokens(path, enc, quiet=True).tolist() == first.tolist()
        assert ds.load_dataset(path, enc, val_fraction=0.3, quiet=True).n_songs == 3
        assert os.stat(cache).st_mtime_ns == stamp
        # Same size, one letter different: the key is a hash of the text, not its size or time.
        text = format_songs(SONGS[:3])
        changed = text.replace("soy on my wrist", "soy on my wriSt")
        assert len(changed) == len(text) and changed != text
        write(path, changed)
        with pytest.raises(EncoderCalled):
            ds.load_tokens(path, enc, quiet=True)
    second = ds.load_tokens(path, enc, quiet=True)
    assert second.tolist() == expected_tokens(
        enc, [song_text(SONGS[0]).replace("wrist", "wriSt"), song_text(SONGS[1]), song_text(SONGS[2])]
    )
    with monkeypatch.context() as m:
        m.setattr(enc, "encode", refuse)
        assert ds.load_tokens(path, enc, quiet=True).tolist() == second.tolist()


def test_folder_cache_sits_beside_the_folder_and_sees_a_new_file(enc, tmp_path, monkeypatch):
    folder = tmp_path / "songs"
    write(folder / "a.txt", format_songs(SONGS[:2]))
    first = ds.load_tokens(str(folder), enc, quiet=True)
    assert os.path.exists(str(folder) + ds.CACHE_SUFFIX)
    assert os.listdir(folder) == ["a.txt"]
    write(folder / "b.txt", format_song(SONGS[2]))
    with monkeypatch.context() as m:
        m.setattr(enc, "encode", refuse)
        with pytest.raises(EncoderCalled):
            ds.load_tokens(str(folder), enc, quiet=True)
    assert len(ds.song_slices(ds.load_tokens(str(folder), enc, quiet=True))) == 3
    assert len(ds.song_slices(first)) == 2


@pytest.mark.parametrize("garbage", [b"", b"PK\x03\x04 not really a zip", b"\x93NUMPY garbage", b"plain text"])
def test_a_broken_cache_is_encoded_again(enc, tmp_path, garbage):
    path = write(tmp_path / "rap.txt", format_songs(SONGS[:2]))
    with open(path + ds.CACHE_SUFFIX, "wb") as f:
        f.write(garbage)
    assert ds.load_tokens(path, enc, quiet=True).tolist() == expected_tokens(enc, [song_text(s) for s in SONGS[:2]])
    with np.load(path + ds.CACHE_SUFFIX) as data:  # and replaced by a good one
        assert "key" in data.files


# -- validation split -----------------------------------------------------------------


def invented_songs(n, start=0):
    syllables = ["ka", "zo", "mi", "dre", "flo", "rax", "tun", "vel"]
    out = []
    for i in range(start, start + n):
        words = [syllables[(i * 7 + j * 3) % 8] + syllables[(i + j) % 8] for j in range(5 + i % 4)]
        out.append(Song(f"Artist {i % 5}", f"Track {i}", " ".join(words) + f" number {i}"))
    return out


def sides(tokens, val_fraction):
    train, val = ds.split_validation(tokens, val_fraction)
    songs_of = lambda t: [tuple(t[s].tolist()) for s in ds.song_slices(t)]  # noqa: E731
    return train, val, songs_of(train), songs_of(val) if val is not None else []


def test_validation_split_by_whole_songs(enc):
    items = invented_songs(40)
    tokens = ds.encode_lyrics(format_songs(items), enc)
    all_songs = [tuple(tokens[s].tolist()) for s in ds.song_slices(tokens)]
    assert len(set(all_songs)) == 40
    train, val, tr, va = sides(tokens, 0.25)
    assert sorted(tr + va) == sorted(all_songs)  # every song exactly once
    assert not set(tr) & set(va) and tr and va
    assert 3 <= len(va) <= 20  # about a quarter
    # Both sides keep the layout, and the training songs keep their order.
    for part in (train, val):
        assert part[0] == EOT and part[-1] == EOT and not np.any((part[1:] == EOT) & (part[:-1] == EOT))
    assert tr == [s for s in all_songs if s in set(tr)]
    # Deterministic.
    again = ds.split_validation(tokens, 0.25)
    assert again[0].tolist() == train.tolist() and again[1].tolist() == val.tolist()
    # A song's side depends on its own tokens only: adding songs never moves the others.
    more = ds.encode_lyrics(format_songs(items[:17] + invented_songs(25, start=100) + items[17:]), enc)
    _, _, tr2, va2 = sides(more, 0.25)
    assert set(tr) <= set(tr2) and set(va) <= set(va2)
    # Only validation songs (by the rule) moved to validation: a CRC below the fraction.
    assert all(zlib.crc32(np.array(s, np.uint16).tobytes()) / 2**32 < 0.25 for s in va2)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.floats(0.0, 0.999))
def test_validation_split_keeps_a_song_on_each_side(enc, n, fraction):
    tokens = ds.encode_lyrics(format_songs(invented_songs(n)), enc)
    _, val, tr, va = sides(tokens, fraction)
    if n == 1 or fraction == 0:
        assert val is None and len(tr) == n
    else:
        assert len(tr) >= 1 and len(va) >= 1 and len(tr) + len(va) == n


def test_load_dataset_options(enc, tmp_path, lyrics_file):
    data = ds.load_dataset(lyrics_file, enc, val_fraction=0.0, quiet=True)
    assert data.val is None and data.n_songs == len(SONGS) + 1
    assert data.train.tolist() == ds.load_tokens(lyrics_file, enc, quiet=True).tolist()
    data = ds.load_dataset(lyrics_file, enc, val_fraction=0.5, quiet=True)
    assert len(ds.song_slices(data.train)) + len(ds.song_slices(data.val)) == data.n_songs
    val_file = write(tmp_path / "val.txt", format_songs(invented_songs(2)))
    data = ds.load_dataset(lyrics_file, enc, val_fraction=0.5, val_dataset=val_file, quiet=True)
    assert len(ds.song_slices(data.train)) == len(SONGS) + 1 and len(ds.song_slices(data.val)) == 2
    for bad in (1.0, -0.1, 2):
        with pytest.raises(RapgenError) as e:
            ds.load_dataset(lyrics_file, enc, val_fraction=bad, quiet=True)
        assert "--val_fraction" in one_line(e)


# -- training windows -----------------------------------------------------------------


def is_slice_of(row, tokens):
    windows = np.lib.stride_tricks.sliding_window_view(tokens.astype(np.int64), len(row))
    return bool(np.any(np.all(windows == np.asarray(row)[None], axis=1)))


def test_training_batch_is_a_pure_function_of_seed_step_micro(enc):
    tokens = ds.encode_lyrics(format_songs(invented_songs(30)), enc)
    a = ds.training_batch(tokens, step=7, batch_size=4, length=32, seed=3, micro=1)
    np.random.seed(123)  # global state must not matter
    ds.training_batch(tokens, step=0, batch_size=4, length=32, seed=0)
    b = ds.training_batch(tokens, step=7, batch_size=4, length=32, seed=3, micro=1)
    assert a.dtype == np.int32 and a.shape == (4, 33)
    assert a.tolist() == b.tolist()
    others = [
        ds.training_batch(tokens, step=s, batch_size=4, length=32, seed=d, micro=m)
        for s, d, m in [(8, 3, 1), (7, 4, 1), (7, 3, 0)]
    ]
    assert all(o.tolist() != a.tolist() for o in others)


def test_windows_are_real_slices_and_reach_both_ends(enc):
    tokens = ds.encode_lyrics(format_songs(invented_songs(12)), enc)
    length = 40
    starts = set()
    for step in range(300):
        batch = ds.training_batch(tokens, step, 2, length, seed=0)
        for row in batch:
            assert is_slice_of(row, tokens)
            hits = np.flatnonzero(
                np.all(np.lib.stride_tricks.sliding_window_view(tokens.astype(np.int64), length + 1) == row, axis=1)
            )
            starts.update(hits.tolist())
    assert min(starts) < 10 and max(starts) > len(tokens) - length - 12
    exact = tokens[: length + 1]  # exactly one window: it is the whole dataset
    assert ds.training_batch(exact, 5, 3, length, seed=1).tolist() == [exact.tolist()] * 3


@pytest.mark.parametrize("length", [2, 64, 1024])
def test_a_dataset_shorter_than_one_window_still_fills_it(enc, length):
    tokens = ds.encode_lyrics(format_song(Song("Lil Tofu", "Tiny", "one short line")), enc)
    assert len(tokens) < 64
    cycle = tokens[1:]  # the song and its closing separator, repeated
    looped = np.concatenate([tokens[:1]] + [cycle] * ((length + 1) // len(cycle) + 3))
    for step in range(5):
        batch = ds.training_batch(tokens, step, 3, length, seed=0)
        assert batch.shape == (3, length + 1)
        for row in batch:
            assert is_slice_of(row, looped)
            assert not np.any((row[1:] == EOT) & (row[:-1] == EOT))  # no doubled separator


def test_validation_windows(enc):
    tokens = ds.encode_lyrics(format_songs(invented_songs(10)), enc)
    length = 16
    w = ds.validation_windows(tokens, length, max_windows=4)
    assert w.dtype == np.int32 and w.shape == (4, length + 1)
    for i, row in enumerate(w):  # consecutive from the start; targets of one = inputs of the next
        assert row.tolist() == tokens[i * length : i * length + length + 1].tolist()
    every = ds.validation_windows(tokens, length, max_windows=10_000)
    assert len(every) == (len(tokens) - 1) // length
    short = ds.encode_lyrics(format_song(Song("A", "B", "hey")), enc)
    w = ds.validation_windows(short, 64, max_windows=8)
    looped = np.concatenate([short[:1]] + [short[1:]] * 70)
    assert w.shape == (1, 65) and w[0].tolist() == looped[:65].tolist()


# -- artists and dataset-info ---------------------------------------------------------


def test_dataset_info_counts_songs_per_artist(enc, vocab_dir, lyrics_file, capsys):
    info = ds.dataset_info(lyrics_file, model=vocab_dir)
    assert info.songs == len(SONGS) + 1
    tokens = ds.load_tokens(lyrics_file, enc, quiet=True)
    assert info.tokens == int(np.sum(tokens != EOT))
    assert info.artists == {"Lil Tofu": 3, "MC Quasar": 2, "Grandma Flex": 1, "": 1}
    assert list(info.artists)[0] == "Lil Tofu"
    out = capsys.readouterr().out
    assert f"{len(SONGS) + 1} songs" in out and "Lil Tofu" in out and "(no header)" in out
    assert ds.song_artists(tokens, enc) == [s.artist for s in SONGS] + [""]


def test_dataset_info_finds_the_vocabulary_through_the_environment(vocab_dir, lyrics_file, tmp_path, monkeypatch):
    monkeypatch.setenv("RAPGEN_VOCAB_DIR", vocab_dir)
    info = ds.dataset_info(lyrics_file, models_dir=str(tmp_path / "no_models"), quiet=True)
    assert info.artists["MC Quasar"] == 2


# -- the encode command ---------------------------------------------------------------


def test_encode_command_round_trip(enc, tmp_path, lyrics_file, cli_env):
    out = str(tmp_path / "out" / "rap.npz")
    result = run_cli(["encode", lyrics_file, out], cli_env)
    assert result.returncode == 0, result.stderr
    assert f"{len(SONGS) + 1} songs" in result.stdout
    assert ds.load_tokens(out, enc, quiet=True).tolist() == ds.load_tokens(lyrics_file, enc, quiet=True).tolist()
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".")]
    with pytest.raises(RapgenError) as e:
        ds.encode(lyrics_file, str(tmp_path / "rap.tokens"), quiet=True)
    assert ".npz" in one_line(e)


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", [b"", b"\n\n   \n", b"<|endoftext|>\n", b"<|endoftext|>\n\n  <|endoftext|>\r\n<|endoftext|>"]
)
def test_empty_or_only_separators(enc, tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(RapgenError) as e:
        ds.load_tokens(str(path), enc, quiet=True)
    message = one_line(e)
    assert str(path) in message and "no text" in message


def test_binary_file(enc, tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"<<A - B>>\nyo\x00\x01\x02")
    with pytest.raises(RapgenError) as e:
        ds.load_tokens(str(path), enc, quiet=True)
    message = one_line(e)
    assert str(path) in message and "binary" in message and "offset 12" in message


def test_non_utf8_file_names_the_byte_and_another_encoding_works(enc, tmp_path):
    text = "<<Lil Tofu - Café Noir>>\nsoy latte, crème on top\n<|endoftext|>\n"
    raw = text.encode("latin-1")
    path = tmp_path / "latin.txt"
    path.write_bytes(raw)
    with pytest.raises(RapgenError) as e:
        ds.load_tokens(str(path), enc, quiet=True)
    message = one_line(e)
    offset = raw.index("é".encode("latin-1"))
    assert str(path) in message and f"byte offset {offset}" in message and "--encoding" in message
    tokens = ds.load_tokens(str(path), enc, encoding="latin-1", quiet=True)
    assert enc.decode(tokens[ds.song_slices(tokens)[0]].tolist()) == text[: -len(SEPARATOR) - 2]
    with pytest.raises(RapgenError) as e:
        ds.load_tokens(str(path), enc, encoding="klingon-8", quiet=True)
    assert "klingon-8" in one_line(e)


def test_missing_inputs(enc, tmp_path):
    cases = {
        str(tmp_path / "nope.txt"): "does not exist",
        str(tmp_path / "nope" / "*.txt"): "matches no files",
        str(tmp_path / "nope.npz"): "does not exist",
    }
    empty = tmp_path / "empty_folder"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.md").write_text("not lyrics")
    cases[str(empty)] = "holds no .txt"
    for path, words in cases.items():
        with pytest.raises(RapgenError) as e:
            ds.load_tokens(path, enc, quiet=True)
        message = one_line(e)
        assert path in message and words in message, message


@pytest.mark.parametrize("content", [b"PK\x03\x04 broken zip", b"just some text", b""])
def test_unreadable_npz(enc, tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(RapgenError) as e:
        ds.load_tokens(str(path), enc, quiet=True)
    assert str(path) in one_line(e)


@pytest.mark.slow
def test_cli_non_utf8_dataset_is_one_line_exit_2(tmp_path, cli_env):
    path = tmp_path / "latin.txt"
    raw = "<<Lil Tofu - Café>>\ncrème\n".encode("latin-1")
    path.write_bytes(raw)
    result = run_cli(["encode", str(path), str(tmp_path / "out.npz")], cli_env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rapgen: error:"), result.stderr
    assert str(path) in lines[0] and f"byte offset {raw.index(bytes([0xE9]))}" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not os.path.exists(tmp_path / "out.npz")


# -- songs run together ---------------------------------------------------------------


def test_songs_without_separator_lines_warn_once_in_one_line(enc, tmp_path, capsys):
    # Headers but no separator line: three songs would train as one.
    run_together = write(
        tmp_path / "a" / "run_together.txt", "".join(format_song(s).replace(SEPARATOR + "\n", "") for s in SONGS[:3])
    )
    long_text = write(
        tmp_path / "a" / "long.txt", HEADERLESS + "\n" + "la " * 8000
    )  # no headers, far longer than a song
    tokens = ds.load_tokens(run_together, enc)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"warning: {run_together} has no line holding only <|endoftext|>")
    assert "one song" in err and len(ds.song_slices(tokens)) == 1  # still encoded, as one song
    ds.load_tokens(str(tmp_path / "a"), enc)  # a folder with two such files: still one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(and 1 more file)" in err and long_text in err
    ds.load_tokens(run_together, enc, quiet=True)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "text",
    [
        format_songs(SONGS),  # separated
        format_song(SONGS[0]).replace(SEPARATOR + "\n", ""),  # one song, no separator: nothing run together
        HEADERLESS,
    ],
)
def test_well_formed_or_single_songs_do_not_warn(enc, tmp_path, capsys, text):
    ds.load_tokens(write(tmp_path / "lyrics.txt", text), enc)
    assert capsys.readouterr().err == ""


def test_a_folder_of_one_song_files_does_not_warn(enc, tmp_path, capsys):
    for i, song in enumerate(SONGS[:3]):
        write(tmp_path / "songs" / f"{i}.txt", format_song(song).replace(SEPARATOR + "\n", ""))
    tokens = ds.load_tokens(str(tmp_path / "songs"), enc)
    assert capsys.readouterr().err == "" and len(ds.song_slices(tokens)) == 3  # each file is a song


def test_song_layout_puts_one_separator_before_after_and_between_songs():
    eot = 50256
    assert ds.song_layout([[1, 2], [3]]).tolist() == [eot, 1, 2, eot, 3, eot]
    assert ds.song_layout([]).tolist() == [eot]
    assert ds.song_layout([[]]).tolist() == [eot, eot]
    # open_end: a prompt the model continues (sampling's context, best-of's candidates).
    assert ds.song_layout([[7, 8]], open_end=True).tolist() == [eot, 7, 8]
    assert ds.song_layout([[]], open_end=True).tolist() == [eot]
    assert ds.song_layout([np.array([4], np.uint16), [5]]).dtype == np.uint16
