"""Optimizers against NumPy references written from the papers' update rules, step by step."""

import numpy as np
import pytest
import tensorflow as tf

from rapgen.errors import RapgenError
from rapgen.finetune.optim import make_optimizer

SHAPES = {"model/h0/attn/c_attn/w": (1, 6, 18), "model/h0/attn/c_attn/b": (18,), "model/wte": (11, 6)}


def numpy_adam(w, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Kingma & Ba with the bias correction folded into the step size, as TF1 does it."""
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    return w, m, v


def numpy_adafactor(w, grads, lr, eps=1e-30, clip=1.0, exponent=0.8):
    """Shazeer & Stern, factored second moment over the last two non-unit axes, no momentum."""
    shape = [d for d in w.shape if d != 1]
    rows = cols = full = None
    for t, g in enumerate(grads, start=1):
        decay = 1 - t ** (-exponent)
        g2 = g * g + eps
        if len(shape) >= 2:
            g2m = g2.reshape(shape)
            rows = g2m.mean(-1) if rows is None else decay * rows + (1 - decay) * g2m.mean(-1)
            cols = g2m.mean(-2) if cols is None else decay * cols + (1 - decay) * g2m.mean(-2)
            vhat = np.outer(rows, cols) / rows.mean()
            u = (g.reshape(shape) / np.sqrt(vhat)).reshape(w.shape)
        else:
            full = g2 if full is None else decay * full + (1 - decay) * g2
            u = g / np.sqrt(full)
        rms = np.sqrt(np.mean(u * u))
        w = w - lr * u / max(1.0, rms / clip)
    return w


def run(name, steps=4, lr=0.05):
    rng = np.random.default_rng(0)
    init = {n: rng.normal(size=s).astype(np.float32) for n, s in SHAPES.items()}
    grads = [{n: rng.normal(size=s).astype(np.float32) * (t + 1) for n, s in SHAPES.items()} for t in range(steps)]
    variables = {n: tf.Variable(v) for n, v in init.items()}
    opt = make_optimizer(name, variables)
    apply = tf.function(lambda g, step: opt.apply(g, lr, step))
    for t in range(steps):
        apply([tf.constant(grads[t][n]) for n in opt.names], tf.constant(t, tf.int64))
    return init, grads, variables, opt


def test_adam_matches_the_reference_and_names_slots_as_tf1():
    init, grads, variables, opt = run("adam")
    for name in SHAPES:
        w, m, v = numpy_adam(init[name].astype(np.float64), [g[name] for g in grads], 0.05)
        np.testing.assert_allclose(variables[name].numpy(), w, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(opt.slots[name + "/Adam"].numpy(), m, rtol=1e-4, err_msg=name)  # float32 vs float64
        np.testing.assert_allclose(opt.slots[name + "/Adam_1"].numpy(), v, rtol=1e-4, err_msg=name)
    assert sorted(opt.slots) == sorted(f"{n}/{s}" for n in SHAPES for s in ("Adam", "Adam_1"))


def test_adafactor_matches_the_reference_and_factors_matrices():
    init, grads, variables, opt = run("adafactor")
    for name in SHAPES:
        expected = numpy_adafactor(init[name].astype(np.float64), [g[name].astype(np.float64) for g in grads], 0.05)
        np.testing.assert_allclose(variables[name].numpy(), expected, rtol=1e-4, atol=1e-6, err_msg=name)
    # A [1, 6, 18] matrix keeps 6 + 18 numbers, not 108.
    assert opt.slots["model/h0/attn/c_attn/w/Adafactor_vr"].shape == (6,)
    assert opt.slots["model/h0/attn/c_attn/w/Adafactor_vc"].shape == (18,)
    assert opt.slots["model/h0/attn/c_attn/b/Adafactor_v"].shape == (18,)


def test_sgd_is_plain_gradient_descent():
    init, grads, variables, opt = run("sgd", steps=3, lr=0.05)
    for name in SHAPES:
        expected = init[name] - 0.05 * sum(g[name] for g in grads)
        np.testing.assert_allclose(variables[name].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert opt.slots == {}


def test_unknown_optimizer_is_named():
    with pytest.raises(RapgenError, match="unknown --optimizer 'lion': choose adam, adafactor, sgd"):
        make_optimizer("lion", {})
