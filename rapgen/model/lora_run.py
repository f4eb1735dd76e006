"""A LoRA run folder: its `lora.json`, its base model found and verified, its adapters, and `rapgen merge`.

A LoRA run stores only the adapters (`lora/h0/attn/c_attn/A`, `.../B`, their optimizer slots,
the step) and `lora.json`, which names the base model (as given, the folder it was found in,
its checkpoint and a SHA-256 of that checkpoint's data file) and rank / alpha / targets.
Loading one (`rapgen.model.loading`) finds the base, checks the checksum and merges once
(`rapgen.model.lora.merged_weights`); `merge` writes the merged model as a full folder.

>>> merge("checkpoints/lora1", "models/lora1-merged")   # `rapgen merge RUN OUT`  # doctest: +SKIP
'models/lora1-merged'
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Dict, Optional

import numpy as np

from rapgen.checks import check_checkpoint, check_output_folder
from rapgen.errors import RapgenError
from rapgen.model import checkpoint as ckpt
from rapgen.model.folders import choice_note, choose_checkpoint, copy_model_files, read_weights, resolve_model_dir
from rapgen.model.hparams import MODEL_ALIASES, MODEL_SIZES, HParams, canonical_model_name
from rapgen.model.lora import LORA_TARGETS, PREFIX, lora_target_names, merged_weights

LORA_FILE = "lora.json"


def is_lora_run(folder: str) -> bool:
    """Whether `folder` is a LoRA run (it has a lora.json)."""
    return os.path.isfile(os.path.join(str(folder), LORA_FILE))


def read_info(folder: str) -> dict:
    """lora.json of a LoRA run folder, checked."""
    path = os.path.join(folder, LORA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        int(info["rank"]), float(info["alpha"]), list(info["targets"]), str(info["base_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RapgenError(
            f"{path} is damaged ({e.__class__.__name__}): copy it again from the run's Drive mirror"
        ) from None
    return info


def checksum(path: str) -> str:
    """SHA-256 of a file, hex (read 8 MiB at a time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def base_info(base_model: str, base_prefix: str, rank: int, alpha: Optional[float], targets=LORA_TARGETS) -> dict:
    """What lora.json records for a new LoRA run on the checkpoint `base_prefix` of `base_model`."""
    return {
        "base_model": str(base_model),
        "base_dir": os.path.abspath(os.path.dirname(base_prefix)),
        "base_checkpoint": os.path.basename(base_prefix),
        "base_sha256": checksum(base_prefix + ckpt.DATA_SUFFIX),
        "rank": int(rank),
        "alpha": float(rank if alpha is None else alpha),
        "targets": list(lora_target_names(targets)),
    }


def find_base(run_dir: str, info: dict, models_dir: str = "models") -> str:
    """The base checkpoint prefix of a LoRA run, its checksum verified; one-line errors otherwise.

    Looked for under models_dir (a released name), at the folder recorded, and at the name as a path.
    """
    given = str(info["base_model"])
    candidates = []
    if given in MODEL_SIZES or given in MODEL_ALIASES:
        candidates.append(os.path.join(models_dir, canonical_model_name(given)))
    candidates += [info.get("base_dir") or "", given]
    wrong = None
    for folder in dict.fromkeys(c for c in candidates if c and os.path.isdir(c)):
        prefix = os.path.join(folder, info.get("base_checkpoint") or "model.ckpt")
        if not os.path.isfile(prefix + ckpt.DATA_SUFFIX):
            continue
        if checksum(prefix + ckpt.DATA_SUFFIX) == info["base_sha256"]:
            return prefix
        wrong = prefix
    if wrong is not None:
        raise RapgenError(
            f"LoRA run {run_dir} was trained on other weights than {wrong} (its SHA-256 differs from the one "
            f"lora.json records): put the original base model {given} back there, or train the run again"
        )
    fix = (
        f"`rapgen download {given} --models_dir {models_dir}`"
        if given in MODEL_SIZES or given in MODEL_ALIASES
        else f"copy the base model folder back to {info.get('base_dir') or given}"
    )
    raise RapgenError(
        f"LoRA run {run_dir} needs its base model {given}, which is not in {models_dir}/ "
        f"nor at {info.get('base_dir') or given}: {fix} (or give --models_dir)"
    )


def ensure_base(run: str, models_dir: str = "models", quiet: bool = False) -> str:
    """The verified base checkpoint of LoRA run `run`, downloading a released base (a name such as
    355M) into models_dir first when neither models_dir nor the recorded folder holds it.

    For a new machine (a fresh Colab session) that has the run on Drive but not its base:
    `rapgen sample` itself never downloads, it names the `rapgen download` that fixes it.

    >>> ensure_base("/content/drive/MyDrive/rapgen/checkpoints/run1")   # doctest: +SKIP
    'models/355M/model.ckpt'
    """
    run = str(run)
    if not is_lora_run(run):
        raise RapgenError(f"{run} is not a LoRA run (it has no {LORA_FILE}): it needs no base model")
    info = read_info(run)
    given = str(info["base_model"])
    recorded = os.path.join(info.get("base_dir") or "", info.get("base_checkpoint") or "model.ckpt")
    if (given in MODEL_SIZES or given in MODEL_ALIASES) and not os.path.isfile(recorded + ckpt.DATA_SUFFIX):
        resolve_model_dir(given, models_dir, download=True, quiet=quiet)
    return find_base(run, info, models_dir)


def read_adapters(prefix: str, flag: str = "--checkpoint") -> Dict[str, np.ndarray]:
    """The `lora/...` tensors of a LoRA checkpoint, float32; a damaged one is the one-line error
    that names an older complete checkpoint to use with `flag`, as for a full checkpoint."""
    import tensorflow as tf  # TensorFlow: off the CLI's fast path

    ckpt.verify_checkpoint(prefix, flag)
    reader = tf.train.load_checkpoint(prefix)
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith(PREFIX) and n.endswith(("/A", "/B"))]
    if not names:
        raise RapgenError(
            f"checkpoint {prefix} holds no LoRA adapters, yet its folder has a lora.json: "
            f"it is damaged; copy the run again from its Drive mirror"
        )
    adapters = {}
    for name in names:
        try:
            adapters[name] = reader.get_tensor(name).astype(np.float32)
        except (tf.errors.OpError, IndexError):
            # Right size, wrong bytes: each tensor's checksum is checked as it is read.
            problem = f"{prefix + ckpt.DATA_SUFFIX} does not hold what its index records ({name} fails its checksum)"
            raise ckpt.damaged_checkpoint_error(prefix, problem, flag) from None
    return adapters


