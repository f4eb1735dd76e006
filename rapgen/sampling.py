"""Writing songs from the command line and notebooks: `sample`, `interactive`, their options and the model cache.

The generation loop itself is `rapgen.generation` (re-exported here as `generate`); the
logit filters are `rapgen.logits`. `sample` and `interactive` share `SamplingOptions`: the
options both take, with one default each, checked in one place before a model loads.

Model cache: `sample` keeps the last model it loaded, so a notebook that samples many
times loads it once. The cache is keyed by the model folder, the checkpoint prefix, the
precision and the identity of the checkpoint's files on disk (inode, size and modification
time of its .index and data files and of hparams.json): a checkpoint rewritten in place
(a notebook that trains on and samples again) is loaded afresh by the next call.

>>> songs = sample(model="models/124M", artist="Yung Lean", nsamples=2, seed=1)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys
from typing import List, Optional

from .dataset import song_layout
from .errors import RapgenError
from .generation import check_sampling_options, generate  # noqa: F401  (generate: re-exported)
from .hparams import EOT_ID
from .lyrics import prompt_for


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
    checkpoint: Optional[str] = None  # a checkpoint prefix other than the newest
    precision: str = "float32"  # float32, bfloat16 or float16: the type of the weights

    @classmethod
    def from_arguments(cls, arguments: dict) -> "SamplingOptions":
        """The options picked out of a call's arguments (`locals()` at the top of `sample`), checked."""
        return cls(**{field.name: arguments[field.name] for field in dataclasses.fields(cls)}).check()

    def check(self) -> "SamplingOptions":
        """The checks that need no model, made before one loads; returns self."""
        from .rules import check_checkpoint

        check_sampling_options(self.length, self.temperature, self.top_k, self.top_p, self.batch_size,
                               self.nsamples, self.seed, self.precision)
        check_checkpoint(self.checkpoint)
        return self


# -- the model cache ----------------------------------------------------------------------

_LOADED = {}  # key (see _files_key) -> (GPT2, Encoder); one entry at most


def _files_key(model_dir: str, prefix: str):
    """What changes when a checkpoint is rewritten on disk: each file's inode, size and mtime."""
    key = []
    for path in (prefix + ".index", prefix + ".data-00000-of-00001", os.path.join(model_dir, "hparams.json")):
        try:
            st = os.stat(path)
            key.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            key.append(None)  # load_model names what is missing
    return tuple(key)


def _cached_model(options: SamplingOptions):
    """The model and encoder `options` name, loaded once while its checkpoint files stay the same."""
    from .checkpoints import check_model_dir, load_model, resolve_model_dir
    from .encoder import load_encoder

    model_dir = resolve_model_dir(options.model, options.models_dir)
    prefix = options.checkpoint or check_model_dir(model_dir)
    key = (os.path.abspath(model_dir), os.path.abspath(prefix), options.precision, _files_key(model_dir, prefix))
    if key not in _LOADED:
        _LOADED.clear()  # keep one model in memory
        # Reduced precision stores the weights in that type too: generation is bound by
        # reading every weight once per token, so half the bytes is the point.
        precision = options.precision
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
    options = SamplingOptions.from_arguments(locals())  # locals(): the arguments, nothing else yet
    if save_to:
        from .rules import check_output_file

        check_output_file(save_to, "--save_to")
    prompt = build_prompt(prefix, artist)
    if best_of is not None:
        from . import bestof

        bestof.check(best_of, rank)
    gpt, enc = _cached_model(options)
    judge = None if best_of is None else bestof.make_judge(gpt.model_dir, rank, dataset, phonetics, enc)
    wanted, nsamples = nsamples, nsamples * (best_of or 1)
    # Laid out as training data is, so the prompt reads as a song's start.
    context = song_layout([[] if prompt is None else enc.encode(prompt)], open_end=True).tolist()
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
    options = SamplingOptions.from_arguments(locals())  # locals(): the arguments, nothing else yet
    gpt, _ = _cached_model(options)  # load before the first prompt
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
            settings = dataclasses.asdict(dataclasses.replace(options, seed=rng.randrange(2**31)))
            sample(prefix=text, **settings)
        except RapgenError as e:
            print(f"rapgen: {e}", file=sys.stderr)
