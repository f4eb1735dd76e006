"""`load_model`: a model name, model folder or run folder -> a `GPT2` with its weights.

The top of the model package: it finds the folder and checkpoint (`rapgen.model.folders`),
reads a full checkpoint there, or a LoRA run's base with its adapters merged in once
(`rapgen.model.lora_run`), and builds the network. Neither of those imports this module.

>>> model = load_model("models/124M")                        # doctest: +SKIP
>>> model = load_model("checkpoints/run1", checkpoint="latest")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Optional

from rapgen.model.checkpoint import verify_checkpoint
from rapgen.model.folders import choose_checkpoint, read_weights, resolve_model_dir
from rapgen.model.hparams import HParams
from rapgen.model.lora_run import is_lora_run, lora_run_weights


def load_model(
    model: Optional[str] = None,
    models_dir: str = "models",
    checkpoint: Optional[str] = None,
    compute_dtype="float32",
    variable_dtype="float32",
):
    """A `GPT2` with weights from a model name, model directory or run directory.

    `checkpoint` (`choose_checkpoint`): None takes a run's `model-best` when it has one, else the
    newest; "latest" the newest; or a prefix (e.g. `checkpoints/run1/model-500`).
    `variable_dtype` bfloat16/float16 keeps the weights in that type (for sampling only).
    A LoRA run folder (`rapgen.model.lora_run`) loads as its base model (found under models_dir or
    where it was, its checksum verified) with the adapters merged in once.
    """
    from rapgen.model.gpt2 import GPT2  # TensorFlow: `rapgen.load_model` is looked up without it

    model_dir = resolve_model_dir(model, models_dir)
    prefix = choose_checkpoint(model_dir, checkpoint)
    verify_checkpoint(prefix)  # before hparams and the network are built
    hparams = HParams.load(model_dir)
    if is_lora_run(os.path.dirname(prefix)):
        weights = lora_run_weights(os.path.dirname(prefix), prefix, hparams, models_dir)
    else:
        weights = read_weights(prefix, hparams)
    gpt = GPT2(hparams, compute_dtype=compute_dtype, weights=weights, variable_dtype=variable_dtype)
    gpt.model_dir, gpt.checkpoint = model_dir, prefix
    return gpt
