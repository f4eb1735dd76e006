"""How the train step computes: float16 (with dynamic loss scaling) and bfloat16 on the CPU,
with XLA (`--xla`), and traced without autograph.

A T4 user's `--mixed_precision auto` trains in float16 and an A100 user's in bfloat16; no GPU is
reachable from this project's machines, but TensorFlow runs both types on the CPU too (slowly),
through the same graph. The precision under test is what `auto` picks for a fake GPU of that
compute capability (`compute_dtype(..., capability=...)`, the switch `auto` itself uses), so a
change to that decision shows here.

Tiny models and a few steps: float16 matmuls on a CPU are emulated.
"""

import csv
import json
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

from rapgen.devices import compute_dtype
from rapgen.finetune.config import TrainConfig
from rapgen.finetune.loop import train
from rapgen.finetune.run import BestSoFar
from rapgen.finetune.step import Trainer
from rapgen.model.checkpoint import read_checkpoint
from rapgen.model.folders import latest_checkpoint
from rapgen.model.hparams import HParams
from rapgen.model.loading import load_model

from support.helpers import ROOT
from support.tf1 import tf1_restore

T4, A100 = (7, 5), (8, 0)  # compute capabilities
SAMPLE_LYRICS = str(ROOT / "data" / "sample_lyrics.txt")
QUIET = dict(save_every=0, sample_every=0, val_every=0, print_every=0, quiet=True, warmup_steps=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model):
    return tiny_model(tmp_path_factory.mktemp("mp") / "tiny", n_layer=2, n_embd=32, n_head=2, n_ctx=32, seed=2)


def test_auto_picks_float16_on_a_t4_and_bfloat16_on_an_a100():
    assert compute_dtype("auto", flags={"avx2"}, capability=T4) == "float16"
    assert compute_dtype("auto", flags={"avx2"}, capability=A100) == "bfloat16"


def poisoned_trainer(model_dir, dtype):
    """A Trainer whose loss is multiplied by `poison` (1.0 unless a test raises it)."""
    model = load_model(model_dir, compute_dtype=dtype)
    poison = tf.Variable(1.0, trainable=False)
    plain_loss = model.loss
    # A huge factor on the loss makes the float16 backward pass overflow, as an unlucky batch does.
    model.loss = lambda tokens, recompute=False: plain_loss(tokens, recompute=recompute) * poison
    trainer = Trainer(TrainConfig(dataset="x", optimizer="adam"), model, list(model.variables_by_name))
    return trainer, poison


def weights(trainer):
    return {n: v.numpy().copy() for n, v in trainer.model.variables_by_name.items()}


def batches(n):
    rng = np.random.default_rng(5)
    return [rng.integers(0, 3000, size=(1, 4, 17)).astype(np.int32) for _ in range(n)]  # [k, B, T+1] each


def step(trainer, batch, index, lr=3e-3):
    return float(trainer.train_step(tf.constant(batch), tf.constant(lr, tf.float32), tf.constant(index, tf.int64)))


def test_float16_overflow_skips_the_step_halves_the_scale_and_training_matches_float32(model_dir):
    dtype = compute_dtype("auto", flags=set(), capability=T4)
    half, poison = poisoned_trainer(model_dir, dtype)
    full, _ = poisoned_trainer(model_dir, "float32")
    assert half.model.compute_dtype == tf.float16 and half.fp16 and not full.fp16
    assert float(half.loss_scale) == 2.0**15 and float(full.loss_scale) == 1.0
    data = batches(5)
    losses16, losses32 = [], []
    for i in range(2):
        losses16.append(step(half, data[i], i))
        losses32.append(step(full, data[i], i))
    assert int(half.good_steps) == 2

    # Step 2 overflows: its gradients are not finite, so no weight or slot moves.
    before = weights(half)
    slots = {n: s.numpy().copy() for n, s in half.optimizer.slots.items()}
    poison.assign(1e5)  # scaled loss ~1e5 * 2^15 * 10: float32 holds it, the float16 logits' gradient cannot
    step(half, data[2], 2)
    poison.assign(1.0)
    for name, value in weights(half).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    for name, value in slots.items():
        np.testing.assert_array_equal(half.optimizer.slots[name].numpy(), value, err_msg=name)
    assert float(half.loss_scale) == 2.0**14 and int(half.good_steps) == 0

    # Training goes on with the halved scale; the float32 run never saw step 2.
    for i in (3, 4):
        losses16.append(step(half, data[i], i))
        losses32.append(step(full, data[i], i))
    assert float(half.loss_scale) == 2.0**14 and int(half.good_steps) == 2
    # float16 keeps 11 significant bits: each rounded value is off by up to 2^-11 = 4.9e-4 of
    # itself. The loss, a mean of log-softmax values, carries the relative error of the few
    # roundings on the way to each logit: 4 of them, 2e-3, bounds it. (Unscaled gradients, or
    # an update taken from the overflowed step, would move these losses by far more.)
    np.testing.assert_allclose(losses16, losses32, rtol=2e-3)
    moved16 = {n: w - before[n] for n, w in weights(half).items()}
    moved32 = {n: w - before[n] for n, w in weights(full).items()}
    diff = np.sqrt(sum(np.sum((moved16[n] - moved32[n]) ** 2) for n in moved16))
    size = np.sqrt(sum(np.sum(moved32[n] ** 2) for n in moved32))
    # Adam divides by the gradient's own size, so the updates keep the gradients' relative error
    # (~1e-2 in float16 where a gradient is a near-cancelling sum): the two runs' last two
    # updates point the same way to within a few percent.
    assert diff < 0.1 * size, (diff, size)


