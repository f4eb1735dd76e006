"""Writing songs: `sample` and `interactive`, and the `SamplingOptions` they share.

Both take the same options (`SamplingOptions`, one default each), check them once before a
model loads, then check the prompts against the model's context and hand the checked values to
the loop (rapgen.write.generation). The last model loaded stays in memory
(rapgen.write.model_cache).

>>> songs = sample(model="models/124M", artist="Yung Lean", nsamples=2, seed=1)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import random
import sys
from typing import List, Optional, Sequence, Union

from rapgen.checks import check_checkpoint, check_output_file
from rapgen.data.dataset import song_layout
from rapgen.data.lyrics import SEPARATOR, prompt_for
from rapgen.errors import RapgenError
from rapgen.model.hparams import EOT_ID
from rapgen.write import keep_best
from rapgen.write.generation import (
    GenerationSettings,
    check_length,
    check_prompt,
    check_sampling_options,
    check_stride,
    generate_checked,
)
from rapgen.write.model_cache import cached_model


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    """The options `sample` and `interactive` both take (their keyword signatures list them
    too, for the command line's --help; a test keeps the defaults equal).

    >>> SamplingOptions(model="checkpoints/run1", top_k=0, top_p=0.9).check()   # doctest: +SKIP
    """

    model: Optional[str] = None  # a model name (124M …) or folder; None: checkpoints/run1, else 355M
    models_dir: str = "models"  # where model names are looked up
    length: Optional[int] = None  # new tokens at most; None: up to the end of the context
    nsamples: int = 1  # songs to write
    batch_size: int = 1  # songs written side by side
    top_k: int = 40  # keep the k most likely tokens (0: off)
    top_p: float = 0.0  # keep the most likely tokens reaching this probability (0 or 1: off)
    temperature: float = 1.0  # 0: always the most likely token
    seed: Optional[int] = None  # the same seed gives the same songs
    stop_at_end: bool = True  # a song ends at <|endoftext|>
    checkpoint: Optional[str] = (
        None  # best, latest or a prefix; None: a run's model-best when it has one, else the newest
    )
    precision: str = "float32"  # float32, bfloat16 or float16: the type of the weights
    window: str = "none"  # slide: --length may exceed the context (header + latest tokens kept)
    stride: Optional[int] = None  # with --window slide, new tokens between slides; None: n_ctx // 4

    @classmethod
    def from_arguments(cls, arguments: dict) -> "SamplingOptions":
        """The options picked out of a call's arguments (`locals()` at the top of `sample`), checked."""
        return cls(**{field.name: arguments[field.name] for field in dataclasses.fields(cls)}).check()

    def check(self) -> "SamplingOptions":
        """The checks that need no model, made before one loads; returns self."""
        check_sampling_options(
            self.length,
            self.temperature,
            self.top_k,
            self.top_p,
            self.batch_size,
            self.nsamples,
            self.seed,
            self.precision,
            self.window,
            self.stride,
        )
        check_checkpoint(self.checkpoint)
        return self

    def generation_settings(self, n_ctx: int, enc) -> GenerationSettings:
        """What the loop is given for a model of context `n_ctx`: `--stride` checked against it
        (the other values were checked by `check`), the header's newline ids for a slide."""
        slide = self.window == "slide"
        return GenerationSettings(
            self.length,
            self.temperature,
            self.top_k,
            self.top_p,
            self.stop_at_end,
            self.window,
            check_stride(self.stride, n_ctx) if slide else None,
            newline_ids(enc) if slide else None,
        )


def artist_names(artist, known: Sequence[str] = ()) -> Optional[List[str]]:
    """`--artist` as a list of names: a comma list ("Yung Lean,Eminem"), a list or tuple (fire
    passes `--artist Eminem,Nas` as a tuple), or one name; None stays None. A text that is one
    of the `known` artists (a run's, as notebook 03 passes) stays whole, commas and all.

    >>> artist_names("Yung Lean, Eminem,MF DOOM")
    ['Yung Lean', 'Eminem', 'MF DOOM']
    >>> artist_names("Tyler, The Creator", known=["Tyler, The Creator"])
    ['Tyler, The Creator']
    """
    if artist is None:
        return None
    if isinstance(artist, str) and artist.strip().casefold() in {k.casefold() for k in known}:
        return [artist.strip()]
    # Otherwise a name with a comma in it needs the list form: --artist '["Tyler, The Creator"]'.
    names = [str(a) for a in artist] if isinstance(artist, (list, tuple)) else str(artist).split(",")
    names = [name.strip() for name in names]
    if not names or not all(names):
        raise RapgenError(
            f"--artist {artist!r} has an empty name: give names separated by commas, e.g. --artist 'Yung Lean,Eminem'"
        )
    return names


def build_prompts(prefix: Optional[str], artist) -> List[Optional[str]]:
    """One prompt per artist (`<<NAME` plus the prefix), or the one `build_prompt` gives."""
    names = artist_names(artist)
    if names is None or len(names) == 1:
        return [build_prompt(prefix, None if names is None else names[0])]
    return [build_prompt(prefix, name) for name in names]


def newline_ids(enc) -> frozenset:
    """The token ids whose text holds a newline: where a song's header line can end (a sliding window keeps it)."""
    return frozenset(i for i in range(enc.n_vocab) if b"\n" in enc.decode_bytes([i]))


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
    artist: Optional[Union[str, Sequence[str]]] = None,
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
    window: str = "none",
    stride: Optional[int] = None,
) -> List[str]:
    """Write `nsamples` songs and return them (printing each unless quiet).

    `--artist "Yung Lean"` prompts with `<<Yung Lean`, so a fine-tuned model writes a title
    and a song in that artist's style; `--artist "Yung Lean,Eminem,MF DOOM"` (or a list)
    writes `nsamples` songs for each, side by side in one batch, each the song its artist
    gets alone with the same seed; `--prefix` gives any text; with neither, the model
    starts a song of its own choosing. Defaults are the seed's: top_k 40, temperature 1,
    top_p off. temperature 0 always takes the most likely token. The same seed gives the
    same text. A song ends at `<|endoftext|>` unless `--stop_at_end False`. `--save_to FILE`
    appends the songs to FILE in the lyrics format (Drive in the notebooks). `--precision
    bfloat16` (or float16, on a GPU) keeps the weights in half the bytes: faster where the
    hardware multiplies that type natively, slightly different text for the same seed.
    `--best_of N` writes N songs for each one asked for and keeps the best by `--rank`
    (rhyme, original, both, likely; rapgen.write.keep_best), printing the scores; `original` and `both`
    compare with `--dataset` (default: the run's training set). `--window slide` lets
    `--length` exceed the model's context: the song's header line and latest tokens are kept
    (rapgen.write.generation says what the model then remembers), sliding every `--stride` tokens.

    >>> sample(model="checkpoints/run1", artist="Lil Tofu", length=100, seed=7)   # doctest: +SKIP
    """
    # Every value is checked once, before the model loads, and --save_to before the songs are written.
    options = SamplingOptions.from_arguments(locals())  # locals(): the arguments, nothing else yet
    if save_to:
        check_output_file(save_to, "--save_to")
    prompts = build_prompts(prefix, artist)
    if best_of is not None:
        keep_best.check(best_of, rank)
    gpt, enc = cached_model(options, quiet)
    # What needs the model's context, checked before --best_of builds its judge (an index it may write).
    contexts = _contexts(prompts, enc, options, gpt.hparams.n_ctx)
    settings = options.generation_settings(gpt.hparams.n_ctx, enc)
    judge = None if best_of is None else keep_best.make_judge(gpt.model_dir, rank, dataset, phonetics, enc)
    texts = _write_songs(
        gpt,
        enc,
        prompts,
        contexts,
        settings,
        options,
        nsamples * (best_of or 1),
        include_prefix,
        quiet,
        print_each=judge is None,
    )
    if judge is not None:
        texts = keep_best.choose(texts, best_of, rank, judge, gpt, enc, quiet)[: nsamples * len(prompts)]
    if save_to:
        _append_songs(save_to, texts)
    return texts


