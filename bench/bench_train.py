"""Training speed and peak memory of rapgen on this machine.

For a 124M-shaped GPT-2 (12 layers, 768 wide, 12 heads, 1024 context) and a tiny one
(2 layers, 64 wide, 2 heads, 1024 context), each with random weights from `rapgen init`,
it trains at batch 1 x 1024 tokens with three settings: the default (Adam),
`recompute=True` (gradient checkpointing per block) and `optimizer="adafactor"`, in the
precision `--mixed_precision` gives (default `auto`, as `rapgen train`: float32 on a CPU
without AVX-512 BF16 or AMX, bfloat16 on one with them); the header says which it is.

Each configuration runs in its own child process, so its peak resident memory
(`resource.getrusage(...).ru_maxrss`, the whole process: TensorFlow, model, optimizer state,
activations) is not mixed with another's. Inside the child the loop is driven through
`rapgen.finetune.step.Trainer`, the object `rapgen.finetune.loop.train()` uses, set up the way `train()` sets
it up; set-up and the first step (which traces and compiles the step function) are timed
separately, then a warm-up step, then the timed steps.

The lyrics are generated here from invented syllables (no real lyrics).

    python bench/bench_train.py                       # both sizes, all three settings
    python bench/bench_train.py --sizes tiny --steps 20
    python bench/bench_train.py --mixed_precision off  # float32 on any CPU

The vocabulary comes from $RAPGEN_GPT2_DIR or ../shared/gpt2 beside the project.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {
    "124M": dict(n_layer=12, n_embd=768, n_head=12, n_ctx=1024),
    "tiny": dict(n_layer=2, n_embd=64, n_head=2, n_ctx=1024),
}
VARIANTS = {
    "default (adam)": dict(optimizer="adam", recompute=False),
    "recompute": dict(optimizer="adam", recompute=True),
    "adafactor": dict(optimizer="adafactor", recompute=False),
}
DEFAULT_STEPS = {"124M": 3, "tiny": 20}
BATCH, LENGTH = 1, 1024


def vocab_dir() -> str:
    for folder in (os.environ.get("RAPGEN_GPT2_DIR"), os.path.join(os.path.dirname(ROOT), "shared", "gpt2")):
        if (
            folder
            and os.path.exists(os.path.join(folder, "encoder.json"))
            and os.path.exists(os.path.join(folder, "vocab.bpe"))
        ):
            return folder
    sys.exit("bench: no GPT-2 vocabulary: set RAPGEN_GPT2_DIR to a folder with encoder.json and vocab.bpe")


def invented_lyrics(n_songs: int = 40, seed: int = 0) -> str:
    """Songs of made-up words in rapgen's lyrics format."""
    rng = random.Random(seed)
    syllables = ["ka", "zo", "mi", "dre", "flo", "rax", "tun", "vel", "quo", "bri", "snu", "jat", "plo", "wem"]

    def word():
        return "".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))

    songs = []
    for i in range(n_songs):
        artist = f"Lil {word().title()}"
        lines = [" ".join(word() for _ in range(rng.randint(4, 9))) for _ in range(rng.randint(8, 16))]
        songs.append(
            f"<<{artist} - {word().title()} {i}>>\n[Verse 1: {artist}]\n" + "\n".join(lines) + "\n<|endoftext|>\n"
        )
    return "".join(songs)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {os.cpu_count()} logical CPUs ({usable} usable), {platform.system()} {platform.release()}, Python {platform.python_version()}"


# -- the child: one configuration -----------------------------------------------------


