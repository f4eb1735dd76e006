"""A drum loop synthesised with NumPy at a tempo: kick, snare and hi-hats on an eighth-note grid.

One bar is 4 beats. Kick on beats 1 and 3 (and the "and" of 3), snare on 2 and 4, a closed
hi-hat on every eighth. Every hit starts exactly on its grid position, so an onset detector
finds the drums on the grid (tests check it within 20 ms).

>>> audio = drum_loop(bars=2, bpm=90, sr=22050)
>>> len(audio) == round(2 * 4 * 60 / 90 * 22050)
True
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

BEATS_PER_BAR = 4
SAMPLE_RATE = 22050


def bar_seconds(bpm: float) -> float:
    return BEATS_PER_BAR * 60.0 / bpm


def _kick(sr: int) -> np.ndarray:
    t = np.arange(int(0.35 * sr)) / sr  # [n]
    freq = 45 + 110 * np.exp(-t * 30)  # a falling pitch: the "boom"
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return (np.sin(phase) * np.exp(-t * 9)).astype(np.float32)


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.2 * sr)) / sr
    noise = rng.uniform(-1, 1, len(t)) * np.exp(-t * 25)
    tone = np.sin(2 * np.pi * 185 * t) * np.exp(-t * 30)
    return (0.7 * noise + 0.5 * tone).astype(np.float32)


def _hat(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.05 * sr)) / sr
    noise = rng.uniform(-1, 1, len(t))
    bright = np.diff(noise, prepend=0.0)  # a first difference keeps the highs: a crisp tick
    return (0.35 * bright * np.exp(-t * 90)).astype(np.float32)


def pattern(bars: int) -> List[Tuple[float, str]]:
    """(beat position, drum) of every hit, beats counted from 0 at the loop's start."""
    hits = []
    for bar in range(bars):
        b = bar * BEATS_PER_BAR
        hits += [(b + 0.0, "kick"), (b + 2.0, "kick"), (b + 2.5, "kick"), (b + 1.0, "snare"), (b + 3.0, "snare")]
        hits += [(b + e / 2, "hat") for e in range(2 * BEATS_PER_BAR)]
    return sorted(hits)


def drum_loop(bars: int, bpm: float, sr: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """float32 [round(bars · 4 · 60 / bpm · sr)] mono drums, peak 1."""
    rng = np.random.default_rng(seed)
    sounds = {"kick": _kick(sr), "snare": _snare(sr, rng), "hat": _hat(sr, rng)}
    total = int(round(bars * bar_seconds(bpm) * sr))
    out = np.zeros(total, np.float32)
    for beat, drum in pattern(bars):
        start = int(round(beat * 60.0 / bpm * sr))
        sound = sounds[drum][: total - start]
        out[start : start + len(sound)] += sound
    peak = float(np.max(np.abs(out))) or 1.0
    return out / peak


def grid_times(bars: int, bpm: float) -> np.ndarray:
    """Seconds of every eighth note of the loop (where hits may fall)."""
    return np.arange(bars * BEATS_PER_BAR * 2) * 30.0 / bpm
