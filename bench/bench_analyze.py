"""Benchmark of judging and performing: analysis speed, the originality index, a 16-bar verse.

    python bench/bench_analyze.py                  # 1 MB of lyrics, 100 MB of tokens, 16 bars
    python bench/bench_analyze.py --index_mb 10    # a smaller index

Analysis: `rapgen.analyze` over about 1 MB of lyrics (the project's sample songs, their lines
reshuffled into new songs with a fixed seed), with each phonetic source, without and with a
dataset. Index: a token stream of `--index_mb` MB (uint16; token ids drawn from a Zipf law like
words, a song separator every ~400 tokens) indexed two ways: hashed 8-grams (what rapgen uses)
and, for comparison, a lexicographic sort of every position by its first 8 tokens (a suffix
array cut at depth 8, the other candidate); then the latency of one 400-token query, cold
(index just opened from disk) and warm. Perform: a 16-line verse at 90 bpm.

Needs the GPT-2 vocabulary ($RAPGEN_GPT2_DIR or `../shared/gpt2`), espeak-ng and librosa.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_core import cpu_model  # noqa: E402  (standard library only at import)


def vocab_dir() -> str:
    for folder in (os.environ.get("RAPGEN_GPT2_DIR"), os.path.join(os.path.dirname(ROOT), "shared", "gpt2")):
        if folder and os.path.exists(os.path.join(folder, "encoder.json")):
            return folder
    sys.exit("bench_analyze: no GPT-2 vocabulary: set RAPGEN_GPT2_DIR")


def lyrics_of_size(mb: float, seed: int = 0) -> str:
    """Songs made of the sample lyrics' lines, reshuffled, until the text reaches `mb` MB."""
    from rapgen.data.lyrics import Song, format_song, parse_songs

    songs = parse_songs(open(os.path.join(ROOT, "data", "sample_lyrics.txt"), encoding="utf-8").read())
    lines = [line for s in songs for line in s.lyrics.splitlines() if line and not line.startswith("[")]
    rng = random.Random(seed)
    parts, size, k = [], 0, 0
    while size < mb * 1e6:
        song = format_song(Song(rng.choice(songs).artist, f"Remix {k}", "\n".join(rng.sample(lines, 16))))
        parts.append(song)
        size += len(song.encode("utf-8"))
        k += 1
    return "".join(parts)


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def cpu_timed(fn):
    """(wall seconds, CPU seconds of this process and its children, e.g. espeak-ng, value)."""
    c0, t0 = os.times(), time.perf_counter()
    value = fn()
    c1, wall = os.times(), time.perf_counter() - t0
    cpu = (c1.user + c1.system + c1.children_user + c1.children_system) - (
        c0.user + c0.system + c0.children_user + c0.children_system
    )
    return wall, cpu, value


