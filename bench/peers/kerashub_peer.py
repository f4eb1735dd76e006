"""keras-hub's side of bench/compare.py: GPT2CausalLM on Keras 3 with the TensorFlow backend,
in bench/.venvs/kerashub.

The backbone is built with the same shape (dropout 0, as rapgen and gpt-2-simple have none)
and no preprocessor, then every variable is set from the arrays rapgen exported
(bench/.work/weights/<size>.npz), mapped as keras-hub's own converter from transformers'
GPT-2 does (keras_hub/src/utils/transformers/convert_gpt2.py): c_attn's [E, 3E] kernel splits
into the query, key and value EinsumDense kernels [E, H, D]; c_proj's [E, E] becomes the
attention output kernel [H, D, E]. The logits are the token embedding reversed (tied).

Tasks (one per process, each prints one RESULT line):
  check   logits of the reference ids against rapgen's.
  train   `model.fit` as a keras-hub user trains: compile(Adam(1e-4), sparse categorical
          cross-entropy from logits, no metrics), batch 1 x 1024, one epoch of 1 + warmup + steps
          windows; a callback times each batch (on_train_batch_begin .. end, the loss read back
          to be sure the step has finished). float32, or
          keras.mixed_precision.set_global_policy("mixed_bfloat16") before the model is built.
          jit_compile is left to Keras ("auto": XLA is off on a CPU-only machine).
  sample  compile(sampler=TopKSampler(k=40)); generate() on token ids padded to prompt + L with
          stop_token_ids=None (no early stop); a first call, then warm calls.
"""

from __future__ import annotations

import os
import sys

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]

import common  # noqa: E402
from common import Timer  # noqa: E402


def versions() -> dict:
    import keras
    import keras_hub
    import tensorflow as tf

    return {
        "keras_hub": keras_hub.__version__,
        "keras": keras.__version__,
        "tf": tf.__version__,
        "backend": keras.config.backend(),
    }


def load(size: str, policy: str = "float32"):
    """GPT2CausalLM (no preprocessor) with the exported weights; fails on any unset or misshaped array."""
    import keras
    import keras_hub
    import numpy as np

    keras.mixed_precision.set_global_policy(policy)
    hp = common.SIZES[size]
    E, H = hp["n_embd"], hp["n_head"]
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=hp["n_vocab"],
        num_layers=hp["n_layer"],
        num_heads=H,
        hidden_dim=E,
        intermediate_dim=4 * E,
        dropout=0.0,
        max_sequence_length=hp["n_ctx"],
    )
    w = np.load(common.weights_npz(size))
    assigned = set()

    def put(variable, name, value=None):
        value = w[name] if value is None else value
        value = np.reshape(value, variable.shape)  # raises on a size mismatch
        variable.assign(value)
        assigned.add(id(variable))

    put(backbone.token_embedding.embeddings, "model/wte")
    put(backbone.position_embedding.position_embeddings, "model/wpe")
    for i, layer in enumerate(backbone.transformer_layers):
        p = f"model/h{i}/"
        put(layer._self_attention_layer_norm.gamma, p + "ln_1/g")
        put(layer._self_attention_layer_norm.beta, p + "ln_1/b")
        put(layer._feedforward_layer_norm.gamma, p + "ln_2/g")
        put(layer._feedforward_layer_norm.beta, p + "ln_2/b")
        attn = layer._self_attention_layer
        qkv_w, qkv_b = w[p + "attn/c_attn/w"][0], w[p + "attn/c_attn/b"]  # [E, 3E], [3E]
        for j, dense in enumerate((attn.query_dense, attn.key_dense, attn.value_dense)):
            put(dense.kernel, None, qkv_w[:, j * E : (j + 1) * E])  # -> [E, H, D]
            put(dense.bias, None, qkv_b[j * E : (j + 1) * E])  # -> [H, D]
        put(attn.output_dense.kernel, p + "attn/c_proj/w")  # [1, E, E] -> [H, D, E]
        put(attn.output_dense.bias, p + "attn/c_proj/b")
        put(layer._feedforward_intermediate_dense.kernel, p + "mlp/c_fc/w")
        put(layer._feedforward_intermediate_dense.bias, p + "mlp/c_fc/b")
        put(layer._feedforward_output_dense.kernel, p + "mlp/c_proj/w")
        put(layer._feedforward_output_dense.bias, p + "mlp/c_proj/b")
    put(backbone.layer_norm.gamma, "model/ln_f/g")
    put(backbone.layer_norm.beta, "model/ln_f/b")
    unset = [v.path for v in backbone.weights if id(v) not in assigned]
    if unset:
        raise RuntimeError(f"keras-hub variables left unset: {unset[:5]}")
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def check(spec: dict) -> dict:
    import numpy as np

    ref = np.load(common.reference_npz(spec["size"]))
    model = load(spec["size"])
    ids = ref["ids"]
    got = np.asarray(model({"token_ids": ids, "padding_mask": np.ones_like(ids)}), np.float32)
    return {
        "max_abs_diff": float(np.max(np.abs(got - ref["logits"]))),
        "logit_scale": float(np.max(np.abs(ref["logits"]))),
        **versions(),
    }


