"""Model directories: find, check, read, save and create them, in OpenAI's TF1 checkpoint format.

A model directory holds `hparams.json`, `encoder.json`, `vocab.bpe`, a `checkpoint` index
naming the newest checkpoint by a path relative to the folder, and that checkpoint's
`<prefix>.index` and `<prefix>.data-00000-of-00001`. OpenAI's release (`model.ckpt`), and
run folders of nshepperd/gpt-2, gpt-2-simple and rapgen (`model-<step>`) all qualify.

Loading one as a network is `rapgen.model.loading`'s, above this module and the LoRA run folder.

>>> choose_checkpoint("models/124M")                                    # doctest: +SKIP
'models/124M/model.ckpt'
>>> init("models/tiny", n_layer=2, n_embd=64, n_head=2, n_ctx=128)      # doctest: +SKIP
'models/tiny'
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Dict, List, Optional

import numpy as np

from rapgen.checks import check_output_folder, non_negative_int
from rapgen.errors import RapgenError
from rapgen.fileio import atomic_copy, atomic_write_text
from rapgen.model.checkpoint import (
    DATA_SUFFIX,
    damaged_checkpoint_error,
    list_checkpoints,
    verify_checkpoint,
    write_checkpoint,
    write_checkpoint_index,
)
from rapgen.model.download import download as fetch
from rapgen.model.encoder import load_encoder
from rapgen.model.hparams import (
    DEFAULT_MODEL,
    MODEL_ALIASES,
    MODEL_SIZES,
    HParams,
    canonical_model_name,
    variable_shapes,
)
from rapgen.model.release import needs_download

VOCAB_FILES = ("encoder.json", "vocab.bpe")


# -- finding a model ------------------------------------------------------------------


DEFAULT_RUN = os.path.join("checkpoints", "run1")


def resolve_model_dir(
    model: Optional[str] = None, models_dir: str = "models", download: bool = False, quiet: bool = False
) -> str:
    """A model name (looked up under models_dir) or a path -> an existing model directory.

    No model means the fine-tuned run `checkpoints/run1` when it exists (as in gpt-2-simple),
    else GPT-2 355M (DEFAULT_MODEL). A named model missing from models_dir (or left half-downloaded) is an
    error saying which `rapgen download` fetches it; with `download=True` it is downloaded
    instead (saying so unless quiet), as `train` does. Sampling, scoring and training all
    resolve models here.

    >>> resolve_model_dir("124M", models_dir="models", download=True)     # doctest: +SKIP
    'models/124M'
    """
    if model is None:
        has_run = os.path.isdir(DEFAULT_RUN) and latest_checkpoint(DEFAULT_RUN) is not None
        model = DEFAULT_RUN if has_run else DEFAULT_MODEL
    model = str(model)
    if os.path.isdir(model):
        return model
    if model in MODEL_SIZES or model in MODEL_ALIASES:
        path = os.path.join(models_dir, canonical_model_name(model))
        # An unfinished download (a killed or offline run) counts as missing.
        if download and needs_download(path):
            if not quiet:
                print(f"{model} is not (completely) in {models_dir}/: downloading it")
            fetch(model, models_dir=models_dir, quiet=quiet)
        if not os.path.isdir(path):
            raise RapgenError(
                f"model {model} is not in {models_dir}/: run `rapgen download {model} --models_dir {models_dir}` first"
            )
        if needs_download(path):
            raise RapgenError(
                f"{path} holds an unfinished download of {model}: run "
                f"`rapgen download {model} --models_dir {models_dir}` to finish it"
            )
        return path
    if os.sep in model or "/" in model or os.path.exists(model):
        raise RapgenError(f"model directory {model} does not exist (or is not a folder)")
    canonical_model_name(model)  # raises, listing the valid names
    return model  # not reached


def latest_checkpoint(model_dir: str) -> Optional[str]:
    """The checkpoint the `checkpoint` index names, else the newest complete one, else None.

    Only the file name of the indexed path is used: tools that wrote absolute paths or
    paths relative to their working directory still point into this folder.
    """
    index_file = os.path.join(model_dir, "checkpoint")
    if os.path.exists(index_file):
        with open(index_file, encoding="utf-8") as f:
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', f.read(), re.M)
        if match:
            name = re.split(r"[\\/]", match.group(1))[-1]
            prefix = os.path.join(model_dir, name)
            if os.path.exists(prefix + ".index") and os.path.exists(prefix + DATA_SUFFIX):
                return prefix
    found = list_checkpoints(model_dir)
    return found[-1] if found else None


BEST = "model-best"  # a run's checkpoint with the lowest validation loss so far (rapgen.finetune.run.Run.save_best)
CHECKPOINT_WORDS = ("best", "latest")  # what --checkpoint takes besides a prefix


def best_checkpoint(model_dir: str) -> Optional[str]:
    """The run's `model-best` prefix when both its files are there, else None."""
    prefix = os.path.join(model_dir, BEST)
    return prefix if os.path.exists(prefix + ".index") and os.path.exists(prefix + DATA_SUFFIX) else None