def test_bfloat16_trains_without_loss_scaling_and_matches_float32(model_dir):
    # What auto picks on a CPU with AVX-512 BF16 (Zen 4, Cooper Lake) and no GPU.
    dtype = compute_dtype("auto", flags={"avx512f", "avx512_bf16"}, capability=None)
    half, _ = poisoned_trainer(model_dir, dtype)
    full, _ = poisoned_trainer(model_dir, "float32")
    assert half.model.compute_dtype == tf.bfloat16 and not half.fp16
    losses16 = [step(half, b, i) for i, b in enumerate(batches(4))]
    losses32 = [step(full, b, i) for i, b in enumerate(batches(4))]
    assert float(half.loss_scale) == 1.0  # bfloat16 has float32's range: nothing to scale
    # bfloat16 keeps 8 significant bits (2^-8 = 3.9e-3 per value): 4 roundings, 1.6e-2, as above.
    np.testing.assert_allclose(losses16, losses32, rtol=1.6e-2)
    assert losses16[-1] < losses16[0]


def read_losses(run_dir):
    with open(os.path.join(run_dir, "log.csv"), newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize("capability", [T4, A100], ids=["float16-t4", "bfloat16-a100"])
def test_loss_falls_on_the_sample_lyrics_and_checkpoints_stay_float32(capability, model_dir, tmp_path):
    dtype = compute_dtype("auto", flags=set(), capability=capability)
    result = train(
        dataset=SAMPLE_LYRICS,
        model=model_dir,
        checkpoint_dir=str(tmp_path),
        steps=30,
        batch_size=2,
        sequence_length=32,
        learning_rate=3e-3,
        optimizer="adam",
        recompute=False,
        only_train_transformer_layers=False,
        distribute="off",
        mixed_precision=dtype,
        val_fraction=0.0,
        **QUIET,
    )
    losses = read_losses(result["run_dir"])
    assert len(losses) == 30 and all(np.isfinite(losses))
    # From chance (ln 50257 = 10.8) the model learns the lyrics' common tokens: more than
    # 2 nats lower on average over the last five steps.
    assert np.mean(losses[-5:]) < losses[0] - 2.0, losses

    prefix = latest_checkpoint(result["run_dir"])
    saved = read_checkpoint(prefix)
    hp = HParams.load(result["run_dir"])
    # The run's counters (the step; the best validation loss, its step and the patience
    # count, kept exactly for resume) are bookkeeping, not numbers the network computes with.
    counters = {"rapgen/step", *BestSoFar.TENSORS}
    for name, value in saved.items():
        if name not in counters:
            assert value.dtype == np.float32, name  # master weights, slots and the loss scale
    if dtype == "float16":
        assert "rapgen/loss_scale" in saved and saved["rapgen/loss_scale"] > 0
    # The run loads in float32 as any model directory, and in gpt-2-simple's TF1 graph.
    loaded = load_model(result["run_dir"])
    assert loaded.compute_dtype == tf.float32
    restored = tf1_restore(result["run_dir"], hp)
    for name, value in restored.items():
        np.testing.assert_array_equal(value, saved[name], err_msg=name)
        np.testing.assert_array_equal(loaded.variables_by_name[name].numpy(), value, err_msg=name)
    logits = loaded(tf.constant([[50256, 16, 17, 18]])).numpy()  # [1, 4, V]
    assert np.all(np.isfinite(logits))


@pytest.mark.slow
def test_xla_run_matches_the_plain_run(model_dir, tmp_path):
    common = dict(
        dataset=SAMPLE_LYRICS,
        model=model_dir,
        steps=3,
        batch_size=2,
        sequence_length=16,
        learning_rate=3e-3,
        optimizer="adam",
        recompute=False,
        only_train_transformer_layers=False,
        distribute="off",
        mixed_precision="off",
        val_fraction=0.0,
        **QUIET,
    )
    plain = read_losses(train(checkpoint_dir=str(tmp_path / "plain"), xla=False, **common)["run_dir"])
    run = train(checkpoint_dir=str(tmp_path / "xla"), xla=True, **common)["run_dir"]
    xla = read_losses(run)
    assert json.loads(open(os.path.join(run, "train.json")).read())["xla"] is True
    # The first loss is one forward pass, fused differently by XLA: equal to the log's 5 decimals.
    assert xla[0] == pytest.approx(plain[0], abs=1e-5)
    # Later ones follow updates that amplify rounding (see test_distribute): within 1% of a step's change.
    for t in (1, 2):
        assert abs(xla[t] - plain[t]) <= 0.01 * abs(plain[t] - plain[t - 1]) + 1e-5, (plain, xla)


def test_train_eval_and_score_functions_are_traced_without_autograph(model_dir, monkeypatch):
    """Autograph converts a function's source with gast, which warns on Python 3.13 and more
    (about 2,400 DeprecationWarnings for a training run): rapgen's functions are plain graph code."""
    from tensorflow.python.autograph.impl import api

    from rapgen.judge.perplexity import token_losses

    converted = []
    original = api.converted_call

    def recording(f, *args, **kwargs):
        converted.append(getattr(f, "__qualname__", repr(f)))
        return original(f, *args, **kwargs)

    monkeypatch.setattr(api, "converted_call", recording)
    with warnings.catch_warnings():
        for module in ("gast", "tensorflow.python.autograph"):
            warnings.filterwarnings("error", category=DeprecationWarning, module=module)
        trainer, _ = poisoned_trainer(model_dir, "float32")
        step(trainer, batches(1)[0], 0)
        trainer.eval_loss(tf.constant(batches(1)[0][0]))
        token_losses(trainer.model, np.arange(40, dtype=np.int32), batch_size=2)
    assert converted == []
