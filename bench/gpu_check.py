"""Check rapgen's training and sampling speed on this machine's GPU (or CPU): a thin wrapper
around `rapgen.finetune.gpu_check.gpu_check`, which notebook 02 also runs from its GPU_CHECK checkbox.

    python bench/gpu_check.py                       # the 124M shape; about three minutes on a T4
    python bench/gpu_check.py --n_layer 2 --n_embd 64 --n_head 2 --n_ctx 128 --train_steps 3

It prints the device, then tokens/s, MFU and peak memory (next to `rapgen plan`'s estimate)
of training in the precision `--mixed_precision auto` picks, without and with XLA, and the
speed of sampling at batch 1 and 8.
"""

from __future__ import annotations

import argparse
import sys

from rapgen.errors import RapgenError
from rapgen.finetune.gpu_check import gpu_check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (
        ("n_layer", 12),
        ("n_embd", 768),
        ("n_head", 12),
        ("n_ctx", 1024),
        ("batch_size", 1),
        ("train_steps", 5),
        ("sample_tokens", 64),
    ):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--sequence_length", type=int, default=None, help="default: n_ctx")
    parser.add_argument("--sample_batch_sizes", default="1,8", help="comma-separated")
    parser.add_argument("--xla", default="off,on", help="which train steps to run: off, on or off,on")
    parser.add_argument("--mixed_precision", default="auto", help="auto, off, float16 or bfloat16")
    args = parser.parse_args(argv)
    try:
        xla = [{"off": False, "on": True}[x] for x in args.xla.split(",") if x]
        sample_batch_sizes = [int(b) for b in args.sample_batch_sizes.split(",") if b]
    except (KeyError, ValueError):
        parser.error("--xla takes off, on or off,on; --sample_batch_sizes whole numbers separated by commas")
    try:
        gpu_check(
            n_layer=args.n_layer,
            n_embd=args.n_embd,
            n_head=args.n_head,
            n_ctx=args.n_ctx,
            sequence_length=args.sequence_length,
            batch_size=args.batch_size,
            train_steps=args.train_steps,
            sample_tokens=args.sample_tokens,
            sample_batch_sizes=sample_batch_sizes,
            xla=xla,
            mixed_precision=args.mixed_precision,
        )
    except RapgenError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
