"""Writing lyrics: logit filters (top-k, top-p, temperature) and the compiled generation loop.

Generation is one `tf.function`: the prompt runs through the model once, its keys and
values fill a fixed-size cache, and a `tf.while_loop` then feeds one token per step,
reading the cache instead of re-running the sequence. A row stops at `<|endoftext|>`
(the end of a song); the loop ends when every row has stopped or `length` is reached.

Context: the model never sees a position beyond n_ctx. A prompt plus `length` over n_ctx
is an error that says the largest length that fits (rapgen does not slide a window: a
song that forgets its own start is not what users asked for). `length=None` means "up to
the end of the context", which the end of the song usually cuts short.

>>> songs = sample(model="models/124M", artist="Yung Lean", nsamples=2, seed=1)   # doctest: +SKIP
"""

from __future__ import annotations

import random
import sys
from typing import Callable, List, Optional, Sequence

from .errors import RapgenError
from .hparams import EOT_ID
from .lyrics import prompt_for

NEG_INF = -1e10  # a large finite negative: masked logits never turn into NaN


# -- logit filters (pure functions, tested with fake logits) --------------------------


def top_k_logits(logits, k):
    """Keep the k largest logits of each row; k = 0 keeps all. logits: float32 [B, V]."""
    import tensorflow as tf

    k = tf.convert_to_tensor(k, tf.int32)

    def keep_top_k():
        # A k beyond the vocabulary keeps every token (top_k would fail on it).
        kth = tf.math.top_k(logits, k=tf.minimum(k, tf.shape(logits)[-1])).values[:, -1:]  # [B, 1]
        return tf.where(logits < kth, NEG_INF, logits)  # [B, V]

    return tf.cond(k > 0, keep_top_k, lambda: logits)


