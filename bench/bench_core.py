"""Benchmark of rapgen's core: tokenizer speed and sampling speed, with the machine it ran on.

    python bench/bench_core.py                     # encode ~4 MB, sample with a 124M-shaped model
    python bench/bench_core.py --mb 1 --no-sample  # tokenizer only

Encoding: a synthetic lyrics text (invented rap-like lines, songs separated by
`<|endoftext|>`, generated here with a fixed seed) is encoded by rapgen's encoder with an
empty word cache, then again warm, and by tiktoken's BPE built offline from the same
vocabulary files; the ids must be identical. Sampling: a randomly initialised 124M-shaped
model from `rapgen init` writes `--length` tokens at batch 1 and 8 with top-k 40 and
`stop_at_end=False`; the first call (which compiles the loop) is timed apart from warm calls.

Needs the GPT-2 vocabulary: $RAPGEN_GPT2_DIR, `../shared/gpt2`, or `--vocab_dir`.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

EOT = "<|endoftext|>"
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


# -- the machine ------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# -- a synthetic lyrics text ------------------------------------------------------------

ONSETS = [
    "b",
    "br",
    "ch",
    "d",
    "dr",
    "f",
    "fl",
    "g",
    "gr",
    "h",
    "j",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "r",
    "s",
    "sk",
    "sl",
    "sn",
    "st",
    "sw",
    "t",
    "tr",
    "v",
    "w",
    "y",
    "z",
    "sh",
    "th",
    "bl",
    "cl",
    "",
]
# Mostly plain vowels; the accented ones (Swedish, Spanish) turn up now and then.
VOWELS = ["a", "e", "i", "o", "u"] * 10 + ["ay", "ee", "oo", "ou", "ai", "ie"] * 3 + ["å", "ä", "ö", "é", "í", "ó", "ú"]
CODAS = ["", "", "n", "ng", "nk", "p", "ck", "t", "z", "x", "ll", "rr", "st", "sh", "mp", "rt", "d", "s"]
FILLERS = [
    "yeah",
    "uh",
    "ay",
    "skrrt",
    "brr",
    "woo",
    "let's go",
    "okay",
    "huh",
    "ya",
    "órale",
    "asså",
    "ey",
    "gang",
    "sheesh",
    "aina",
    "güey",
    "bre",
    "vamos",
    "yo",
]
EMOJI = ["🔥", "💎", "💧", "🤑", "😤", "🚀", "🌊", "🎤", "❄️", "🖤"]


# Everyday function words, the most frequent ones in any English text.
COMMON = (
    "I you the a my we on in it to and me is that got get up all they no like with for of"
    " this just know what now when do so im your real back man out make go see money city"
    " night time new stay cold run talk they this one love never feel world life ride"
).split()


def invented_words(rng: random.Random, n: int) -> list:
    """COMMON, then n invented words, shorter ones first (rank ~ frequency order)."""
    words = set()
    while len(words) < n:
        syllables = rng.choice([1, 1, 1, 2, 2, 2, 3, 4])
        words.add("".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables)))
    invented = sorted(words)
    rng.shuffle(invented)
    invented.sort(key=lambda w: len(w) + rng.random() * 6)
    return COMMON + invented


def synthetic_lyrics(n_bytes: int, seed: int = 0) -> str:
    """Invented songs in rapgen's lyrics format, about n_bytes of UTF-8."""
    rng = random.Random(seed)
    vocab = invented_words(rng, 30000)
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]  # Zipf-like: a few words dominate
    artists = [
        f"{rng.choice(['Lil', 'Young', 'MC', 'Big', 'DJ', 'Yung', 'El', 'Kid'])} "
        f"{rng.choice(vocab[len(COMMON) :]).capitalize()}"
        for _ in range(300)
    ]
    sections = ["Intro", "Verse 1", "Hook", "Verse 2", "Bridge", "Chorus", "Outro", "Vers 1", "Coro"]

    def line() -> str:
        words = rng.choices(vocab, weights, k=rng.randint(4, 11))
        out = []
        for w in words:
            r = rng.random()
            if r < 0.05:
                w = w.capitalize()
            elif r < 0.08:
                w += rng.choice(["'s", "'ll", "'re", "in'", "'d"])
            elif r < 0.10:
                w = str(rng.choice([2, 3, 7, 24, 50, 100, 808, 1999, 2024, 1000000]))
            out.append(w)
        text = " ".join(out)
        r = rng.random()
        if r < 0.15:
            text += ", " + rng.choice(FILLERS)
        elif r < 0.22:
            text = f"({rng.choice(FILLERS)}) " + text
        elif r < 0.27:
            text += " " + rng.choice(EMOJI) * rng.randint(1, 3)
        elif r < 0.35:
            text += rng.choice(["!", "?", "...", " —", ";"])
        return text

    parts, size = [], 0
    while size < n_bytes:
        artist = rng.choice(artists)
        song = [f"<<{artist} - {' '.join(rng.choices(vocab, weights, k=rng.randint(1, 3))).title()}>>"]
        for section in rng.sample(sections, rng.randint(2, 5)):
            song.append(f"\n[{section}: {artist}]" if rng.random() < 0.5 else f"\n[{section}]")
            song += [line() for _ in range(rng.randint(4, 12))]
        piece = "\n".join(song) + f"\n{EOT}\n"
        parts.append(piece)
        size += len(piece.encode("utf-8"))
    return "".join(parts)


# -- tokenizer --------------------------------------------------------------------------


