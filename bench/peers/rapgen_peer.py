"""rapgen's side of bench/compare.py; runs in the project's own .venv.

Tasks (one per process, each prints one RESULT line):
  prepare  create the shared models with `rapgen init` (124M shape, tiny, and `check`, a tiny
           model whose every array is random), export their weights to .npz for torch and
           keras-hub, compute the reference logits every peer is checked against, and write
           the training text and its token ids. Skips whatever already exists.
  peaks    float32 and bfloat16 2048 x 2048 matmul GFLOP/s in TensorFlow.
  train    bench/bench_train.py's child (rapgen.finetune.step.Trainer set up as `rapgen train` does),
           with one more variant registered here: mixed precision bfloat16.
  sample   rapgen.write.generation.generate at a batch size, `stop_at_end=False`, top-k 40, as bench_core.py.
  encode   bench_core.py's synthetic lyrics through rapgen's encoder (empty word cache, then warm);
           the ids' SHA-256 is compared with tiktoken's by compare.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

import common  # noqa: E402
from common import Timer  # noqa: E402


def prepare(spec: dict) -> dict:
    import bench_train
    import numpy as np

    from rapgen.model.encoder import load_encoder
    from rapgen.model.folders import check_model_dir, init, read_weights, save_model
    from rapgen.model.gpt2 import GPT2, initial_weights
    from rapgen.model.hparams import HParams
    from rapgen.model.loading import load_model

    vocab = spec["vocab_dir"]
    made = []
    for size in spec["sizes"]:
        folder = common.model_dir(size)
        if not os.path.exists(os.path.join(folder, "checkpoint")):
            hp = {k: v for k, v in common.SIZES[size].items() if k != "n_vocab"}
            if size == "check":
                # Every array random, gains around 1 and biases around 0 included.
                hparams = HParams(**common.SIZES[size])
                rng = np.random.default_rng(3)
                values = initial_weights(hparams, seed=2)
                for name, value in values.items():
                    if name.endswith("/g"):
                        values[name] = (1.0 + 0.2 * rng.standard_normal(value.shape)).astype(np.float32)
                    elif name.endswith("/b"):
                        values[name] = (0.1 * rng.standard_normal(value.shape)).astype(np.float32)
                save_model(GPT2(hparams, weights=values), folder, vocab)
            else:
                init(folder, seed=1, vocab_dir=vocab, **hp)  # = `rapgen init DIR --n_layer ... --seed 1`
            made.append(size)
        npz = common.weights_npz(size)
        if not os.path.exists(npz):
            os.makedirs(os.path.dirname(npz), exist_ok=True)
            weights = read_weights(check_model_dir(folder), HParams.load(folder))
            np.savez(npz + ".tmp.npz", **weights)
            os.replace(npz + ".tmp.npz", npz)
        ref = common.reference_npz(size)
        if not os.path.exists(ref):
            os.makedirs(os.path.dirname(ref), exist_ok=True)
            enc = load_encoder(folder)
            text = "<<Lil Tofu - Rice Cooker>>\n[Verse 1: Lil Tofu]\nSoft on the outside, firm where it counts, yeah"
            ids = np.array([common.EOT_ID] + enc.encode(text), np.int32)[None]  # [1, T]
            logits = load_model(folder)(ids).numpy()  # [1, T, V] float32
            np.savez(ref + ".tmp.npz", ids=ids, logits=logits)
            os.replace(ref + ".tmp.npz", ref)
    if not os.path.exists(common.PROMPT_IDS):
        ids = [common.EOT_ID] + load_encoder(common.model_dir(spec["sizes"][0])).encode(common.PROMPT)
        with open(common.PROMPT_IDS, "w", encoding="utf-8") as f:
            json.dump(ids, f)
    if not os.path.exists(common.TOKENS):
        with open(common.DATASET, "w", encoding="utf-8") as f:
            f.write(bench_train.invented_lyrics())
        enc = load_encoder(common.model_dir(spec["sizes"][0]))
        with open(common.DATASET, encoding="utf-8") as f:
            ids = enc.encode(f.read(), allowed_special="all")
        np.save(common.TOKENS, np.array(ids, np.int32))
    return {"made": made}


def tf_versions() -> dict:
    import tensorflow as tf

    return {"tf": tf.__version__, "threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()}


def peaks(spec: dict) -> dict:
    """Float32 and bfloat16 matmul GFLOP/s in TensorFlow (2048 x 2048 unless bfloat16 is too slow for it)."""
    import tensorflow as tf

    out = {}
    for dtype in ("float32", "bfloat16"):

        def make_pair(n, dtype=dtype):
            a = tf.random.normal([n, n], dtype=tf.float32)
            return tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)

        rate, n = common.matmul_gflops(make_pair, lambda a, b: tf.matmul(a, b)[0, 0].numpy())
        out[dtype] = {"gflops": rate, "n": n}
    return {"peaks": out, **tf_versions()}


def train(spec: dict) -> dict:
    import bench_train

    bench_train.VARIANTS["bfloat16"] = dict(optimizer="adam", recompute=False, mixed_precision="bfloat16")
    variant = "default (adam)" if spec["dtype"] == "float32" else "bfloat16"
    r = bench_train.child(
        {
            "model_dir": common.model_dir(spec["size"]),
            "dataset": common.DATASET,
            "variant": variant,
            "steps": spec["steps"],
            "warmup": spec["warmup"],
        }
    )
    r.update(common.summarize_steps(r["step_s"], common.BATCH * common.LENGTH))
    return r


def sample(spec: dict) -> dict:
    from rapgen.model.encoder import load_encoder
    from rapgen.model.loading import load_model
    from rapgen.write.generation import generate

    folder = common.model_dir(spec["size"])
    with Timer() as load:
        model = load_model(folder)
    context = [common.EOT_ID] + load_encoder(folder).encode(common.PROMPT)
    length, batch = spec["length"], spec["batch"]

    def call(seed):
        rows = generate(model, context, length=length, batch_size=batch, seed=seed, stop_at_end=False)
        assert len(rows) == batch and all(len(r) == length for r in rows)

    with Timer() as first:
        call(1)  # traces and compiles the loop
    warm = []
    for i in range(spec["warm_runs"]):
        with Timer() as t:
            call(2 + i)
        warm.append(t.s)
    return {
        "load_s": load.s,
        "first_s": first.s,
        "warm_s": warm,
        "best_s": min(warm),
        "tokens_per_s": batch * length / min(warm),
        **tf_versions(),
    }


def encode(spec: dict) -> dict:
    import bench_core

    text = bench_core.synthetic_lyrics(int(spec["mb"] * 1e6))
    n_mb = len(text.encode("utf-8")) / 1e6
    ids, cold, warm = bench_core.time_rapgen_encode(spec["vocab_dir"], text)
    import numpy as np

    digest = hashlib.sha256(np.asarray(ids, np.int32).tobytes()).hexdigest()
    return {"mb": n_mb, "tokens": len(ids), "sha256": digest, "cold_mb_s": n_mb / cold, "warm_mb_s": n_mb / warm}


if __name__ == "__main__":
    common.run_task({"prepare": prepare, "peaks": peaks, "train": train, "sample": sample, "encode": encode})
