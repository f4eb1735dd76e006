"""A short speed and memory check of the device rapgen would train on: `gpu_check()`.

It says which device it found, trains a GPT-2 of the given shape (the 124M one by default,
random weights and random tokens: nothing to download) for a few steps in the precision
`--mixed_precision auto` picks there, once with the plain compiled step and once with XLA
(`jit_compile`), then samples at batch 1 and 8. For each it prints tokens/s, the MFU (model
FLOPs per second over the device's dense peak) and the peak memory next to `rapgen plan`'s
estimate. About three minutes on a T4; it runs on a CPU too (at a tiny shape in the tests).

>>> gpu_check()                                                   # doctest: +SKIP
device: Tesla T4 (compute capability 7.5), float16 compute, dense peak 65.0 TFLOP/s (table)
...
>>> gpu_check(n_layer=2, n_embd=32, n_head=2, n_ctx=32, train_steps=2, sample_tokens=4)  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import resource
import time
from typing import Optional, Sequence

import numpy as np

from rapgen.checks import between, positive_int
from rapgen.devices import compute_dtype
from rapgen.errors import RapgenError
from rapgen.finetune.config import TrainConfig
from rapgen.finetune.memory import estimate_memory
from rapgen.finetune.step import Trainer
from rapgen.model.hparams import EOT_ID, HParams
from rapgen.write.generation import generate

# Dense (no sparsity) peaks from the vendors' data sheets, FLOP/s, by compute type. Matched
# against TensorFlow's device name, the more specific names first.
GPU_PEAKS = (
    ("H100", {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}),
    ("A100", {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12}),
    ("L4", {"bfloat16": 121e12, "float16": 121e12, "float32": 30.3e12}),
    ("A10", {"bfloat16": 125e12, "float16": 125e12, "float32": 31.2e12}),
    ("V100", {"float16": 125e12, "float32": 15.7e12}),
    ("T4", {"float16": 65e12, "float32": 8.1e12}),
    ("P100", {"float16": 18.7e12, "float32": 9.3e12}),
)


def train_flops(n_params: int, n_layer: int, n_embd: int, batch_size: int, sequence_length: int) -> float:
    """Model FLOPs of one training step: 6 per parameter and token, plus attention's two
    T x T matmuls (2 * 2 * T * E per token and layer forward, times 3 with the backward pass)."""
    tokens = batch_size * sequence_length
    return 6.0 * n_params * tokens + 12.0 * n_layer * n_embd * sequence_length * tokens


def device_name() -> tuple:
    """(name, compute capability or None) of the first GPU, else the CPU's model name."""
    import tensorflow as tf  # lazily: the tables and checks here run without TensorFlow

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return details.get("device_name", "GPU"), tuple(details.get("compute_capability", (0, 0)))
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip(), None
    except OSError:
        pass
    return "CPU", None


