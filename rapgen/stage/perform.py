"""`rapgen perform`: rap lyrics on a beat, one line to a bar, as a WAV and a PNG of the waveform.

Each lyric line is spoken by espeak-ng at a rate chosen from its syllable count, trimmed,
then time-stretched with librosa (its phase vocoder; no hand-written DSP) to fill its bar.
Where the stretch allows (every piece between 0.5x and 2x), the line's stressed syllables are
nudged onto beats: the speech is cut at the onsets nearest the stressed syllables and each
piece stretched so that its onset lands on a beat. The drums are `rapgen.stage.drums`'s loop, or the
user's `--beat` WAV (looped, assumed to start on a downbeat at `--bpm`). The mix is normalised
and written as 16-bit 22.05 kHz mono, its duration exactly bars x 4 x 60 / bpm seconds.

The module is not named `perform`: `rapgen.perform` stays the function.

>>> perform("verse.txt", bpm=90, out="verse.wav")   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import wave
from typing import List, Optional, Tuple

import numpy as np

from rapgen.checks import between
from rapgen.data.dataset import read_text
from rapgen.errors import RapgenError
from rapgen.fileio import atomic_write_bytes
from rapgen.judge.analysis import read_songs
from rapgen.judge.phonetics import ESPEAK, INSTALL_ESPEAK, espeak_available, transcribe
from rapgen.judge.rhyme import lyric_lines
from rapgen.stage.drums import SAMPLE_RATE, bar_seconds, drum_loop

LEAD = 0.05  # seconds of silence before a line in its bar
TAIL = 0.08  # and after it, so a line never runs into the next bar
MAX_STRETCH = 2.0  # a piece may be sped up or slowed down this much to put a stress on a beat
BEAT_GAIN, VOICE_GAIN = 0.45, 1.0


@dataclasses.dataclass
class Performance:
    wav: str
    png: Optional[str]
    bpm: float
    bars: int
    seconds: float
    lines: List[dict]  # per line: text, syllables, start and end (s) of its speech, espeak rate, nudged beats


def _need_librosa():
    try:
        import librosa  # heavy and optional (rapgen[perform]): loaded only once a performance starts
    except ImportError:
        raise RapgenError("perform needs librosa: pip install 'rapgen[perform]' (Colab has it)") from None
    return librosa


def speak(text: str, rate: int) -> np.ndarray:
    """espeak-ng's speech of one line at `rate` words per minute: float32 [n] at 22.05 kHz."""
    try:
        # The text goes in on stdin: a line such as "-yeah" would read as an option on the command line.
        done = subprocess.run(
            [ESPEAK, "-v", "en-us", "-s", str(int(rate)), "--stdout"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=120,
            check=False,
        )
    except FileNotFoundError:
        raise RapgenError(INSTALL_ESPEAK) from None
    data = done.stdout
    at = data.find(b"data")
    if done.returncode != 0 or at < 0:
        raise RapgenError(f"espeak-ng could not speak {text[:40]!r}: check that `espeak-ng -v en-us` works")
    pcm = np.frombuffer(data[at + 8 : len(data) - (len(data) - at - 8) % 2], np.int16)
    return pcm.astype(np.float32) / 32768.0


def rate_for(syllables: int, seconds: float) -> int:
    """espeak-ng's words per minute for `syllables` in `seconds` (it speaks about 1.4 syllables a word)."""
    per_second = max(syllables, 1) / max(seconds, 0.1)
    return int(np.clip(60 * per_second / 1.4, 80, 450))


def _stretch_to(librosa, y: np.ndarray, n: int) -> np.ndarray:
    """`y` stretched to exactly n samples."""
    if n <= 0:
        return np.zeros(0, np.float32)
    if len(y) < 2048:  # too short for the phase vocoder's window: silence keeps the timing
        return np.zeros(n, np.float32)
    out = librosa.effects.time_stretch(y, rate=len(y) / n)
    return np.pad(out, (0, max(0, n - len(out))))[:n].astype(np.float32)


def _stress_fractions(words) -> List[float]:
    """Where the stressed syllables sit in a line, as fractions of its syllables (0 = the start)."""
    total = sum(w.syllables for w in words)
    marks, before = [], 0
    for w in words:
        marks += [(before + s) / total for s in w.stressed]
        before += w.syllables
    return marks if total else []


def _anchors(librosa, y: np.ndarray, stresses: List[float], slot: int, beat: int, offset: int) -> List[Tuple[int, int]]:
    """(sample in y, sample in the slot) pairs: speech onsets near stressed syllables moved onto beats.

    `offset` is where the slot starts in its bar; beats fall at multiples of `beat` in the bar.
    """
    onsets = librosa.onset.onset_detect(y=y, sr=SAMPLE_RATE, units="samples", backtrack=True)
    if not len(onsets) or not stresses:
        return []
    pairs: List[Tuple[int, int]] = [(0, 0)]
    for f in stresses:
        src = int(onsets[np.argmin(np.abs(onsets - f * len(y)))])
        dst = int(round((offset + src * slot / len(y)) / beat)) * beat - offset  # nearest beat, in the slot
        if not 0 < dst < slot or src <= pairs[-1][0] or dst <= pairs[-1][1]:
            continue
        pairs.append((src, dst))
    pairs.append((len(y), slot))
    kept = [pairs[0]]
    for src, dst in pairs[1:]:
        rate = (src - kept[-1][0]) / max(dst - kept[-1][1], 1)
        if 1 / MAX_STRETCH <= rate <= MAX_STRETCH and src - kept[-1][0] >= 2048:
            kept.append((src, dst))
    if kept[-1] != (len(y), slot):  # the end must land on the slot's end: drop anchors that break it
        while len(kept) > 1:
            rate = (len(y) - kept[-1][0]) / max(slot - kept[-1][1], 1)
            if 1 / MAX_STRETCH <= rate <= MAX_STRETCH and len(y) - kept[-1][0] >= 2048:
                break
            kept.pop()
        kept.append((len(y), slot))
    return kept[1:-1]


def fit_line(librosa, y: np.ndarray, words, bpm: float) -> Tuple[np.ndarray, List[int]]:
    """The speech of one line stretched to its slot in a bar; returns (audio [slot], beats a stress was put on)."""
    sr = SAMPLE_RATE
    slot = int(round((bar_seconds(bpm) - LEAD - TAIL) * sr))
    beat = int(round(60.0 / bpm * sr))
    anchors = _anchors(librosa, y, _stress_fractions(words), slot, beat, int(round(LEAD * sr)))
    cuts = [(0, 0)] + anchors + [(len(y), slot)]
    pieces = [_stretch_to(librosa, y[a:b], d - c) for (a, c), (b, d) in zip(cuts[:-1], cuts[1:])]
    beats = [int(round((dst + LEAD * sr) / beat)) for _, dst in anchors]
    return np.concatenate(pieces), beats


def _read_beat(librosa, path: str) -> np.ndarray:
    """The user's beat as float32 mono at 22.05 kHz (read with soundfile, librosa's own reader)."""
    import soundfile  # comes with librosa: loaded only for a user's --beat

    if not os.path.isfile(path):
        raise RapgenError(f"--beat {path} does not exist")
    try:
        y, sr = soundfile.read(path, dtype="float32", always_2d=True)  # [n, channels]
    except (RuntimeError, OSError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise RapgenError(
            f"--beat {path} is not a readable audio file ({str(e).splitlines()[0][:80]}): give a WAV, FLAC or OGG"
        ) from None
    y = y.mean(axis=1)  # [n]
    if sr != SAMPLE_RATE and len(y):
        y = librosa.resample(y, orig_sr=sr, target_sr=SAMPLE_RATE)
    if not len(y):
        raise RapgenError(f"--beat {path} holds no audio")
    return y.astype(np.float32)


def wav_bytes(audio: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """16-bit mono PCM WAV of float audio in [-1, 1]."""
    pcm = (np.clip(audio, -1, 1) * 32767).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def draw(audio: np.ndarray, bpm: float, bars: int, path: str, title: str = "") -> None:
    """A PNG of the waveform over the bar grid (bars dark, beats light)."""
    from matplotlib.figure import Figure  # heavy, optional (rapgen[perform]); no pyplot: the notebook's backend stays

    fig = Figure(figsize=(max(6, 1.2 * bars), 2.6), dpi=100)
    ax = fig.add_subplot()
    t = np.arange(len(audio)) / SAMPLE_RATE
    step = max(1, len(audio) // 20000)  # draw at most 20k points
    ax.plot(t[::step], audio[::step], lw=0.5, color="#333")
    for k in range(bars * 4 + 1):
        ax.axvline(k * 60.0 / bpm, color="#c33" if k % 4 == 0 else "#ccc", lw=1.2 if k % 4 == 0 else 0.6)
    ax.set(xlim=(0, bars * bar_seconds(bpm)), ylim=(-1, 1), xlabel="seconds", title=title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def perform(
    file: str,
    bpm: float = 90,
    out: str = "verse.wav",
    beat: Optional[str] = None,
    song: int = 1,
    png: bool = True,
    overwrite: bool = False,
    quiet: bool = False,
) -> Performance:
    """Rap song number `song` of `file` on a beat at `bpm`: writes `out` (WAV) and, with `png`, `out`.png.

    >>> perform("drive/songs.txt", bpm=90, out="drive/verse.wav").seconds   # doctest: +SKIP
    32.0
    """
    between("--bpm", bpm, 40, 240, note="beats per minute")
    out = str(out)
    if not out.lower().endswith(".wav"):
        raise RapgenError(f"--out {out} should end in .wav")
    picture = re.sub(r"\.wav$", ".png", out, flags=re.I) if png else None
    for path in (out, picture):
        if path and os.path.exists(path) and not overwrite:
            raise RapgenError(f"{path} exists: choose another --out, or --overwrite True to replace it")
    songs = read_songs(read_text(str(file)))
    between("--song", song, 1, max(len(songs), 1), integer=True, hi_label=str(len(songs)), note=f"the songs in {file}")
    lines = lyric_lines(songs[song - 1].lyrics) if songs else []
    if not lines:
        raise RapgenError(f"{file} holds no lyric lines to perform")
    if not espeak_available():
        raise RapgenError(INSTALL_ESPEAK)
    librosa = _need_librosa()
    user_beat = _read_beat(librosa, str(beat)) if beat else None

    sr, bars = SAMPLE_RATE, len(lines)
    bar_n = bar_seconds(bpm) * sr
    total = int(round(bars * bar_n))
    drums = drum_loop(bars, bpm) if user_beat is None else np.resize(user_beat, total)
    voice = np.zeros(total, np.float32)
    details = []
    for i, (text, words) in enumerate(zip(lines, transcribe(lines, "espeak"))):
        syllables = sum(w.syllables for w in words)
        rate = rate_for(syllables, bar_seconds(bpm) - LEAD - TAIL)
        y, _ = librosa.effects.trim(speak(text, rate), top_db=35)
        fitted, beats = fit_line(librosa, y, words, bpm)
        start = int(round(i * bar_n + LEAD * sr))
        voice[start : start + len(fitted)] = fitted[: total - start]
        details.append(
            {
                "text": text,
                "syllables": syllables,
                "rate": rate,
                "start": start / sr,
                "end": (start + len(fitted)) / sr,
                "stress_beats": beats,
            }
        )
    mix = BEAT_GAIN * drums + VOICE_GAIN * voice
    mix = (0.89 * mix / (float(np.max(np.abs(mix))) or 1.0)).astype(np.float32)  # peak at -1 dBFS
    atomic_write_bytes(out, wav_bytes(mix))
    if picture:
        draw(mix, bpm, bars, picture, title=os.path.basename(out))
    result = Performance(out, picture, float(bpm), bars, total / sr, details)
    if not quiet:
        print(f"{bars} bars at {bpm:g} bpm, {total / sr:.1f} s -> {out}" + (f" and {picture}" if picture else ""))
    return result


def play(result: Performance):
    """In a notebook: the audio player and the picture."""
    from IPython.display import Audio, Image, display  # notebooks only: IPython stays off the command line

    display(Audio(filename=result.wav))
    if result.png:
        display(Image(filename=result.png))
