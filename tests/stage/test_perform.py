"""`rapgen perform`: real espeak-ng speech, librosa stretching, a WAV whose bars line up with the beat."""

import os
import wave

import numpy as np
import pytest

from rapgen.stage.drums import drum_loop, grid_times
from rapgen.stage.perform import LEAD, TAIL, perform, wav_bytes

from support.helpers import assert_one_line_error, run_cli

SR = 22050
VERSE = (
    "<<Lil Tofu - Test Verse>>\n[Verse 1]\n"
    "Oat milk pourin' while the haters sip dairy\n"
    "Kale in the cooler, got the whole fridge scary\n"
    "Tempeh on the grill and the smoke smell leafy\n"
)


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SR)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


@pytest.mark.slow
@pytest.mark.parametrize("bpm", [90, 120])
def test_drum_onsets_fall_on_the_grid(bpm):
    import librosa

    pad = int(0.5 * SR)  # silence first, so the detector can see the hit at time 0 start
    y = np.concatenate([np.zeros(pad, np.float32), drum_loop(2, bpm)])
    found = librosa.onset.onset_detect(y=y, sr=SR, hop_length=128, units="time") - pad / SR
    grid = grid_times(2, bpm)
    assert len(found) == len(grid)  # every eighth note has a hit, and nothing else was found
    assert np.max(np.abs(found - grid)) < 0.020


@pytest.fixture(scope="module")
def verse(tmp_path_factory):
    folder = tmp_path_factory.mktemp("perform")
    (folder / "verse.txt").write_text(VERSE, encoding="utf-8")
    return folder


def test_the_wav_lasts_its_bars_and_each_line_stays_in_its_bar(verse):
    # The user's beat is silence here, so the WAV holds the speech alone.
    (verse / "silence.wav").write_bytes(wav_bytes(np.zeros(SR, np.float32)))
    bpm = 100
    result = perform(
        str(verse / "verse.txt"), bpm=bpm, out=str(verse / "voice.wav"), beat=str(verse / "silence.wav"), quiet=True
    )
    audio = read_wav(verse / "voice.wav")
    bar = 4 * 60 / bpm
    assert result.bars == 3
    assert len(audio) / SR == pytest.approx(3 * bar, rel=0.01)
    for k, line in enumerate(result.lines):
        start, end = int(round((k * bar + LEAD) * SR)), int(round(((k + 1) * bar - TAIL) * SR))
        assert line["start"] == pytest.approx(start / SR, abs=1e-3) and line["end"] <= (k + 1) * bar - TAIL + 1e-3
        inside = audio[start:end]
        assert np.sqrt(np.mean(inside**2)) > 0.02, k  # speech fills the bar
        before = audio[int(round(k * bar * SR)) : start]
        after = audio[end : int(round((k + 1) * bar * SR))]
        assert not np.any(before) and not np.any(after), k  # and nothing of it leaves the bar
    assert any(line["stress_beats"] for line in result.lines)  # some stresses were put on beats


def test_the_mix_is_normalised_and_drawn(verse):
    result = perform(str(verse / "verse.txt"), bpm=90, out=str(verse / "mix.wav"), quiet=True)
    audio = read_wav(verse / "mix.wav")
    assert len(audio) / SR == pytest.approx(3 * 4 * 60 / 90, rel=0.01)
    assert 0.85 < np.max(np.abs(audio)) < 0.9  # peak at -1 dBFS
    assert result.png and open(result.png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_perform_on_the_command_line_and_its_mistakes(verse, tmp_path):
    env = dict(os.environ)
    cwd = str(verse)
    done = run_cli(["perform", "verse.txt", "--bpm", "120", "--out", "cli.wav"], env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert "3 bars at 120 bpm" in done.stdout
    assert len(read_wav(verse / "cli.wav")) / SR == pytest.approx(6.0, rel=0.01)
    kept = (verse / "cli.wav").read_bytes()
    # An existing WAV is not overwritten.
    assert_one_line_error(run_cli(["perform", "verse.txt", "--out", "cli.wav"], env, cwd=cwd), "cli.wav exists")
    assert (verse / "cli.wav").read_bytes() == kept
    assert_one_line_error(run_cli(["perform", "verse.txt", "--bpm", "1000", "--out", "x.wav"], env, cwd=cwd), "--bpm")
    (verse / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    assert_one_line_error(
        run_cli(["perform", "verse.txt", "--beat", "broken.wav", "--out", "x.wav"], env, cwd=cwd), "broken.wav"
    )
    # espeak-ng missing: one line saying how to install it, and nothing written.
    no_espeak = dict(env, PATH=str(tmp_path))
    assert_one_line_error(
        run_cli(["perform", "verse.txt", "--out", "x.wav"], no_espeak, cwd=cwd),
        "apt-get install -y espeak-ng",
        "!apt-get install -y espeak-ng",
        "brew install espeak-ng",
    )
    assert not (verse / "x.wav").exists() and not (verse / "x.png").exists()
