"""tiktoken's side of bench/compare.py, in bench/.venvs/tiktoken.

Task `encode`: bench_core.py's synthetic lyrics (the same text rapgen's side encodes: same
size, same seed) through bench_core.offline_tiktoken, tiktoken's BPE built from the same
encoder.json and vocab.bpe with GPT-2's pattern; one thread (`encode`, not
`encode_batch`). The SHA-256 of the ids is compared with rapgen's by compare.py.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

import common  # noqa: E402


def encode(spec: dict) -> dict:
    import array
    import importlib.metadata

    import bench_core

    text = bench_core.synthetic_lyrics(int(spec["mb"] * 1e6))
    n_mb = len(text.encode("utf-8")) / 1e6
    enc = bench_core.offline_tiktoken(spec["vocab_dir"])
    enc.encode("warm up the regex", allowed_special={bench_core.EOT})
    t = time.perf_counter()
    ids = enc.encode(text, allowed_special={bench_core.EOT})
    seconds = time.perf_counter() - t
    digest = hashlib.sha256(array.array("i", ids).tobytes()).hexdigest()  # int32, as rapgen's side hashes
    return {
        "mb": n_mb,
        "tokens": len(ids),
        "sha256": digest,
        "mb_s": n_mb / seconds,
        "tiktoken": importlib.metadata.version("tiktoken"),
    }


if __name__ == "__main__":
    common.run_task({"encode": encode})
