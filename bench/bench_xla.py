"""Is XLA worth it on this CPU? Training tokens/s with the train step compiled plainly and with
`jit_compile=True` (`rapgen train --xla True`), tiny and 124M shapes, and their ratio, in one run.

Each configuration runs in its own child process through bench_train.py's child (the same
`rapgen.finetune.step.Trainer` set-up as `rapgen train`), batch 1 x 1024 tokens, Adam, in the
precision `--mixed_precision` gives (default auto, as `rapgen train`). The first step (tracing
and, with XLA, compiling) is reported apart from the timed steps. Plain and XLA runs alternate
(`--repeats` rounds), and each is also rated by its fastest step: on a shared machine another
process's burst slows some steps of one run, rarely all of them.

    python bench/bench_xla.py                    # tiny (20 timed steps) and 124M (3), about 10 minutes on 2 cores
    python bench/bench_xla.py --sizes tiny --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402  (the child and the machine description live there)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="tiny,124M", help="comma-separated: " + ", ".join(bench_train.SIZES))
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 for 124M, 20 for tiny)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after the first one")
    parser.add_argument("--mixed_precision", default="auto", help="auto (as rapgen train), off, float16 or bfloat16")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (plain, XLA) per size")
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    for size in sizes:
        if size not in bench_train.SIZES:
            raise SystemExit(f"bench: unknown size {size!r}")
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = bench_train.ROOT + os.pathsep + env.get("PYTHONPATH", "")
    vocab = bench_train.vocab_dir()

    print(f"machine: {bench_train.machine()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rapgen-bench-xla-") as tmp:
        dataset = os.path.join(tmp, "invented_lyrics.txt")
        with open(dataset, "w", encoding="utf-8") as f:
            f.write(bench_train.invented_lyrics())
        for size in sizes:
            model_dir = os.path.join(tmp, size)
            bench_train.run_child(
                ["--init", json.dumps({"model_dir": model_dir, "size": size, "vocab_dir": vocab})], env
            )
            steps = args.steps or bench_train.DEFAULT_STEPS[size]
            for xla in [False, True] * args.repeats:
                spec = {
                    "model_dir": model_dir,
                    "dataset": dataset,
                    "variant": "default (adam)",
                    "steps": steps,
                    "warmup": args.warmup,
                    "mixed_precision": args.mixed_precision,
                    "xla": xla,
                }
                t0 = time.perf_counter()
                r = bench_train.run_child(["--child", json.dumps(spec)], env)
                rows.append((size, xla, steps, r))
                print(
                    f"[{size} xla={xla}: {r['dtype']}, {r['tokens_per_s']:.1f} tokens/s, steps "
                    f"{', '.join(f'{s:.3f}' for s in r['step_s'])} s, first step {r['first_step_s']:.1f} s, "
                    f"loss {r['loss_first']:.4f} -> {r['loss_last']:.4f}, peak {r['peak_rss_mib']:.0f} MiB, "
                    f"others used {r['others_cpu']:.0%} of the CPU, {time.perf_counter() - t0:.0f} s in all]",
                    flush=True,
                )

    def rates(size, xla):
        runs = [r for s, x, _, r in rows if s == size and x == xla]
        mean = max(r["tokens_per_s"] for r in runs)  # the least disturbed run's mean over its timed steps
        fastest = bench_train.BATCH * bench_train.LENGTH / min(min(r["step_s"]) for r in runs)
        return mean, fastest, runs

    print()
    print(
        f"TensorFlow {rows[0][3]['tf'] if rows else '?'}, batch {bench_train.BATCH} x {bench_train.LENGTH} tokens, Adam, "
        f"{args.repeats} alternating run(s) each"
    )
    print(
        "| model | compute | tokens/s plain | tokens/s XLA | XLA ÷ plain | fastest step plain | fastest step XLA | XLA ÷ plain (fastest) "
        "| first step plain / XLA (s) | peak RSS plain / XLA (MiB) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        mean_p, fast_p, plain = rates(size, False)
        mean_x, fast_x, xla = rates(size, True)
        print(
            f"| {size} | {plain[0]['dtype']} | {mean_p:.0f} | {mean_x:.0f} | {mean_x / mean_p:.2f} | {fast_p:.0f} | {fast_x:.0f} | "
            f"{fast_x / fast_p:.2f} | {min(r['first_step_s'] for r in plain):.1f} / {min(r['first_step_s'] for r in xla):.1f} | "
            f"{max(r['peak_rss_mib'] for r in plain):.0f} / {max(r['peak_rss_mib'] for r in xla):.0f} |"
        )
    busy = [r["others_cpu"] for *_, r in rows if r["others_cpu"] > 0.1]
    if busy:
        print(f"note: other processes used up to {max(busy):.0%} of the CPU during some runs, so those speeds are low")


if __name__ == "__main__":
    main()