def lora_run_weights(run_dir: str, prefix: str, hparams: HParams, models_dir: str = "models") -> Dict[str, np.ndarray]:
    """The merged float32 GPT-2 weights of a LoRA run's checkpoint `prefix` (base found and verified)."""
    info = read_info(run_dir)
    base_prefix = find_base(run_dir, info, models_dir)
    base_hparams = HParams.load(os.path.dirname(base_prefix))
    if base_hparams != hparams:
        raise RapgenError(
            f"the base model {base_prefix} has another shape than LoRA run {run_dir}'s hparams.json: "
            f"copy hparams.json from the base model into the run folder"
        )
    adapters = read_adapters(prefix)
    return merged_weights(read_weights(base_prefix, hparams), adapters, info["alpha"] / info["rank"])


def merge(run: str, out: str, models_dir: str = "models", checkpoint: Optional[str] = None) -> str:
    """`rapgen merge RUN OUT`: the LoRA run folded into a full model folder in OpenAI's format.

    OUT gets model.ckpt (float32, OpenAI's variable names), a `checkpoint` index with a
    relative path, hparams.json and the vocabulary: gpt-2-simple and nshepperd/gpt-2 load it.
    Never overwrites a model. checkpoint: as for sampling (`rapgen.model.folders.choose_checkpoint`):
    the run's model-best when it has one, else the newest; "latest", "best" or a prefix.

    >>> merge("checkpoints/lora1", "models/lora1-merged")   # doctest: +SKIP
    'models/lora1-merged'
    """
    run, out = str(run), check_output_folder(out, "OUT")
    if not os.path.isdir(run):
        raise RapgenError(f"RUN {run} is not a folder: give a LoRA run folder such as checkpoints/run1")
    if not is_lora_run(run):
        raise RapgenError(
            f"RUN {run} is not a LoRA run (it has no {LORA_FILE}): it is a full model folder already, "
            f"every rapgen command and other GPT-2 tools take it as it is"
        )
    if os.path.isdir(out) and (os.path.exists(os.path.join(out, "checkpoint")) or ckpt.list_checkpoints(out)):
        raise RapgenError(f"OUT {out} already holds a model: choose another folder (nothing was overwritten)")
    if os.path.abspath(out) == os.path.abspath(run):
        raise RapgenError("OUT must be another folder than RUN")
    check_checkpoint(checkpoint)
    prefix = choose_checkpoint(run, checkpoint)
    ckpt.verify_checkpoint(prefix)
    note = choice_note(run, checkpoint, prefix)
    if note:
        print(note, file=sys.stderr)  # stdout is OUT's path
    hparams = HParams.load(run)
    weights = lora_run_weights(run, prefix, hparams, models_dir)
    os.makedirs(out, exist_ok=True)
    copy_model_files(run, out, hparams)
    target = os.path.join(out, "model.ckpt")
    ckpt.write_checkpoint(target, weights)
    ckpt.write_checkpoint_index(out, [target])
    return out
