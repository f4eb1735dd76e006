"""Fine-tuning: `train()` with every option spelled out, and the loop that ties the parts together.

A run folder `checkpoints/<run_name>/` is a model directory: hparams.json and the
vocabulary are copied in, and each `model-<step>` checkpoint holds the GPT-2 variables
under OpenAI's names, the optimizer's slots under TF1's names and the step. Windows of
training data are a pure function of (seed, step), so weights + optimizer + step are the
whole state: a run killed at any moment and started again with the same command goes on
from its newest complete checkpoint and computes the same losses it would have.

`--steps` is the step the run should reach, not a number to add: re-running the same
command after a disconnect finishes the same run (gpt-2-simple adds `steps` on each call).

The parts live below this module and never import it: `rapgen.finetune.config` (the settings,
their checks, the automatic memory choice), `rapgen.finetune.step` (the compiled step, loss
scaling, optimizer state), `rapgen.finetune.run` (where a run resumes from, save, rotate, mirror,
log.csv) and `rapgen.finetune.samples` (samples during training and their figures).

>>> train(dataset="data/sample_lyrics.txt", model="124M", steps=50, run_name="demo")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Optional, Union

import numpy as np

from rapgen.devices import compute_dtype, describe, make_strategy
from rapgen.errors import RapgenError
from rapgen.checks import between
from rapgen.finetune.run import BestSoFar, RunLog, clear_dead_temps, model_source, restore_source, run_checkpoints, save, save_best
from rapgen.finetune.events import FOLDER as EVENTS_FOLDER, EventLog
from rapgen.finetune.config import TrainConfig, choose_memory_settings, say
from rapgen.finetune.samples import sample_during_training
from rapgen.finetune.step import Trainer

# TrainConfig and Trainer are imported from here by older code and tests.
__all__ = ["train", "TrainConfig", "Trainer"]


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
    lora_targets: Union[str, tuple] = "c_attn,c_proj,c_fc",
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
    import tensorflow as tf
    from tqdm.auto import tqdm

    from rapgen.model.folders import check_model_dir, copy_model_files, read_weights
    from rapgen.model.checkpoint import damaged_checkpoint_error
    from rapgen.data.dataset import load_dataset, song_artists, training_batch, validation_windows
    from rapgen.model.encoder import load_encoder
    from rapgen.model.lora import attach, refuse_lora_source, training_base
    from rapgen.model.gpt2 import GPT2

    run_dir = os.path.join(cfg.checkpoint_dir, cfg.run_name)
    clear_dead_temps(cfg, run_dir)  # a save killed last time left them (a checkpoint's size each)
    resume = restore_source(cfg, run_dir)
    source_dir, hparams = model_source(cfg, run_dir, resume)

    length = cfg.sequence_length or hparams.n_ctx
    between("--sequence_length", length, 2, hparams.n_ctx, integer=True, hi_label=f"the model's n_ctx ({hparams.n_ctx})")
    encoder = load_encoder(source_dir)
    data = load_dataset(cfg.dataset, encoder, cfg.val_fraction, cfg.val_dataset, cfg.encoding, cfg.quiet)
    artists = sorted({a for a in song_artists(data.train, encoder) if a})

    dtype = compute_dtype(cfg.mixed_precision)
    strategy = make_strategy(cfg.distribute)
    if cfg.batch_size % strategy.num_replicas_in_sync:
        n = strategy.num_replicas_in_sync
        raise RapgenError(f"--batch_size {cfg.batch_size} does not split evenly over {n} devices: use a multiple of {n}")
    choose_memory_settings(cfg, hparams, length, dtype, strategy.num_replicas_in_sync, run_dir, resume=resume)
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
        model = GPT2(hparams, compute_dtype=dtype, weights=weights, variable_dtype=dtype if cfg.lora_rank else "float32")
        del weights  # the variables hold their own copy
        if cfg.lora_rank:
            train_names = list(attach(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.seed, adapter_values))
        else:
            train_names = [n for n in model.variables_by_name if cfg.only_train_transformer_layers is not True or n.startswith("model/h")]
        trainer = Trainer(cfg, model, train_names, strategy)
        trainer.lora_info = lora_info
        if resume is not None:
            try:
                trainer.restore_state(resume)
            except (tf.errors.OpError, IndexError):
                # The weights read whole; an optimizer slot or the step fails its checksum.
                problem = f"{resume}.data-00000-of-00001 does not hold what its index records (a checksum fails)"
                raise damaged_checkpoint_error(resume, problem, "--restore_from") from None
    os.makedirs(run_dir, exist_ok=True)
    copy_model_files(source_dir, run_dir, hparams)
    if cfg.steps != -1 and trainer.step >= cfg.steps:
        say(cfg, f"{run_dir} is already at step {trainer.step} (--steps {cfg.steps}): nothing to do")
        return _result(run_dir, trainer.step, None, None, BestSoFar.read(resume, run_dir), "steps")

    say(cfg, f"{'resuming' if resume else 'starting'} {run_dir} at step {trainer.step}: {data.n_songs} songs, "
             f"{len(data.train)} training tokens, {len(artists)} artists, {dtype} compute, {cfg.optimizer}"
             f"{', recompute' if cfg.recompute is True else ''}"
             f"{', frozen embeddings' if cfg.only_train_transformer_layers is True and not cfg.lora_rank else ''}"
             f"{f', LoRA rank {cfg.lora_rank} on a frozen base' if cfg.lora_rank else ''}, "
             f"{describe(strategy)}")
    val = validation_windows(data.val, length, cfg.val_batches * cfg.batch_size) if data.val is not None else None
    best = BestSoFar.read(resume, run_dir)  # the best so far and the patience count, as the checkpoint left them
    if cfg.early_stop and best.bad >= cfg.early_stop:
        # An uninterrupted run would have stopped here too: the same command does nothing more.
        say(cfg, f"{run_dir} stopped early at step {trainer.step} ({best.bad} validations without a loss below "
                 f"{best.val_loss:.4f} of step {best.step}): --early_stop 0, or a larger N, trains on")
        return _result(run_dir, trainer.step, None, None, best, "early_stop")
    log = RunLog(os.path.join(run_dir, "log.csv"), trainer.step)
    events = EventLog(os.path.join(run_dir, EVENTS_FOLDER), trainer.step) if cfg.tensorboard else None
    stopped = "steps"
    tokens_per_step = cfg.batch_size * cfg.accumulate_gradients * length
    avg = [0.0, 0.0]
    loss = val_loss = None
    last_saved = trainer.step
    bar = tqdm(total=None if cfg.steps == -1 else cfg.steps, initial=trainer.step, disable=cfg.quiet, unit="step", dynamic_ncols=True)

    def validate():
        losses = [float(trainer.eval_loss(tf.constant(val[i:i + cfg.batch_size]))) for i in range(0, len(val), cfg.batch_size)]
        return float(np.mean(losses))

    try:
        start = time.time()
        while cfg.steps == -1 or trainer.step < cfg.steps:
            batches = np.stack([
                training_batch(data.train, trainer.step, cfg.batch_size, length, cfg.seed, micro=j)
                for j in range(cfg.accumulate_gradients)
            ])  # [k, B, T+1]
            lr = trainer.learning_rate(trainer.step)
            t0 = time.time()
            loss = float(trainer.train_step(tf.constant(batches), tf.constant(lr, tf.float32), tf.constant(trainer.step, tf.int64)))
            if not math.isfinite(loss):
                raise RapgenError(f"the loss became {loss} at step {trainer.step + 1}: lower --learning_rate")
            trainer.step += 1
            speed = tokens_per_step / max(time.time() - t0, 1e-9)
            avg = [avg[0] * 0.99 + loss, avg[1] * 0.99 + 1.0]
            row_val = None
            new_best = False
            if val is not None and cfg.val_every and trainer.step % cfg.val_every == 0:
                val_loss = row_val = validate()
                new_best = best.update(row_val, trainer.step)
                if new_best:
                    save_best(trainer, run_dir, best)
                elif cfg.early_stop and best.bad >= cfg.early_stop:
                    stopped = "early_stop"
            samples, figures = None, {}  # samples come before the log row, which records their figures
            if cfg.sample_every and trainer.step % cfg.sample_every == 0:
                samples, figures = sample_during_training(trainer, encoder, artists, cfg, run_dir, data.train)
            log.write(step=trainer.step, loss=f"{loss:.5f}", avg_loss=f"{avg[0] / avg[1]:.5f}",
                      val_loss="" if row_val is None else f"{row_val:.5f}", learning_rate=f"{lr:.3g}",
                      tokens_per_sec=f"{speed:.1f}", time=f"{time.time() - start:.2f}", best="1" if new_best else "",
                      **figures)
            if events is not None:
                events.scalars(trainer.step, loss=loss, avg_loss=avg[0] / avg[1], learning_rate=lr, tokens_per_sec=speed,
                               loss_scale=float(trainer.loss_scale.numpy()), val_loss=row_val,
                               best_val_loss=None if row_val is None else best.val_loss)
                if samples is not None:
                    events.text(trainer.step, "samples", samples)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", avg=f"{avg[0] / avg[1]:.3f}", val="-" if val_loss is None else f"{val_loss:.3f}", tok_s=f"{speed:.0f}")
            if cfg.print_every and trainer.step % cfg.print_every == 0:
                say(cfg, f"[{trainer.step}] loss={loss:.3f} avg={avg[0] / avg[1]:.3f}" + ("" if row_val is None else f" val={row_val:.3f}"))
            if new_best and cfg.print_every:
                say(cfg, f"[{trainer.step}] new lowest validation loss {row_val:.4f}: kept as model-best")
            if cfg.save_every and trainer.step % cfg.save_every == 0:
                if events is not None:
                    events.flush()  # the events up to this checkpoint go to the mirror with it
                save(trainer, run_dir, cfg, best)
                last_saved = trainer.step
            if stopped == "early_stop":
                say(cfg, f"early stop at step {trainer.step}: {best.bad} validations without a loss below "
                         f"{best.val_loss:.4f} of step {best.step} (kept as model-best)")
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        say(cfg, f"interrupted at step {trainer.step}: saving")
    finally:
        bar.close()
        log.close()
        if events is not None:
            events.close()
    if trainer.step != last_saved or not run_checkpoints(run_dir):
        prefix = save(trainer, run_dir, cfg, best)
        say(cfg, f"saved {prefix}")
    return _result(run_dir, trainer.step, loss, val_loss, best, stopped)


def _result(run_dir, step, loss, val_loss, best, stopped) -> dict:
    """What `train` returns: where and how far the run got, its last losses, its best, and why it stopped."""
    return {"run_dir": run_dir, "step": step, "loss": loss, "val_loss": val_loss,
            "best_val_loss": None if best.step < 0 else best.val_loss, "best_step": None if best.step < 0 else best.step,
            "stopped": stopped}