def bench_analysis(folder: str, mb: float) -> None:
    import rapgen

    path = os.path.join(folder, "lyrics.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(lyrics_of_size(mb))
    dataset = os.path.join(folder, "rap.txt")
    shutil.copy(os.path.join(ROOT, "data", "sample_lyrics.txt"), dataset)
    os.environ.setdefault("RAPGEN_VOCAB_DIR", vocab_dir())
    size = os.path.getsize(path) / 1e6
    # Wall time depends on what else the machine runs; CPU time (espeak-ng's included) less so.
    for source in ("espeak", "cmudict"):
        wall, cpu, results = cpu_timed(lambda source=source: rapgen.analyze(path, phonetics=source, quiet=True))
        print(f"analyze {size:.2f} MB ({len(results)} songs), {source}: {wall:.1f} s wall, {cpu:.1f} s CPU")
    wall, cpu, results = cpu_timed(lambda: rapgen.analyze(path, dataset=dataset, phonetics="cmudict", quiet=True))
    print(
        f"analyze {size:.2f} MB with --dataset (index of the sample lyrics), cmudict: {wall:.1f} s wall, {cpu:.1f} s CPU"
    )


def zipf_tokens(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tokens = (rng.zipf(1.2, n) % 50000).astype(np.uint16)  # [n]
    tokens[rng.integers(0, n, n // 400)] = 50256
    return tokens


def bench_index(folder: str, mb: float) -> None:
    from rapgen.judge.originality import _digest, _read, _write, build_index, copied
    from rapgen.model.encoder import load_encoder

    enc = load_encoder(vocab_dir())
    tokens = zipf_tokens(int(mb * 1e6 / 2))
    print(f"index over {tokens.nbytes / 1e6:.0f} MB of tokens ({len(tokens) / 1e6:.0f} M tokens)")

    # The other candidate: every position sorted by its first 8 tokens (two 64-bit keys of 4 tokens each).
    def depth8_suffix_array():
        t = tokens.astype(np.uint64)
        m = len(t) - 7
        hi = (
            (t[0:m] << np.uint64(48)) | (t[1 : m + 1] << np.uint64(32)) | (t[2 : m + 2] << np.uint64(16)) | t[3 : m + 3]
        )
        lo = (
            (t[4 : m + 4] << np.uint64(48))
            | (t[5 : m + 5] << np.uint64(32))
            | (t[6 : m + 6] << np.uint64(16))
            | t[7 : m + 7]
        )
        return np.lexsort((lo, hi))

    seconds, _ = timed(depth8_suffix_array)
    print(f"  suffix array to depth 8 (lexsort of two uint64 keys): {seconds:.1f} s to sort")
    seconds, index = timed(lambda: build_index(tokens, enc))
    print(f"  hashed 8-grams (rapgen): {seconds:.1f} s to build, headers of {len(index.songs)} songs included")
    where = os.path.join(folder, "tokens.index")
    digest = _digest(tokens)
    seconds, _ = timed(lambda: _write(where, index, digest))
    disk = sum(os.path.getsize(os.path.join(where, f)) for f in os.listdir(where)) / 1e6
    print(f"  written in {seconds:.1f} s: {disk:.0f} MB on disk ({disk / (tokens.nbytes / 1e6):.1f}x the tokens)")
    index = None  # freed before the index is read back
    opened = _read(where, digest)
    rng = np.random.default_rng(1)
    start = int(rng.integers(0, len(tokens) - 400))
    sample = np.concatenate([tokens[start : start + 200], zipf_tokens(200, seed=2)])
    seconds, found = timed(lambda: copied(opened, sample.tolist()))
    print(
        f"  one 400-token query, cold (index just opened): {1000 * seconds:.0f} ms; longest span {found.longest_tokens}"
    )
    times = [timed(lambda: copied(opened, sample.tolist()))[0] for _ in range(5)]
    print(f"  one 400-token query, warm: {1000 * min(times):.0f} ms (best of 5)")


def bench_perform(folder: str, bars: int, bpm: float) -> None:
    import rapgen

    text = lyrics_of_size(0.001, seed=3).split("\n<|endoftext|>")[0]
    lines = [line for line in text.splitlines()[1:]][:bars]
    path = os.path.join(folder, "verse.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("<<Bench - Verse>>\n" + "\n".join(lines) + "\n<|endoftext|>\n")
    wall, cpu, result = cpu_timed(
        lambda: rapgen.perform(path, bpm=bpm, out=os.path.join(folder, "verse.wav"), quiet=True)
    )
    print(
        f"perform {result.bars} bars at {bpm:g} bpm ({result.seconds:.1f} s of audio): {wall:.1f} s wall, {cpu:.1f} s CPU "
        f"(first call in the process, librosa's start-up included)"
    )
    wall, cpu, _ = cpu_timed(lambda: rapgen.perform(path, bpm=bpm, out=os.path.join(folder, "verse2.wav"), quiet=True))
    print(f"perform again in the same process: {wall:.1f} s wall, {cpu:.1f} s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--analysis_mb", type=float, default=1.0)
    parser.add_argument("--index_mb", type=float, default=100.0)
    parser.add_argument("--bars", type=int, default=16)
    parser.add_argument("--bpm", type=float, default=90)
    parser.add_argument("--only", choices=["analysis", "index", "perform"], help="run one part")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, NumPy {np.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        if args.only in (None, "analysis"):
            bench_analysis(folder, args.analysis_mb)
        if args.only in (None, "index"):
            bench_index(folder, args.index_mb)
        if args.only in (None, "perform"):
            bench_perform(folder, args.bars, args.bpm)


if __name__ == "__main__":
    main()
