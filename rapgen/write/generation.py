"""The compiled generation loop: prompts in, continuations out, one token per step.

Generation is one `tf.function`: the prompts run through the model once, their keys and
values fill a fixed-size cache, and a `tf.while_loop` then feeds one token per step,
reading the cache instead of re-running the sequence. A row stops at `<|endoftext|>`
(the end of a song); the loop ends when every row has stopped or `length` is reached.
The loop is built once per model and kept in the model's `generation` field.

Several prompts in one batch: `context` may be a list of prompts (`[EOT] <<Yung Lean`,
`[EOT] <<Eminem`, …). Shorter prompts are padded on the left; the model gives each row
its own positions (its first real token at 0) and hides the filler slots from attention,
and each row draws from its own random stream (picked by the row's number among the
copies of its prompt). So a row writes what its prompt writes alone, with the same
seed, in any batch: the same up to float rounding (a padded row's logits differ from the
row alone by about 1e-5, which on rare steps picks another token).

Context: the model never sees a position at or beyond n_ctx. By default a prompt plus
`length` over n_ctx is an error that says the largest length that fits. With
`window="slide"` a song goes on past the context: when the context is full, each row
keeps its song's header line (the [EOT] before it and `<<Artist - Title>>`, so the
artist conditioning survives) and its most recent tokens, drops the middle, runs the
kept tokens through the model once to rebuild the cache, and goes on for `stride` new
tokens (default n_ctx // 4) before the next slide. What the model remembers after a
slide: the header and the last n_ctx - stride - (header) tokens, nothing in between: a
chorus or a rhyme scheme from earlier verses is gone unless it was recent, and a row's
positions restart after its header, so it cannot tell how far into the song it is.
Each row slides when its own context is full, as it would alone, so rows of different
prompts slide at different steps. `length=None` means "up to the end of the context" (each
row's own: a shorter prompt writes more), which the end of the song usually cuts short; a
sliding window needs a `length`.

>>> generate(model, [50256] + enc.encode("<<Lil Tofu"), length=20, seed=3)   # doctest: +SKIP
[[532, 13328, ...]]
>>> generate(model, [[50256, 16791], [50256, 16791, 12]], length=20, seed=3)   # doctest: +SKIP
[[...], [...]]
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, List, Optional, Sequence

from rapgen.errors import RapgenError
from rapgen.model.hparams import EOT_ID
from rapgen.write.logits import choose_tokens
from rapgen.checks import between, non_negative_int, non_negative_number, one_of, positive_int, zero_or_positive_int

PRECISIONS = ("float32", "bfloat16", "float16")
WINDOWS = ("none", "slide")


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
    """The compiled loop for one model, built once and kept in `model.generation` (no retracing per call).

    Arguments: context int32 [B, T0] (left-padded prompts), pad int32 [B] (filler slots of
    each row), row_ids int32 [B] (each row's random stream), done bool [B] (rows that only
    pad), length, temperature, top_k, top_p, seed int32 [2] (step i draws with
    [seed[0], seed[1] + i]), stop_at_end. Returns the new tokens int32 [B, n], n <= length.
    """
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
            tf.TensorSpec([None], tf.int32),  # pad [B]
            tf.TensorSpec([None], tf.int32),  # row_ids [B]
            tf.TensorSpec([None], tf.bool),  # done [B]
            tf.TensorSpec([], tf.int32),  # length: new tokens at most
            tf.TensorSpec([], tf.float32),  # temperature
            tf.TensorSpec([], tf.int32),  # top_k
            tf.TensorSpec([], tf.float32),  # top_p
            tf.TensorSpec([2], tf.int32),  # seed
            tf.TensorSpec([], tf.bool),  # stop at <|endoftext|>
        ]
    )
    def generate(context, pad, row_ids, done, length, temperature, top_k, top_p, seed, stop_at_end):
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
            pos = tf.where(i == 0, 0, T0 + i - 1)  # slot of tokens[:, 0]; row b's position is slot - pad[b]
            logits, present = model.step(tokens, cache, pos, pad)  # [B, V], [L, 2, B, H, T, D]
            # Write the new keys/values into slots pos .. pos + T - 1.
            present = tf.pad(present, [[0, 0], [0, 0], [0, 0], [0, 0], [pos, S - pos - T], [0, 0]])  # [L, 2, B, H, S, D]
            slots = tf.range(S)
            slot = tf.reshape(tf.logical_and(slots >= pos, slots < pos + T), [1, 1, 1, 1, -1, 1])  # [1, 1, 1, 1, S, 1]
            cache = tf.where(slot, present, cache)  # [L, 2, B, H, S, D]
            new = choose_tokens(logits, temperature, top_k, top_p, tf.stack([seed[0], seed[1] + i]), row_ids)  # [B]
            new = tf.where(done, EOT_ID, new)  # finished rows only pad
            done = tf.logical_or(done, tf.logical_and(stop_at_end, tf.equal(new, EOT_ID)))
            # The step count goes through the reporter, so the call is part of the loop's data
            # flow and never pruned.
            steps = tf.py_function(reporter, [i + 1], tf.int32)
            steps.set_shape([])
            return steps, new[:, None], cache, done, out.write(i, new)

        # The cache is allocated full size, so only the tokens fed in change shape (the
        # prompt, then one per row) and the loop compiles once.
        start = (tf.constant(0), context, cache, done, out)
        invariants = (tf.TensorShape([]), tf.TensorShape([None, None]), cache.shape, tf.TensorShape([None]), tf.TensorShape(None))
        n, _, _, _, out = tf.while_loop(cond, body, start, shape_invariants=invariants)
        return tf.reshape(tf.transpose(out.gather(tf.range(n))), [B, n])  # [B, n]

    model.generation = GenerationLoop(generate, reporter)
    return generate


def _prompts(context) -> List[List[int]]:
    """`context` as a list of prompts: one list of ids stays one prompt, a list of lists is several."""
    items = list(context)
    if items and all(isinstance(item, (list, tuple)) or hasattr(item, "tolist") and getattr(item, "ndim", 0) == 1
                     for item in items):
        return [[int(t) for t in item] for item in items]
    return [[int(t) for t in items]]


def header_length(tokens: Sequence[int], n_prompt: int, header_ids, limit: int) -> int:
    """How many leading tokens of a row a slide keeps: through the first token of `header_ids`
    (a token holding a newline: the end of `<<Artist - Title>>`) after the row's first token,
    or the row's prompt when no header line has ended yet; never more than `limit`."""
    end = n_prompt
    if header_ids:
        for j in range(1, min(len(tokens), limit)):
            if tokens[j] in header_ids:
                end = j + 1
                break
    return max(1, min(end, limit))