def _contexts(prompts: List[Optional[str]], enc, options: SamplingOptions, n_ctx: int) -> List[List[int]]:
    """The prompts' token ids, laid out as training data is (so each reads as a song's start), checked to fit."""
    contexts = [song_layout([[] if p is None else enc.encode(p)], open_end=True).tolist() for p in prompts]
    longest = max(len(c) for c in contexts)
    check_prompt(longest, n_ctx)
    check_length(longest, options.length, n_ctx, options.window)
    return contexts


def _write_songs(
    gpt,
    enc,
    prompts: List[Optional[str]],
    contexts: List[List[int]],
    settings: GenerationSettings,
    options: SamplingOptions,
    nsamples: int,
    include_prefix: bool,
    quiet: bool,
    print_each: bool,
) -> List[str]:
    """`nsamples` songs for each prompt, `options.batch_size` of each per batch (one batch holds every
    prompt), grouped by prompt; each is printed as its batch ends when `print_each` and not quiet."""
    songs: List[List[str]] = [[] for _ in prompts]  # per prompt, in order
    rng = random.Random(options.seed)
    printed = 0
    while len(songs[0]) < nsamples:
        rows_wanted = min(options.batch_size, nsamples - len(songs[0]))
        first = len(songs[0]) + 1
        label = (
            f"song {first}"
            + (f"-{first + rows_wanted - 1}" if rows_wanted > 1 else "")
            + f" of {nsamples}"
            + (f" for {len(prompts)} artists" if len(prompts) > 1 else "")
        )
        bar = _progress_bar(settings.length or gpt.hparams.n_ctx - max(len(c) for c in contexts), quiet, label)
        try:
            rows = generate_checked(
                gpt,
                contexts,
                settings,
                rows_wanted,
                rng.randrange(2**31),
                on_step=None if bar is None else (lambda n, bar=bar: bar.update(n - bar.n)),
            )
        finally:
            if bar is not None:
                bar.close()
        for r, row in enumerate(rows):
            if row and row[-1] == EOT_ID:
                row = row[:-1]
            text = enc.decode(row)
            prompt = prompts[r // rows_wanted]
            if include_prefix and prompt is not None:
                text = prompt + text
            songs[r // rows_wanted].append(text)
            if not quiet and print_each:
                printed += 1
                print("=" * 20 + f" SAMPLE {printed} " + "=" * 20)
                print(text)
    return [text for group in songs for text in group]


def _progress_bar(total: int, quiet: bool, label: str):
    """A tokens bar on stderr while a song is written, where stderr is a terminal; None elsewhere,
    so notebooks' saved output and redirected logs stay clean."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm  # here: the command line's mistakes import this module and never load tqdm (tests check)

    return tqdm(total=total, unit="tok", desc=label, leave=False, file=sys.stderr, dynamic_ncols=True)


def _append_songs(path: str, texts: List[str]) -> None:
    """Append songs to a lyrics file, each followed by the separator line."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for text in texts:
            f.write(text.strip("\n") + "\n" + SEPARATOR + "\n")


def _takes_sampling_options(function):
    """Give `function(*args, **options)` the signature of `SamplingOptions`'s fields, each with
    its default, so `--help`, `help()`, `rapgen.cli.binder.bind` and a notebook's tooltip list
    every option, and the options are written once (in the dataclass). The function binds
    its call to that signature, so a misspelled keyword is a TypeError as for any function.
    """
    function.__signature__ = inspect.Signature(
        [
            inspect.Parameter(
                field.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=field.default, annotation=field.type
            )
            for field in dataclasses.fields(SamplingOptions)
        ],
        return_annotation=None,
    )
    return function


@_takes_sampling_options
def interactive(*args, **kwargs) -> None:
    """A prompt loop: type `<<Yung Lean` (or any text), get `nsamples` songs; Ctrl-D or Ctrl-C ends it.

    Takes exactly the options of `SamplingOptions` (model, models_dir, length, nsamples,
    batch_size, top_k, top_p, temperature, seed, stop_at_end, checkpoint, precision, window,
    stride), each with its default there; `rapgen interactive --help` lists them.

    >>> interactive(model="checkpoints/run1", length=200, seed=1)   # doctest: +SKIP
    Model prompt >>> <<Yung Lean
    """
    bound = inspect.signature(interactive).bind(*args, **kwargs)  # TypeError for a name it lacks
    options = SamplingOptions(**bound.arguments).check()
    gpt, enc = cached_model(options)  # load before the first prompt
    n_ctx, length = gpt.hparams.n_ctx, options.length
    if length is not None and length > n_ctx - 2 and options.window != "slide":
        # The shortest prompt is two tokens (the song separator and one typed token).
        raise RapgenError(
            f"--length {length} leaves no room for a prompt in the model's context of {n_ctx} tokens: "
            f"use --length {n_ctx - 2} or less, or --window slide"
        )
    settings = options.generation_settings(n_ctx, enc)
    rng = random.Random(options.seed)
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
            print(
                "interactive: this frontend takes no typed input, so the prompt loop ends here "
                "(run the notebook in Jupyter or Colab to type prompts, or call rapgen.sample)"
            )
            return
        if not text.strip():
            print("Type a prompt, for example <<Yung Lean (Ctrl-D to quit)")
            continue
        try:
            gpt, enc = cached_model(options)  # the same model, unless its checkpoint was rewritten meanwhile
            contexts = _contexts([text], enc, options, gpt.hparams.n_ctx)
            _write_songs(
                gpt,
                enc,
                [text],
                contexts,
                settings,
                dataclasses.replace(options, seed=rng.randrange(2**31)),
                options.nsamples,
                include_prefix=True,
                quiet=False,
                print_each=True,
            )
        except RapgenError as e:
            print(f"rapgen: {e}", file=sys.stderr)
