"""TensorBoard event files: the expected tags at the expected steps, each step once after a resume.

The runs are tests/support/early_stop_runs.py's (one tiny training session shared with test_best_checkpoint.py).
The files are read back with `tf.data.TFRecordDataset`, as TensorBoard reads them.
"""

import csv
import os

import pytest

from rapgen.finetune.events import read_events, show_tensorboard

from support.early_stop_runs import SETTINGS

pytestmark = pytest.mark.slow  # every test reads the training runs of support/early_stop_runs.py

TAGS = {"loss", "avg_loss", "val_loss", "best_val_loss", "learning_rate", "tokens_per_sec", "loss_scale", "samples"}


def _log(run_dir):
    with open(os.path.join(run_dir, "log.csv"), newline="") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def test_events_hold_every_figure_at_its_step(early_stop_runs):
    a = early_stop_runs["a"]
    folder = os.path.join(a["run_dir"], "tensorboard")
    events = read_events(folder)
    assert set(events) == TAGS
    log, steps = _log(a["run_dir"]), list(range(1, a["step"] + 1))
    for tag in ("loss", "avg_loss", "learning_rate", "tokens_per_sec", "loss_scale", "val_loss", "best_val_loss"):
        assert [s for s, _ in events[tag]] == steps, tag  # validated every step
    # log.csv rounds: losses to 5 decimals, tokens/s to 1.
    for tag, places in (("loss", 1e-5), ("avg_loss", 1e-5), ("val_loss", 1e-5), ("tokens_per_sec", 0.05)):
        for step, value in events[tag]:
            assert value == pytest.approx(float(log[step][tag]), abs=places * 1.01), (tag, step)
    assert all(v == pytest.approx(SETTINGS["learning_rate"]) for _, v in events["learning_rate"])
    assert all(v == 1.0 for _, v in events["loss_scale"])  # float32: no loss scaling
    best = dict(events["best_val_loss"])
    assert best[a["step"]] == pytest.approx(a["best_val_loss"]) and best[1] == dict(events["val_loss"])[1]
    # The samples as text, at each sampling step, as samples/step-N.txt holds them.
    sample_steps = [s for s in steps if s % SETTINGS["sample_every"] == 0]
    assert [s for s, _ in events["samples"]] == sample_steps
    for step, text in events["samples"]:
        with open(os.path.join(a["run_dir"], "samples", f"step-{step}.txt"), encoding="utf-8") as f:
            assert text == f.read() and text.startswith("<<")
    # Mirrored with the run.
    mirrored = read_events(os.path.join(early_stop_runs["drive"], "a", "tensorboard"))
    assert [s for s, _ in mirrored["loss"]] == steps


def test_a_resumed_run_appends_each_step_once(early_stop_runs):
    a, b = early_stop_runs["a"], early_stop_runs["b"]
    folder = os.path.join(b["run_dir"], "tensorboard")
    # The copied files held every step to the stop; the resumed run cut the lost steps out of
    # them and wrote them again in a new file.
    assert len([n for n in os.listdir(folder) if n.startswith("events.out.tfevents.")]) == 2
    events_a, events_b = read_events(os.path.join(a["run_dir"], "tensorboard")), read_events(folder)
    for tag in ("loss", "val_loss", "best_val_loss", "learning_rate"):
        assert events_b[tag] == events_a[tag], tag  # the same steps, once each, the same values (exact resume)
    assert [s for s, _ in events_b["tokens_per_sec"]] == [s for s, _ in events_a["tokens_per_sec"]]


def test_tensorboard_false_writes_no_events_and_keeps_the_csv(early_stop_runs):
    run = early_stop_runs["off"]["run_dir"]
    assert not os.path.exists(os.path.join(run, "tensorboard"))
    assert list(_log(run)) == [1]


def test_the_notebook_cell_off_colab_says_how_to_open_it(capsys, monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    show_tensorboard("checkpoints")
    out = capsys.readouterr().out
    assert "tensorboard --logdir checkpoints" in out and len(out.strip().splitlines()) == 1