def child(spec: dict) -> dict:
    t_start = time.perf_counter()
    import numpy as np
    import tensorflow as tf

    from rapgen.data.dataset import load_dataset, training_batch
    from rapgen.devices import compute_dtype
    from rapgen.finetune.config import TrainConfig
    from rapgen.finetune.step import Trainer
    from rapgen.model.encoder import load_encoder
    from rapgen.model.folders import check_model_dir, read_weights
    from rapgen.model.gpt2 import GPT2
    from rapgen.model.hparams import HParams

    model_dir, dataset = spec["model_dir"], spec["dataset"]
    cfg = TrainConfig(
        dataset=dataset,
        model=model_dir,
        steps=spec["warmup"] + spec["steps"] + 1,
        batch_size=BATCH,
        sequence_length=LENGTH,
        save_every=0,
        sample_every=0,
        val_every=0,
        val_fraction=0.0,
        quiet=True,
        mixed_precision=spec.get("mixed_precision", "auto"),
        xla=spec.get("xla", False),
        **VARIANTS[spec["variant"]],
    )
    cfg.check()
    # As rapgen.finetune.loop._run sets up a fresh run.
    hparams = HParams.load(model_dir)
    encoder = load_encoder(model_dir)
    data = load_dataset(cfg.dataset, encoder, cfg.val_fraction, None, cfg.encoding, quiet=True)
    weights = read_weights(check_model_dir(model_dir), hparams)
    model = GPT2(hparams, compute_dtype=compute_dtype(cfg.mixed_precision), weights=weights)
    trainer = Trainer(cfg, model, list(model.variables_by_name))
    setup_s = time.perf_counter() - t_start

    def step():
        batch = training_batch(data.train, trainer.step, cfg.batch_size, LENGTH, cfg.seed)[None]  # [1, B, T+1]
        lr = trainer.learning_rate(trainer.step)
        t0 = time.perf_counter()
        loss = float(
            trainer.train_step(tf.constant(batch), tf.constant(lr, tf.float32), tf.constant(trainer.step, tf.int64))
        )
        seconds = time.perf_counter() - t0
        if not np.isfinite(loss):
            raise SystemExit(f"bench: loss {loss} at step {trainer.step}")
        trainer.step += 1
        return seconds, loss

    first_s, first_loss = step()  # traces and compiles the step function
    for _ in range(spec["warmup"]):
        step()
    times, losses = [], []
    for _ in range(spec["steps"]):
        seconds, loss = step()
        times.append(seconds)
        losses.append(loss)
    traces = trainer.train_step.experimental_get_tracing_count()
    return {
        "tf": tf.__version__,
        "dtype": model.compute_dtype.name,
        "setup_s": setup_s,
        "first_step_s": first_s,
        "step_s": times,
        "tokens_per_s": BATCH * LENGTH * len(times) / sum(times),
        "loss_first": first_loss,
        "loss_last": losses[-1],
        "traces": traces,
        # Linux reports KiB.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# -- the parent -----------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU-seconds spent by every process on the machine so far (/proc/stat), or 0.0 off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_child(args: list, env: dict) -> dict:
    """Run one configuration; also measure how much CPU other processes took meanwhile."""
    busy0, t0 = busy_cpu_seconds(), time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate()
    wall, busy = time.perf_counter() - t0, busy_cpu_seconds() - busy0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # all children so far; take the difference
    own = usage.ru_utime + usage.ru_stime - run_child.children_cpu
    run_child.children_cpu = usage.ru_utime + usage.ru_stime
    results = [line[len("RESULT ") :] for line in stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        sys.stderr.write(stdout + stderr)
        raise SystemExit(f"bench: child {' '.join(args)} failed with status {proc.returncode}")
    result = json.loads(results[-1])
    # Share of the machine's CPU time that other processes used while this one ran.
    result["others_cpu"] = max(0.0, busy - own) / (wall * (os.cpu_count() or 1)) if busy else float("nan")
    return result


run_child.children_cpu = 0.0


def run_as_child(args, measure, sizes) -> bool:
    """Do the work of a child process (--child: one measurement, --init: make a model); False in the parent."""
    if args.child:
        print("RESULT " + json.dumps(measure(json.loads(args.child))), flush=True)
        return True
    if args.init:
        from rapgen.model.folders import init

        spec = json.loads(args.init)
        init(spec["model_dir"], seed=0, vocab_dir=spec["vocab_dir"], **sizes[spec["size"]])
        print("RESULT {}")
        return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="124M,tiny", help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 for 124M, 20 for tiny)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after the first (tracing) one")
    parser.add_argument("--mixed_precision", default="auto", help="auto (as rapgen train), off, float16 or bfloat16")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--init", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if run_as_child(args, child, SIZES):
        return

    sizes = [s for s in args.sizes.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    for name in sizes + variants:
        if name not in SIZES and name not in VARIANTS:
            raise SystemExit(f"bench: unknown size or variant {name!r}")
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    vocab = vocab_dir()

    print(f"machine: {machine()}")
    sys.path.insert(0, ROOT)  # as the children's PYTHONPATH: this checkout's rapgen
    from rapgen.devices import compute_dtype

    print(
        f"batch {BATCH} x {LENGTH} tokens, {compute_dtype(args.mixed_precision)} compute (--mixed_precision "
        f"{args.mixed_precision}); set-up and the first (tracing) step excluded, "
        f"{args.warmup} warm-up step(s), then timed steps"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="rapgen-bench-") as tmp:
        dataset = os.path.join(tmp, "invented_lyrics.txt")
        with open(dataset, "w", encoding="utf-8") as f:
            f.write(invented_lyrics())
        for size in sizes:
            model_dir = os.path.join(tmp, size)
            t0 = time.perf_counter()
            run_child(["--init", json.dumps({"model_dir": model_dir, "size": size, "vocab_dir": vocab})], env)
            print(f"[{size}: rapgen init took {time.perf_counter() - t0:.1f} s]", flush=True)
            for variant in variants:
                steps = args.steps or DEFAULT_STEPS[size]
                spec = {
                    "model_dir": model_dir,
                    "dataset": dataset,
                    "variant": variant,
                    "steps": steps,
                    "warmup": args.warmup,
                    "mixed_precision": args.mixed_precision,
                }
                r = run_child(["--child", json.dumps(spec)], env)
                rows.append((size, variant, steps, r))
                print(
                    f"[{size} {variant}: TF {r['tf']}, {r['dtype']}, {r['tokens_per_s']:.1f} tokens/s, "
                    f"steps {', '.join(f'{s:.2f}' for s in r['step_s'])} s, peak {r['peak_rss_mib']:.0f} MiB, "
                    f"traces {r['traces']}, loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}, "
                    f"other processes used {r['others_cpu']:.0%} of the CPU meanwhile]",
                    flush=True,
                )

    print()
    print(f"TensorFlow {rows[0][3]['tf'] if rows else '?'}")
    print(
        "| model | setting | tokens/s | s/step (mean) | s/step (fastest) | peak RSS (MiB) | first step (s) | set-up (s) | timed steps | CPU used by others |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, variant, steps, r in rows:
        per_step = sum(r["step_s"]) / len(r["step_s"])
        print(
            f"| {size} | {variant} | {r['tokens_per_s']:.0f} | {per_step:.3f} | {min(r['step_s']):.3f} | "
            f"{r['peak_rss_mib']:.0f} | {r['first_step_s']:.1f} | {r['setup_s']:.1f} | {steps} | {r['others_cpu']:.0%} |"
        )
    busy = [r["others_cpu"] for *_, r in rows if r["others_cpu"] > 0.1]
    if busy:
        print(f"note: other processes used up to {max(busy):.0%} of the CPU during some runs, so those speeds are low")


if __name__ == "__main__":
    main()