def generate(
    model,
    context,
    length: Optional[int] = None,
    batch_size: int = 1,
    temperature: float = 1.0,
    top_k: int = 40,
    top_p: float = 0.0,
    seed: Optional[int] = None,
    stop_at_end: bool = True,
    on_step: Optional[Callable[[int], None]] = None,
    window: str = "none",
    stride: Optional[int] = None,
    header_ids: Optional[frozenset] = None,
) -> List[List[int]]:
    """Continuations of `context`, each cut after its first 50256: `batch_size` rows per prompt.

    context: token ids (one prompt) or a list of prompts of any lengths; the rows come out
    prompt by prompt, `batch_size` each. The returned ids exclude the prompt and include
    the final 50256 when a song ended. `on_step(n)` is called after each step with the
    tokens each row has so far (progress). `window="slide"` lets `length` exceed the
    context (see the module's docstring); a slide keeps each row's header through its first
    token in `header_ids` (ids holding a newline; None: the row's prompt) and the latest
    tokens, and `stride` new tokens are written between slides.

    >>> generate(model, enc.encode("<<Lil Tofu"), length=20, seed=3)   # doctest: +SKIP
    [[532, 13328, ...]]
    """
    import numpy as np
    import tensorflow as tf

    prompts = _prompts(context)
    n_ctx = model.hparams.n_ctx
    longest = max(len(p) for p in prompts)
    if not all(prompts):
        check_sampling_args(0, length, n_ctx, temperature, top_k, top_p, batch_size, window)
    check_sampling_args(longest, length, n_ctx, temperature, top_k, top_p, batch_size, window)
    stride = check_stride(stride, n_ctx) if window == "slide" else None
    if seed is None:
        seed = random.randrange(2**31)
    rows = [list(p) for p in prompts for _ in range(batch_size)]
    n_prompt = [len(p) for p in prompts for _ in range(batch_size)]
    # What each row may write: `length`, or (length=None) up to the end of its own context,
    # as its prompt alone would.
    budget = [length if length is not None else n_ctx - n for n in n_prompt]
    # Row r's random stream: how many earlier rows hold the same prompt, so copies of a
    # prompt differ, and a prompt's rows are the same in any batch.
    seen: dict = {}
    row_ids = np.zeros(len(rows), np.int32)  # [B]
    for r, row in enumerate(rows):
        row_ids[r] = seen.setdefault(tuple(row), 0)
        seen[tuple(row)] += 1
    fn = _generation_function(model)
    written = [[] for _ in rows]
    finished = [False] * len(rows)
    # A pass feeds the rows still writing until the fullest one's context is full (or the
    # budgets are spent). Then a full row slides (window="slide") or, without a window, is
    # finished: each row slides or stops exactly where it would alone. Every row fed has
    # written as many tokens as the others, so one stream offset serves them all.
    while True:
        fed = [b for b in range(len(rows)) if not finished[b]]
        if not fed:
            break
        width = max(len(rows[b]) for b in fed)
        chunk = min(max(budget[b] - len(written[b]) for b in fed), n_ctx - width)
        pad = np.array([width - len(rows[b]) for b in fed], np.int32)  # [F]
        padded = np.array([[0] * int(p) + rows[b] for p, b in zip(pad, fed)], np.int32)  # [F, width]; filler id 0, never seen
        offset = len(written[fed[0]])
        model.generation.reporter.callback = None if on_step is None else (lambda n: on_step(offset + n))
        try:
            new = fn(tf.constant(padded), tf.constant(pad), tf.constant(row_ids[fed]), tf.constant(np.zeros(len(fed), bool)),
                     tf.constant(chunk, tf.int32), tf.constant(temperature, tf.float32),
                     tf.constant(top_k, tf.int32), tf.constant(top_p, tf.float32),
                     tf.constant([seed % 2**31, offset], tf.int32), tf.constant(bool(stop_at_end))).numpy()  # [F, n]
        finally:
            model.generation.reporter.callback = None
        for b, row in zip(fed, new.tolist()):
            row = row[: budget[b] - len(written[b])]  # a smaller budget than the pass's is cut here
            written[b] += row
            rows[b] += row
            if len(written[b]) >= budget[b] or (stop_at_end and EOT_ID in row) or new.shape[1] < chunk:
                finished[b] = True
            elif len(rows[b]) >= n_ctx:
                if window != "slide":
                    finished[b] = True
                    continue
                # Slide: the row keeps its header and its latest tokens, n_ctx - stride in all.
                keep = n_ctx - stride
                head = header_length(rows[b], n_prompt[b], header_ids, keep // 2)
                rows[b] = rows[b][:head] + rows[b][len(rows[b]) - (keep - head):]
    out = []
    for row in written:
        if stop_at_end and EOT_ID in row:
            row = row[: row.index(EOT_ID) + 1]
        out.append(row)
    return out


def check_stride(stride: Optional[int], n_ctx: int) -> int:
    """`--stride` for a model's context: None -> n_ctx // 4; at most n_ctx // 2 (half the context is kept)."""
    if stride is None:
        return max(1, n_ctx // 4)
    positive_int("--stride", stride)
    if stride > n_ctx // 2:
        raise RapgenError(f"--stride {stride} would drop more than half of the model's context of {n_ctx} tokens "
                          f"at each slide: use --stride {n_ctx // 2} or less (default {max(1, n_ctx // 4)})")
    return stride


def check_sampling_options(length, temperature, top_k, top_p, batch_size, nsamples=1, seed=None, precision="float32",
                           window="none", stride=None):
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
    one_of("--window", window, WINDOWS)
    if window == "slide" and length is None:
        raise RapgenError("--window slide writes past the context as far as --length: give --length N (e.g. --length 3000)")
    if stride is not None:
        positive_int("--stride", stride)
        if window != "slide":
            raise RapgenError(f"--stride {stride} only matters with --window slide: add --window slide or drop --stride")


def check_sampling_args(n_prompt, length, n_ctx, temperature, top_k, top_p, batch_size, window="none"):
    """The checks once the model's context is known: the prompt fits, and so does `length` unless the window slides."""
    if n_prompt == 0:
        raise RapgenError("the prompt is empty: give --prefix TEXT or --artist NAME")
    if n_prompt >= n_ctx:
        raise RapgenError(f"the prompt is {n_prompt} tokens, the model's context only {n_ctx}: shorten it")
    check_sampling_options(length, temperature, top_k, top_p, batch_size, window=window)
    if length is not None and window != "slide" and n_prompt + length > n_ctx:
        raise RapgenError(
            f"prompt ({n_prompt} tokens) + length ({length}) exceeds the model's context of {n_ctx} "
            f"tokens: use --length {n_ctx - n_prompt} or less, or --window slide to write on past the context"
        )
    if window == "slide" and n_prompt > n_ctx // 2:
        raise RapgenError(f"the prompt is {n_prompt} tokens, over half the model's context of {n_ctx}: "
                          f"a sliding window keeps at most {n_ctx // 2} of them; shorten it")
