"""Originality: the index finds planted lines, agrees with brute force, and caches beside the dataset."""

import os
import shutil

import numpy as np
import pytest

from rapgen.judge.originality import (
    N,
    build_index,
    copied,
    index_path,
    load_index,
    max_tfidf_similarity,
    ngram_hashes,
    ngram_keys,
)
from rapgen.model.hparams import EOT_ID

from support.helpers import ROOT

SAMPLE_LYRICS = ROOT / "data" / "sample_lyrics.txt"
PLANTED = "Chickpeas stacked and the sky stay sunny"  # a line of Lil Tofu's "Oat Milk Money"


@pytest.fixture(scope="module")
def encoder(vocab_dir):
    from rapgen.model.encoder import load_encoder

    return load_encoder(vocab_dir)


@pytest.fixture()
def dataset(tmp_path):
    path = tmp_path / "rap.txt"
    shutil.copy(SAMPLE_LYRICS, path)
    return str(path)


def twelve_word_line():
    """A 12-word line of the sample lyrics, with its song."""
    from rapgen.data.lyrics import parse_songs

    for song in parse_songs(SAMPLE_LYRICS.read_text(encoding="utf-8")):
        for line in song.lyrics.splitlines():
            if len(line.split()) == 12 and not line.startswith("["):
                return line, song
    raise AssertionError("the sample lyrics hold no 12-word line")


MADE_UP = (
    "Purple radiators whisper algebra to sleepy lighthouses\n"
    "Seventeen accordions negotiate with a patient glacier\n"
    "My umbrella files taxes for the moon on Thursdays\n"
)


def test_finds_a_planted_line_and_names_its_song(dataset, encoder):
    line, song = twelve_word_line()
    index = load_index(dataset, encoder)
    sample = MADE_UP + line + "\nA tortoise sells umbrellas to volcanic pigeons\n"
    found = copied(index, encoder.encode(sample), encoder)
    assert found.longest_words == 12, found
    assert found.span.strip() == line
    assert (found.artist, found.title) == (song.artist, song.title)
    assert 0 < found.ngram_share < 0.5


def test_text_made_up_here_scores_zero(dataset, encoder):
    found = copied(load_index(dataset, encoder), encoder.encode(MADE_UP), encoder)
    assert (found.longest_tokens, found.longest_words, found.ngram_share) == (0, 0, 0.0)


def brute_force(corpus, sample):
    """Longest common substring of sample and corpus (by dynamic programming) and the 8-gram share."""
    best, prev = 0, np.zeros(len(corpus) + 1, np.int64)
    for i in range(len(sample)):
        cur = np.zeros_like(prev)
        cur[1:] = np.where(corpus == sample[i], prev[:-1] + 1, 0)
        best, prev = max(best, int(cur.max())), cur
    grams = {tuple(corpus[j : j + N]) for j in range(len(corpus) - N + 1)}
    sample_grams = [tuple(sample[i : i + N]) for i in range(len(sample) - N + 1)]
    share = sum(g in grams for g in sample_grams) / len(sample_grams)
    return (best if best >= N else 0), share


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_index_answers_as_brute_force_does(seed, encoder):
    rng = np.random.default_rng(seed)
    corpus = rng.integers(0, 4, 6000).astype(np.uint16)  # 4 symbols: many short repeats
    corpus[rng.integers(0, 6000, 30)] = EOT_ID
    index = build_index(corpus, encoder)
    for trial in range(6):
        parts = []
        for _ in range(3):  # pieces copied from the corpus, of random lengths, between random tokens
            start, length = int(rng.integers(0, 5000)), int(rng.integers(3, 40))
            parts += [corpus[start : start + length], rng.integers(0, 4, int(rng.integers(0, 12))).astype(np.uint16)]
        sample = np.concatenate(parts)
        sample = sample[sample != EOT_ID]
        found = copied(index, sample.tolist())
        longest, share = brute_force(corpus, sample)
        assert found.longest_tokens == longest, (seed, trial)
        assert found.ngram_share == pytest.approx(share, abs=1e-4)


def test_hashes_tell_ngrams_apart():
    tokens = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0], np.uint16)
    h = ngram_hashes(tokens)
    assert len(h) == len(tokens) - N + 1 and len(set(h.tolist())) == len(h)
    assert ngram_hashes(np.zeros(N, np.uint16))[0] != ngram_hashes(np.array([0] * (N - 1) + [1], np.uint16))[0]
    # Keys computed a chunk at a time are the top bits of the same hashes.
    many = np.random.default_rng(0).integers(0, 50257, 1000).astype(np.uint16)
    assert np.array_equal(ngram_keys(many, chunk=37), (ngram_hashes(many) >> np.uint64(32)).astype(np.uint32))


def test_the_index_is_cached_beside_the_dataset_and_renewed_when_it_changes(dataset, encoder):
    first = load_index(dataset, encoder)
    folder = index_path(dataset)
    assert os.path.isdir(folder) and os.path.exists(dataset + ".tokens.npz")
    stamp = os.stat(os.path.join(folder, "keys.npy")).st_mtime_ns
    again = load_index(dataset, encoder)
    assert isinstance(again.keys, np.memmap)  # read from disk, not built again
    assert os.stat(os.path.join(folder, "keys.npy")).st_mtime_ns == stamp
    assert again.songs == first.songs and np.array_equal(again.keys, first.keys)

    with open(dataset, "a", encoding="utf-8") as f:
        f.write(
            "<<New Artist - New Song>>\nPurple radiators whisper algebra to sleepy lighthouses tonight\n<|endoftext|>\n"
        )
    renewed = load_index(dataset, encoder)
    assert renewed.songs[-1] == ["New Artist", "New Song"]
    found = copied(renewed, encoder.encode("Purple radiators whisper algebra to sleepy lighthouses tonight"), encoder)
    assert found.title == "New Song"


def test_a_damaged_index_is_built_again(dataset, encoder):
    load_index(dataset, encoder)
    keys = os.path.join(index_path(dataset), "keys.npy")
    with open(keys, "r+b") as f:
        f.truncate(100)
    line, song = twelve_word_line()
    found = copied(load_index(dataset, encoder), encoder.encode(line), encoder)
    assert found.title == song.title


def test_tfidf_similarity_is_highest_for_the_song_itself():
    songs = ["oat milk money oat milk money", "tempeh temple bow to the bean", "kale chain swinging crisp"]
    assert max_tfidf_similarity(songs[1], songs) == pytest.approx(1.0)
    assert max_tfidf_similarity("nothing shared at all", songs) == 0.0
    partly = max_tfidf_similarity("tempeh on the grill", songs)
    assert 0 < partly < 1
