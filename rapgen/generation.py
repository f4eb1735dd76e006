"""The compiled generation loop: a prompt in, `batch_size` continuations out, one token per step.

Generation is one `tf.function`: the prompt runs through the model once, its keys and
values fill a fixed-size cache, and a `tf.while_loop` then feeds one token per step,
reading the cache instead of re-running the sequence. A row stops at `<|endoftext|>`
(the end of a song); the loop ends when every row has stopped or `length` is reached.
The loop is built once per model and kept in the model's `generation` field.

Context: the model never sees a position beyond n_ctx. A prompt plus `length` over n_ctx
is an error that says the largest length that fits (rapgen does not slide a window: a
song that forgets its own start is not what users asked for). `length=None` means "up to
the end of the context", which the end of the song usually cuts short.

>>> generate(model, [50256] + enc.encode("<<Lil Tofu"), length=20, seed=3)   # doctest: +SKIP
[[532, 13328, ...]]
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, List, Optional, Sequence

from .errors import RapgenError
from .hparams import EOT_ID
from .logits import choose_tokens
from .rules import between, non_negative_int, non_negative_number, one_of, positive_int, zero_or_positive_int

PRECISIONS = ("float32", "bfloat16", "float16")


class _StepReporter:
    """The compiled loop's one window to Python: called after each step with the number of
    tokens each row has so far. `generate` sets `callback` for one call (a progress bar on a
    terminal) and clears it after; with none set, a step costs one no-op Python call."""

    def __init__(self):
        self.callback = None

    def __call__(self, steps):
        if self.callback is not None:
            self.callback(int(steps))
        return steps


@dataclasses.dataclass
class GenerationLoop:
    """What `generate` keeps in a model's `generation` field: the compiled loop and its reporter."""

    function: Callable  # the tf.function; see _generation_function for its arguments
    reporter: _StepReporter


def _generation_function(model):
    """The compiled loop for one model, built once and kept in `model.generation` (no retracing per call)."""
    import tensorflow as tf

    if model.generation is not None:
        return model.generation.function
    reporter = _StepReporter()

    # autograph=False: the loop is written with tf.while_loop and tf.cond already, and
    # converting the model's Python source took about half of the first call's time.
    @tf.function(
        autograph=False,
        input_signature=[
            tf.TensorSpec([None, None], tf.int32),  # context [B, T0]
            tf.TensorSpec([], tf.int32),  # length: new tokens at most
            tf.TensorSpec([], tf.float32),  # temperature
            tf.TensorSpec([], tf.int32),  # top_k
            tf.TensorSpec([], tf.float32),  # top_p
            tf.TensorSpec([2], tf.int32),  # seed
            tf.TensorSpec([], tf.bool),  # stop at <|endoftext|>
        ]
    )
    def generate(context, length, temperature, top_k, top_p, seed, stop_at_end):
        hp = model.hparams
        B, T0 = tf.shape(context)[0], tf.shape(context)[1]
        S = T0 + length  # cache slots: the prompt and every generated token
        cache = tf.zeros([hp.n_layer, 2, B, hp.n_head, S, hp.head_dim], model.compute_dtype)  # [L, 2, B, H, S, D]
        out = tf.TensorArray(tf.int32, size=length, element_shape=[None])

        def cond(i, tokens, cache, done, out):
            return tf.logical_and(i < length, tf.logical_not(tf.reduce_all(done)))

        def body(i, tokens, cache, done, out):
            # Step 0 reads the whole prompt, later steps the newest token: one copy of the
            # network in the graph serves both, which halves the tracing and compiling of
            # the first call (the cold start of `rapgen sample`).
            T = tf.shape(tokens)[1]
            pos = tf.where(i == 0, 0, T0 + i - 1)  # position of tokens[:, 0]
            logits, present = model.step(tokens, cache, pos)  # [B, V], [L, 2, B, H, T, D]
            # Write the new keys/values into slots pos .. pos + T - 1.
            present = tf.pad(present, [[0, 0], [0, 0], [0, 0], [0, 0], [pos, S - pos - T], [0, 0]])  # [L, 2, B, H, S, D]
            slots = tf.range(S)
            slot = tf.reshape(tf.logical_and(slots >= pos, slots < pos + T), [1, 1, 1, 1, -1, 1])  # [1, 1, 1, 1, S, 1]
            cache = tf.where(slot, present, cache)  # [L, 2, B, H, S, D]
            new = choose_tokens(logits, temperature, top_k, top_p, tf.stack([seed[0], seed[1] + i]))  # [B]
            new = tf.where(done, EOT_ID, new)  # finished rows only pad
            done = tf.logical_or(done, tf.logical_and(stop_at_end, tf.equal(new, EOT_ID)))
            # The step count goes through the reporter, so the call is part of the loop's data
            # flow and never pruned.
            steps = tf.py_function(reporter, [i + 1], tf.int32)
            steps.set_shape([])
            return steps, new[:, None], cache, done, out.write(i, new)

        # The cache is allocated full size, so only the tokens fed in change shape (the
        # prompt, then one per row) and the loop compiles once.
        start = (tf.constant(0), context, cache, tf.zeros([B], tf.bool), out)
        invariants = (tf.TensorShape([]), tf.TensorShape([None, None]), cache.shape, tf.TensorShape([None]), tf.TensorShape(None))
        n, _, _, _, out = tf.while_loop(cond, body, start, shape_invariants=invariants)
        return tf.transpose(out.gather(tf.range(n)))  # [B, n]

    model.generation = GenerationLoop(generate, reporter)
    return generate