def choose_checkpoint(model_dir: str, checkpoint: Optional[str] = None) -> str:
    """The checkpoint prefix `--checkpoint` picks in a model or run folder (sampling, scoring, load_model).

    None: the run's `model-best` when it has one (the lowest validation loss), else the newest;
    "best": `model-best`, an error when the run has none; "latest": the newest `model-<step>`,
    the one the `checkpoint` index names (and gpt-2-simple and nshepperd/gpt-2 load); anything
    else: a checkpoint prefix, as given. The folder itself is checked first in every case.

    >>> choose_checkpoint("checkpoints/run1")                     # doctest: +SKIP
    'checkpoints/run1/model-best'
    >>> choose_checkpoint("checkpoints/run1", "latest")           # doctest: +SKIP
    'checkpoints/run1/model-400'
    """
    latest = check_model_dir(model_dir)
    if checkpoint is not None and checkpoint not in CHECKPOINT_WORDS:
        return str(checkpoint)
    if checkpoint == "latest":
        return latest
    best = best_checkpoint(model_dir)
    if best is None and checkpoint == "best":
        raise RapgenError(
            f"--checkpoint best: {model_dir} has no {BEST} (a run keeps one only when it validates, "
            f"--val_every N): use --checkpoint latest, or leave --checkpoint out"
        )
    return best or latest


def choice_note(model_dir: str, checkpoint: Optional[str], prefix: str) -> Optional[str]:
    """The line saying which checkpoint was used where it is not obvious: a run's model-best taken by default."""
    if checkpoint is None and os.path.basename(prefix) == BEST:
        return (
            f"using {prefix}, the run's lowest validation loss (--checkpoint latest takes "
            f"{latest_checkpoint(model_dir)}, the newest)"
        )
    return None


def check_model_dir(model_dir: str) -> str:
    """Raise a one-line error naming the first missing piece; return the checkpoint prefix."""
    if not os.path.isdir(model_dir):
        raise RapgenError(f"model directory {model_dir} does not exist")
    hint = "re-run `rapgen download` for it, or copy the file from the model it came from"
    for name in ("hparams.json",) + VOCAB_FILES:
        if not os.path.exists(os.path.join(model_dir, name)):
            raise RapgenError(f"{model_dir} is incomplete: {name} is missing ({hint})")
    prefix = latest_checkpoint(model_dir)
    if prefix is None:
        raise RapgenError(
            f"{model_dir} is incomplete: no checkpoint (model.ckpt.index + model.ckpt{DATA_SUFFIX}) found ({hint})"
        )
    return prefix


def read_weights(prefix: str, hparams: HParams, flag: str = "--checkpoint") -> Dict[str, np.ndarray]:
    """The GPT-2 variables of a checkpoint as float32 arrays, names and shapes checked against hparams."""
    import tensorflow as tf  # TensorFlow: off the CLI's fast path

    verify_checkpoint(prefix, flag)
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    weights = {}
    for name, shape in variable_shapes(hparams).items():
        if name not in shapes:
            raise RapgenError(f"checkpoint {prefix} has no variable {name}: it is not a GPT-2 model")
        if tuple(shapes[name]) != shape:
            raise RapgenError(
                f"hparams.json does not match checkpoint {prefix}: {name} is {list(shapes[name])} "
                f"there but {list(shape)} by hparams.json"
            )
        try:
            weights[name] = reader.get_tensor(name).astype(np.float32, copy=False)
        except (tf.errors.OpError, IndexError):
            # Right size, wrong bytes: each tensor's checksum is checked as it is read.
            problem = f"{prefix + DATA_SUFFIX} does not hold what its index records ({name} fails its checksum)"
            raise damaged_checkpoint_error(prefix, problem, flag) from None
    return weights


