"""Where a LoRA training run starts: its base model, its recorded rank, and the sources it refuses.

Training's side of the LoRA run folder (`rapgen.model.lora_run`): a new run records the base it
trains on in lora.json; a resumed one keeps its verified base and its adapters, and its rank
(`recorded_rank`), which `rapgen.finetune.config` holds a resumed run to.

>>> prefix, info, values = training_base(cfg, "models/355M", None)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import numpy as np

from rapgen.errors import RapgenError
from rapgen.model.folders import check_model_dir
from rapgen.model.hparams import DEFAULT_MODEL
from rapgen.model.lora_run import base_info, ensure_base, is_lora_run, read_adapters, read_info

if TYPE_CHECKING:  # for the annotation only: rapgen.finetune.config imports this module
    from rapgen.finetune.config import TrainConfig


def training_base(
    cfg: TrainConfig, source_dir: str, resume: Optional[str]
) -> Tuple[str, dict, Optional[Dict[str, np.ndarray]]]:
    """(base checkpoint prefix, lora.json's record, adapter values or None) for a LoRA run of `cfg`.

    A resumed LoRA run keeps its recorded base (verified) and adapters; a new one records its base.
    """
    if resume is not None:
        run_dir = os.path.dirname(resume)
        if not is_lora_run(run_dir):
            raise RapgenError(
                f"--lora_rank {cfg.lora_rank} cannot continue {resume}, a full checkpoint: start a LoRA run "
                f"from it with --model {run_dir} --restore_from fresh and a new --run_name"
            )
        info = read_info(run_dir)
        # A new Colab session resuming from Drive: a released base is fetched, as a new run's is.
        adapters = read_adapters(resume, flag="--restore_from")  # before a base is fetched for it
        return ensure_base(run_dir, cfg.models_dir, quiet=cfg.quiet), info, adapters
    refuse_lora_source(source_dir)
    base_prefix = check_model_dir(source_dir)
    return (
        base_prefix,
        base_info(cfg.model or DEFAULT_MODEL, base_prefix, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets),
        None,
    )


def refuse_lora_source(source_dir: str) -> None:
    """A new run does not start from a LoRA run folder (its checkpoint holds adapters, not a model)."""
    if is_lora_run(source_dir):
        raise RapgenError(
            f"--model {source_dir} is a LoRA run: fold it into a full model first with "
            f"`rapgen merge {source_dir} OUT`, then train on --model OUT"
        )


def recorded_rank(resume: Optional[str]) -> Optional[int]:
    """The LoRA rank a resumed checkpoint was trained with (0: full fine-tuning); None for a new run."""
    if resume is None:
        return None
    folder = os.path.dirname(resume)
    return int(read_info(folder)["rank"]) if is_lora_run(folder) else 0
