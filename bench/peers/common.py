"""What every peer script shares: paths, model sizes, the FLOP count, and the RESULT protocol.

Standard library only: this file is imported by compare.py (any Python 3) and by each peer
script inside that peer's own virtual environment.

A peer script is run as `python bench/peers/<peer>.py TASK 'JSON spec'`. It does one
measurement and prints one line `RESULT {json}` (anything else it prints is ignored by
compare.py but kept for error reports).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH)
WORK = os.path.join(BENCH, ".work")  # models, exported weights, reference logits (gitignored)

SIZES = {
    "124M": dict(n_vocab=50257, n_layer=12, n_embd=768, n_head=12, n_ctx=1024),
    "tiny": dict(n_vocab=50257, n_layer=2, n_embd=64, n_head=2, n_ctx=1024),
    # Same shape as tiny but every array random (gains and biases too), so that a peer whose
    # conversion swaps or drops an array cannot pass the logits check by luck.
    "check": dict(n_vocab=50257, n_layer=2, n_embd=64, n_head=2, n_ctx=1024),
}
BATCH, LENGTH = 1, 1024  # training: one window of 1024 tokens per step
PROMPT = "<<Lil Tofu"  # sampling prompt; the context is <|endoftext|> + this, as `rapgen sample` uses
EOT_ID = 50256


def model_dir(size: str) -> str:
    """The rapgen model folder (OpenAI's checkpoint format) of a size."""
    return os.path.join(WORK, "models", size)


def weights_npz(size: str) -> str:
    """The same weights as plain arrays keyed by OpenAI's variable names, for torch and keras-hub."""
    return os.path.join(WORK, "weights", size + ".npz")


def reference_npz(size: str) -> str:
    """Token ids and rapgen's float32 logits for them: what every peer's conversion is checked against."""
    return os.path.join(WORK, "reference", size + ".npz")


DATASET = os.path.join(WORK, "invented_lyrics.txt")  # training text (bench_train.invented_lyrics)
TOKENS = os.path.join(WORK, "invented_lyrics.tokens.npy")  # the same text as GPT-2 token ids (int32)
PROMPT_IDS = os.path.join(WORK, "prompt_ids.json")  # [50256] + PROMPT's ids, for peers without the BPE


def prompt_ids() -> list:
    with open(PROMPT_IDS, encoding="utf-8") as f:
        return json.load(f)


def n_params(hp: dict) -> int:
    """Parameters of GPT-2 with these hparams (the output layer is tied to wte)."""
    E, L = hp["n_embd"], hp["n_layer"]
    per_block = 2 * 2 * E + (E * 3 * E + 3 * E) + (E * E + E) + (E * 4 * E + 4 * E) + (4 * E * E + E)
    return hp["n_vocab"] * E + hp["n_ctx"] * E + L * per_block + 2 * E


def train_flops(hp: dict, batch: int = BATCH, length: int = LENGTH) -> float:
    """Model FLOPs of one training step: 6 N per token, plus attention.

    N = n_params (wte counts once: it is the output matmul; its gather and wpe are free but
    small). Attention: QK^T and AV are 2 * 2 * T * E per token and layer forward, the whole
    T x T square (as the implementations here compute it), times 3 for forward + backward.
    """
    tokens = batch * length
    attention = 12 * hp["n_layer"] * hp["n_embd"] * length * tokens
    return 6.0 * n_params(hp) * tokens + attention


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    """`with Timer() as t: ...`, then t.s is the seconds it took (perf_counter)."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0


def matmul_gflops(make_pair, matmul, sizes=(512, 1024, 2048), budget_s: float = 3.0, repeats: int = 3):
    """(GFLOP/s, n) of the largest n x n matmul in `sizes` whose one call the previous size's rate
    predicts to take at most budget_s (bfloat16 without hardware support can run at well under
    1 GFLOP/s, where one 2048^3 product would take half a minute); best of `repeats` after a warm-up.

    make_pair(n) -> (a, b); matmul(a, b) must return only once the product is computed.
    """
    rate, used = None, None
    for n in sizes:
        if rate is not None and 2 * n**3 / (rate * 1e9) > budget_s:
            break
        a, b = make_pair(n)
        matmul(a, b)  # warm-up: the library picks its kernel
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            matmul(a, b)
            best = min(best, time.perf_counter() - t0)
        rate, used = 2 * n**3 / best / 1e9, n
    return rate, used


def summarize_steps(step_s: list, tokens_per_step: int) -> dict:
    return {
        "step_s": step_s,
        "mean_step_s": sum(step_s) / len(step_s),
        "tokens_per_s": tokens_per_step * len(step_s) / sum(step_s),
    }


def run_task(tasks: dict) -> None:
    """The peer scripts' main(): `script.py TASK 'JSON'` -> one RESULT line (or an ERROR line)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if len(sys.argv) != 3 or sys.argv[1] not in tasks:
        sys.exit(f"usage: {os.path.basename(sys.argv[0])} {{{','.join(tasks)}}} 'JSON spec'")
    spec = json.loads(sys.argv[2])
    try:
        result = tasks[sys.argv[1]](spec)
    except Exception as e:  # reported to compare.py, which shows it in the table
        traceback.print_exc()
        print("ERROR " + json.dumps(f"{type(e).__name__}: {e}"), flush=True)
        sys.exit(1)
    result.setdefault("peak_rss_mib", peak_rss_mib())
    print("RESULT " + json.dumps(result), flush=True)