def save_model(
    model, model_dir: str, vocab_dir: str, step: Optional[int] = None, keep: Optional[List[str]] = None
) -> str:
    """Write a model directory (`model.ckpt`, or `model-<step>` when step is given); returns the prefix.

    `keep` lists older prefixes to keep naming in the `checkpoint` index.
    """
    os.makedirs(model_dir, exist_ok=True)
    copy_model_files(vocab_dir, model_dir, model.hparams)
    prefix = os.path.join(model_dir, "model.ckpt" if step is None else f"model-{step}")
    write_checkpoint(prefix, dict(model.variables_by_name))
    write_checkpoint_index(model_dir, list(keep or []) + [prefix])
    return prefix


def copy_model_files(src_dir: str, dst_dir: str, hparams: HParams) -> None:
    """Put hparams.json and the vocabulary in dst_dir (skipping files already identical)."""
    atomic_write_text(os.path.join(dst_dir, "hparams.json"), hparams.to_json())
    for name in VOCAB_FILES:
        src, dst = os.path.join(src_dir, name), os.path.join(dst_dir, name)
        if os.path.abspath(src) == os.path.abspath(dst):
            continue
        if not os.path.exists(src):
            raise RapgenError(f"{src} is missing: the vocabulary comes with every model (rapgen download 124M)")
        if os.path.exists(dst) and os.path.getsize(dst) == os.path.getsize(src):
            continue
        atomic_copy(src, dst)


def find_vocab_dir(vocab_dir: Optional[str] = None, models_dir: str = "models") -> str:
    """Where to take encoder.json and vocab.bpe from: the argument, $RAPGEN_VOCAB_DIR, or a downloaded model."""
    candidates = [vocab_dir] if vocab_dir else []
    if not vocab_dir:
        if os.environ.get("RAPGEN_VOCAB_DIR"):
            candidates.append(os.environ["RAPGEN_VOCAB_DIR"])
        candidates += sorted(glob.glob(os.path.join(glob.escape(models_dir), "*")))
    for folder in candidates:
        if all(os.path.exists(os.path.join(folder, f)) for f in VOCAB_FILES):
            return folder
    where = vocab_dir or f"$RAPGEN_VOCAB_DIR or {models_dir}/*"
    # No download hint: init and collect run offline, where the fix is a folder already on disk.
    raise RapgenError(
        f"no GPT-2 vocabulary (encoder.json, vocab.bpe) in {where}: pass --vocab_dir FOLDER or set RAPGEN_VOCAB_DIR "
        f"to a folder holding both files (any GPT-2 model folder does)"
    )


def init(
    model_dir: str,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_ctx: int = 128,
    n_vocab: int = 50257,
    seed: int = 0,
    vocab_dir: Optional[str] = None,
    models_dir: str = "models",
) -> str:
    """Write a randomly initialised model directory with the real GPT-2 vocabulary.

    For tests, tiny experiments and training from scratch. `rapgen init models/tiny
    --n_layer 2 --n_embd 64 --n_head 2 --n_ctx 128`; the 124M shape is
    `--n_layer 12 --n_embd 768 --n_head 12 --n_ctx 1024`. Never overwrites a model.
    """
    model_dir = check_output_folder(model_dir, "MODEL_DIR")
    if os.path.isdir(model_dir) and (
        os.path.exists(os.path.join(model_dir, "checkpoint")) or list_checkpoints(model_dir)
    ):
        raise RapgenError(f"{model_dir} already holds a model: choose another folder (nothing was overwritten)")
    non_negative_int("--seed", seed)
    hparams = HParams(n_vocab=n_vocab, n_ctx=n_ctx, n_embd=n_embd, n_head=n_head, n_layer=n_layer)
    source = find_vocab_dir(vocab_dir, models_dir)
    encoder = load_encoder(source)  # a damaged encoder.json or vocab.bpe is refused before anything is written
    if n_vocab < encoder.n_vocab:
        raise RapgenError(
            f"--n_vocab {n_vocab} is smaller than the vocabulary's {encoder.n_vocab} tokens: "
            f"use --n_vocab {encoder.n_vocab} (GPT-2's own) or more"
        )
    from rapgen.model.gpt2 import GPT2  # TensorFlow: only once every argument is known to be good

    save_model(GPT2(hparams, seed=seed), model_dir, source)
    return model_dir


def recorded_settings(model_dir: str) -> dict:
    """The settings a run folder's `train.json` recorded (rapgen.finetune writes it); {} for a plain
    model folder, or a train.json that cannot be read."""
    try:
        with open(os.path.join(model_dir, "train.json"), encoding="utf-8") as f:
            settings = json.load(f)
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}
