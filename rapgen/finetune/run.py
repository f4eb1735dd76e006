"""Run folders: where a run resumes from, and how it saves, rotates, mirrors and logs.

`checkpoints/<run_name>/` is a model directory plus `model-<step>` checkpoints (the newest
`max_checkpoints` kept; a new one is complete before an old one goes), `model-best` (the
lowest validation loss so far, never pruned), `counter`, `train.json`, `log.csv`, `samples/`
and `tensorboard/`. With `--drive_dir` the folder is mirrored after each
save, and on resume the newer of the run and its mirror wins. Temp files of killed saves are
removed when a run starts and after each save.

>>> resume = restore_source(cfg, "checkpoints/run1")  # doctest: +SKIP
>>> save(trainer, "checkpoints/run1", cfg)  # doctest: +SKIP
'checkpoints/run1/model-100'
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import shutil
import time
from typing import Optional

from rapgen.errors import RapgenError
from rapgen.fileio import atomic_write_text, remove_dead_temps
from rapgen.model.hparams import MODEL_ALIASES, MODEL_SIZES, HParams
from rapgen.finetune.config import DEFAULT_MODEL, TrainConfig, say

def run_checkpoints(folder: str):
    """The run's own `model-<step>` checkpoint prefixes, oldest first (none for a missing folder).

    `model-best` is not one of them: it is never pruned, nor named by the `checkpoint` index.
    """
    from rapgen.model.checkpoint import list_checkpoints

    return [p for p in list_checkpoints(folder) if re.fullmatch(r"model-\d+", os.path.basename(p))] if os.path.isdir(folder) else []


def restore_source(cfg: TrainConfig, run_dir: str):
    """The checkpoint prefix to resume from, or None; checked whole before any heavy work.

    With a Drive mirror, the newer of the local run and the mirror wins (by step): a mirror
    that trained further (on another machine) is copied in first, and said so.
    """
    from rapgen.model.folders import latest_checkpoint
    from rapgen.model.checkpoint import step_of, verify_checkpoint
    from rapgen.finetune.mirror import mirror

    local = latest_checkpoint(run_dir) if os.path.isdir(run_dir) else None
    remote_dir = os.path.join(cfg.drive_dir, cfg.run_name) if cfg.drive_dir else None
    if cfg.restore_from == "latest":
        remote = latest_checkpoint(remote_dir) if remote_dir and os.path.isdir(remote_dir) else None
        if remote and (local is None or step_of(remote) > step_of(local)):
            # A partial Drive sync is not copied over a complete local run.
            verify_checkpoint(remote, flag="--restore_from", also_in=[run_dir])
            if local:
                say(cfg, f"the mirror {remote_dir} is at step {step_of(remote)}, newer than {run_dir} at step "
                         f"{step_of(local)}: copying it in from the mirror")
            else:
                say(cfg, f"restoring {cfg.run_name} from the mirror {remote_dir}")
            mirror(remote_dir, run_dir, prune=False)
            local = latest_checkpoint(run_dir)
        if local:
            verify_checkpoint(local, flag="--restore_from", also_in=[remote_dir] if remote_dir else [])
        return local
    if cfg.restore_from == "fresh":
        # The mirror counts as the run too: a fresh start beside it would never be mirrored (a
        # newer mirror is never overwritten), and the next `latest` would resume the old run.
        remote = run_checkpoints(remote_dir) if remote_dir else []
        held = [where for where, found in ((run_dir, local), (f"the mirror {remote_dir}", remote)) if found]
        if held and not cfg.overwrite:
            raise RapgenError(
                f"{' and '.join(held)} already {'hold' if len(held) > 1 else 'holds'} checkpoints: use "
                f"--restore_from latest to continue it, another --run_name, or --overwrite True to start it again"
            )
        return None
    path = str(cfg.restore_from)
    if os.path.isdir(path):
        found = latest_checkpoint(path)
        if not found:
            raise RapgenError(f"--restore_from {path}: no checkpoint in that folder")
        return verify_checkpoint(found, flag="--restore_from")
    if os.path.exists(path + ".index"):
        return verify_checkpoint(path, flag="--restore_from")
    raise RapgenError(f"--restore_from must be latest, fresh, a checkpoint prefix or a folder; {path} is none of these")


def expected_hparams(model, models_dir) -> Optional[HParams]:
    """The hparams `--model` names (a folder's, or a released size's), or None when it names none."""
    if model is None:
        return None
    if os.path.isdir(str(model)):
        return HParams.load(str(model))
    if str(model) in MODEL_SIZES or str(model) in MODEL_ALIASES:
        local = os.path.join(models_dir, MODEL_ALIASES.get(str(model), str(model)))
        return HParams.load(local) if os.path.exists(os.path.join(local, "hparams.json")) else HParams.for_model(str(model))
    return None


def model_source(cfg: TrainConfig, run_dir: str, resume: Optional[str]):
    """(folder, hparams) of the model a run starts from: the resumed checkpoint's folder, or the
    base model (downloaded when it is a released size missing from models_dir).

    A resumed run whose --model names another shape is refused; a fresh run with --overwrite
    removes the old run folder here, after every check.
    """
    from rapgen.model.folders import check_model_dir, resolve_model_dir
    from rapgen.model.checkpoint import verify_checkpoint

    if resume is not None:
        source_dir = os.path.dirname(resume)
        hparams = HParams.load(source_dir)
        expected = expected_hparams(cfg.model, cfg.models_dir)
        if expected is not None and expected != hparams:
            raise RapgenError(
                f"{source_dir} holds a model with n_layer {hparams.n_layer}, n_embd {hparams.n_embd}, but --model "
                f"{cfg.model} has n_layer {expected.n_layer}, n_embd {expected.n_embd}: drop --model to continue the "
                f"run, or start a new --run_name"
            )
        return source_dir, hparams
    if cfg.restore_from == "fresh" and cfg.overwrite:
        if os.path.isdir(run_dir):
            say(cfg, f"--overwrite: removing the old run {run_dir}")
            shutil.rmtree(run_dir)
        remote_dir = os.path.join(cfg.drive_dir, cfg.run_name) if cfg.drive_dir else None
        if remote_dir and run_checkpoints(remote_dir):
            # Drive may hold the only copy of the old run (this machine may be new): it is
            # renamed, never deleted, and the new run mirrors into a clean folder.
            aside = f"{remote_dir}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
            os.rename(remote_dir, aside)
            say(cfg, f"--overwrite: the old mirror {remote_dir} is kept as {aside} (delete it to free Drive space)")
    # A released size missing from models_dir, or half downloaded, is downloaded (and said).
    source_dir = resolve_model_dir(cfg.model or DEFAULT_MODEL, cfg.models_dir, download=True, quiet=cfg.quiet)
    hparams = HParams.load(source_dir)
    verify_checkpoint(check_model_dir(source_dir), flag="--restore_from")  # before the data is encoded
    return source_dir, hparams


@dataclasses.dataclass
class BestSoFar:
    """The lowest validation loss so far, the step it was measured at, and the validations since
    without a lower one (what `--early_stop N` counts).

    Every checkpoint stores it as scalar tensors (`TENSORS`), so a resumed run compares and
    counts exactly as an uninterrupted one would have.

    >>> best = BestSoFar()
    >>> best.update(2.5, step=100), best.update(2.7, step=200), best.bad
    (True, False, 1)
    """

    val_loss: float = math.inf
    step: int = -1  # -1: no validation yet
    bad: int = 0

    TENSORS = ("rapgen/best_val_loss", "rapgen/best_step", "rapgen/bad_validations")

    def update(self, val_loss: float, step: int) -> bool:
        """Count one validation; True when it is a new best (strictly lower; NaN never is)."""
        if val_loss < self.val_loss:
            self.val_loss, self.step, self.bad = float(val_loss), int(step), 0
            return True
        self.bad += 1
        return False

    def tensors(self) -> dict:
        import tensorflow as tf

        # float64: the comparison after a resume must see the very number it saw before.
        return {"rapgen/best_val_loss": tf.constant(self.val_loss, tf.float64),
                "rapgen/best_step": tf.constant(self.step, tf.int64),
                "rapgen/bad_validations": tf.constant(self.bad, tf.int64)}

    @classmethod
    def read(cls, prefix: Optional[str], run_dir: str) -> "BestSoFar":
        """What checkpoint `prefix` recorded, when it is one of this run's own; else a fresh start
        (a new run, a checkpoint of another run, or one written before rapgen kept a best)."""
        if prefix is None or os.path.abspath(os.path.dirname(prefix)) != os.path.abspath(run_dir):
            return cls()
        import tensorflow as tf

        reader = tf.train.load_checkpoint(prefix)
        if not all(reader.has_tensor(name) for name in cls.TENSORS):
            return cls()
        return cls(val_loss=float(reader.get_tensor("rapgen/best_val_loss")),
                   step=int(reader.get_tensor("rapgen/best_step")),
                   bad=int(reader.get_tensor("rapgen/bad_validations")))


def save_best(trainer, run_dir: str, best: BestSoFar) -> str:
    """Write `model-best`: the trainer's weights (a LoRA run: its adapters), step and `best`.

    No optimizer slots: the best is for sampling and merging, and on Drive a 355M run's Adam
    state would triple its size. The new files are complete before the old best's go (as for
    every checkpoint, `write_checkpoint`); the Drive mirror takes it at the next `save`.
    """
    from rapgen.model.folders import BEST
    from rapgen.model.checkpoint import write_checkpoint

    if getattr(trainer, "lora_info", None):
        # As in `save`: a LoRA checkpoint is never in the folder without the lora.json naming its base.
        atomic_write_text(os.path.join(run_dir, "lora.json"), json.dumps(trainer.lora_info, indent=2) + "\n")
    slots = set(trainer.optimizer.slots)
    tensors = {name: value for name, value in trainer.state_tensors().items() if name not in slots}
    tensors.update(best.tensors())
    prefix = os.path.join(run_dir, BEST)
    write_checkpoint(prefix, tensors)
    return prefix


def save(trainer, run_dir: str, cfg: TrainConfig, best: Optional[BestSoFar] = None) -> str:
    """Write `model-<step>` of a `rapgen.finetune.step.Trainer` (with `best`, the early-stopping state),
    keep the newest max_checkpoints (never `model-best`), record counter and train.json, mirror
    to drive_dir; returns the new checkpoint's prefix."""
    from rapgen.model.checkpoint import write_checkpoint, write_checkpoint_index
    from rapgen.finetune.mirror import MirrorIsNewer, mirror

    prefix = os.path.join(run_dir, f"model-{trainer.step}")
    if getattr(trainer, "lora_info", None):
        # A LoRA run's checkpoints hold adapters only: lora.json (names the base) comes first,
        # so no adapter checkpoint is ever in the folder without it.
        atomic_write_text(os.path.join(run_dir, "lora.json"), json.dumps(trainer.lora_info, indent=2) + "\n")
    tensors = trainer.state_tensors()
    tensors.update((best or BestSoFar()).tensors())
    write_checkpoint(prefix, tensors)
    kept = run_checkpoints(run_dir)
    for old in kept[:-cfg.max_checkpoints]:
        for suffix in (".index", ".data-00000-of-00001"):
            if os.path.exists(old + suffix):
                os.unlink(old + suffix)
    kept = kept[-cfg.max_checkpoints:]
    write_checkpoint_index(run_dir, kept)
    atomic_write_text(os.path.join(run_dir, "counter"), f"{trainer.step}\n")
    atomic_write_text(os.path.join(run_dir, "train.json"), json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    if cfg.drive_dir:
        try:
            mirror(run_dir, os.path.join(cfg.drive_dir, cfg.run_name))
        except OSError as e:
            # The local checkpoint is complete; losing the mirror once must not stop training.
            say(cfg, f"warning: could not mirror to {cfg.drive_dir} ({e.strerror or e}); the next save tries again")
        except MirrorIsNewer as e:
            # Another machine trained this run further: keep both, the user chooses.
            say(cfg, f"warning: {e}")
    clear_dead_temps(cfg, run_dir)
    return prefix


def clear_dead_temps(cfg: TrainConfig, run_dir: str) -> None:
    """Delete what killed writers left in the run folder (a checkpoint's size each), saying so."""
    removed = remove_dead_temps(run_dir) if os.path.isdir(run_dir) else []
    if removed:
        say(cfg, f"removed {len(removed)} temp file(s) of a killed save from {run_dir}")


class RunLog:
    """log.csv in the run folder; rows past the resumed step (lost with the kill) are dropped."""

    # sample_*: figures of the samples written at that step (rapgen.judge.rhyme, rapgen.judge.originality):
    # a longest copied span that grows as the loss falls is the model memorising its data.
    # best: 1 where the validation loss was a new lowest and model-best was written.
    FIELDS = ["step", "loss", "avg_loss", "val_loss", "learning_rate", "tokens_per_sec", "time",
              "sample_rhyme_density", "sample_copied_tokens", "best"]

    def __init__(self, path, resume_step):
        self.path = path
        rows = []
        if os.path.exists(path):
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        buf = [",".join(self.FIELDS)] + [",".join(r.get(k, "") or "" for k in self.FIELDS) for r in rows]
        atomic_write_text(path, "\n".join(buf) + "\n")
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)

    def write(self, **row):
        self.writer.writerow([row.get(k, "") for k in self.FIELDS])
        self.file.flush()

    def close(self):
        self.file.close()
