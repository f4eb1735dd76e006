"""The run folder: `Run` owns every file of `checkpoints/<run_name>/` and its Drive mirror.

A run folder is a model directory plus `model-<step>` checkpoints (the newest `max_checkpoints`
kept), `model-best` (the lowest validation loss so far), `counter`, `train.json` (the settings),
`lora.json` (a LoRA run: its base), `log.csv`, `samples/` and `tensorboard/`. Everything that
reads or writes one of these files asks `Run` (or, below this package, the model layer's
`rapgen.model.folders.recorded_settings`); `rapgen.finetune.mirror` copies, `Run` decides when.

>>> run = Run(cfg)  # doctest: +SKIP
>>> resume = run.resume_point()  # doctest: +SKIP
>>> run.save(trainer, best)  # doctest: +SKIP
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
from typing import Dict, Optional

from rapgen.errors import RapgenError
from rapgen.fileio import atomic_write_text, remove_dead_temps
from rapgen.finetune.config import TrainConfig, say
from rapgen.finetune.mirror import MirrorIsNewer, mirror
from rapgen.model.checkpoint import (
    list_checkpoints,
    step_of,
    verify_checkpoint,
    write_checkpoint,
    write_checkpoint_index,
)
from rapgen.model.folders import BEST, check_model_dir, latest_checkpoint, recorded_settings, resolve_model_dir
from rapgen.model.hparams import DEFAULT_MODEL, MODEL_ALIASES, MODEL_SIZES, HParams
from rapgen.model.lora import lora_target_names
from rapgen.model.lora_run import LORA_FILE

SETTINGS_FILE, LOG_FILE, COUNTER_FILE = "train.json", "log.csv", "counter"


def run_checkpoints(folder: str):
    """The run's own `model-<step>` checkpoint prefixes, oldest first (none for a missing folder).

    `model-best` is not one of them: it is never pruned, nor named by the `checkpoint` index.
    """
    return (
        [p for p in list_checkpoints(folder) if re.fullmatch(r"model-\d+", os.path.basename(p))]
        if os.path.isdir(folder)
        else []
    )


def read_counter(folder: str) -> Optional[int]:
    """The step in a folder's `counter` file (gpt-2-simple's: the step of its newest save); None without one."""
    path = os.path.join(folder, COUNTER_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except ValueError:
        return None


def expected_hparams(model, models_dir) -> Optional[HParams]:
    """The hparams `--model` names (a folder's, or a released size's), or None when it names none."""
    if model is None:
        return None
    if os.path.isdir(str(model)):
        return HParams.load(str(model))
    if str(model) in MODEL_SIZES or str(model) in MODEL_ALIASES:
        local = os.path.join(models_dir, MODEL_ALIASES.get(str(model), str(model)))
        return (
            HParams.load(local)
            if os.path.exists(os.path.join(local, "hparams.json"))
            else HParams.for_model(str(model))
        )
    return None


class Run:
    """The run folder of `cfg` (`checkpoint_dir/run_name`) and its mirror (`drive_dir/run_name`)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.dir = os.path.join(cfg.checkpoint_dir, cfg.run_name)
        self.mirror_dir = os.path.join(cfg.drive_dir, cfg.run_name) if cfg.drive_dir else None

    # -- what the folder holds ------------------------------------------------------------

    def checkpoints(self):
        """The run's own `model-<step>` checkpoints, oldest first."""
        return run_checkpoints(self.dir)

    def recorded_settings(self) -> dict:
        """What train.json recorded ({} before the first save), lora_targets as the tuple
        `TrainConfig.check` makes of it (JSON turns it into a list; older runs wrote "c_attn,c_proj,c_fc")."""
        settings = recorded_settings(self.dir)
        if "lora_targets" in settings:
            try:
                settings["lora_targets"] = lora_target_names(settings["lora_targets"])
            except RapgenError:
                pass  # tolerant, as the rest of a damaged train.json: the caller sees what is there
        return settings

    def resume_point(self) -> Optional[str]:
        """The checkpoint prefix to resume from, or None; checked whole before any heavy work.

        With a Drive mirror, the newer of the local run and the mirror wins (by step): a mirror
        that trained further (on another machine) is copied in first, and said so.
        """
        cfg, run_dir, remote_dir = self.cfg, self.dir, self.mirror_dir
        local = latest_checkpoint(run_dir) if os.path.isdir(run_dir) else None
        if cfg.restore_from == "latest":
            remote = latest_checkpoint(remote_dir) if remote_dir and os.path.isdir(remote_dir) else None
            if remote and (local is None or step_of(remote) > step_of(local)):
                # A partial Drive sync is not copied over a complete local run.
                verify_checkpoint(remote, flag="--restore_from", also_in=[run_dir])
                if local:
                    say(
                        cfg,
                        f"the mirror {remote_dir} is at step {step_of(remote)}, newer than {run_dir} at step "
                        f"{step_of(local)}: copying it in from the mirror",
                    )
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
        raise RapgenError(
            f"--restore_from must be latest, fresh, a checkpoint prefix or a folder; {path} is none of these"
        )

    def starting_model(self, resume: Optional[str]):
        """(folder, hparams) of the model the run starts from: the resumed checkpoint's folder, or the
        base model (downloaded, and said, when it is a released size missing from models_dir).

        A resumed run whose --model names another shape is refused.
        """
        cfg = self.cfg
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
        source_dir = resolve_model_dir(cfg.model or DEFAULT_MODEL, cfg.models_dir, download=True, quiet=cfg.quiet)
        hparams = HParams.load(source_dir)
        verify_checkpoint(check_model_dir(source_dir), flag="--restore_from")  # before the data is encoded
        return source_dir, hparams

    # -- starting ---------------------------------------------------------------------

    def clear_dead_temps(self) -> None:
        """Delete what killed writers left in the run folder (a checkpoint's size each), saying so."""
        removed = remove_dead_temps(self.dir) if os.path.isdir(self.dir) else []
        if removed:
            say(self.cfg, f"removed {len(removed)} temp file(s) of a killed save from {self.dir}")

    def delete_old_run(self) -> None:
        """--overwrite (after `resume_point` allowed it): delete the old run folder, and move the old
        mirror aside (renamed, never deleted: Drive may hold the only copy of the old run)."""
        if os.path.isdir(self.dir):
            say(self.cfg, f"--overwrite: removing the old run {self.dir}")
            shutil.rmtree(self.dir)
        if self.mirror_dir and run_checkpoints(self.mirror_dir):
            # The new run then mirrors into a clean folder.
            aside = f"{self.mirror_dir}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
            os.rename(self.mirror_dir, aside)
            say(
                self.cfg,
                f"--overwrite: the old mirror {self.mirror_dir} is kept as {aside} (delete it to free Drive space)",
            )

    def open_log(self, resume_step: int) -> "RunLog":
        """log.csv, cut back to `resume_step` and open for appending."""
        return RunLog(os.path.join(self.dir, LOG_FILE), resume_step)

    # -- saving -----------------------------------------------------------------------

    def write_lora_info(self, lora_info: Optional[dict]) -> None:
        """lora.json (what `rapgen.model.lora_run.base_info` records), for a LoRA run; nothing for a full one.

        Written before each checkpoint: a LoRA checkpoint holds adapters only and is never in
        the folder without the lora.json naming its base.
        """
        if lora_info:
            atomic_write_text(os.path.join(self.dir, LORA_FILE), json.dumps(lora_info, indent=2) + "\n")

    def save(self, trainer, best: Optional["BestSoFar"] = None, lora_info: Optional[dict] = None) -> str:
        """Write `model-<step>` of a `rapgen.finetune.step.Trainer` (with `best`, the early-stopping
        state), keep the newest max_checkpoints (never `model-best`), record counter and
        train.json, mirror to drive_dir; returns the new checkpoint's prefix."""
        cfg = self.cfg
        prefix = os.path.join(self.dir, f"model-{trainer.step}")
        self.write_lora_info(lora_info)
        tensors = trainer.state_tensors()
        tensors.update((best or BestSoFar()).tensors())
        write_checkpoint(prefix, tensors)
        kept = self.checkpoints()
        for old in kept[: -cfg.max_checkpoints]:
            for suffix in (".index", ".data-00000-of-00001"):
                if os.path.exists(old + suffix):
                    os.unlink(old + suffix)
        kept = kept[-cfg.max_checkpoints :]
        write_checkpoint_index(self.dir, kept)
        atomic_write_text(os.path.join(self.dir, COUNTER_FILE), f"{trainer.step}\n")
        atomic_write_text(os.path.join(self.dir, SETTINGS_FILE), json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        self.mirror()
        self.clear_dead_temps()
        return prefix

    def save_best(self, trainer, best: "BestSoFar", lora_info: Optional[dict] = None) -> str:
        """Write `model-best`: the trainer's weights (a LoRA run: its adapters), step and `best`.

        No optimizer slots: the best is for sampling and merging, and on Drive a 355M run's Adam
        state would triple its size. The new files are complete before the old best's go (as for
        every checkpoint, `write_checkpoint`); the mirror takes it at the next `save`.
        """
        self.write_lora_info(lora_info)
        slots = set(trainer.optimizer.slots)
        tensors = {name: value for name, value in trainer.state_tensors().items() if name not in slots}
        tensors.update(best.tensors())
        prefix = os.path.join(self.dir, BEST)
        write_checkpoint(prefix, tensors)
        return prefix

    def mirror(self) -> None:
        """Copy the run folder to its mirror, when there is one; a failure is said, never fatal."""
        if not self.mirror_dir:
            return
        try:
            mirror(self.dir, self.mirror_dir)
        except OSError as e:
            # The local checkpoint is complete; losing the mirror once must not stop training.
            say(
                self.cfg,
                f"warning: could not mirror to {self.cfg.drive_dir} ({e.strerror or e}); the next save tries again",
            )
        except MirrorIsNewer as e:
            # Another machine trained this run further: keep both, the user chooses.
            say(self.cfg, f"warning: {e}")


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
        import tensorflow as tf  # not at the top: this module is read without TensorFlow (rapgen train's checks)

        # float64: the comparison after a resume must see the very number it saw before.
        return {
            "rapgen/best_val_loss": tf.constant(self.val_loss, tf.float64),
            "rapgen/best_step": tf.constant(self.step, tf.int64),
            "rapgen/bad_validations": tf.constant(self.bad, tf.int64),
        }

    @classmethod
    def read(cls, prefix: Optional[str], run_dir: str) -> "BestSoFar":
        """What checkpoint `prefix` recorded, when it is one of this run's own; else a fresh start
        (a new run, a checkpoint of another run, or one written before rapgen kept a best)."""
        if prefix is None or os.path.abspath(os.path.dirname(prefix)) != os.path.abspath(run_dir):
            return cls()
        import tensorflow as tf  # as in `tensors`

        reader = tf.train.load_checkpoint(prefix)
        if not all(reader.has_tensor(name) for name in cls.TENSORS):
            return cls()
        return cls(
            val_loss=float(reader.get_tensor("rapgen/best_val_loss")),
            step=int(reader.get_tensor("rapgen/best_step")),
            bad=int(reader.get_tensor("rapgen/bad_validations")),
        )


class RunLog:
    """log.csv in the run folder; rows past the resumed step (lost with the kill) are dropped."""

    # sample_*: figures of the samples written at that step (rapgen.judge.rhyme, rapgen.judge.originality):
    # a longest copied span that grows as the loss falls is the model memorising its data.
    # best: 1 where the validation loss was a new lowest and model-best was written.
    FIELDS = [
        "step",
        "loss",
        "avg_loss",
        "val_loss",
        "learning_rate",
        "tokens_per_sec",
        "time",
        "sample_rhyme_density",
        "sample_copied_tokens",
        "best",
    ]

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


def read_log(run_dir: str) -> Dict[str, list]:
    """log.csv of a run as columns: step, loss, avg_loss, val_step/val_loss where measured, and
    best_step: the steps whose validation loss was a new lowest (model-best written)."""
    path = os.path.join(run_dir, LOG_FILE)
    if not os.path.exists(path):
        raise RapgenError(f"{path} does not exist: train first (rapgen.train writes it)")
    cols: Dict[str, list] = {"step": [], "loss": [], "avg_loss": [], "val_step": [], "val_loss": [], "best_step": []}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if None in row.values():
                continue  # a line cut short (read while being written)
            try:
                step = int(row["step"])
                loss = float(row["loss"])
            except (KeyError, TypeError, ValueError):
                continue
            cols["step"].append(step)
            cols["loss"].append(loss)
            cols["avg_loss"].append(float(row["avg_loss"]) if row.get("avg_loss") else loss)
            if row.get("val_loss"):
                cols["val_step"].append(step)
                cols["val_loss"].append(float(row["val_loss"]))
                if row.get("best") == "1":
                    cols["best_step"].append(step)
    return cols
