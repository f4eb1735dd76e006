"""Training under tf.distribute: two logical CPU devices give the losses and weights of one.

Logical devices must be configured before TensorFlow starts using the CPU, so each run is a
child process. The global batch (4 rows) is split 2 + 2 across the replicas; gradients are
summed across them before the update, so every step matches one device taking all 4 rows.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rapgen.model.checkpoint import read_checkpoint
from rapgen.model.folders import latest_checkpoint

pytestmark = pytest.mark.slow  # each test starts child processes that train

CHILD = r"""
import json, os, sys
import tensorflow as tf
spec = json.loads(sys.argv[1])
if spec["devices"] > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * spec["devices"])
from rapgen.errors import RapgenError
from rapgen.finetune.loop import train
try:
    result = train(**spec["options"])
except RapgenError as e:
    sys.exit("ERROR " + str(e))
print("RESULT " + json.dumps(result))
"""

# Invented for these tests.
LYRICS = "".join(
    f"<<Kid Pixel - Level {i}>>\n[Verse 1: Kid Pixel]\npress start on the beat, level {i}, never respawn slow\n"
    f"coins in the bank and the boss fight {i} on the radio\n<|endoftext|>\n"
    for i in range(12)
)


def run_training(devices, tmp_path, model_dir, lyrics, **options):
    options = {
        **dict(
            dataset=lyrics,
            model=model_dir,
            checkpoint_dir=str(tmp_path / f"ckpt{devices}"),
            steps=3,
            batch_size=4,
            sequence_length=16,
            learning_rate=1e-2,
            warmup_steps=0,
            val_fraction=0.0,
            save_every=0,
            sample_every=0,
            val_every=0,
            print_every=0,
            # Pinned: "auto" computes in bfloat16 on a CPU with AVX-512 BF16 or AMX.
            mixed_precision="off",
            distribute="mirrored" if devices > 1 else "off",
        ),
        **options,
    }
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps({"devices": devices, "options": options})],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    run_dir = json.loads(lines[-1][len("RESULT ") :])["run_dir"]
    with open(os.path.join(run_dir, "log.csv")) as f:
        losses = [float(row.split(",")[1]) for row in f.read().splitlines()[1:]]
    return losses, read_checkpoint(latest_checkpoint(run_dir)), proc.stdout + proc.stderr


@pytest.fixture
def lyrics(tmp_path):
    path = tmp_path / "lyrics.txt"
    path.write_text(LYRICS, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    "options",
    [
        dict(optimizer="adam"),
        dict(optimizer="adafactor", accumulate_gradients=2),
    ],
    ids=["adam", "adafactor-accumulate"],
)
def test_two_devices_match_one(options, tmp_path, tiny_model_dir, lyrics):
    one, weights_one, _ = run_training(1, tmp_path, tiny_model_dir, lyrics, **options)
    two, weights_two, log = run_training(2, tmp_path, tiny_model_dir, lyrics, **options)
    assert len(one) == len(two) == 3
    # The first loss is the forward pass alone, split 2 + 2 over the replicas: only the order of
    # float32 sums differs (relative error ~1e-7), so it agrees to the log's 5 decimals.
    assert two[0] == pytest.approx(one[0], abs=1e-5)
    # Later losses come after updates. Adam and Adafactor divide each gradient by its own size,
    # so a gradient's relative rounding error becomes an absolute error in the update: where a
    # gradient is a near-cancelling sum, the two runs' updates differ by up to 1% of a step
    # (the weights' atol below). A fixed rtol of 1e-5 was not implied by that: with Adafactor
    # the two runs measured 1.2e-5 apart at step 3 on an AVX2 CPU with oneDNN's options set
    # explicitly, and missed 1e-5 on an AVX-512 BF16 one.
    # The bound that follows from it: these early updates are about lr * sign(g) per weight, so
    # one step changes the loss by about lr * |g|_1, while weights at most 1% of lr apart
    # change it by at most 0.01 * lr * |g|_1 (Hoelder, to first order): 1% of one step's change
    # in the loss, plus the first loss's rounding.
    for t in range(1, 3):
        assert abs(two[t] - one[t]) <= 0.01 * abs(one[t] - one[t - 1]) + 1e-5, (t, one, two)
    assert one[-1] < one[0]  # it learned, so the steps did update something
    for name, value in weights_one.items():
        if options["optimizer"] == "adafactor" and "c_attn/b" in name:
            # The keys' bias has a gradient of exactly zero (it adds the same amount to every
            # score of a row), so what reaches Adafactor is rounding noise, which it divides by
            # its own size: the update is +-lr by the noise's sign. The loss cannot see it.
            continue
        # The checkpoint holds one copy of each variable, optimizer slots included. Sums over
        # devices round differently, and both optimizers divide by the gradient's own size:
        # where a gradient is near zero that moves an update by a small share of the learning
        # rate (1e-2 a step), hence atol 1e-4, 1% of one step. Adafactor with accumulation sums two
        # micro-batch gradients per replica before that division: on a 2-core AMD EPYC (AVX2), 10 of the
        # 12,288 weights of h0/attn/c_attn/w ended 1.9e-4 apart, on the code before and after the
        # package split alike. For it the bound is 5% of one step; the loss check above stays at 1%.
        atol = 5e-4 if options["optimizer"] == "adafactor" else 1e-4
        np.testing.assert_allclose(weights_two[name], value, rtol=1e-4, atol=atol, err_msg=name)
    assert "2 replicas (MirroredStrategy)" in log


def test_batch_that_does_not_split_is_refused(tmp_path, tiny_model_dir, lyrics):
    with pytest.raises(AssertionError) as failure:
        run_training(2, tmp_path, tiny_model_dir, lyrics, batch_size=3)
    assert "ERROR --batch_size 3 does not split evenly over 2 devices: use a multiple of 2" in str(failure.value)
    assert not os.path.exists(tmp_path / "ckpt2" / "run1")  # refused before anything was written
