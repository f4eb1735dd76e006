"""How much memory fine-tuning needs: `estimate_memory`, the peak of one training step.

It adds up, in bytes, what one step holds at its peak, term by term, from the way
`rapgen.model.gpt2` and `rapgen.finetune.step.Trainer` hold tensors. `rapgen.finetune.fitting`
chooses the settings that fit a budget from it, and prints it as `rapgen plan`.

>>> from rapgen.model.hparams import HParams
>>> est = estimate_memory(HParams.for_model("774M"), sequence_length=1024, optimizer="adafactor", recompute=True)
>>> round(est["total"] / GIB, 1)
8.7

Memory is counted in GiB (2^30 bytes), as nvidia-smi and TensorFlow count it (a T4 shows 15);
`bench/bench_memory.py` checks the estimate against a measured CPU step.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

from rapgen.checks import known_name, one_of, positive_int
from rapgen.errors import RapgenError
from rapgen.model.hparams import HParams, variable_shapes
from rapgen.model.lora import LORA_TARGETS, adapter_parameter_count, adapter_shapes

GIB = 2**30
OPTIMIZERS = ("adam", "adafactor", "sgd")

# -- constants that are not read off the code ----------------------------------------
#
# Memory TensorFlow's tensors do not account for. On the CPU where these were calibrated
# (bench/bench_memory.py, tiny model: its tensors are ~0.25 GB, the step's peak 0.13 GB more)
# it is the step function's graph, kernel and oneDNN caches and thread stacks; on a GPU, the
# cuBLAS/cuDNN workspaces and the allocator's rounding take a similar amount.
WORKSPACE_BYTES = int(0.13e9)
# What a GPU's total (nvidia-smi) holds before any tensor: the CUDA context and what
# TensorFlow leaves unallocated. TensorFlow on a T4 reports about 13.6 GiB for tensors of
# its 15 GiB. Not measurable on a CPU; bench_memory leaves this term out of its comparison.
RUNTIME_BYTES = int(1.4 * GIB)
# Temporaries of the update, in multiples of the largest trained variable: the gradient
# divided by the loss scale, then Adam's (1-beta1)*g, g*g, sqrt(v), the step, or
# Adafactor's g*g, rank-1 second moment, rsqrt, update; SGD only lr*g. Variables are updated
# a few at a time and each one's temporaries are freed after it, so what the update adds is a
# few copies of the biggest variable, not a copy of all of them. Calibrated on 124M
# (bench/bench_memory.py: the update added 5 to 6.4 times wte with Adam, Adafactor or SGD,
# of which 3 are wte's own gradient made dense, below).
UPDATE_TEMPORARIES = {"adam": 3, "adafactor": 3, "sgd": 1}

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def parameter_counts(hparams: HParams, only_train_transformer_layers: bool = False) -> Dict[str, int]:
    """{"total", "trained", "largest_trained"}: weights, from rapgen.model.gpt2.variable_shapes.

    Frozen embeddings (only_train_transformer_layers) train only the blocks `model/h*`, as
    rapgen.finetune.loop does.
    """
    shapes = variable_shapes(hparams)
    trained = [s for n, s in shapes.items() if not only_train_transformer_layers or n.startswith("model/h")]
    return {
        "total": sum(math.prod(s) for s in shapes.values()),
        "trained": sum(math.prod(s) for s in trained),
        "largest_trained": max(math.prod(s) for s in trained),
    }


def optimizer_slot_bytes(hparams: HParams, optimizer: str, only_train_transformer_layers: bool = False) -> int:
    """Bytes of optimizer state, float32, as rapgen.finetune.optim allocates it."""
    optimizer = check_optimizer(optimizer)
    total = 0
    for name, shape in variable_shapes(hparams).items():
        if only_train_transformer_layers and not name.startswith("model/h"):
            continue
        if optimizer == "adam":
            total += 2 * math.prod(shape)  # m and v, each the variable's shape
        elif optimizer == "adafactor":
            dims = [d for d in shape if d != 1]  # c_attn's [1, E, 3E] is a matrix
            # A matrix keeps a mean per row and per column; a vector its full second moment.
            total += math.prod(dims[:-1]) + math.prod(dims[:-2]) * dims[-1] if len(dims) >= 2 else math.prod(shape)
    return 4 * total


def lora_slot_bytes(hparams: HParams, optimizer: str, lora_rank: int, lora_targets: tuple = LORA_TARGETS) -> int:
    """Bytes of optimizer state for LoRA adapters (A [in, r], B [r, out] per projection), float32."""
    optimizer = check_optimizer(optimizer)
    total = 0
    for n_in, n_out in adapter_shapes(hparams, lora_rank, lora_targets).values():
        for rows, cols in ((n_in, lora_rank), (lora_rank, n_out)):
            total += {"adam": 2 * rows * cols, "adafactor": rows + cols, "sgd": 0}[optimizer]
    return 4 * total


def estimate_memory(
    hparams: HParams,
    *,
    batch_size: int = 1,
    sequence_length: Optional[int] = None,
    optimizer: str = "adam",
    recompute: bool = False,
    compute_dtype: str = "float32",
    only_train_transformer_layers: bool = False,
    accumulate_gradients: int = 1,
    lora_rank: int = 0,
    lora_targets: tuple = LORA_TARGETS,
) -> dict:
    """Peak memory of one training step, in bytes, by part.

    Returns {"weights", "gradients", "optimizer", "activations", "logits", "update",
    "workspace", "runtime", "total", "peak_at", "parameters", "trained_parameters"}.
    The total is not the sum of every part: "activations" and "logits" belong to the end of
    the forward pass, "update" to the optimizer step, never held together; "peak_at" says
    which of the two moments is larger ("forward" or "update").

    sequence_length is the window (tokens per row, default n_ctx); accumulate_gradients does
    not change the peak (micro-batches run one after another into the same accumulators).

    lora_rank R > 0 counts a LoRA run (rapgen.model.lora): the base frozen and held in the compute
    type, gradients, slots and the update's temporaries only for the adapters, which are
    float32 ("parameters" then counts the base, "trained_parameters" the adapters).
    """
    hp = hparams
    optimizer = check_optimizer(optimizer)
    one_of("compute dtype", compute_dtype, tuple(DTYPE_BYTES))
    T = hp.n_ctx if sequence_length is None else sequence_length
    for name, value in (
        ("batch_size", batch_size),
        ("sequence_length", T),
        ("accumulate_gradients", accumulate_gradients),
    ):
        positive_int(f"--{name}", value)
    if T > hp.n_ctx:
        raise RapgenError(f"--sequence_length {T} is longer than the model's n_ctx ({hp.n_ctx})")
    B, E, H, L, V = batch_size, hp.n_embd, hp.n_head, hp.n_layer, hp.n_vocab
    c = DTYPE_BYTES[compute_dtype]  # bytes of an activation in the compute type
    mixed = c != 4
    lora = bool(lora_rank)
    counts = parameter_counts(hp, only_train_transformer_layers or lora)
    if lora:
        shapes = adapter_shapes(hp, lora_rank, lora_targets)
        counts["trained"] = adapter_parameter_count(hp, lora_rank, lora_targets)
        counts["largest_trained"] = max(lora_rank * max(n_in, n_out) for n_in, n_out in shapes.values())
    n_train = counts["trained"]
    embeddings_trained = not (only_train_transformer_layers or lora)

    # Variables are float32 whatever the compute type; a LoRA run's frozen base is held in the
    # compute type (rapgen.finetune.loop), its adapters in float32.
    weights = (c if lora else 4) * counts["total"] + (4 * n_train if lora else 0)
    # Trainer.train_step: one dense float32 accumulator per trained variable (tf.zeros_like at
    # the start, each gradient added as the backward pass produces it), held to the update.
    gradients = 4 * n_train
    slots = (
        lora_slot_bytes(hp, optimizer, lora_rank, lora_targets)
        if lora
        else optimizer_slot_bytes(hp, optimizer, only_train_transformer_layers)
    )

    # -- activations kept for the backward pass (what the gradient ops read) ------------
    bte, bhtt = B * T * E, B * H * T * T  # a [B, T, E] tensor; one attention matrix [B, H, T, T]
    # layer_norm runs in float32: its float32 input, x - mean and (x - mean) * rsqrt(var)
    # are read by the gradient, and its output (compute type) by the next matmul.
    layer_norm = (12 + c) * bte
    block = (
        2 * layer_norm  # ln_1, ln_2
        + 3 * c * bte  # q, k, v (the scores' and the output's matmuls read them)
        + 4 * bhtt
        + (c * bhtt if mixed else 0)  # softmax output (float32; its gradient reads it), and its cast
        + c * bte  # the heads merged back, input of c_proj
        # gelu(h) = 0.5 h (1 + tanh(a (h + 0.044715 h^3))), unfused: h, 0.044715 h, 0.044715 h^2,
        # tanh, 0.5 h and 1 + tanh are each read by a gradient, plus gelu's output (c_fc's
        # output is 4E wide).
        + 7 * 4 * c * bte
        # With mixed precision each matmul reads its weight cast to the compute type (a LoRA
        # run's base is held in that type already).
        + (c * 12 * E * E if mixed and not lora else 0)
        # LoRA: each adapter keeps x A [B, T, r] for B's gradient (x itself is kept already).
        + (c * B * T * lora_rank * len(shapes) // L if lora else 0)
    )
    if recompute:
        # tf.recompute_grad per block keeps only each block's input; the backward pass
        # recomputes one block at a time, holding its activations and its gradient's
        # temporaries (the softmax's gradient, two attention-sized tensors; a few [B, T, 4E]).
        backward_working_set = 2 * 4 * bhtt + 2 * 4 * c * bte
        activations = L * c * bte + block + backward_working_set + layer_norm
    else:
        activations = L * block + layer_norm  # + ln_f
    if mixed and not lora:
        activations += c * V * E  # wte cast for the logits matmul
    # The float32 logits [B, T, V]; sparse_softmax_cross_entropy writes its gradient into the
    # same buffer. With mixed precision the compute-type logits exist until their cast.
    logits = 4 * B * T * V + (c * B * T * V if mixed else 0)

    # -- the update -------------------------------------------------------------------
    # The backward pass ends holding wte's gradient three times: the logits matmul's (dense,
    # held since the backward pass began), the embedding lookup's made dense to be added to
    # it, and their sum. Then each variable's update makes temporaries of its size.
    update = (3 * 4 * V * E if embeddings_trained else 0) + UPDATE_TEMPORARIES[optimizer] * 4 * counts[
        "largest_trained"
    ]
    if compute_dtype == "float16":
        # Dynamic loss scaling checks every gradient is finite: a boolean per entry, one
        # variable at a time.
        update += counts["largest_trained"]

    forward_peak = weights + gradients + slots + activations + logits
    update_peak = weights + gradients + slots + update
    total = max(forward_peak, update_peak) + WORKSPACE_BYTES + RUNTIME_BYTES
    return {
        "weights": int(weights),
        "gradients": int(gradients),
        "optimizer": int(slots),
        "activations": int(activations),
        "logits": int(logits),
        "update": int(update),
        "workspace": WORKSPACE_BYTES,
        "runtime": RUNTIME_BYTES,
        "total": int(total),
        "peak_at": "forward" if forward_peak >= update_peak else "update",
        "parameters": counts["total"],
        "trained_parameters": n_train,
        "lora_rank": int(lora_rank),
    }


def check_optimizer(optimizer) -> str:
    """The optimizer's name, checked (one of OPTIMIZERS, any case)."""
    return known_name("--optimizer", optimizer, OPTIMIZERS)
