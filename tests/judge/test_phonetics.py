"""Phonetics: espeak-ng (run for real) and the CMU dictionary reduce words to the same vowels."""

import os
import stat

import pytest

from rapgen.errors import RapgenError
from rapgen.judge.phonetics import INSTALL_ESPEAK, parse_espeak_word, resolve_source, transcribe

# The words test_rhyme's hand-worked verses use: both sources must agree on them.
WORDS = "dog crazy look lazy big cat red hat runs table stable funny bunny yellow fellow motion ocean".split()


def test_both_sources_agree_on_the_test_words():
    espeak = [w for line in transcribe(WORDS, "espeak") for w in line]
    cmu = [w for line in transcribe(WORDS, "cmudict") for w in line]
    assert [w.vowels for w in espeak] == [w.vowels for w in cmu]
    assert [w.syllables for w in espeak] == [w.syllables for w in cmu]


def test_espeak_mnemonics_are_reduced_as_the_paper_says():
    crazy = parse_espeak_word("kr'eIzi", "crazy")  # eI is two sounds; the doubled i counts once
    assert (crazy.vowels, crazy.syllables, crazy.stressed, crazy.rhyme) == (("e", "i"), 2, (0,), ("e", "i"))
    hello = parse_espeak_word("h@l'oU")  # the schwa is a syllable but no vowel sound
    assert (hello.vowels, hello.syllables, hello.stressed) == (("o", "U"), 2, (1,))
    dog = parse_espeak_word("d'0g")  # 0 merged with o
    bird = parse_espeak_word("b'3:d")  # 3 is a vowel, : a length mark
    bit = parse_espeak_word("b'It")  # I merged with i
    bet = parse_espeak_word("b'Et")  # E merged with e
    assert [dog.vowels, bird.vowels, bit.vowels, bet.vowels] == [("o",), ("3",), ("i",), ("e",)]
    assert parse_espeak_word("D@2").vowels == ()


def test_lines_stay_aligned_and_espeak_runs_once_per_text(tmp_path, monkeypatch):
    # A wrapper named espeak-ng first on the PATH counts the calls and runs the real one.
    real = next(
        os.path.join(d, "espeak-ng")
        for d in os.environ["PATH"].split(os.pathsep)
        if os.path.exists(os.path.join(d, "espeak-ng"))
    )
    log = tmp_path / "calls"
    wrapper = tmp_path / "bin" / "espeak-ng"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\necho x >> '{log}'\nexec '{real}' \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    lines = [f"line number {i}, with a comma, and the crazy dog" for i in range(40)] + ["", "[Hook]", "oat milk money"]
    monkeypatch.setenv("PATH", str(wrapper.parent) + os.pathsep + os.environ["PATH"])
    words = transcribe(lines, "espeak")
    assert log.read_text().count("x") == 1
    assert len(words) == len(lines)
    assert words[40] == [] and [w.vowels for w in words[-1]] == [("o", "U"), ("i",), ("V", "i")]
    assert all(len(words[i]) >= 7 for i in range(40))


def test_words_the_dictionary_lacks_get_a_letter_to_sound_guess():
    word = transcribe(["zorbleflax"], "cmudict")[0][0]
    assert word.syllables == 3 and word.vowels == ("o", "e", "a")
    assert transcribe(["pourin'"], "cmudict")[0][0].syllables == 2  # read as "pouring"


def test_without_espeak_auto_falls_back_and_espeak_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without espeak-ng
    assert resolve_source("auto") == "cmudict"
    with pytest.raises(RapgenError) as e:
        resolve_source("espeak")
    assert str(e.value) == INSTALL_ESPEAK
    assert "apt-get install -y espeak-ng" in INSTALL_ESPEAK and "brew install espeak-ng" in INSTALL_ESPEAK
    with pytest.raises(RapgenError, match="--phonetics must be one of"):
        resolve_source("festival")


def test_a_big_text_cut_into_pieces_reads_the_same(monkeypatch):
    import rapgen.judge.phonetics as phonetics

    lines = [f"verse {i}, the crazy dog and the lazy cat number {i}" for i in range(60)]
    whole = transcribe(lines, "espeak")
    monkeypatch.setattr(phonetics, "PARALLEL_LINES", 10)  # 60 lines: one piece per core
    assert transcribe(lines, "espeak") == whole
