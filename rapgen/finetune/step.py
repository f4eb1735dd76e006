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

import os

from rapgen.errors import RapgenError
from rapgen.finetune.config import TrainConfig, say

class Trainer:
    """Owns the model, optimizer and compiled step of one run; `train()` drives it.

    Build it (and the model) inside `strategy.scope()` when training under tf.distribute: each
    replica then takes its slice of the global batch, gradients are summed across replicas
    before the update, and every device applies the same update to its own copy.
    """

    def __init__(self, cfg: TrainConfig, model, train_names, strategy=None):
        import tensorflow as tf

        from rapgen.finetune.optim import make_optimizer

        from rapgen.model.lora import adapter_variables

        self.cfg, self.model = cfg, model
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        # A LoRA run trains its adapters (rapgen.model.lora.attach), named `lora/...`; the base stays frozen.
        self.adapters = adapter_variables(model)
        candidates = {**model.variables_by_name, **self.adapters}
        self.train_vars = {n: v for n, v in candidates.items() if n in train_names}
        # What lora.json records (rapgen.model.lora.base_info); set by rapgen.finetune.loop for a LoRA run.
        self.lora_info = None
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
        """Everything a checkpoint holds: model (a LoRA run: its adapters only), optimizer slots, step, loss scale."""
        import tensorflow as tf

        tensors = dict(self.adapters) if self.adapters else dict(self.model.variables_by_name)
        tensors.update(self.optimizer.slots)
        tensors["rapgen/step"] = tf.constant(self.step, tf.int64)
        tensors["rapgen/loss_scale"] = self.loss_scale
        return tensors

    def restore_state(self, prefix):
        """Optimizer slots and step from a checkpoint, where present (the weights are loaded already)."""
        import tensorflow as tf

        from rapgen.model.checkpoint import step_of

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
        counter = os.path.join(os.path.dirname(prefix), "counter")
        if "rapgen/step" not in shapes and os.path.exists(counter):
            # gpt-2-simple's counter holds the step of its newest save
            try:
                self.step = max(self.step, int(open(counter).read().strip() or 0))
            except ValueError:
                pass

    def learning_rate(self, step):
        """The rate for `step`: linear warm-up from 0 over warmup_steps, then constant."""
        cfg = self.cfg
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return cfg.learning_rate * (step + 1) / cfg.warmup_steps
        return cfg.learning_rate
