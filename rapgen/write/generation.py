"""The compiled generation loop: prompts in, continuations out, one token per step.

One `tf.function` per model (kept in its `generation` field) runs the prompts once into a
fixed-size key/value cache, then feeds one token per step until every row has ended its song
(`<|endoftext|>`) or written `length`. Several prompts share a batch, left-padded, each row with
its own positions and random stream, so a row writes what its prompt writes alone with the same
seed. `window="slide"` writes past the context: a full row keeps its header line and latest
tokens and forgets the middle (a chorus from earlier verses is gone unless it was recent).

`generate` checks its arguments once, at the edge; `generate_checked` and the loop trust them.

>>> generate(model, [50256] + enc.encode("<<Lil Tofu"), length=20, seed=3)   # doctest: +SKIP
[[532, 13328, ...]]
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, List, Optional, Sequence

import numpy as np

from rapgen.checks import between, non_negative_int, non_negative_number, one_of, positive_int, zero_or_positive_int
from rapgen.errors import RapgenError
from rapgen.model.hparams import EOT_ID

PRECISIONS = ("float32", "bfloat16", "float16")
WINDOWS = ("none", "slide")


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """How rows are written, checked against the model's context: what the loop is given.

    `generate` builds one from its arguments; `sample` from its `SamplingOptions`, once per model.
    """

    length: Optional[int] = None  # new tokens at most per row; None: up to the end of each row's context
    temperature: float = 1.0
    top_k: int = 40
    top_p: float = 0.0
    stop_at_end: bool = True
    window: str = "none"
    stride: Optional[int] = None  # with window="slide", new tokens between slides (checked); else None
    header_ids: Optional[frozenset] = None  # a slide keeps a row through its first of these (None: its prompt)


@dataclasses.dataclass
class _Row:
    """One row of a batch as `generate_checked` writes it."""

    tokens: List[int]  # what the model reads next: the prompt and what follows, after a slide the header and the latest
    n_prompt: int  # its prompt's length
    budget: int  # new tokens it may write
    stream: int  # its random stream: how many earlier rows hold the same prompt
    written: List[int] = dataclasses.field(default_factory=list)  # its new tokens so far
    finished: bool = False


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
    # Here, not at the top: `rapgen sample`'s argument errors import this module and never load TensorFlow.
    import tensorflow as tf

    from rapgen.write.logits import choose_tokens  # TensorFlow at its top

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
        ],
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
            present = tf.pad(
                present, [[0, 0], [0, 0], [0, 0], [0, 0], [pos, S - pos - T], [0, 0]]
            )  # [L, 2, B, H, S, D]
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
        invariants = (
            tf.TensorShape([]),
            tf.TensorShape([None, None]),
            cache.shape,
            tf.TensorShape([None]),
            tf.TensorShape(None),
        )
        n, _, _, _, out = tf.while_loop(cond, body, start, shape_invariants=invariants)
        return tf.reshape(tf.transpose(out.gather(tf.range(n))), [B, n])  # [B, n]

    model.generation = GenerationLoop(generate, reporter)
    return generate


def _prompts(context) -> List[List[int]]:
    """`context` as a list of prompts: one list of ids stays one prompt, a list of lists is several."""
    items = list(context)
    if items and all(
        isinstance(item, (list, tuple)) or hasattr(item, "tolist") and getattr(item, "ndim", 0) == 1 for item in items
    ):
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
    prompts = _prompts(context)
    n_ctx = model.hparams.n_ctx
    longest = max(len(p) for p in prompts)
    # The one check of a direct call: the prompts (an empty one first), the values, then the fit.
    check_prompt(longest if all(prompts) else 0, n_ctx)
    check_sampling_options(length, temperature, top_k, top_p, batch_size, window=window)
    check_length(longest, length, n_ctx, window)
    settings = GenerationSettings(
        length,
        temperature,
        top_k,
        top_p,
        stop_at_end,
        window,
        check_stride(stride, n_ctx) if window == "slide" else None,
        header_ids,
    )
    return generate_checked(
        model, prompts, settings, batch_size, random.randrange(2**31) if seed is None else seed, on_step
    )


def generate_checked(
    model,
    prompts: List[List[int]],
    settings: GenerationSettings,
    batch_size: int,
    seed: int,
    on_step: Optional[Callable[[int], None]] = None,
) -> List[List[int]]:
    """`generate` for values already checked (`check_prompt`, `check_sampling_options`, `check_length`)."""
    import tensorflow as tf  # here, as in _generation_function: no TensorFlow for `rapgen sample`'s mistakes

    n_ctx = model.hparams.n_ctx
    length = settings.length
    # Row r's random stream: how many earlier rows hold the same prompt, so copies of a
    # prompt differ, and a prompt's rows are the same in any batch. What a row may write:
    # `length`, or (length=None) up to the end of its own context, as its prompt alone would.
    rows, seen = [], {}
    for prompt in prompts:
        for _ in range(batch_size):
            stream = seen.setdefault(tuple(prompt), 0)
            seen[tuple(prompt)] += 1
            rows.append(_Row(list(prompt), len(prompt), length if length is not None else n_ctx - len(prompt), stream))
    fn = _generation_function(model)
    # A pass feeds the rows still writing until the fullest one's context is full (or the
    # budgets are spent). Then a full row slides (window="slide") or, without a window, is
    # finished: each row slides or stops exactly where it would alone. Every row fed has
    # written as many tokens as the others, so one stream offset serves them all.
    while True:
        fed = [row for row in rows if not row.finished]
        if not fed:
            break
        width = max(len(row.tokens) for row in fed)
        chunk = min(max(row.budget - len(row.written) for row in fed), n_ctx - width)
        pad = np.array([width - len(row.tokens) for row in fed], np.int32)  # [F]
        padded = np.array(
            [[0] * int(p) + row.tokens for p, row in zip(pad, fed)], np.int32
        )  # [F, width]; filler id 0, never seen
        streams = np.array([row.stream for row in fed], np.int32)  # [F]
        offset = len(fed[0].written)
        model.generation.reporter.callback = None if on_step is None else (lambda n, offset=offset: on_step(offset + n))
        try:
            new = fn(
                tf.constant(padded),
                tf.constant(pad),
                tf.constant(streams),
                tf.constant(np.zeros(len(fed), bool)),
                tf.constant(chunk, tf.int32),
                tf.constant(settings.temperature, tf.float32),
                tf.constant(settings.top_k, tf.int32),
                tf.constant(settings.top_p, tf.float32),
                tf.constant([seed % 2**31, offset], tf.int32),
                tf.constant(bool(settings.stop_at_end)),
            ).numpy()  # [F, n]
        finally:
            model.generation.reporter.callback = None
        for row, tokens in zip(fed, new.tolist()):
            _take(row, tokens, new.shape[1] < chunk, settings, n_ctx)
    out = []
    for row in rows:
        written = row.written
        if settings.stop_at_end and EOT_ID in written:
            written = written[: written.index(EOT_ID) + 1]
        out.append(written)
    return out


def _take(row: _Row, tokens: List[int], loop_ended_early: bool, settings: GenerationSettings, n_ctx: int) -> None:
    """Add a pass's new tokens to `row`; finish it, or slide it when its context is full (window="slide")."""
    tokens = tokens[: row.budget - len(row.written)]  # a smaller budget than the pass's is cut here
    row.written += tokens
    row.tokens += tokens
    if len(row.written) >= row.budget or (settings.stop_at_end and EOT_ID in tokens) or loop_ended_early:
        row.finished = True
    elif len(row.tokens) >= n_ctx:
        if settings.window != "slide":
            row.finished = True
            return
        # Slide: the row keeps its header and its latest tokens, n_ctx - stride in all.
        keep = n_ctx - settings.stride
        head = header_length(row.tokens, row.n_prompt, settings.header_ids, keep // 2)
        row.tokens = row.tokens[:head] + row.tokens[len(row.tokens) - (keep - head) :]


# -- checks: each made once, where a value comes in ------------------------------------------


def check_stride(stride: Optional[int], n_ctx: int) -> int:
    """`--stride` for a model's context: None -> n_ctx // 4; at most n_ctx // 2 (half the context is kept)."""
    if stride is None:
        return max(1, n_ctx // 4)
    positive_int("--stride", stride)
    if stride > n_ctx // 2:
        raise RapgenError(
            f"--stride {stride} would drop more than half of the model's context of {n_ctx} tokens "
            f"at each slide: use --stride {n_ctx // 2} or less (default {max(1, n_ctx // 4)})"
        )
    return stride


def check_sampling_options(
    length,
    temperature,
    top_k,
    top_p,
    batch_size,
    nsamples=1,
    seed=None,
    precision="float32",
    window="none",
    stride=None,
):
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
        raise RapgenError(
            "--window slide writes past the context as far as --length: give --length N (e.g. --length 3000)"
        )
    if stride is not None:
        positive_int("--stride", stride)
        if window != "slide":
            raise RapgenError(
                f"--stride {stride} only matters with --window slide: add --window slide or drop --stride"
            )


def check_prompt(n_prompt: int, n_ctx: int) -> None:
    """A prompt of `n_prompt` tokens is not empty and leaves room in the model's context."""
    if n_prompt == 0:
        raise RapgenError("the prompt is empty: give --prefix TEXT or --artist NAME")
    if n_prompt >= n_ctx:
        raise RapgenError(f"the prompt is {n_prompt} tokens, the model's context only {n_ctx}: shorten it")


def check_length(n_prompt: int, length: Optional[int], n_ctx: int, window: str) -> None:
    """The prompt plus `length` fits the context, unless the window slides (then the prompt fits in half of it)."""
    if length is not None and window != "slide" and n_prompt + length > n_ctx:
        raise RapgenError(
            f"prompt ({n_prompt} tokens) + length ({length}) exceeds the model's context of {n_ctx} "
            f"tokens: use --length {n_ctx - n_prompt} or less, or --window slide to write on past the context"
        )
    if window == "slide" and n_prompt > n_ctx // 2:
        raise RapgenError(
            f"the prompt is {n_prompt} tokens, over half the model's context of {n_ctx}: "
            f"a sliding window keeps at most {n_ctx // 2} of them; shorten it"
        )