def generate(
    model,
    context: Sequence[int],
    length: Optional[int] = None,
    batch_size: int = 1,
    temperature: float = 1.0,
    top_k: int = 40,
    top_p: float = 0.0,
    seed: Optional[int] = None,
    stop_at_end: bool = True,
    on_step: Optional[Callable[[int], None]] = None,
) -> List[List[int]]:
    """`batch_size` continuations of the token ids `context`, each cut after its first 50256.

    The returned ids exclude the context and include the final 50256 when a song ended.
    `on_step(n)` is called after each step with the tokens each row has so far (progress).

    >>> generate(model, enc.encode("<<Lil Tofu"), length=20, seed=3)   # doctest: +SKIP
    [[532, 13328, ...]]
    """
    import numpy as np
    import tensorflow as tf

    context = [int(t) for t in context]
    n_ctx = model.hparams.n_ctx
    check_sampling_args(len(context), length, n_ctx, temperature, top_k, top_p, batch_size)
    if length is None:
        length = n_ctx - len(context)
    if seed is None:
        seed = random.randrange(2**31)
    fn = _generation_function(model)
    model.generation.reporter.callback = on_step
    try:
        tokens = fn(
            tf.constant(np.tile(np.array(context, np.int32)[None], [batch_size, 1])),
            tf.constant(length, tf.int32),
            tf.constant(temperature, tf.float32),
            tf.constant(top_k, tf.int32),
            tf.constant(top_p, tf.float32),
            tf.constant([seed % 2**31, 0], tf.int32),
            tf.constant(bool(stop_at_end)),
        ).numpy()
    finally:
        model.generation.reporter.callback = None
    rows = []
    for row in tokens.tolist():
        if stop_at_end and EOT_ID in row:
            row = row[: row.index(EOT_ID) + 1]
        rows.append(row)
    return rows


def check_sampling_options(length, temperature, top_k, top_p, batch_size, nsamples=1, seed=None, precision="float32"):
    """The checks that need no model: `sample` and `interactive` make them before loading one."""
    if length is not None:
        positive_int("--length", length)
    zero_or_positive_int("--top_k", top_k)
    non_negative_number("--temperature", temperature)
    between("--top_p", top_p, 0, 1, note="0 or 1 = off")
    positive_int("--batch_size", batch_size)
    positive_int("--nsamples", nsamples)
    if seed is not None:
        non_negative_int("--seed", seed)
    one_of("--precision", precision, PRECISIONS)


def check_sampling_args(n_prompt, length, n_ctx, temperature, top_k, top_p, batch_size):
    if n_prompt == 0:
        raise RapgenError("the prompt is empty: give --prefix TEXT or --artist NAME")
    if n_prompt >= n_ctx:
        raise RapgenError(f"the prompt is {n_prompt} tokens, the model's context only {n_ctx}: shorten it")
    check_sampling_options(length, temperature, top_k, top_p, batch_size)
    if length is not None:
        if n_prompt + length > n_ctx:
            raise RapgenError(
                f"prompt ({n_prompt} tokens) + length ({length}) exceeds the model's context of {n_ctx} "
                f"tokens: use --length {n_ctx - n_prompt} or less"
            )
