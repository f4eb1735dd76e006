"""Fine-tuning: the training loop, its settings, and run folders that resume exactly.

A run folder `checkpoints/<run_name>/` is a model directory: hparams.json and the
vocabulary are copied in, and each `model-<step>` checkpoint holds the GPT-2 variables
under OpenAI's names, the optimizer's slots under TF1's names and the step. Windows of
training data are a pure function of (seed, step), so weights + optimizer + step are the
whole state: a run killed at any moment and started again with the same command goes on
from its newest complete checkpoint and computes the same losses it would have.

`--steps` is the step the run should reach, not a number to add: re-running the same
command after a disconnect finishes the same run (gpt-2-simple adds `steps` on each call).

>>> train(dataset="data/sample_lyrics.txt", model="124M", steps=50, run_name="demo")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import shutil
import time
from typing import Optional, Union

import numpy as np

from .errors import RapgenError
from .fileio import atomic_write_text, remove_dead_temps
from .devices import DISTRIBUTE_CHOICES, compute_dtype, describe, make_strategy
from .hparams import EOT_ID, MODEL_ALIASES, MODEL_SIZES, HParams

DEFAULT_MODEL = "355M"


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
    # "auto": the fastest choice whose estimated peak fits the device (rapgen.plan), said at the start
    optimizer: str = "auto"  # auto | adam | adafactor | sgd
    recompute: object = "auto"  # auto | True | False: gradient checkpointing per block, less memory, ~1/3 more compute
    only_train_transformer_layers: object = "auto"  # auto | True | False: freeze wte, wpe, ln_f
    memory_gb: Optional[float] = None  # the budget for "auto" (GiB); default: the GPU's memory, or free RAM
    mixed_precision: str = "auto"  # auto | off | float16 | bfloat16; auto: what the device does fast (rapgen.devices)
    distribute: str = "auto"  # auto | off | mirrored | tpu; auto: every GPU, or the Colab TPU
    # Compile the train step with XLA (jit_compile). Off by default: on the CPU it was slower
    # (bench/bench_xla.py); bench/gpu_check.py measures it on a GPU.
    xla: bool = False
    sequence_length: Optional[int] = None  # window length; defaults to n_ctx
    val_fraction: float = 0.05  # whole songs held out for validation
    val_dataset: Optional[str] = None  # or a separate validation file
    val_every: int = 100
    val_batches: int = 8  # validation windows, batch_size at a time
    sample_every: int = 100
    sample_length: int = 200
    sample_num: int = 1
    save_every: int = 100
    max_checkpoints: int = 1  # a new checkpoint is complete before the old one goes
    print_every: int = 10
    restore_from: str = "latest"  # latest | fresh | a checkpoint prefix or model directory
    seed: int = 0
    drive_dir: Optional[str] = None  # mirror the run folder here (Google Drive on Colab)
    encoding: str = "utf-8"
    overwrite: bool = False  # with restore_from=fresh, allow replacing a run's checkpoints
    quiet: bool = False

    def check(self):
        def positive(name):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise RapgenError(f"--{name} must be a positive integer, got {value!r}")

        if not self.dataset:
            raise RapgenError("--dataset is required: a lyrics .txt, a folder, a glob or an .npz from `rapgen encode`")
        if not isinstance(self.steps, int) or self.steps == 0 or self.steps < -1:
            raise RapgenError(f"--steps must be a positive step to reach, or -1 to train until interrupted; got {self.steps!r}")
        for name in ("batch_size", "accumulate_gradients", "val_batches", "sample_num", "max_checkpoints"):
            positive(name)
        for name in ("save_every", "val_every", "sample_every", "print_every", "sample_length", "warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise RapgenError(f"--{name} must be 0 (off) or a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise RapgenError(f"--seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.val_fraction, (int, float)) or not 0 <= self.val_fraction < 1:
            raise RapgenError(f"--val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not isinstance(self.learning_rate, (int, float)) or self.learning_rate <= 0:
            raise RapgenError(f"--learning_rate must be positive, got {self.learning_rate!r}")
        if self.mixed_precision not in ("auto", "off", "float16", "bfloat16", False, True):
            raise RapgenError(f"--mixed_precision must be auto, off, float16 or bfloat16; got {self.mixed_precision!r}")
        if str(self.optimizer).lower() not in ("auto", "adam", "adafactor", "sgd"):
            raise RapgenError(f"unknown --optimizer {self.optimizer!r}: choose auto, adam, adafactor, sgd")
        for name in ("recompute", "only_train_transformer_layers"):
            if getattr(self, name) not in ("auto", True, False):
                raise RapgenError(f"--{name} must be True, False or auto; got {getattr(self, name)!r}")
        if self.memory_gb is not None and (not isinstance(self.memory_gb, (int, float)) or isinstance(self.memory_gb, bool) or self.memory_gb <= 0):
            raise RapgenError(f"--memory_gb must be a positive number of GiB, got {self.memory_gb!r}")
        if self.xla not in (True, False):
            raise RapgenError(f"--xla must be True or False; got {self.xla!r}")
        if self.distribute not in DISTRIBUTE_CHOICES:
            raise RapgenError(f"--distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}; got {self.distribute!r}")
        if not str(self.run_name) or "/" in str(self.run_name) or str(self.run_name) in (".", ".."):
            raise RapgenError(f"--run_name must be a plain folder name, got {self.run_name!r}")
        # Paths last: a missing dataset or a file where a folder belongs is found before any
        # download or load, not after.
        from .dataset import expand_paths
        from .options import check_output_folder

        for name in ("checkpoint_dir", "drive_dir", "models_dir"):
            if getattr(self, name) is not None:
                check_output_folder(getattr(self, name), f"--{name}")
        run_dir = os.path.join(str(self.checkpoint_dir), str(self.run_name))
        if os.path.exists(run_dir) and not os.path.isdir(run_dir):
            raise RapgenError(f"the run folder {run_dir} is a file: choose another --run_name")
        expand_paths(self.dataset)
        if self.val_dataset is not None:
            expand_paths(self.val_dataset)


# -- run folders ----------------------------------------------------------------------


def _run_checkpoints(folder: str):
    from .checkpoints import list_checkpoints

    return [p for p in list_checkpoints(folder) if os.path.basename(p).startswith("model-")] if os.path.isdir(folder) else []


def _restore_source(cfg: TrainConfig, run_dir: str):
    """The checkpoint prefix to resume from, or None; checked whole before any heavy work.

    With a Drive mirror, the newer of the local run and the mirror wins (by step): a mirror
    that trained further (on another machine) is copied in first, and said so.
    """
    from .checkpoints import latest_checkpoint, step_of, verify_checkpoint
    from .sync import mirror

    local = latest_checkpoint(run_dir) if os.path.isdir(run_dir) else None
    remote_dir = os.path.join(cfg.drive_dir, cfg.run_name) if cfg.drive_dir else None
    if cfg.restore_from == "latest":
        remote = latest_checkpoint(remote_dir) if remote_dir and os.path.isdir(remote_dir) else None
        if remote and (local is None or step_of(remote) > step_of(local)):
            # A partial Drive sync is not copied over a complete local run.
            verify_checkpoint(remote, flag="--restore_from", also_in=[run_dir])
            if local:
                _say(cfg, f"the mirror {remote_dir} is at step {step_of(remote)}, newer than {run_dir} at step "
                          f"{step_of(local)}: copying it in from the mirror")
            else:
                _say(cfg, f"restoring {cfg.run_name} from the mirror {remote_dir}")
            mirror(remote_dir, run_dir, prune=False)
            local = latest_checkpoint(run_dir)
        if local:
            verify_checkpoint(local, flag="--restore_from", also_in=[remote_dir] if remote_dir else [])
        return local
    if cfg.restore_from == "fresh":
        if local and not cfg.overwrite:
            raise RapgenError(
                f"{run_dir} already holds checkpoints: use --restore_from latest to continue it, "
                f"another --run_name, or --overwrite True to start it again"
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


def _expected_hparams(model, models_dir) -> Optional[HParams]:
    if model is None:
        return None
    if os.path.isdir(str(model)):
        return HParams.load(str(model))
    if str(model) in MODEL_SIZES or str(model) in MODEL_ALIASES:
        local = os.path.join(models_dir, MODEL_ALIASES.get(str(model), str(model)))
        return HParams.load(local) if os.path.exists(os.path.join(local, "hparams.json")) else HParams.for_model(str(model))
    return None


MEMORY_FIELDS = ("optimizer", "recompute", "only_train_transformer_layers")


def _choose_memory_settings(cfg: TrainConfig, hparams: HParams, length: int, dtype: str, replicas: int, run_dir: str) -> None:
    """Replace "auto" in optimizer / recompute / only_train_transformer_layers, in place."""
    from .devices import device_memory_gib
    from .plan import GIB, choose_settings

    auto = [f for f in MEMORY_FIELDS if getattr(cfg, f) == "auto"]
    if not auto:
        return
    saved = os.path.join(run_dir, "train.json")
    if os.path.exists(saved):
        # A resumed run keeps what it started with: another optimizer would drop its state.
        try:
            with open(saved, encoding="utf-8") as f:
                before = json.load(f)
        except (OSError, ValueError):
            before = {}
        for name in list(auto):
            if before.get(name, "auto") != "auto":
                setattr(cfg, name, before[name])
                auto.remove(name)
        if not auto:
            return
    budget = cfg.memory_gb or device_memory_gib()
    if budget is None:
        for name, value in zip(MEMORY_FIELDS, ("adam", False, False)):
            if name in auto:
                setattr(cfg, name, value)
        _say(cfg, "memory: the device's memory is unknown, so adam without recompute (--memory_gb GiB lets rapgen choose)")
        return
    pinned = {f: getattr(cfg, f) for f in MEMORY_FIELDS if f not in auto}
    choice = choose_settings(hparams, budget * GIB, batch_size=cfg.batch_size // replicas, sequence_length=length,
                             mixed_precision_dtype=dtype, accumulate_gradients=cfg.accumulate_gradients,
                             model_name=str(cfg.model or DEFAULT_MODEL), **pinned)
    for name in auto:
        setattr(cfg, name, choice[name])
    _say(cfg, f"memory: {choice['reason']} (--optimizer, --recompute, --only_train_transformer_layers and "
              f"--memory_gb override it; `rapgen plan` shows the estimate)")
    if not choice["fits"]:
        _say(cfg, "warning: this may run out of memory")


def _say(cfg, message):
    if not cfg.quiet:
        from tqdm.auto import tqdm

        tqdm.write(message)


# -- the loop -------------------------------------------------------------------------


class Trainer:
    """Owns the model, optimizer and compiled step of one run; `train()` drives it.

    Build it (and the model) inside `strategy.scope()` when training under tf.distribute: each
    replica then takes its slice of the global batch, gradients are summed across replicas
    before the update, and every device applies the same update to its own copy.
    """

    def __init__(self, cfg: TrainConfig, model, train_names, strategy=None):
        import tensorflow as tf

        from .optim import make_optimizer

        self.cfg, self.model = cfg, model
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        self.train_vars = {n: v for n, v in model.variables_by_name.items() if n in train_names}
        # Settings left "auto" (set up without train()) mean the plain defaults here.
        self.optimizer = make_optimizer("adam" if cfg.optimizer == "auto" else cfg.optimizer, self.train_vars)
        self.fp16 = model.compute_dtype == tf.float16
        self.loss_scale = tf.Variable(2.0**15 if self.fp16 else 1.0, trainable=False)
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.step = 0
        variables = list(self.train_vars.values())
        recompute, replicas, strategy = cfg.recompute is True, self.replicas, self.strategy

        def apply(strategy, grads, finite, lr, step):
            # Cross-replica context: grads are the all-reduced averages, the same on every device.
            if not self.fp16:
                self.optimizer.apply(grads, lr, step)
                return
            # Dynamic loss scaling: skip a step that overflowed and halve the scale;
            # double it after 2000 clean steps.
            finite = strategy.experimental_local_results(finite)[0]

            def good():
                self.optimizer.apply(grads, lr, step)
                self.good_steps.assign_add(1)
                return tf.constant(True)

            def bad():
                self.loss_scale.assign(tf.maximum(self.loss_scale / 2.0, 1.0))
                self.good_steps.assign(0)
                return tf.constant(False)

            tf.cond(finite, good, bad)
            grow = self.good_steps >= 2000
            self.loss_scale.assign(tf.where(grow, self.loss_scale * 2.0, self.loss_scale))
            self.good_steps.assign(tf.where(grow, tf.zeros_like(self.good_steps), self.good_steps))

        def replica_step(batches, lr, step):
            # batches: [k, B, T+1], the global batch; this replica takes rows [r*b, (r+1)*b).
            ctx = tf.distribute.get_replica_context()
            b = tf.shape(batches)[1] // replicas
            start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * b
            mine = batches[:, start:start + b]  # [k, b, T+1]
            k = tf.shape(mine)[0]

            def micro_batch(j, total, grads):
                with tf.GradientTape() as tape:
                    loss = model.loss(mine[j], recompute=recompute)  # [] float32
                    scaled = loss * self.loss_scale
                g = tape.gradient(scaled, variables)
                return j + 1, total + loss, [a + tf.convert_to_tensor(b) for a, b in zip(grads, g)]

            # An explicit tf.while_loop, as the function is traced without autograph (whose
            # source conversion warns on Python 3.13+). parallel_iterations=1: micro-batches
            # exist to bound memory, so one at a time, never two activations sets at once.
            _, total, grads = tf.while_loop(
                lambda j, total, grads: j < k, micro_batch,
                (tf.constant(0), tf.constant(0.0), [tf.zeros_like(v) for v in variables]),
                parallel_iterations=1,
            )
            # Each replica's loss is a mean over its equal share, so the global mean is the
            # sum over replicas / (replicas * micro-batches); so is the gradient.
            if replicas > 1:
                grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
                total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, total)
            scale = tf.cast(k * replicas, tf.float32) * self.loss_scale
            grads = [g / scale for g in grads]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
            ctx.merge_call(apply, args=(grads, finite, lr, step))
            return total / tf.cast(k * replicas, tf.float32)

        if cfg.xla and self.replicas > 1:
            raise RapgenError(f"--xla True compiles the step for one device, not {self.replicas}: use --distribute off, or --xla False")
        step_signature = [tf.TensorSpec([None, None, None], tf.int32), tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int64)]

        # autograph=False: the Python here is plain graph building (tf.while_loop, tf.cond).
        @tf.function(input_signature=step_signature, autograph=False, jit_compile=bool(cfg.xla))
        def train_step(batches, lr, step):
            losses = strategy.run(replica_step, args=(batches, lr, step))
            return strategy.experimental_local_results(losses)[0]  # the same on every replica

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)], autograph=False)
        def eval_loss(batch):
            return model.loss(batch)

        self.train_step, self.eval_loss = train_step, eval_loss

    def state_tensors(self):
        """Everything a checkpoint holds: model, optimizer slots, step, loss scale."""
        import tensorflow as tf

        tensors = dict(self.model.variables_by_name)
        tensors.update(self.optimizer.slots)
        tensors["rapgen/step"] = tf.constant(self.step, tf.int64)
        tensors["rapgen/loss_scale"] = self.loss_scale
        return tensors

    def restore_state(self, prefix):
        """Optimizer slots and step from a checkpoint, where present (the weights are loaded already)."""
        import tensorflow as tf

        from .checkpoints import step_of

        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        missing = 0
        for name, slot in self.optimizer.slots.items():
            if name in shapes and list(shapes[name]) == slot.shape.as_list():
                slot.assign(reader.get_tensor(name))
            else:
                missing += 1
        if missing:
            _say(self.cfg, f"note: {missing} optimizer slots not in {os.path.basename(prefix)}; they start at zero")
        if "rapgen/loss_scale" in shapes and self.fp16:
            self.loss_scale.assign(float(reader.get_tensor("rapgen/loss_scale")))
        self.step = int(reader.get_tensor("rapgen/step")) if "rapgen/step" in shapes else step_of(prefix)
        counter = os.path.join(os.path.dirname(prefix), "counter")
        if "rapgen/step" not in shapes and os.path.exists(counter):
            # gpt-2-simple's counter holds the step of its newest save
            try:
                self.step = max(self.step, int(open(counter).read().strip() or 0))
            except ValueError:
                pass

    def learning_rate(self, step):
        cfg = self.cfg
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return cfg.learning_rate * (step + 1) / cfg.warmup_steps
        return cfg.learning_rate


def _save(trainer: Trainer, run_dir: str, cfg: TrainConfig) -> str:
    from .checkpoints import write_checkpoint, write_checkpoint_index
    from .sync import MirrorIsNewer, mirror

    prefix = os.path.join(run_dir, f"model-{trainer.step}")
    write_checkpoint(prefix, trainer.state_tensors())
    kept = _run_checkpoints(run_dir)
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
            _say(cfg, f"warning: could not mirror to {cfg.drive_dir} ({e.strerror or e}); the next save tries again")
        except MirrorIsNewer as e:
            # Another machine trained this run further: keep both, the user chooses.
            _say(cfg, f"warning: {e}")
    _remove_dead_temps(cfg, run_dir)
    return prefix


def _remove_dead_temps(cfg: TrainConfig, run_dir: str) -> None:
    """Delete what killed writers left in the run folder (a checkpoint's size each), saying so."""
    removed = remove_dead_temps(run_dir) if os.path.isdir(run_dir) else []
    if removed:
        _say(cfg, f"removed {len(removed)} temp file(s) of a killed save from {run_dir}")


class _Log:
    """log.csv in the run folder; rows past the resumed step (lost with the kill) are dropped."""

    # sample_*: figures of the samples written at that step (rapgen.rhyme, rapgen.originality):
    # a longest copied span that grows as the loss falls is the model memorising its data.
    FIELDS = ["step", "loss", "avg_loss", "val_loss", "learning_rate", "tokens_per_sec", "time",
              "sample_rhyme_density", "sample_copied_tokens"]

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


def _sample_figures(texts, tokens, encoder):
    """Mean rhyme density and the longest span copied from the training tokens, over the samples."""
    from .analysis import Judge, read_songs
    from .originality import index_for_tokens

    songs = [s for text in texts for s in read_songs(text)[:1]]
    if not songs:
        return {}
    scores = Judge("auto", index_for_tokens(tokens, encoder), encoder).judge(songs)
    return {"sample_rhyme_density": f"{sum(s['rhyme_density'] for s in scores) / len(scores):.3f}",
            "sample_copied_tokens": str(max(s["copied_tokens"] for s in scores))}


def _sample_during_training(trainer, encoder, artists, cfg, run_dir, tokens=None):
    """Write, print and save samples; returns their figures for log.csv (with the training tokens)."""
    from .sampling import generate

    model, n_ctx = trainer.model, trainer.model.hparams.n_ctx
    rng = random.Random(cfg.seed * 1_000_003 + trainer.step)
    texts = []
    for i in range(cfg.sample_num):
        prompt = "<<" + rng.choice(artists) if artists else "<<"
        context = [EOT_ID] + encoder.encode(prompt)
        length = min(cfg.sample_length, n_ctx - len(context))
        if length <= 0:
            break
        row = generate(model, context, length, top_k=40, seed=rng.randrange(2**31))[0]
        texts.append(prompt + encoder.decode([t for t in row if t != EOT_ID]))
    os.makedirs(os.path.join(run_dir, "samples"), exist_ok=True)
    divider = "\n" + "=" * 40 + "\n"
    atomic_write_text(os.path.join(run_dir, "samples", f"step-{trainer.step}.txt"), divider.join(texts) + "\n")
    figures = _sample_figures(texts, tokens, encoder) if tokens is not None else {}
    said = f" (rhyme density {figures['sample_rhyme_density']}, longest copied span " \
           f"{figures['sample_copied_tokens']} tokens)" if figures else ""
    _say(cfg, f"======== samples at step {trainer.step}{said} ========\n" + divider.join(texts))
    return figures


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
    sequence_length: Optional[int] = None,
    val_fraction: float = 0.05,
    val_dataset: Optional[str] = None,
    val_every: int = 100,
    val_batches: int = 8,
    sample_every: int = 100,
    sample_length: int = 200,
    sample_num: int = 1,
    save_every: int = 100,
    max_checkpoints: int = 1,
    print_every: int = 10,
    restore_from: str = "latest",
    seed: int = 0,
    drive_dir: Optional[str] = None,
    encoding: str = "utf-8",
    overwrite: bool = False,
    quiet: bool = False,
) -> dict:
    """Fine-tune GPT-2 on lyrics; returns {"run_dir", "step", "loss", "val_loss"}.

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
        sequence_length: tokens per window (default: the model's n_ctx).
        val_fraction: share of whole songs held out for validation, in [0, 1).
        val_dataset: a separate validation dataset instead of val_fraction.
        val_every: steps between validations (0: never).
        val_batches: validation windows, batch_size at a time.
        sample_every: steps between samples (0: never).
        sample_length: tokens per sample during training.
        sample_num: samples each time.
        save_every: steps between checkpoints (0: only at the end).
        max_checkpoints: checkpoints kept in the run folder.
        print_every: steps between printed loss lines (0: never).
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
    import tensorflow as tf
    from tqdm.auto import tqdm

    from .checkpoints import (check_model_dir, copy_model_files, damaged_checkpoint_error, read_weights,
                              resolve_model_dir, verify_checkpoint)
    from .dataset import load_dataset, song_artists, training_batch, validation_windows
    from .encoder import load_encoder
    from .model import GPT2

    run_dir = os.path.join(cfg.checkpoint_dir, cfg.run_name)
    _remove_dead_temps(cfg, run_dir)  # a save killed last time left them (a checkpoint's size each)
    resume = _restore_source(cfg, run_dir)
    if resume is not None:
        source_dir = os.path.dirname(resume)
        hparams = HParams.load(source_dir)
        expected = _expected_hparams(cfg.model, cfg.models_dir)
        if expected is not None and expected != hparams:
            raise RapgenError(
                f"{source_dir} holds a model with n_layer {hparams.n_layer}, n_embd {hparams.n_embd}, but --model "
                f"{cfg.model} has n_layer {expected.n_layer}, n_embd {expected.n_embd}: drop --model to continue the "
                f"run, or start a new --run_name"
            )
    else:
        if cfg.restore_from == "fresh" and cfg.overwrite and os.path.isdir(run_dir):
            _say(cfg, f"--overwrite: removing the old run {run_dir}")
            shutil.rmtree(run_dir)
        name = cfg.model or DEFAULT_MODEL
        if not os.path.isdir(str(name)) and (str(name) in MODEL_SIZES or str(name) in MODEL_ALIASES):
            from .downloads import download, needs_download

            # An unfinished download (a killed or offline run) counts as missing: download() finishes it.
            if needs_download(os.path.join(cfg.models_dir, MODEL_ALIASES.get(str(name), str(name)))):
                _say(cfg, f"{name} is not (completely) in {cfg.models_dir}/: downloading it")
                download(str(name), models_dir=cfg.models_dir, quiet=cfg.quiet)
        source_dir = resolve_model_dir(name, cfg.models_dir)
        hparams = HParams.load(source_dir)
        verify_checkpoint(check_model_dir(source_dir), flag="--restore_from")  # before the data is encoded

    length = cfg.sequence_length or hparams.n_ctx
    if not isinstance(length, int) or length <= 1 or length > hparams.n_ctx:
        raise RapgenError(f"--sequence_length must be between 2 and the model's n_ctx ({hparams.n_ctx}), got {length!r}")
    encoder = load_encoder(source_dir)
    data = load_dataset(cfg.dataset, encoder, cfg.val_fraction, cfg.val_dataset, cfg.encoding, cfg.quiet)
    artists = sorted({a for a in song_artists(data.train, encoder) if a})

    dtype = compute_dtype(cfg.mixed_precision)
    strategy = make_strategy(cfg.distribute)
    if cfg.batch_size % strategy.num_replicas_in_sync:
        n = strategy.num_replicas_in_sync
        raise RapgenError(f"--batch_size {cfg.batch_size} does not split evenly over {n} devices: use a multiple of {n}")
    _choose_memory_settings(cfg, hparams, length, dtype, strategy.num_replicas_in_sync, run_dir)
    weights = read_weights(resume or check_model_dir(source_dir), hparams, flag="--restore_from")
    with strategy.scope():  # variables and optimizer slots get a copy on every device
        model = GPT2(hparams, compute_dtype=dtype, weights=weights)
        del weights  # the variables hold their own copy
        train_names = [n for n in model.variables_by_name if cfg.only_train_transformer_layers is not True or n.startswith("model/h")]
        trainer = Trainer(cfg, model, train_names, strategy)
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
        _say(cfg, f"{run_dir} is already at step {trainer.step} (--steps {cfg.steps}): nothing to do")
        return {"run_dir": run_dir, "step": trainer.step, "loss": None, "val_loss": None}

    _say(cfg, f"{'resuming' if resume else 'starting'} {run_dir} at step {trainer.step}: {data.n_songs} songs, "
              f"{len(data.train)} training tokens, {len(artists)} artists, {dtype} compute, {cfg.optimizer}"
              f"{', recompute' if cfg.recompute is True else ''}"
              f"{', frozen embeddings' if cfg.only_train_transformer_layers is True else ''}, "
              f"{describe(strategy)}")
    val = validation_windows(data.val, length, cfg.val_batches * cfg.batch_size) if data.val is not None else None
    log = _Log(os.path.join(run_dir, "log.csv"), trainer.step)
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
            if val is not None and cfg.val_every and trainer.step % cfg.val_every == 0:
                val_loss = row_val = validate()
            figures = {}  # samples come before the log row, which records their figures
            if cfg.sample_every and trainer.step % cfg.sample_every == 0:
                figures = _sample_during_training(trainer, encoder, artists, cfg, run_dir, data.train)
            log.write(step=trainer.step, loss=f"{loss:.5f}", avg_loss=f"{avg[0] / avg[1]:.5f}",
                      val_loss="" if row_val is None else f"{row_val:.5f}", learning_rate=f"{lr:.3g}",
                      tokens_per_sec=f"{speed:.1f}", time=f"{time.time() - start:.2f}", **figures)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", avg=f"{avg[0] / avg[1]:.3f}", val="-" if val_loss is None else f"{val_loss:.3f}", tok_s=f"{speed:.0f}")
            if cfg.print_every and trainer.step % cfg.print_every == 0:
                _say(cfg, f"[{trainer.step}] loss={loss:.3f} avg={avg[0] / avg[1]:.3f}" + ("" if row_val is None else f" val={row_val:.3f}"))
            if cfg.save_every and trainer.step % cfg.save_every == 0:
                _save(trainer, run_dir, cfg)
                last_saved = trainer.step
    except KeyboardInterrupt:
        _say(cfg, f"interrupted at step {trainer.step}: saving")
    finally:
        bar.close()
        log.close()
    if trainer.step != last_saved or not _run_checkpoints(run_dir):
        prefix = _save(trainer, run_dir, cfg)
        _say(cfg, f"saved {prefix}")
    return {"run_dir": run_dir, "step": trainer.step, "loss": loss, "val_loss": val_loss}