def offline_tiktoken(vocab_dir: str):
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # read the local files, cache nothing
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=os.path.join(vocab_dir, "vocab.bpe"),
        encoder_json_file=os.path.join(vocab_dir, "encoder.json"),
    )
    return tiktoken.Encoding(
        name="gpt2-offline",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT: 50256},
        explicit_n_vocab=50257,
    )


def time_rapgen_encode(vocab_dir: str, text: str):
    """(ids, seconds with an empty word cache, seconds warm) of rapgen's encoder on text."""
    import json

    from rapgen.model.encoder import Encoder

    with open(os.path.join(vocab_dir, "encoder.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(vocab_dir, "vocab.bpe"), encoding="utf-8") as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")[1:] if line.strip()]
    enc = Encoder(vocab, merges)  # a new encoder: its word cache starts empty
    t = time.perf_counter()
    ids = enc.encode(text, allowed_special="all")
    cold = time.perf_counter() - t
    t = time.perf_counter()
    enc.encode(text, allowed_special="all")
    return ids, cold, time.perf_counter() - t


def bench_encode(vocab_dir: str, mb: float) -> None:
    text = synthetic_lyrics(int(mb * 1e6))
    n_mb = len(text.encode("utf-8")) / 1e6
    ids, cold, warm = time_rapgen_encode(vocab_dir, text)
    print(f"text: {n_mb:.2f} MB of synthetic lyrics, {text.count(EOT)} songs, {len(ids):,} tokens")
    print(f"rapgen encode: {n_mb / cold:6.2f} MB/s (empty word cache), {n_mb / warm:6.2f} MB/s (warm cache)")

    try:
        ref = offline_tiktoken(vocab_dir)
    except ImportError:
        print("tiktoken: not installed, no comparison")
        return
    t = time.perf_counter()
    want = ref.encode(text, allowed_special={EOT})
    tk = time.perf_counter() - t
    same = ids == want
    print(f"tiktoken encode: {n_mb / tk:6.2f} MB/s (one thread); ids identical: {same}")
    if not same:
        first = next(i for i, (a, b) in enumerate(zip(ids, want)) if a != b) if len(ids) == len(want) else "length"
        raise SystemExit(f"token ids differ from tiktoken's (first difference at {first})")


# -- sampling ---------------------------------------------------------------------------


def bench_sample(vocab_dir: str, length: int, batches, warm_runs: int) -> None:
    import tensorflow as tf

    from rapgen.model.encoder import load_encoder
    from rapgen.model.folders import init
    from rapgen.model.loading import load_model
    from rapgen.write.generation import generate

    gpus = tf.config.list_physical_devices("GPU")
    print(
        f"TensorFlow devices: {', '.join(d.device_type + ':' + d.name.split(':')[-1] for d in tf.config.list_physical_devices())}"
        + ("" if gpus else " (CPU only)")
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        model_dir = init(
            os.path.join(tmp, "124M-random"), n_layer=12, n_embd=768, n_head=12, n_ctx=1024, seed=0, vocab_dir=vocab_dir
        )
        model = load_model(model_dir)
        print(
            f"124M-shaped random model: init + load {time.perf_counter() - t:.1f} s, "
            f"{model.hparams.n_params() / 1e6:.1f} M parameters"
        )
        context = [50256] + load_encoder(model_dir).encode("<<Lil Tofu")
        first = True
        for batch in batches:
            t = time.perf_counter()
            rows = generate(model, context, length=length, batch_size=batch, seed=1, stop_at_end=False)
            once = time.perf_counter() - t
            assert len(rows) == batch and all(len(r) == length for r in rows)
            times = []
            for i in range(warm_runs):
                t = time.perf_counter()
                generate(model, context, length=length, batch_size=batch, seed=2 + i, stop_at_end=False)
                times.append(time.perf_counter() - t)
            best = min(times)
            label = "first call (traces + compiles the loop)" if first else "first call at this batch size"
            print(
                f"sample batch {batch}: {label} {once:.2f} s; warm {best:.2f} s for {length} tokens "
                f"-> {batch * length / best:,.1f} tokens/s ({length / best:,.1f} steps/s)"
            )
            first = False
        print(f"loop traced {model.generation.function.experimental_get_tracing_count()} time(s) over all calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=4.0, help="size of the synthetic lyrics text (MB)")
    parser.add_argument("--length", type=int, default=128, help="new tokens per sample")
    parser.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    parser.add_argument("--warm_runs", type=int, default=2, help="timed calls after the first (best is shown)")
    parser.add_argument("--vocab_dir", default=None)
    parser.add_argument("--no-sample", dest="sample", action="store_false", help="tokenizer only")
    parser.add_argument("--no-encode", dest="encode", action="store_false", help="sampling only")
    args = parser.parse_args()

    vocab_dir = (
        args.vocab_dir or os.environ.get("RAPGEN_GPT2_DIR") or os.path.join(os.path.dirname(ROOT), "shared", "gpt2")
    )
    if not os.path.exists(os.path.join(vocab_dir, "encoder.json")):
        raise SystemExit(f"no GPT-2 vocabulary in {vocab_dir}: pass --vocab_dir or set RAPGEN_GPT2_DIR")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    print(
        f"machine: {cpu_model()}, {usable_cores()} cores usable ({os.cpu_count()} online), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
    if args.sample:
        import tensorflow as tf

        print(f"TensorFlow {tf.__version__}")
    try:
        load = os.getloadavg()
        print(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    except OSError:
        pass
    if args.encode:
        bench_encode(vocab_dir, args.mb)
    if args.sample:
        bench_sample(vocab_dir, args.length, [int(b) for b in args.batches.split(",")], args.warm_runs)


if __name__ == "__main__":
    main()