def measured_matmul_peak(dtype: str, n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` n x n matmuls in `dtype`: the CPU's usable peak."""
    import tensorflow as tf  # lazily: the tables and checks here run without TensorFlow

    a = tf.random.stateless_normal([n, n], seed=[1, 2], dtype=tf.float32)
    a = tf.cast(a, dtype)  # [n, n]
    mm = tf.function(lambda x: tf.matmul(x, x), autograph=False)
    mm(a).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a).numpy()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def dense_peak(name: str, capability, dtype: str) -> tuple:
    """(FLOP/s, where it comes from): a GPU's data-sheet figure, else a measured matmul."""
    if capability is not None:
        for key, peaks in GPU_PEAKS:
            if key in name and dtype in peaks:
                return peaks[dtype], "data sheet"
    return measured_matmul_peak(dtype), "measured matmul"


def _peak_memory_gib(gpu: bool, reset: bool = False) -> float:
    import tensorflow as tf  # lazily: the tables and checks here run without TensorFlow

    if gpu:
        if reset:
            tf.config.experimental.reset_memory_stats("GPU:0")
            return 0.0
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    # On the CPU the process's peak resident memory, which cannot be reset: the largest so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def gpu_check(
    *,
    n_layer: int = 12,
    n_embd: int = 768,
    n_head: int = 12,
    n_ctx: int = 1024,
    sequence_length: Optional[int] = None,
    batch_size: int = 1,
    train_steps: int = 5,
    sample_tokens: int = 64,
    sample_batch_sizes: Sequence[int] = (1, 8),
    xla: Sequence[bool] = (False, True),
    mixed_precision: str = "auto",
    quiet: bool = False,
) -> dict:
    """Train and sample a GPT-2 of this shape on this machine's device; print and return the figures.

    Returns {"device", "compute_capability", "dtype", "peak_flops", "peak_source", "train": [{"xla",
    "tokens_per_s", "mfu", "first_step_s", "peak_memory_gib", "estimate_gib", "first_loss", "loss"}], "sample":
    [{"batch_size", "tokens_per_s", "first_call_s"}]}.

    >>> gpu_check(n_layer=2, n_embd=32, n_head=2, n_ctx=32, train_steps=2, sample_tokens=4, quiet=True)["dtype"]  # doctest: +SKIP
    'float32'
    """
    for label, value in (
        ("n_layer", n_layer),
        ("n_embd", n_embd),
        ("n_head", n_head),
        ("n_ctx", n_ctx),
        ("batch_size", batch_size),
        ("train_steps", train_steps),
        ("sample_tokens", sample_tokens),
    ):
        positive_int(label, value)  # bare names: gpu_check is a script and a function, not a rapgen flag
    length = n_ctx if sequence_length is None else sequence_length
    between("sequence_length", length, 2, n_ctx, integer=True, hi_label=f"n_ctx ({n_ctx})")
    if n_embd % n_head:
        raise RapgenError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    if sample_tokens >= n_ctx:
        raise RapgenError(f"sample_tokens must be below n_ctx ({n_ctx}), got {sample_tokens}")
    for b in sample_batch_sizes:
        if not isinstance(b, int) or isinstance(b, bool) or b <= 0:
            raise RapgenError(f"sample_batch_sizes must hold positive integers, got {list(sample_batch_sizes)!r}")

    import tensorflow as tf  # lazily: the tables and checks here run without TensorFlow

    from rapgen.model.gpt2 import GPT2  # TensorFlow at import, as above

    def say(text):
        if not quiet:
            print(text, flush=True)

    hp = HParams(n_ctx=n_ctx, n_embd=n_embd, n_head=n_head, n_layer=n_layer)
    name, capability = device_name()
    dtype = compute_dtype(mixed_precision)
    peak, source = dense_peak(name, capability, dtype)
    gpu = capability is not None
    say(
        f"device: {name}"
        + (f" (compute capability {capability[0]}.{capability[1]})" if gpu else " (no GPU)")
        + f", {dtype} compute, dense peak {peak / 1e12:.2f} TFLOP/s ({source})"
    )
    say(
        f"model: {n_layer} layers, {n_embd} wide, {n_head} heads, {hp.n_params() / 1e6:.1f}M parameters; "
        f"training batch {batch_size} x {length} tokens, Adam"
    )
    parts = estimate_memory(hp, batch_size=batch_size, sequence_length=length, optimizer="adam", compute_dtype=dtype)
    # Like with like: TensorFlow's GPU allocator does not count the CUDA context, which the plan's
    # runtime term stands for; a CPU process's peak counts TensorFlow's libraries, which it also stands for.
    estimate = (parts["total"] - parts["runtime"] if gpu else parts["total"]) / 2**30
    memory_note = (
        "allocated by TensorFlow; rapgen plan estimates {:.2f} without the CUDA context"
        if gpu
        else "whole process; rapgen plan estimates {:.2f}"
    )
    flops = train_flops(hp.n_params(), n_layer, n_embd, batch_size, length)
    out = {
        "device": name,
        "compute_capability": capability,
        "dtype": dtype,
        "peak_flops": peak,
        "peak_source": source,
        "train": [],
        "sample": [],
    }

    for use_xla in xla:
        gc.collect()
        _peak_memory_gib(gpu, reset=True)
        model = GPT2(hp, seed=0, compute_dtype=dtype)
        trainer = Trainer(
            TrainConfig(dataset="random tokens", optimizer="adam", recompute=False, xla=bool(use_xla)),
            model,
            list(model.variables_by_name),
        )
        times, loss, first_loss = [], None, None
        rng = np.random.default_rng(0)  # the same batches with and without XLA
        for i in range(train_steps + 1):  # the first call traces and compiles: timed apart
            batch = rng.integers(0, hp.n_vocab, size=(1, batch_size, length + 1)).astype(np.int32)  # [1, B, T+1]
            t0 = time.perf_counter()
            loss = float(trainer.train_step(tf.constant(batch), tf.constant(1e-4), tf.constant(i, tf.int64)))
            times.append(time.perf_counter() - t0)
            first_loss = loss if i == 0 else first_loss
        step_s = sum(times[1:]) / train_steps
        row = {
            "xla": bool(use_xla),
            "tokens_per_s": batch_size * length / step_s,
            "mfu": flops / step_s / peak,
            "first_step_s": times[0],
            "peak_memory_gib": _peak_memory_gib(gpu),
            "estimate_gib": estimate,
            "first_loss": first_loss,
            "loss": loss,
        }
        out["train"].append(row)
        say(
            f"train{' with XLA' if use_xla else ''}: {row['tokens_per_s']:,.0f} tokens/s, MFU {row['mfu']:.1%}, "
            f"first step {row['first_step_s']:.1f} s, peak memory {row['peak_memory_gib']:.2f} GiB "
            f"({memory_note.format(estimate)}), loss {loss:.2f}"
        )
        del trainer, model

    gc.collect()
    model = GPT2(hp, seed=0, compute_dtype=dtype)
    for b in sample_batch_sizes:
        t0 = time.perf_counter()
        generate(model, [EOT_ID], length=sample_tokens, batch_size=b, seed=0, stop_at_end=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = generate(model, [EOT_ID], length=sample_tokens, batch_size=b, seed=1, stop_at_end=False)
        seconds = time.perf_counter() - t0
        row = {"batch_size": b, "tokens_per_s": sum(len(r) for r in rows) / seconds, "first_call_s": first}
        out["sample"].append(row)
        say(
            f"sample at batch {b}: {row['tokens_per_s']:,.1f} tokens/s ({sample_tokens} new tokens a row, "
            f"top-k 40; the first call took {first:.1f} s)"
        )
    return out