def top_p_logits(logits, p):
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches p.

    p <= 0 or p >= 1 keeps all. logits: float32 [B, V].
    """
    import tensorflow as tf

    p = tf.convert_to_tensor(p, tf.float32)

    def keep_nucleus():
        sorted_logits = tf.sort(logits, direction="DESCENDING", axis=-1)  # [B, V]
        probs = tf.nn.softmax(sorted_logits, axis=-1)  # [B, V]
        before = tf.cumsum(probs, axis=-1, exclusive=True)  # [B, V] mass of the more likely tokens
        # Token i is needed while the mass before it is still short of p; the first always is.
        n_keep = tf.maximum(tf.reduce_sum(tf.cast(before < p, tf.int32), axis=-1), 1)  # [B]
        threshold = tf.gather(sorted_logits, n_keep - 1, batch_dims=1)[:, None]  # [B, 1]
        return tf.where(logits < threshold, NEG_INF, logits)  # [B, V]

    return tf.cond(tf.logical_and(p > 0.0, p < 1.0), keep_nucleus, lambda: logits)


def choose_tokens(logits, temperature, top_k, top_p, seed):
    """One token per row from float32 logits [B, V]; temperature 0 is greedy. Returns int32 [B]."""
    import tensorflow as tf

    temperature = tf.convert_to_tensor(temperature, tf.float32)

    def draw():
        filtered = top_p_logits(top_k_logits(logits / temperature, top_k), top_p)
        return tf.random.stateless_categorical(filtered, 1, seed=seed, dtype=tf.int32)[:, 0]

    return tf.cond(temperature > 0.0, draw, lambda: tf.argmax(logits, axis=-1, output_type=tf.int32))


# -- the generation loop --------------------------------------------------------------


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


def _generation_function(model):
    """The compiled loop for one model, built once and kept on the model (no retracing per call)."""
    import tensorflow as tf

    if getattr(model, "_generate", None) is not None:
        return model._generate
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
            logits, present = model.forward(tokens, past=cache, past_length=pos, last_only=True)  # [B, V], [L, 2, B, H, T, D]
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

    model._generate, model._generate_reporter = generate, reporter
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
    model._generate_reporter.callback = on_step
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
        model._generate_reporter.callback = None
    rows = []
    for row in tokens.tolist():
        if stop_at_end and EOT_ID in row:
            row = row[: row.index(EOT_ID) + 1]
        rows.append(row)
    return rows


def check_sampling_options(length, temperature, top_k, top_p, batch_size, nsamples=1, seed=None, precision="float32"):
    """The checks that need no model: `sample` and `interactive` make them before loading one."""
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length <= 0):
        raise RapgenError(f"--length must be a positive number of tokens, got {length!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise RapgenError(f"--top_k must be 0 (off) or a positive integer, got {top_k!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise RapgenError(f"--temperature must be >= 0 (0 = always the most likely token), got {temperature!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 <= top_p <= 1:
        raise RapgenError(f"--top_p must be between 0 and 1 (0 or 1 = off), got {top_p!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise RapgenError(f"--batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(nsamples, bool) or not isinstance(nsamples, int) or nsamples <= 0:
        raise RapgenError(f"--nsamples must be a positive integer, got {nsamples!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise RapgenError(f"--seed must be a non-negative integer, got {seed!r}")
    if precision not in PRECISIONS:
        raise RapgenError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


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


# -- what the command line and notebooks call -----------------------------------------

_LOADED = {}


PRECISIONS = ("float32", "bfloat16", "float16")


def _cached_model(model, models_dir, checkpoint, precision="float32"):
    """Load a model once per (directory, checkpoint, precision); notebooks call `sample` many times."""
    from .checkpoints import check_model_dir, load_model, resolve_model_dir
    from .encoder import load_encoder
    from .options import check_checkpoint

    if precision not in PRECISIONS:
        raise RapgenError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    check_checkpoint(checkpoint)
    model_dir = resolve_model_dir(model, models_dir)
    prefix = checkpoint or check_model_dir(model_dir)
    key = (model_dir, prefix, precision)
    if key not in _LOADED:
        _LOADED.clear()  # keep one model in memory
        # Reduced precision stores the weights in that type too: generation is bound by
        # reading every weight once per token, so half the bytes is the point.
        gpt = load_model(model_dir, checkpoint=prefix, compute_dtype=precision, variable_dtype=precision)
        _LOADED[key] = (gpt, load_encoder(model_dir))
    return _LOADED[key]


def build_prompt(prefix: Optional[str], artist: Optional[str]) -> Optional[str]:
    """`--artist NAME` -> `<<NAME`; `--prefix` as given; neither -> None (start a new song)."""
    if artist is not None:
        artist = str(artist).strip()
        if not artist:
            raise RapgenError("--artist is empty: give a name, e.g. --artist 'Yung Lean'")
        return prompt_for(artist) + (str(prefix) if prefix else "")
    if prefix is None:
        return None
    if not str(prefix).strip():
        raise RapgenError("the prompt is empty: give --prefix TEXT or --artist NAME (e.g. --artist 'Yung Lean')")
    return str(prefix)


def sample(
    model: Optional[str] = None,
    models_dir: str = "models",
    prefix: Optional[str] = None,
    artist: Optional[str] = None,
    length: Optional[int] = None,
    nsamples: int = 1,
    batch_size: int = 1,
    top_k: int = 40,
    top_p: float = 0.0,
    temperature: float = 1.0,
    seed: Optional[int] = None,
    include_prefix: bool = True,
    stop_at_end: bool = True,
    checkpoint: Optional[str] = None,
    quiet: bool = False,
    save_to: Optional[str] = None,
    precision: str = "float32",
    best_of: Optional[int] = None,
    rank: str = "both",
    dataset: Optional[str] = None,
    phonetics: str = "auto",
) -> List[str]:
    """Write `nsamples` songs and return them (printing each unless quiet).

    `--artist "Yung Lean"` prompts with `<<Yung Lean`, so a fine-tuned model writes a title
    and a song in that artist's style; `--prefix` gives any text; with neither, the model
    starts a song of its own choosing. Defaults are the seed's: top_k 40, temperature 1,
    top_p off. temperature 0 always takes the most likely token. The same seed gives the
    same text. A song ends at `<|endoftext|>` unless `--stop_at_end False`. `--save_to FILE`
    appends the songs to FILE in the lyrics format (Drive in the notebooks). `--precision
    bfloat16` (or float16, on a GPU) keeps the weights in half the bytes: faster where the
    hardware multiplies that type natively, slightly different text for the same seed.
    `--best_of N` writes N songs for each one asked for and keeps the best by `--rank`
    (rhyme, original, both, likely; rapgen.bestof), printing the scores; `original` and `both`
    compare with `--dataset` (default: the run's training set).

    >>> sample(model="checkpoints/run1", artist="Lil Tofu", length=100, seed=7)   # doctest: +SKIP
    """
    # Every value is checked before the model loads, and --save_to before the songs are written.
    check_sampling_options(length, temperature, top_k, top_p, batch_size, nsamples, seed, precision)
    if save_to:
        from .options import check_output_file

        check_output_file(save_to, "--save_to")
    prompt = build_prompt(prefix, artist)
    if best_of is not None:
        from . import bestof

        bestof.check(best_of, rank)
    gpt, enc = _cached_model(model, models_dir, checkpoint, precision)
    judge = None if best_of is None else bestof.make_judge(gpt.model_dir, rank, dataset, phonetics, enc)
    wanted, nsamples = nsamples, nsamples * (best_of or 1)
    # Training data puts 50256 before every song, so a prompt after it reads as a song's start.
    context = [EOT_ID] + ([] if prompt is None else enc.encode(prompt))
    texts = []
    rng = random.Random(seed)
    while len(texts) < nsamples:
        rows_wanted = min(batch_size, nsamples - len(texts))
        bar = _progress_bar(length or gpt.hparams.n_ctx - len(context), quiet,
                            f"song {len(texts) + 1}" + (f"-{len(texts) + rows_wanted}" if rows_wanted > 1 else "") + f" of {nsamples}")
        try:
            rows = generate(
                gpt, context, length, batch_size=rows_wanted, temperature=temperature,
                top_k=top_k, top_p=top_p, seed=rng.randrange(2**31), stop_at_end=stop_at_end,
                on_step=None if bar is None else (lambda n: bar.update(n - bar.n)),
            )
        finally:
            if bar is not None:
                bar.close()
        for row in rows:
            if row and row[-1] == EOT_ID:
                row = row[:-1]
            text = enc.decode(row)
            if include_prefix and prompt is not None:
                text = prompt + text
            texts.append(text)
            if not quiet and judge is None:
                print("=" * 20 + f" SAMPLE {len(texts)} " + "=" * 20)
                print(text)
    if judge is not None:
        texts = bestof.choose(texts, best_of, rank, judge, gpt, enc, quiet)[:wanted]
    if save_to:
        _append_songs(save_to, texts)
    return texts


def _progress_bar(total: int, quiet: bool, label: str):
    """A tokens bar on stderr while a song is written, where stderr is a terminal; None elsewhere,
    so notebooks' saved output and redirected logs stay clean."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="tok", desc=label, leave=False, file=sys.stderr, dynamic_ncols=True)


def _append_songs(path: str, texts: List[str]) -> None:
    """Append songs to a lyrics file, each followed by the separator line."""
    import os

    from .lyrics import SEPARATOR

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for text in texts:
            f.write(text.strip("\n") + "\n" + SEPARATOR + "\n")


def interactive(
    model: Optional[str] = None,
    models_dir: str = "models",
    length: Optional[int] = None,
    nsamples: int = 1,
    batch_size: int = 1,
    top_k: int = 40,
    top_p: float = 0.0,
    temperature: float = 1.0,
    seed: Optional[int] = None,
    stop_at_end: bool = True,
    checkpoint: Optional[str] = None,
    precision: str = "float32",
) -> None:
    """A prompt loop: type `<<Yung Lean` (or any text), get `nsamples` songs; Ctrl-D or Ctrl-C ends it."""
    check_sampling_options(length, temperature, top_k, top_p, batch_size, nsamples, seed, precision)
    gpt, _ = _cached_model(model, models_dir, checkpoint, precision)  # load before the first prompt
    n_ctx = gpt.hparams.n_ctx
    if length is not None and length > n_ctx - 2:
        # The shortest prompt is two tokens (the song separator and one typed token).
        raise RapgenError(f"--length {length} leaves no room for a prompt in the model's context of {n_ctx} tokens: "
                          f"use --length {n_ctx - 2} or less")
    rng = random.Random(seed)
    while True:
        try:
            text = input("Model prompt >>> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        except NotImplementedError:
            # A frontend without input (a notebook run headless by nbclient, papermill or
            # `jupyter nbconvert --execute`): IPython raises StdinNotImplementedError, a
            # NotImplementedError. Nobody can type a prompt there, so the loop ends.
            print("interactive: this frontend takes no typed input, so the prompt loop ends here "
                  "(run the notebook in Jupyter or Colab to type prompts, or call rapgen.sample)")
            return
        if not text.strip():
            print("Type a prompt, for example <<Yung Lean (Ctrl-D to quit)")
            continue
        try:
            sample(
                model=model, models_dir=models_dir, prefix=text, length=length, nsamples=nsamples,
                batch_size=batch_size, top_k=top_k, top_p=top_p, temperature=temperature,
                seed=rng.randrange(2**31), checkpoint=checkpoint, stop_at_end=stop_at_end, precision=precision,
            )
        except RapgenError as e:
            print(f"rapgen: {e}", file=sys.stderr)
