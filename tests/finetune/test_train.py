"""Fine-tuning: learning, update equivalences, run folders, exact resume, Drive, interchange, bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from rapgen.errors import RapgenError
from rapgen.finetune.config import TrainConfig
from rapgen.finetune.loop import train
from rapgen.finetune.step import Trainer
from rapgen.model.checkpoint import read_checkpoint
from rapgen.model.folders import latest_checkpoint
from rapgen.model.hparams import HParams
from rapgen.model.loading import load_model

from support.helpers import THREE_SONGS as LYRICS
from support.helpers import run_cli

# Pinned: "auto" would compute in bfloat16 on a CPU with AVX-512 BF16 or AMX, and distribute over GPUs.
PINNED = dict(mixed_precision="off", distribute="off")
FAST = dict(save_every=0, sample_every=0, val_every=0, print_every=0, quiet=True, warmup_steps=0, **PINNED)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model):
    return tiny_model(tmp_path_factory.mktemp("m") / "tiny", n_layer=2, n_embd=32, n_head=2, n_ctx=32, seed=1)


@pytest.fixture
def lyrics(tmp_path):
    path = tmp_path / "lyrics.txt"
    path.write_text(LYRICS, encoding="utf-8")
    return str(path)


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.csv"), newline="") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


@pytest.mark.slow
def test_tiny_model_overfits_tiny_lyrics(model_dir, lyrics, tmp_path):
    # Three short songs, about 60 tokens. Chance level is ln(50257) = 10.8 nats; a model that
    # has memorised the windows predicts nearly every token, so its loss drops far below the
    # 2 nats that even a perfect unigram model of this text would need (about 40 distinct tokens,
    # ln 40 = 3.7): only memorising the sequence gets under 1.5.
    result = train(
        dataset=lyrics,
        model=model_dir,
        checkpoint_dir=str(tmp_path),
        steps=120,
        batch_size=4,
        learning_rate=3e-3,
        val_fraction=0.0,
        sequence_length=24,
        **FAST,
    )
    log = read_log(result["run_dir"])
    assert log[1] > 9.0
    assert np.mean([log[s] for s in range(111, 121)]) < 1.5


def _trainer(model_dir, **kw):
    model = load_model(model_dir)
    cfg = TrainConfig(dataset="x", **kw)
    names = [n for n in model.variables_by_name if not cfg.only_train_transformer_layers or n.startswith("model/h")]
    return Trainer(cfg, model, names)


def _weights(trainer):
    return {n: v.numpy().copy() for n, v in trainer.model.variables_by_name.items()}


def test_accumulated_batches_of_one_equal_one_batch(model_dir):
    rows = np.random.default_rng(0).integers(0, 50257, size=(4, 17)).astype(np.int32)
    results = []
    for batches in (rows[:, None, :], rows[None]):  # [4, 1, 17] accumulated vs [1, 4, 17]
        t = _trainer(model_dir, optimizer="adam")
        loss = float(t.train_step(tf.constant(batches), tf.constant(1e-3), tf.constant(0, tf.int64)))
        results.append((loss, _weights(t)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for name, w in results[0][1].items():
        np.testing.assert_allclose(w, results[1][1][name], atol=2e-6, err_msg=name)


def test_recompute_gives_the_same_update(model_dir):
    rows = np.random.default_rng(1).integers(0, 50257, size=(1, 2, 17)).astype(np.int32)
    out = []
    for recompute in (False, True):
        t = _trainer(model_dir, optimizer="sgd", recompute=recompute)
        t.train_step(tf.constant(rows), tf.constant(1.0), tf.constant(0, tf.int64))
        out.append(_weights(t))
    for name in out[0]:
        np.testing.assert_allclose(out[0][name], out[1][name], atol=1e-5, err_msg=name)


def test_only_transformer_layers_freezes_embeddings_and_final_norm(model_dir, lyrics, tmp_path):
    before = read_checkpoint(latest_checkpoint(model_dir))
    result = train(
        dataset=lyrics,
        model=model_dir,
        checkpoint_dir=str(tmp_path),
        steps=3,
        batch_size=2,
        only_train_transformer_layers=True,
        sequence_length=16,
        learning_rate=1e-2,
        **FAST,
    )
    after = read_checkpoint(latest_checkpoint(result["run_dir"]))
    for name in ("model/wte", "model/wpe", "model/ln_f/g", "model/ln_f/b"):
        np.testing.assert_array_equal(before[name], after[name])
    assert not np.array_equal(before["model/h0/attn/c_attn/w"], after["model/h0/attn/c_attn/w"])
    assert "model/wte/Adam" not in after and "model/h1/mlp/c_fc/w/Adam" in after


def test_run_folder_is_a_model_directory_and_keeps_newest(model_dir, lyrics, tmp_path):
    result = train(
        dataset=lyrics,
        model=model_dir,
        checkpoint_dir=str(tmp_path),
        steps=6,
        save_every=2,
        max_checkpoints=2,
        sequence_length=16,
        sample_every=3,
        sample_length=8,
        val_every=0,
        print_every=0,
        quiet=True,
        val_fraction=0.0,
        **PINNED,
    )
    run = result["run_dir"]
    names = sorted(os.listdir(run))
    assert [n for n in names if n.endswith(".index")] == ["model-4.index", "model-6.index"]
    assert open(os.path.join(run, "counter")).read().strip() == "6"
    with open(os.path.join(run, "checkpoint")) as f:
        index = f.read()
    assert 'model_checkpoint_path: "model-6"' in index and os.sep + "model" not in index
    assert os.path.exists(os.path.join(run, "samples", "step-6.txt"))
    assert open(os.path.join(run, "samples", "step-6.txt")).read().startswith("<<")
    # Anything that takes a model directory takes the run folder.
    assert load_model(run).hparams == HParams.load(model_dir)


def _train_cmd(model_dir, lyrics, ckpt, steps, extra=()):
    return [
        "train",
        "--dataset",
        lyrics,
        "--model",
        model_dir,
        "--checkpoint_dir",
        ckpt,
        "--steps",
        str(steps),
        "--batch_size",
        "2",
        "--sequence_length",
        "16",
        "--save_every",
        "5",
        "--sample_every",
        "0",
        "--val_every",
        "0",
        "--print_every",
        "0",
        "--warmup_steps",
        "3",
        "--learning_rate",
        "3e-3",
        "--mixed_precision",
        "off",
        "--distribute",
        "off",
        *extra,
    ]


@pytest.mark.slow
def test_exact_resume_after_sigkill(model_dir, lyrics, tmp_path, cli_env):
    steps = 30
    # The reference: one uninterrupted run.
    done = run_cli(_train_cmd(model_dir, lyrics, str(tmp_path / "a"), steps), cli_env)
    assert done.returncode == 0, done.stderr
    reference = read_log(str(tmp_path / "a" / "run1"))
    assert sorted(reference) == list(range(1, steps + 1))

    # The same command, killed like a vanished Colab VM once a checkpoint exists, then run again.
    cmd = [sys.executable, "-m", "rapgen", *_train_cmd(model_dir, lyrics, str(tmp_path / "b"), steps)]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_b = tmp_path / "b" / "run1"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run_b / "counter").exists() and int((run_b / "counter").read_text() or 0) >= 10:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int((run_b / "counter").read_text())
    assert 10 <= killed_at < steps, "the run finished before it could be killed: make it longer"

    again = run_cli(_train_cmd(model_dir, lyrics, str(tmp_path / "b"), steps), cli_env)
    assert again.returncode == 0, again.stderr
    resumed = read_log(str(run_b))
    assert sorted(resumed) == list(range(1, steps + 1))
    for step in range(1, steps + 1):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-5), step


@pytest.mark.slow
def test_restore_from_drive_mirror_on_a_new_machine(model_dir, lyrics, tmp_path, capsys):
    drive = tmp_path / "drive"
    common = dict(
        dataset=lyrics,
        model=model_dir,
        batch_size=2,
        sequence_length=16,
        save_every=2,
        seed=3,
        **{k: v for k, v in FAST.items() if k not in ("save_every", "quiet")},
    )
    reference = train(checkpoint_dir=str(tmp_path / "ref"), steps=8, quiet=True, **common)
    train(checkpoint_dir=str(tmp_path / "vm1"), steps=4, drive_dir=str(drive), quiet=True, **common)
    assert latest_checkpoint(str(drive / "run1")).endswith("model-4")
    # A new VM: nothing local, the mirror holds step 4.
    capsys.readouterr()
    result = train(checkpoint_dir=str(tmp_path / "vm2"), steps=8, drive_dir=str(drive), **common)
    said = capsys.readouterr()
    said = said.out + said.err
    assert "from the mirror" in said and "at step 4" in said
    assert result["step"] == 8
    log = read_log(result["run_dir"])
    ref_log = read_log(reference["run_dir"])
    assert sorted(log) == list(range(1, 9))  # 1-4 came back with the mirror, 5-8 trained here
    for step in range(1, 9):
        assert log[step] == pytest.approx(ref_log[step], rel=1e-5), step
    assert latest_checkpoint(str(drive / "run1")).endswith("model-8")


def test_gpt2_simple_run_folder_resumes(model_dir, lyrics, tmp_path, monkeypatch):
    # A run folder as gpt-2-simple writes it: TF1 graph-mode Saver over the model variables
    # and Adam's slots, saved from the working directory as checkpoint/run1/model-5.
    monkeypatch.chdir(tmp_path)
    weights = read_checkpoint(latest_checkpoint(model_dir))
    run = tmp_path / "checkpoint" / "run1"
    run.mkdir(parents=True)
    with tf.Graph().as_default():
        variables = []
        for name, value in weights.items():
            variables.append(tf.compat.v1.Variable(value, name=name))
            if name.startswith("model/h"):
                variables.append(tf.compat.v1.Variable(np.full_like(value, 1e-3), name=name + "/Adam"))
                variables.append(tf.compat.v1.Variable(np.full_like(value, 1e-6), name=name + "/Adam_1"))
        variables.append(tf.compat.v1.Variable(0.9**5, name="beta1_power"))
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, os.path.join("checkpoint", "run1", "model"), global_step=5)
    for name in ("hparams.json", "encoder.json", "vocab.bpe"):
        (run / name).write_bytes(open(os.path.join(model_dir, name), "rb").read())
    (run / "counter").write_text("5")

    result = train(
        dataset=lyrics, checkpoint_dir="checkpoint", run_name="run1", steps=7, batch_size=2, sequence_length=16, **FAST
    )
    assert result["step"] == 7
    saved = read_checkpoint(str(run / "model-7"))
    assert set(weights) <= set(saved)
    # Adam's slots came from their checkpoint: after two more updates they are not the
    # zeros a fresh optimizer would have started from.
    assert np.all(saved["model/h0/mlp/c_fc/w/Adam_1"] > 0)


@pytest.mark.slow
def test_sigint_saves_and_exits_cleanly(model_dir, lyrics, tmp_path, cli_env):
    cmd = [sys.executable, "-m", "rapgen", *_train_cmd(model_dir, lyrics, str(tmp_path), -1)]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run1" / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) > 8):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    last = max(read_log(str(tmp_path / "run1")))
    assert latest_checkpoint(str(tmp_path / "run1")).endswith(f"model-{last}")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(steps=0), "--steps"),
        (dict(sequence_length=33), "sequence_length"),
        (dict(optimizer="lion"), "unknown --optimizer 'lion': choose auto, adam, adafactor, sgd"),
        (dict(recompute="maybe"), "--recompute must be True, False or auto; got 'maybe'"),
        (dict(memory_gb=-3), "--memory_gb must be a positive number of GiB, got -3"),
        (dict(batch_size=0), "batch_size"),
        # An unknown option is the signature's: TypeError in Python, one line from the command
        # line (tests/cli/test_cli_sweep.py).
    ],
)
def test_bad_settings_are_one_line_errors(model_dir, lyrics, tmp_path, options, message):
    args = dict(dataset=lyrics, model=model_dir, checkpoint_dir=str(tmp_path), **FAST)
    args.update(options)
    with pytest.raises(RapgenError, match=message) as info:
        train(**{**args, "steps": options.get("steps", 2)})
    assert "\n" not in str(info.value)
    assert not os.path.exists(tmp_path / "run1" / "checkpoint")


@pytest.mark.slow
def test_auto_memory_settings_are_chosen_said_saved_and_kept_on_resume(model_dir, lyrics, tmp_path, capsys):
    opts = dict(
        dataset=lyrics,
        model=model_dir,
        checkpoint_dir=str(tmp_path),
        sequence_length=8,
        **{**FAST, "quiet": False, "print_every": 0},
    )
    # A roomy budget: the fastest choice, Adam without recompute, and the reason printed. A Colab
    # dropdown's "False" is the boolean.
    train(steps=2, memory_gb=64, only_train_transformer_layers="False", **opts)
    out = capsys.readouterr().out
    assert "memory: " in out and ": adam, est. peak" in out and "override" in out
    saved = json.loads((tmp_path / "run1" / "train.json").read_text())
    assert (saved["optimizer"], saved["recompute"], saved["only_train_transformer_layers"]) == ("adam", False, False)
    # A budget the runtime alone fills: the smallest choice, with a warning, not a refusal. (Full
    # fine-tuning pinned: lora_rank "auto" would take LoRA here, tests/model/test_lora.py.)
    train(steps=2, memory_gb=1, lora_rank=0, **{**opts, "run_name": "small"})
    out = capsys.readouterr().out
    assert "nothing fits" in out and "warning: this may run out of memory" in out
    saved = json.loads((tmp_path / "small" / "train.json").read_text())
    assert (saved["optimizer"], saved["recompute"], saved["only_train_transformer_layers"]) == ("adafactor", True, True)
    # Resuming with "auto" keeps the run's optimizer whatever the budget now says.
    train(steps=4, memory_gb=64, **{**opts, "run_name": "small"})
    saved = json.loads((tmp_path / "small" / "train.json").read_text())
    assert (saved["optimizer"], saved["recompute"]) == ("adafactor", True)
    newest = latest_checkpoint(str(tmp_path / "small"))
    assert newest.endswith("model-4") and "model/h0/mlp/c_fc/w/Adafactor_vr" in read_checkpoint(newest)


def test_resuming_with_another_model_shape_is_refused(model_dir, lyrics, tmp_path, vocab_dir):
    train(
        dataset=lyrics, model=model_dir, checkpoint_dir=str(tmp_path), steps=2, batch_size=1, sequence_length=8, **FAST
    )
    before = sorted(os.listdir(tmp_path / "run1"))
    with pytest.raises(RapgenError, match="n_layer"):
        train(dataset=lyrics, model="355M", checkpoint_dir=str(tmp_path), steps=4, **FAST)
    assert sorted(os.listdir(tmp_path / "run1")) == before


def test_fresh_refuses_to_replace_a_run(model_dir, lyrics, tmp_path):
    train(dataset=lyrics, model=model_dir, checkpoint_dir=str(tmp_path), steps=2, sequence_length=8, **FAST)
    with pytest.raises(RapgenError, match="already holds checkpoints"):
        train(dataset=lyrics, model=model_dir, checkpoint_dir=str(tmp_path), steps=2, restore_from="fresh", **FAST)
    assert latest_checkpoint(str(tmp_path / "run1")).endswith("model-2")


@pytest.mark.slow
def test_a_full_disk_during_save_keeps_the_previous_checkpoint(model_dir, lyrics, tmp_path, cli_env):
    first = run_cli(_train_cmd(model_dir, lyrics, str(tmp_path), 5), cli_env)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "run1"
    size = os.path.getsize(run / "model-5.data-00000-of-00001")
    # The next save cannot write a file as big as a checkpoint: the kernel answers EFBIG,
    # as a full disk answers ENOSPC (SIGXFSZ ignored so the write fails instead of killing).
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({size // 2}, {size // 2}))\n"
        "from rapgen.cli.commands import main\n"
        f"sys.exit(main({_train_cmd(model_dir, lyrics, str(tmp_path), 10)!r}))\n"
    )
    second = subprocess.run([sys.executable, "-c", script], env=cli_env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2
    assert "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith("rapgen: error: could not write checkpoint")
    assert latest_checkpoint(str(run)).endswith("model-5")
    assert not [n for n in os.listdir(run) if n.startswith(".tmp")]
    load_model(str(run))  # still loadable


def test_the_parts_of_training_never_import_the_loop(cli_env):
    """Data flows one way: the config, the step, run folders and training samples are read and
    tested without `rapgen.finetune.loop` (the loop), and without TensorFlow until they need it."""
    script = (
        "import sys\n"
        "import rapgen.finetune.config, rapgen.finetune.step, rapgen.finetune.run, rapgen.finetune.samples\n"
        "print(sorted(m for m in ('rapgen.finetune.loop', 'tensorflow') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=cli_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
