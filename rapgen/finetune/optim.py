"""Optimizers written against plain `tf.Variable`s: Adam, Adafactor and SGD.

rapgen does not use Keras, and owning the update keeps checkpoints in TF1's layout: Adam's
slots are `<var>/Adam` (first moment) and `<var>/Adam_1` (second moment), as
`tf.compat.v1.train.AdamOptimizer` names them, so gpt-2-simple's run folders resume with
their optimizer state and rapgen's load in their tools.

Each variable is updated through `strategy.extended.update`, so the same code runs with no
strategy, and under tf.distribute (MirroredStrategy, TPUStrategy) where every device updates
its own copy of a variable and of its slots with the same all-reduced gradient. Adam and SGD
use TensorFlow's fused kernels (one pass over memory instead of a dozen element-wise ops).

>>> opt = make_optimizer("adam", model.variables_by_name)      # doctest: +SKIP
>>> opt.apply(grads, learning_rate=1e-4, step=0)                # doctest: +SKIP
"""

from __future__ import annotations

from typing import Dict, List

import tensorflow as tf

from rapgen.checks import known_name


class Optimizer:
    """Updates `variables` (name -> tf.Variable) in place; `slots` are its checkpointed state.

    Subclasses give `var_slots` (a tuple of slot variables per variable), `hyper` (tensors
    shared by all updates of one step) and `update` (one variable, on one device).
    """

    def __init__(self, variables: Dict[str, tf.Variable]):
        self.names = list(variables)
        self.variables = [variables[n] for n in self.names]
        self.slots: Dict[str, tf.Variable] = {}
        self.var_slots: List[tuple] = [() for _ in self.variables]

    def _slot(self, var_name, suffix, shape):
        slot = tf.Variable(
            tf.zeros(shape, tf.float32), trainable=False, name=(var_name + "/" + suffix).replace("/", "_")
        )
        self.slots[f"{var_name}/{suffix}"] = slot
        return slot

    def hyper(self, learning_rate, step) -> tuple:
        return (tf.cast(learning_rate, tf.float32),)

    def update(self, var, grad, *slots_and_hyper):
        raise NotImplementedError

    def apply(self, grads: List[tf.Tensor], learning_rate, step) -> None:
        """One update of every variable. Call with no strategy, or in a strategy's cross-replica context."""
        strategy = tf.distribute.get_strategy()
        hyper = self.hyper(learning_rate, step)
        for var, grad, slots in zip(self.variables, grads, self.var_slots):
            # Mirrored arguments (grad, slots) arrive as the copy on var's device.
            strategy.extended.update(var, self.update, args=(grad, *slots, *hyper), group=False)


class SGD(Optimizer):
    def update(self, var, grad, lr):
        tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=lr, delta=grad)


class Adam(Optimizer):
    """TF1's Adam (bias correction folded into the step size); beta1 0.9, beta2 0.999, eps 1e-8."""

    def __init__(self, variables, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(variables)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.var_slots = [
            (self._slot(n, "Adam", v.shape), self._slot(n, "Adam_1", v.shape))
            for n, v in zip(self.names, self.variables)
        ]

    def hyper(self, learning_rate, step):
        t = tf.cast(step, tf.float32) + 1.0  # updates done, this one included
        return (tf.cast(learning_rate, tf.float32), self.beta1**t, self.beta2**t)

    def update(self, var, grad, m, v, lr, beta1_power, beta2_power):
        # m += (1 - b1)(g - m); v += (1 - b2)(g^2 - v); var -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle,
            m=m.handle,
            v=v.handle,
            beta1_power=beta1_power,
            beta2_power=beta2_power,
            lr=lr,
            beta1=tf.constant(self.beta1),
            beta2=tf.constant(self.beta2),
            epsilon=tf.constant(self.epsilon),
            grad=grad,
        )


class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern, 2018) without momentum: matrices keep only row and column
    means of the squared gradient, so optimizer memory is about one number per row and
    column instead of Adam's two per weight. Decay 1 - t^-0.8, update clipping at RMS 1."""

    def __init__(self, variables, epsilon=1e-30, clip=1.0, decay_exponent=0.8):
        super().__init__(variables)
        self.epsilon, self.clip, self.decay_exponent = epsilon, clip, decay_exponent
        self.var_slots = []
        for name, var in zip(self.names, self.variables):
            shape = [d for d in var.shape if d != 1]  # c_attn's [1, E, 3E] is a matrix
            if len(shape) >= 2:
                self.var_slots.append(
                    (
                        self._slot(name, "Adafactor_vr", shape[:-1]),
                        self._slot(name, "Adafactor_vc", shape[:-2] + shape[-1:]),
                    )
                )
            else:
                self.var_slots.append((self._slot(name, "Adafactor_v", var.shape),))

    def hyper(self, learning_rate, step):
        t = tf.cast(step, tf.float32) + 1.0
        return (tf.cast(learning_rate, tf.float32), 1.0 - t ** (-self.decay_exponent))

    def update(self, var, grad, *args):
        *slots, lr, decay = args
        g2 = grad * grad + self.epsilon
        if len(slots) == 1:
            (a,) = slots
            a.assign(decay * a + (1.0 - decay) * g2)
            u = grad * tf.math.rsqrt(a)
        else:
            a, b = slots
            g2 = tf.reshape(g2, tf.concat([a.shape, b.shape[-1:]], 0))  # [..., rows, cols]
            a.assign(decay * a + (1.0 - decay) * tf.reduce_mean(g2, axis=-1))  # rows
            b.assign(decay * b + (1.0 - decay) * tf.reduce_mean(g2, axis=-2))  # cols
            # v ~ outer(rows, cols) / mean(rows): the rank-1 estimate of the second moment.
            v = a[..., :, None] * b[..., None, :] / tf.reduce_mean(a, axis=-1, keepdims=True)[..., None]
            u = tf.reshape(tf.reshape(grad, v.shape) * tf.math.rsqrt(v), var.shape)
        rms = tf.sqrt(tf.reduce_mean(u * u))
        var.assign_sub(lr * u / tf.maximum(1.0, rms / self.clip))


OPTIMIZERS = {"adam": Adam, "adafactor": Adafactor, "sgd": SGD}


def make_optimizer(name: str, variables: Dict[str, tf.Variable]) -> Optimizer:
    return OPTIMIZERS[known_name("--optimizer", name, tuple(OPTIMIZERS))](variables)
