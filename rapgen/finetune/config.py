"""Training settings: `TrainConfig`, every option of `rapgen train`, and its checks.

`TrainConfig` is stored as `train.json` with each checkpoint of a run (rapgen.finetune.run);
`check` refuses a bad value before anything is loaded, and normalises what it checks
(`lora_targets` becomes a tuple). `say` is the one way training modules print (quiet-aware).
No TensorFlow here: a mistake in `rapgen train`'s flags is one line, at once.

>>> cfg = TrainConfig(dataset="data/sample_lyrics.txt", steps=50)
>>> cfg.check()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from rapgen.checks import (
    between,
    check_output_folder,
    known_name,
    non_negative_int,
    one_of,
    positive_int,
    positive_number,
    true_false,
    true_false_auto,
    zero_or_positive_int,
)
from rapgen.data.dataset import expand_paths
from rapgen.devices import DISTRIBUTE_CHOICES, check_mixed_precision
from rapgen.errors import RapgenError
from rapgen.finetune.memory import OPTIMIZERS
from rapgen.model.lora import LORA_TARGETS, lora_target_names

DEFAULT_LORA_TARGETS = ",".join(LORA_TARGETS)  # as --lora_targets spells them, and `--help` shows


@dataclasses.dataclass
class TrainConfig:
    """Every training setting; stored as `train.json` with each checkpoint of a run.

    Names follow nshepperd/gpt-2's train.py and gpt-2-simple's finetune() where they exist.
    """

    dataset: str = ""
    model: Optional[str] = None  # name or directory; a new run defaults to 355M, a resumed one to itself
    models_dir: str = "models"
    run_name: str = "run1"
    checkpoint_dir: str = "checkpoints"
    steps: int = -1  # the step to reach; -1 trains until interrupted (Ctrl-C saves)
    batch_size: int = 1
    learning_rate: float = 1e-4  # gpt-2-simple's Adam default; fine for 124M/355M fine-tuning
    warmup_steps: int = 10  # linear warm-up from 0, then constant
    accumulate_gradients: int = 1  # micro-batches averaged into one update
    # "auto": the fastest choice whose estimated peak fits the device (rapgen.finetune.memory), said at the start
    optimizer: str = "auto"  # auto | adam | adafactor | sgd
    recompute: object = "auto"  # auto | True | False: gradient checkpointing per block, less memory, ~1/3 more compute
    only_train_transformer_layers: object = "auto"  # auto | True | False: freeze wte, wpe, ln_f
    memory_gb: Optional[float] = None  # the budget for "auto" (GiB); default: the GPU's memory, or free RAM
    mixed_precision: str = "auto"  # auto | off | float16 | bfloat16; auto: what the device does fast (rapgen.devices)
    distribute: str = "auto"  # auto | off | mirrored | tpu; auto: every GPU, or the Colab TPU
    # Compile the train step with XLA (jit_compile). Off by default: on a 2-core AVX2 CPU
    # (bench/bench_xla.py) it was 1.17x faster at the 124M shape in the quietest run but slower
    # at the tiny shape and in a loaded run, it compiles longer, and it takes one replica only.
    # bench/gpu_check.py measures it on a GPU.
    xla: bool = False
    # LoRA: the base weights frozen, rank-R adapters trained in float32 and merged for sampling
    # (rapgen.model.lora); the run folder then stores only the adapters and names its base model.
    lora_rank: object = "auto"  # auto | 0 (full fine-tuning) | R; auto: LoRA only where full fine-tuning does not fit
    lora_alpha: Optional[float] = None  # the adapters' update is scaled by alpha / rank; None: alpha = rank
    # The projections that get adapters (both c_proj: attention and MLP); a tuple once checked.
    lora_targets: object = DEFAULT_LORA_TARGETS
    sequence_length: Optional[int] = None  # window length; defaults to n_ctx
    val_fraction: float = 0.05  # whole songs held out for validation
    val_dataset: Optional[str] = None  # or a separate validation file
    val_every: int = 100
    val_batches: int = 8  # validation windows, batch_size at a time
    early_stop: int = 0  # stop after this many validations without a new best (0: never); model-best is kept anyway
    sample_every: int = 100
    sample_length: int = 200
    sample_num: int = 1
    save_every: int = 100
    max_checkpoints: int = 1  # a new checkpoint is complete before the old one goes
    print_every: int = 10
    tensorboard: bool = True  # TensorFlow summary event files in the run folder (loss, val_loss, samples…)
    restore_from: str = "latest"  # latest | fresh | a checkpoint prefix or model directory
    seed: int = 0
    drive_dir: Optional[str] = None  # mirror the run folder here (Google Drive on Colab)
    encoding: str = "utf-8"
    overwrite: bool = False  # with restore_from=fresh, allow replacing a run's checkpoints
    quiet: bool = False

    def check(self):
        """Refuse a bad value (a RapgenError naming the flag) before anything is loaded or downloaded."""
        if not self.dataset:
            raise RapgenError("--dataset is required: a lyrics .txt, a folder, a glob or an .npz from `rapgen encode`")
        if not isinstance(self.steps, int) or self.steps == 0 or self.steps < -1:  # this flag's own rule
            raise RapgenError(
                f"--steps must be a positive step to reach, or -1 to train until interrupted; got {self.steps!r}"
            )
        for name in ("batch_size", "accumulate_gradients", "val_batches", "sample_num", "max_checkpoints"):
            positive_int(f"--{name}", getattr(self, name))
        for name in ("save_every", "val_every", "sample_every", "print_every", "sample_length", "warmup_steps"):
            zero_or_positive_int(f"--{name}", getattr(self, name))
        non_negative_int("--seed", self.seed)
        between("--val_fraction", self.val_fraction, 0, 1, hi_included=False)
        positive_number("--learning_rate", self.learning_rate)
        check_mixed_precision(self.mixed_precision)
        known_name(
            "--optimizer", self.optimizer, ("auto",) + OPTIMIZERS
        )  # the list rapgen.finetune.memory and rapgen.finetune.optim name too
        for name in ("recompute", "only_train_transformer_layers"):
            true_false_auto(f"--{name}", getattr(self, name))
        if self.memory_gb is not None:
            positive_number("--memory_gb", self.memory_gb, unit="GiB")
        # A bool only: the command line has already turned its words into one, and "no" kept
        # as text would read as true further on.
        true_false("--xla", self.xla, words=False)
        one_of("--distribute", self.distribute, DISTRIBUTE_CHOICES)
        if self.lora_rank != "auto":
            zero_or_positive_int("--lora_rank", self.lora_rank)
        if self.lora_alpha is not None:
            positive_number("--lora_alpha", self.lora_alpha)
        self.lora_targets = lora_target_names(self.lora_targets)  # train.json holds it as a list
        zero_or_positive_int("--early_stop", self.early_stop)
        if self.early_stop and not self.val_every:
            raise RapgenError("--early_stop counts validations, but --val_every 0 turns them off: give --val_every N")
        if self.early_stop and not self.val_fraction and self.val_dataset is None:
            raise RapgenError("--early_stop needs validation data: give --val_fraction (e.g. 0.05) or --val_dataset")
        true_false("--tensorboard", self.tensorboard, words=False)
        if not str(self.run_name) or "/" in str(self.run_name) or str(self.run_name) in (".", ".."):
            raise RapgenError(f"--run_name must be a plain folder name, got {self.run_name!r}")
        # Paths last: a missing dataset or a file where a folder belongs is found before any
        # download or load, not after.
        for name in ("checkpoint_dir", "drive_dir", "models_dir"):
            if getattr(self, name) is not None:
                check_output_folder(getattr(self, name), f"--{name}")
        run_dir = os.path.join(str(self.checkpoint_dir), str(self.run_name))
        if os.path.exists(run_dir) and not os.path.isdir(run_dir):
            raise RapgenError(f"the run folder {run_dir} is a file: choose another --run_name")
        expand_paths(self.dataset)
        if self.val_dataset is not None:
            expand_paths(self.val_dataset)


def say(cfg, message):
    """Print `message` above the progress bar, unless the run is quiet."""
    if not cfg.quiet:
        from tqdm.auto import tqdm  # not at the top: a mistake in `rapgen train`'s flags imports no tqdm

        tqdm.write(message)
