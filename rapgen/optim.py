"""Optimizers written against plain `tf.Variable`s: Adam, Adafactor and SGD.

rapgen does not use Keras, and owning the update keeps checkpoints in TF1's layout: Adam's
slots are `<var>/Adam` (first moment) and `<var>/Adam_1` (second moment), as
`tf.compat.v1.train.AdamOptimizer` names them, so gpt-2-simple's run folders resume with
their optimizer state and rapgen's load in their tools.

>>> opt = make_optimizer("adam", model.variables_by_name)      # doctest: +SKIP
>>> opt.apply(grads, learning_rate=1e-4, step=0)                # doctest: +SKIP
"""

from __future__ import annotations

from typing import Dict, List

import tensorflow as tf

from .errors import RapgenError


class Optimizer:
    """Updates `variables` (name -> tf.Variable) in place; `slots` are its checkpointed state."""

    def __init__(self, variables: Dict[str, tf.Variable]):
        self.names = list(variables)
        self.variables = [variables[n] for n in self.names]
        self.slots: Dict[str, tf.Variable] = {}

    def _slot(self, var_name, suffix, shape):
        slot = tf.Variable(tf.zeros(shape, tf.float32), trainable=False, name=(var_name + "/" + suffix).replace("/", "_"))
        self.slots[f"{var_name}/{suffix}"] = slot
        return slot

    def apply(self, grads: List[tf.Tensor], learning_rate, step) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    def apply(self, grads, learning_rate, step):
        for var, g in zip(self.variables, grads):
            var.assign_sub(learning_rate * g)


class Adam(Optimizer):
    """Adam with TF1's bias correction folded into the step size; beta1 0.9, beta2 0.999, eps 1e-8."""

    def __init__(self, variables, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__(variables)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.m = [self._slot(n, "Adam", v.shape) for n, v in zip(self.names, self.variables)]
        self.v = [self._slot(n, "Adam_1", v.shape) for n, v in zip(self.names, self.variables)]

    def apply(self, grads, learning_rate, step):
        t = tf.cast(step, tf.float32) + 1.0  # updates done, this one included
        lr = learning_rate * tf.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
        for var, g, m, v in zip(self.variables, grads, self.m, self.v):
            m.assign(self.beta1 * m + (1.0 - self.beta1) * g)
            v.assign(self.beta2 * v + (1.0 - self.beta2) * g * g)
            var.assign_sub(lr * m / (tf.sqrt(v) + self.epsilon))


class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern, 2018) without momentum: matrices keep only row and column
    means of the squared gradient, so optimizer memory is about one number per row and
    column instead of Adam's two per weight. Decay 1 - t^-0.8, update clipping at RMS 1."""

    def __init__(self, variables, epsilon=1e-30, clip=1.0, decay_exponent=0.8):
        super().__init__(variables)
        self.epsilon, self.clip, self.decay_exponent = epsilon, clip, decay_exponent
        self.state = []
        for name, var in zip(self.names, self.variables):
            shape = [d for d in var.shape if d != 1]  # c_attn's [1, E, 3E] is a matrix
            if len(shape) >= 2:
                self.state.append((self._slot(name, "Adafactor_vr", shape[:-1]), self._slot(name, "Adafactor_vc", shape[:-2] + shape[-1:])))
            else:
                self.state.append((self._slot(name, "Adafactor_v", var.shape), None))

    def apply(self, grads, learning_rate, step):
        t = tf.cast(step, tf.float32) + 1.0
        decay = 1.0 - t ** (-self.decay_exponent)
        for var, g, (a, b) in zip(self.variables, grads, self.state):
            g2 = g * g + self.epsilon
            if b is None:
                a.assign(decay * a + (1.0 - decay) * g2)
                u = g * tf.math.rsqrt(a)
            else:
                g2 = tf.reshape(g2, tf.concat([a.shape, b.shape[-1:]], 0))  # [..., rows, cols]
                a.assign(decay * a + (1.0 - decay) * tf.reduce_mean(g2, axis=-1))  # rows
                b.assign(decay * b + (1.0 - decay) * tf.reduce_mean(g2, axis=-2))  # cols
                # v ~ outer(rows, cols) / mean(rows): the rank-1 estimate of the second moment.
                v = a[..., :, None] * b[..., None, :] / tf.reduce_mean(a, axis=-1, keepdims=True)[..., None]
                u = tf.reshape(tf.reshape(g, v.shape) * tf.math.rsqrt(v), var.shape)
            rms = tf.sqrt(tf.reduce_mean(u * u))
            var.assign_sub(learning_rate * u / tf.maximum(1.0, rms / self.clip))


OPTIMIZERS = {"adam": Adam, "adafactor": Adafactor, "sgd": SGD}


def make_optimizer(name: str, variables: Dict[str, tf.Variable]) -> Optimizer:
    try:
        return OPTIMIZERS[str(name).lower()](variables)
    except KeyError:
        raise RapgenError(f"unknown --optimizer {name!r}: choose {', '.join(OPTIMIZERS)}") from None