def train(spec: dict) -> dict:
    import keras
    import numpy as np

    policy = "mixed_bfloat16" if spec["dtype"] == "bfloat16" else "float32"
    with Timer() as setup:
        model = load(spec["size"], policy)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[],
        )
    tokens = np.load(common.TOKENS)
    n = 1 + spec["warmup"] + spec["steps"]
    starts = [(i * 997) % (len(tokens) - common.LENGTH - 1) for i in range(n)]
    x = np.stack([tokens[s : s + common.LENGTH] for s in starts]).astype(np.int32)  # [n, T]
    y = np.stack([tokens[s + 1 : s + common.LENGTH + 1] for s in starts]).astype(np.int32)  # [n, T]

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self.losses = [], []

        def on_train_batch_begin(self, batch, logs=None):
            self.t = Timer().__enter__()

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))  # waits for the step
            self.t.__exit__()
            self.times.append(self.t.s)

    timer = StepTimer()
    model.fit(
        x={"token_ids": x, "padding_mask": np.ones_like(x)},
        y=y,
        batch_size=common.BATCH,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    if len(timer.times) != n or not np.isfinite(timer.losses[-1]):
        raise RuntimeError(f"{len(timer.times)} steps timed of {n}, last loss {timer.losses[-1]}")
    return {
        "setup_s": setup.s,
        "first_step_s": timer.times[0],
        "loss_first": timer.losses[0],
        "loss_last": timer.losses[-1],
        "jit_compile": bool(model.jit_compile),
        "policy": policy,
        **common.summarize_steps(timer.times[1 + spec["warmup"] :], common.BATCH * common.LENGTH),
        **versions(),
    }


def sample(spec: dict) -> dict:
    import keras_hub
    import numpy as np

    with Timer() as load_t:
        model = load(spec["size"])
        model.compile(sampler=keras_hub.samplers.TopKSampler(k=40, seed=1))
    prompt = common.prompt_ids()
    batch, length = spec["batch"], spec["length"]
    ids = np.zeros([batch, len(prompt) + length], np.int32)
    ids[:, : len(prompt)] = prompt
    mask = np.zeros_like(ids, dtype=bool)
    mask[:, : len(prompt)] = True

    def call():
        out = model.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=None)
        assert np.asarray(out["padding_mask"]).all(), "generation stopped early"

    with Timer() as first:
        call()
    warm = []
    for _ in range(spec["warm_runs"]):
        with Timer() as t:
            call()
        warm.append(t.s)
    return {
        "load_s": load_t.s,
        "first_s": first.s,
        "warm_s": warm,
        "best_s": min(warm),
        "tokens_per_s": batch * length / min(warm),
        "jit_compile": bool(model.jit_compile),
        **versions(),
    }


if __name__ == "__main__":
    common.run_task({"check": check, "train": train, "sample": sample})
