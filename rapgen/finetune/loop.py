"""Fine-tuning: `train()` with every option spelled out, and the loop that ties the parts together.

A run is resumable at any moment: the training windows are a pure function of (seed, step), so
a checkpoint's weights, optimizer slots and step are its whole state, and the same command
started again goes on from the newest complete checkpoint computing the same losses. `--steps`
is the step to reach, not a number to add. The parts live below this module and never import
it: `config` (the settings), `fitting` (the "auto" ones), `step` (the compiled step), `run`
(the run folder's files) and `samples` (samples during training).

>>> train(dataset="data/sample_lyrics.txt", model="124M", steps=50, run_name="demo")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Optional, Union

import numpy as np

from rapgen.checks import between
from rapgen.data.dataset import load_dataset, song_artists, training_batch, validation_windows
from rapgen.devices import compute_dtype, describe, make_strategy
from rapgen.errors import RapgenError
from rapgen.finetune.config import DEFAULT_LORA_TARGETS, TrainConfig, say
from rapgen.finetune.fitting import choose_memory_settings
from rapgen.finetune.lora_start import refuse_lora_source, training_base
from rapgen.finetune.progress import Progress
from rapgen.finetune.run import BestSoFar, Run
from rapgen.finetune.samples import sample_during_training
from rapgen.finetune.step import Trainer
from rapgen.model.checkpoint import damaged_checkpoint_error
from rapgen.model.encoder import load_encoder
from rapgen.model.folders import check_model_dir, copy_model_files, read_weights
from rapgen.model.lora import attach


def train(
    dataset: str = "",
    model: Optional[str] = None,
    models_dir: str = "models",
    run_name: str = "run1",
    checkpoint_dir: str = "checkpoints",
    steps: int = -1,
    batch_size: int = 1,
    learning_rate: float = 1e-4,
    warmup_steps: int = 10,
    accumulate_gradients: int = 1,
    optimizer: str = "auto",
    recompute: Union[str, bool] = "auto",
    only_train_transformer_layers: Union[str, bool] = "auto",
    memory_gb: Optional[float] = None,
    mixed_precision: str = "auto",
    distribute: str = "auto",
    xla: bool = False,
    lora_rank: Union[str, int] = "auto",
    lora_alpha: Optional[float] = None,
    lora_targets: Union[str, tuple] = DEFAULT_LORA_TARGETS,
    sequence_length: Optional[int] = None,
    val_fraction: float = 0.05,
    val_dataset: Optional[str] = None,
    val_every: int = 100,
    val_batches: int = 8,
    early_stop: int = 0,
    sample_every: int = 100,
    sample_length: int = 200,
    sample_num: int = 1,
    save_every: int = 100,
    max_checkpoints: int = 1,
    print_every: int = 10,
    tensorboard: bool = True,
    restore_from: str = "latest",
    seed: int = 0,
    drive_dir: Optional[str] = None,
    encoding: str = "utf-8",
    overwrite: bool = False,
    quiet: bool = False,
) -> dict:
    """Fine-tune GPT-2 on lyrics; returns {"run_dir", "step", "loss", "val_loss", "best_val_loss",
    "best_step", "stopped"} (stopped: "steps", "early_stop" or "interrupted").

    Every argument is a field of `TrainConfig` with the same default (a test keeps them
    alike); `TrainConfig.check` checks the values before anything is loaded.

    Args:
        dataset: a lyrics .txt, a folder of them, a glob, or an .npz from `rapgen encode`.
        model: base model for a new run: a name (124M, 355M, 774M, 1558M) or a folder; default 355M, a resumed run itself.
        models_dir: where model names are looked up (and downloaded to).
        run_name: the run folder's name under checkpoint_dir.
        checkpoint_dir: the folder holding run folders.
        steps: the step to reach (re-running continues the same run); -1 trains until Ctrl-C.
        batch_size: windows per micro-batch (a multiple of the device count).
        learning_rate: peak learning rate (1e-4 suits 124M/355M with Adam).
        warmup_steps: steps of linear warm-up from 0 (0: none).
        accumulate_gradients: micro-batches averaged into one update.
        optimizer: auto, adam, adafactor (little optimizer state) or sgd.
        recompute: gradient checkpointing per block (less memory, ~1/3 more compute): auto, True or False.
        only_train_transformer_layers: freeze wte, wpe and ln_f: auto, True or False.
        memory_gb: the memory budget in GiB for the autos above (default: the GPU's memory, or free RAM).
        mixed_precision: auto, off, float16 (loss scaling) or bfloat16; auto picks what the device does fast.
        distribute: auto, off, mirrored or tpu.
        xla: compile the train step with XLA (jit_compile), one device only.
        lora_rank: LoRA adapters of this rank on a frozen base (0: full fine-tuning; auto: LoRA only when full does not fit).
        lora_alpha: LoRA's update is scaled by lora_alpha / lora_rank (default: lora_alpha = lora_rank).
        lora_targets: the projections that get adapters, among c_attn, c_proj, c_fc.
        sequence_length: tokens per window (default: the model's n_ctx).
        val_fraction: share of whole songs held out for validation, in [0, 1).
        val_dataset: a separate validation dataset instead of val_fraction.
        val_every: steps between validations (0: never).
        val_batches: validation windows, batch_size at a time.
        early_stop: stop after this many validations without a new best (0: never); the best is kept as model-best.
        sample_every: steps between samples (0: never).
        sample_length: tokens per sample during training.
        sample_num: samples each time.
        save_every: steps between checkpoints (0: only at the end).
        max_checkpoints: checkpoints kept in the run folder.
        print_every: steps between printed loss lines (0: never).
        tensorboard: write TensorBoard event files in <run>/tensorboard/ (loss, val_loss, learning rate, tokens/s, loss scale, samples).
        restore_from: latest (resume), fresh (start from the base model) or a checkpoint prefix / folder.
        seed: the training windows are a pure function of seed and step.
        drive_dir: mirror the run folder here after every save (Google Drive on Colab).
        encoding: the text encoding of the dataset.
        overwrite: with restore_from fresh, replace a run that has checkpoints.
        quiet: no progress bar or messages.

    >>> train(dataset="data/sample_lyrics.txt", model="124M", steps=200, drive_dir="/content/drive/MyDrive/rapgen")  # doctest: +SKIP
    """
    given = dict(locals())  # exactly the arguments above, by name
    options = {f.name: given[f.name] for f in dataclasses.fields(TrainConfig)}
    for name in ("recompute", "only_train_transformer_layers"):
        # Colab form dropdowns give strings: "True", "False", "auto".
        if isinstance(options[name], str) and options[name].lower() in ("true", "false"):
            options[name] = options[name].lower() == "true"
    options["dataset"] = str(dataset or "")
    cfg = TrainConfig(**options)
    cfg.check()
    return _run(cfg)


def _run(cfg: TrainConfig) -> dict:
    """Resume or start the run of a checked `cfg`, train to cfg.steps (or Ctrl-C), save; the result of `train`."""
    import tensorflow as tf  # not at the top: a mistake in the flags is said before TensorFlow loads

    from rapgen.model.gpt2 import GPT2  # TensorFlow at import, as above

    run = Run(cfg)
    run.clear_dead_temps()  # a save killed last time left them (a checkpoint's size each)
    resume = run.resume_point()
    if cfg.restore_from == "fresh" and cfg.overwrite:
        run.delete_old_run()  # after every check; `resume_point` refused it without --overwrite
    source_dir, hparams = run.starting_model(resume)

    length = cfg.sequence_length or hparams.n_ctx
    between(
        "--sequence_length", length, 2, hparams.n_ctx, integer=True, hi_label=f"the model's n_ctx ({hparams.n_ctx})"
    )
    encoder = load_encoder(source_dir)
    data = load_dataset(cfg.dataset, encoder, cfg.val_fraction, cfg.val_dataset, cfg.encoding, cfg.quiet)
    artists = sorted({a for a in song_artists(data.train, encoder) if a})

    dtype = compute_dtype(cfg.mixed_precision)
    strategy = make_strategy(cfg.distribute)
    if cfg.batch_size % strategy.num_replicas_in_sync:
        n = strategy.num_replicas_in_sync
        raise RapgenError(
            f"--batch_size {cfg.batch_size} does not split evenly over {n} devices: use a multiple of {n}"
        )
    choose_memory_settings(
        cfg, hparams, length, dtype, strategy.num_replicas_in_sync, run.recorded_settings(), resume=resume
    )
    lora_info = adapter_values = None
    if cfg.lora_rank:
        # LoRA: the frozen base (verified against lora.json when resuming) and the run's adapters.
        base_prefix, lora_info, adapter_values = training_base(cfg, source_dir, resume)
        weights = read_weights(base_prefix, hparams, flag="--restore_from")
    else:
        if resume is None:
            refuse_lora_source(source_dir)
        weights = read_weights(resume or check_model_dir(source_dir), hparams, flag="--restore_from")
    with strategy.scope():  # variables and optimizer slots get a copy on every device
        # A LoRA run's base is never updated: held in the compute type, it takes half the
        # memory with mixed precision and skips a cast per matmul.
        model = GPT2(
            hparams, compute_dtype=dtype, weights=weights, variable_dtype=dtype if cfg.lora_rank else "float32"
        )
        del weights  # the variables hold their own copy
        if cfg.lora_rank:
            train_names = list(attach(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.seed, adapter_values))
        else:
            train_names = [
                n
                for n in model.variables_by_name
                if cfg.only_train_transformer_layers is not True or n.startswith("model/h")
            ]
        trainer = Trainer(cfg, model, train_names, strategy)
        if resume is not None:
            try:
                trainer.restore_state(resume)
            except (tf.errors.OpError, IndexError):
                # The weights read whole; an optimizer slot or the step fails its checksum.
                problem = f"{resume}.data-00000-of-00001 does not hold what its index records (a checksum fails)"
                raise damaged_checkpoint_error(resume, problem, "--restore_from") from None
    os.makedirs(run.dir, exist_ok=True)
    copy_model_files(source_dir, run.dir, hparams)
    if cfg.steps != -1 and trainer.step >= cfg.steps:
        say(cfg, f"{run.dir} is already at step {trainer.step} (--steps {cfg.steps}): nothing to do")
        return _result(run.dir, trainer.step, None, None, BestSoFar.read(resume, run.dir), "steps")

    say(
        cfg,
        f"{'resuming' if resume else 'starting'} {run.dir} at step {trainer.step}: {data.n_songs} songs, "
        f"{len(data.train)} training tokens, {len(artists)} artists, {dtype} compute, {cfg.optimizer}"
        f"{', recompute' if cfg.recompute is True else ''}"
        f"{', frozen embeddings' if cfg.only_train_transformer_layers is True and not cfg.lora_rank else ''}"
        f"{f', LoRA rank {cfg.lora_rank} on a frozen base' if cfg.lora_rank else ''}, "
        f"{describe(strategy)}",
    )
    val = validation_windows(data.val, length, cfg.val_batches * cfg.batch_size) if data.val is not None else None
    best = BestSoFar.read(resume, run.dir)  # the best so far and the patience count, as the checkpoint left them
    if cfg.early_stop and best.bad >= cfg.early_stop:
        # An uninterrupted run would have stopped here too: the same command does nothing more.
        say(
            cfg,
            f"{run.dir} stopped early at step {trainer.step} ({best.bad} validations without a loss below "
            f"{best.val_loss:.4f} of step {best.step}): --early_stop 0, or a larger N, trains on",
        )
        return _result(run.dir, trainer.step, None, None, best, "early_stop")

    progress = Progress(cfg, run, trainer.step)
    stopped = "steps"
    tokens_per_step = cfg.batch_size * cfg.accumulate_gradients * length
    loss = val_loss = None
    last_saved = trainer.step
    try:
        while cfg.steps == -1 or trainer.step < cfg.steps:
            batches = np.stack(
                [
                    training_batch(data.train, trainer.step, cfg.batch_size, length, cfg.seed, micro=j)
                    for j in range(cfg.accumulate_gradients)
                ]
            )  # [k, B, T+1]
            lr = trainer.learning_rate(trainer.step)
            t0 = time.time()
            loss = float(
                trainer.train_step(
                    tf.constant(batches), tf.constant(lr, tf.float32), tf.constant(trainer.step, tf.int64)
                )
            )
            if not math.isfinite(loss):
                raise RapgenError(f"the loss became {loss} at step {trainer.step + 1}: lower --learning_rate")
            trainer.step += 1
            speed = tokens_per_step / max(time.time() - t0, 1e-9)
            row_val, new_best = None, False
            if val is not None and cfg.val_every and trainer.step % cfg.val_every == 0:
                val_loss = row_val = _validate(trainer, val, cfg.batch_size)
                new_best = best.update(row_val, trainer.step)
                if new_best:
                    run.save_best(trainer, best, lora_info)
                elif cfg.early_stop and best.bad >= cfg.early_stop:
                    stopped = "early_stop"
            samples, figures = None, {}  # samples come before the log row, which records their figures
            if cfg.sample_every and trainer.step % cfg.sample_every == 0:
                samples, figures = sample_during_training(trainer, encoder, artists, cfg, run.dir, data.train)
            progress.report(
                trainer.step,
                loss,
                lr,
                speed,
                trainer.loss_scale,
                row_val,
                new_best,
                best,
                samples,
                figures,
            )
            if cfg.save_every and trainer.step % cfg.save_every == 0:
                progress.flush()  # the events up to this checkpoint go to the mirror with it
                run.save(trainer, best, lora_info)
                last_saved = trainer.step
            if stopped == "early_stop":
                say(
                    cfg,
                    f"early stop at step {trainer.step}: {best.bad} validations without a loss below "
                    f"{best.val_loss:.4f} of step {best.step} (kept as model-best)",
                )
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        say(cfg, f"interrupted at step {trainer.step}: saving")
    finally:
        progress.close()
    if trainer.step != last_saved or not run.checkpoints():
        prefix = run.save(trainer, best, lora_info)
        say(cfg, f"saved {prefix}")
    return _result(run.dir, trainer.step, loss, val_loss, best, stopped)


def _validate(trainer: Trainer, windows, batch_size: int) -> float:
    """The mean loss over the validation windows, batch_size at a time."""
    import tensorflow as tf  # as in `_run`

    losses = [
        float(trainer.eval_loss(tf.constant(windows[i : i + batch_size]))) for i in range(0, len(windows), batch_size)
    ]
    return float(np.mean(losses))


def _result(run_dir, step, loss, val_loss, best, stopped) -> dict:
    """What `train` returns: where and how far the run got, its last losses, its best, and why it stopped."""
    return {
        "run_dir": run_dir,
        "step": step,
        "loss": loss,
        "val_loss": val_loss,
        "best_val_loss": None if best.step < 0 else best.val_loss,
        "best_step": None if best.step < 0 else best.step,
        "stopped": stopped,
    }
