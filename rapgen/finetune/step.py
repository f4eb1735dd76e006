"""The compiled train step: `Trainer` owns the model's optimizer state, loss scaling and distribution.

One `train_step` call is one update: the global batch of k micro-batches is split over the
replicas of a tf.distribute strategy, each replica sums its micro-batches' gradients in a
tf.while_loop (one at a time, to bound memory), the replicas' sums are all-reduced, and the
optimizer applies the same update on every device. With float16 compute the loss is scaled
dynamically (a step that overflows is skipped). `state_tensors` / `restore_state` are what a
checkpoint holds beyond the weights.

>>> trainer = Trainer(cfg, model, list(model.variables_by_name))  # doctest: +SKIP
>>> loss = trainer.train_step(batches, tf.constant(1e-4), tf.constant(0, tf.int64))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os

from rapgen.errors import RapgenError
from rapgen.finetune.config import TrainConfig, say
from rapgen.finetune.run import read_counter
from rapgen.model.checkpoint import step_of
from rapgen.model.lora import adapter_variables


class Trainer:
    """Owns the model, optimizer and compiled step of one run; `train()` drives it.

    Build it (and the model) inside `strategy.scope()` when training under tf.distribute: each
    replica then takes its slice of the global batch, gradients are summed across replicas
    before the update, and every device applies the same update to its own copy.
    """

    def __init__(self, cfg: TrainConfig, model, train_names, strategy=None):
        # TensorFlow here and in the methods below, not at the top: `rapgen train`'s checks (and
        # the tests of the parts of training) import this module without it.
        import tensorflow as tf

        from rapgen.finetune.optim import make_optimizer  # TensorFlow at import, as above

        self.cfg, self.model = cfg, model
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        # A LoRA run trains its adapters (rapgen.model.lora.attach), named `lora/...`; the base stays frozen.
        self.adapters = adapter_variables(model)
        candidates = {**model.variables_by_name, **self.adapters}
        self.train_vars = {n: v for n, v in candidates.items() if n in train_names}
        # Settings left "auto" (set up without train()) mean the plain defaults here.
        self.optimizer = make_optimizer("adam" if cfg.optimizer == "auto" else cfg.optimizer, self.train_vars)
        self.fp16 = model.compute_dtype == tf.float16
        self.loss_scale = tf.Variable(2.0**15 if self.fp16 else 1.0, trainable=False)
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.step = 0
        self.variables = list(self.train_vars.values())
        self.recompute = cfg.recompute is True
        if cfg.xla and self.replicas > 1:
            raise RapgenError(
                f"--xla True compiles the step for one device, not {self.replicas}: use --distribute off, or --xla False"
            )
        step_signature = [
            tf.TensorSpec([None, None, None], tf.int32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.int64),
        ]
        # autograph=False: the Python here is plain graph building (tf.while_loop, tf.cond).
        self.train_step = tf.function(
            self._train_step, input_signature=step_signature, autograph=False, jit_compile=bool(cfg.xla)
        )
        self.eval_loss = tf.function(
            self._eval_loss, input_signature=[tf.TensorSpec([None, None], tf.int32)], autograph=False
        )

    # -- the compiled step, outermost first ---------------------------------------------

    def _train_step(self, batches, lr, step):
        """One update from the global batch [k, B, T+1]; the mean loss."""
        losses = self.strategy.run(self._replica_step, args=(batches, lr, step))
        return self.strategy.experimental_local_results(losses)[0]  # the same on every replica

    def _replica_step(self, batches, lr, step):
        """One replica's share: its rows of every micro-batch, summed, then all-reduced and applied."""
        import tensorflow as tf  # lazily, as in __init__

        # batches: [k, B, T+1], the global batch; this replica takes rows [r*b, (r+1)*b).
        replicas = self.replicas
        ctx = tf.distribute.get_replica_context()
        b = tf.shape(batches)[1] // replicas
        start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * b
        mine = batches[:, start : start + b]  # [k, b, T+1]
        k = tf.shape(mine)[0]
        # An explicit tf.while_loop, as the function is traced without autograph (whose
        # source conversion warns on Python 3.13+). parallel_iterations=1: micro-batches
        # exist to bound memory, so one at a time, never two activations sets at once.
        _, total, grads = tf.while_loop(
            lambda j, total, grads: j < k,
            functools.partial(self._micro_batch, mine),
            (tf.constant(0), tf.constant(0.0), [tf.zeros_like(v) for v in self.variables]),
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
        ctx.merge_call(self._apply, args=(grads, finite, lr, step))
        return total / tf.cast(k * replicas, tf.float32)

    def _micro_batch(self, mine, j, total, grads):
        """The while loop's body: micro-batch j's loss added to `total`, its gradients to `grads`."""
        import tensorflow as tf  # lazily, as in __init__

        with tf.GradientTape() as tape:
            loss = self.model.loss(mine[j], recompute=self.recompute)  # [] float32
            scaled = loss * self.loss_scale
        g = tape.gradient(scaled, self.variables)
        return j + 1, total + loss, [a + tf.convert_to_tensor(b) for a, b in zip(grads, g)]

    def _apply(self, strategy, grads, finite, lr, step):
        """Cross-replica context: grads are the all-reduced averages, the same on every device."""
        import tensorflow as tf  # lazily, as in __init__

        if not self.fp16:
            self.optimizer.apply(grads, lr, step)
            return
        # Dynamic loss scaling: skip a step that overflowed and halve the scale;
        # double it after 2000 clean steps.
        finite = strategy.experimental_local_results(finite)[0]
        tf.cond(finite, functools.partial(self._good_step, grads, lr, step), self._overflowed_step)
        grow = self.good_steps >= 2000
        self.loss_scale.assign(tf.where(grow, self.loss_scale * 2.0, self.loss_scale))
        self.good_steps.assign(tf.where(grow, tf.zeros_like(self.good_steps), self.good_steps))

    def _good_step(self, grads, lr, step):
        import tensorflow as tf  # lazily, as in __init__

        self.optimizer.apply(grads, lr, step)
        self.good_steps.assign_add(1)
        return tf.constant(True)

    def _overflowed_step(self):
        import tensorflow as tf  # lazily, as in __init__

        self.loss_scale.assign(tf.maximum(self.loss_scale / 2.0, 1.0))
        self.good_steps.assign(0)
        return tf.constant(False)

    def _eval_loss(self, batch):
        return self.model.loss(batch)

    # -- state ------------------------------------------------------------------------

    def state_tensors(self):
        """Everything a checkpoint holds: model (a LoRA run: its adapters only), optimizer slots, step, loss scale."""
        import tensorflow as tf  # lazily, as in __init__

        tensors = dict(self.adapters) if self.adapters else dict(self.model.variables_by_name)
        tensors.update(self.optimizer.slots)
        tensors["rapgen/step"] = tf.constant(self.step, tf.int64)
        tensors["rapgen/loss_scale"] = self.loss_scale
        return tensors

    def restore_state(self, prefix):
        """Optimizer slots and step from a checkpoint, where present (the weights are loaded already)."""
        import tensorflow as tf  # lazily, as in __init__

        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        missing = 0
        for name, slot in self.optimizer.slots.items():
            if name in shapes and list(shapes[name]) == slot.shape.as_list():
                slot.assign(reader.get_tensor(name))
            else:
                missing += 1
        if missing:
            say(self.cfg, f"note: {missing} optimizer slots not in {os.path.basename(prefix)}; they start at zero")
        if "rapgen/loss_scale" in shapes and self.fp16:
            self.loss_scale.assign(float(reader.get_tensor("rapgen/loss_scale")))
        self.step = int(reader.get_tensor("rapgen/step")) if "rapgen/step" in shapes else step_of(prefix)
        counter = read_counter(os.path.dirname(prefix)) if "rapgen/step" not in shapes else None
        if counter is not None:
            # gpt-2-simple's checkpoints hold no step: its counter holds the step of its newest save.
            self.step = max(self.step, counter)

    def learning_rate(self, step):
        """The rate for `step`: linear warm-up from 0 over warmup_steps, then constant."""
        cfg = self.cfg
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return cfg.learning_rate * (step + 1) / cfg.warmup_steps
        return cfg.learning_rate
