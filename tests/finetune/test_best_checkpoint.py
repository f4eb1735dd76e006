"""The best checkpoint and early stopping: model-best kept, used by default, resumed exactly, mirrored.

The runs are tests/support/early_stop_runs.py's (one tiny training session shared with test_tensorboard.py).
"""

import csv
import math
import os

import numpy as np
import pytest

from rapgen.model.checkpoint import read_checkpoint
from rapgen.model.folders import latest_checkpoint
from rapgen.model.loading import load_model

from support.early_stop_runs import MAX_STEPS
from support.helpers import run_cli

pytestmark = pytest.mark.slow  # every test reads the training runs of support/early_stop_runs.py


def _log(run_dir):
    with open(os.path.join(run_dir, "log.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _replay(rows, patience):
    """The rule, replayed on log.csv: (best step, stop step or None, steps marked as new bests)."""
    best, best_step, bad, marked = math.inf, None, 0, []
    for row in rows:
        if not row["val_loss"]:
            continue
        v = float(row["val_loss"])
        if v < best:
            best, best_step, bad = v, int(row["step"]), 0
            marked.append(int(row["step"]))
        else:
            bad += 1
            if bad == patience:
                return best_step, int(row["step"]), marked
    return best_step, None, marked


def test_early_stop_stops_at_the_third_validation_without_a_new_best(early_stop_runs):
    a = early_stop_runs["a"]
    rows = _log(a["run_dir"])
    best_step, stop, marked = _replay(rows, 3)
    assert stop == a["step"] < MAX_STEPS and a["stopped"] == "early_stop"
    assert [int(r["step"]) for r in rows] == list(range(1, stop + 1))  # no step past the stop
    assert a["best_step"] == best_step == stop - 3
    assert [int(r["step"]) for r in rows if r["best"] == "1"] == marked
    assert len(marked) > 3  # the validation loss did fall before it rose
    assert f"early stop at step {stop}: 3 validations without a loss below" in early_stop_runs["said"]
    # The log rounds to 5 decimals; the result holds the number compared.
    assert a["best_val_loss"] == pytest.approx(float(rows[best_step - 1]["val_loss"]), abs=1e-5)


def test_model_best_holds_the_best_step_and_is_never_pruned(early_stop_runs):
    a = early_stop_runs["a"]
    run = a["run_dir"]
    best = read_checkpoint(os.path.join(run, "model-best"))
    assert int(best["rapgen/step"]) == a["best_step"]
    assert float(best["rapgen/best_val_loss"]) == a["best_val_loss"]
    latest = read_checkpoint(os.path.join(run, f"model-{a['step']}"))
    # The weights and the step, no optimizer slots (a third of the size of model-<step> with Adam).
    assert set(best) == {n for n in latest if not n.rsplit("/", 1)[-1].startswith("Adam")}
    assert len(latest) > len(best)
    # Saved every other step and at the stop, max_checkpoints 3: the newest three model-<step>
    # stay, model-best beside them though it is older; the index names the newest.
    saved = sorted(set(range(2, a["step"] + 1, 2)) | {a["step"]})[-3:]
    names = sorted(n for n in os.listdir(run) if n.endswith(".index"))
    assert names == sorted([f"model-{s}.index" for s in saved] + ["model-best.index"])
    assert not os.path.exists(os.path.join(run, f"model-{saved[0] - 2}.index"))  # pruning did happen
    assert latest_checkpoint(run) == os.path.join(run, f"model-{a['step']}")
    with open(os.path.join(run, "checkpoint")) as f:
        assert "model-best" not in f.read()
    assert not np.array_equal(best["model/h0/attn/c_attn/w"], latest["model/h0/attn/c_attn/w"])


def test_the_drive_mirror_carries_model_best(early_stop_runs):
    run, mirror = early_stop_runs["a"]["run_dir"], os.path.join(early_stop_runs["drive"], "a")
    for suffix in (".index", ".data-00000-of-00001"):
        with (
            open(os.path.join(run, "model-best" + suffix), "rb") as x,
            open(os.path.join(mirror, "model-best" + suffix), "rb") as y,
        ):
            assert x.read() == y.read()


def test_resume_after_a_kill_keeps_best_and_patience(early_stop_runs):
    a, b, again = (early_stop_runs[k] for k in ("a", "b", "again"))
    # Resumed where one or two validations had gone by without a new best: a run that lost the
    # count would go on past the stop, one that lost the best would take the next step as one.
    assert a["best_step"] < early_stop_runs["resumed_at"] < a["step"]
    assert (b["step"], b["stopped"], b["best_step"], b["best_val_loss"]) == (
        a["step"],
        "early_stop",
        a["best_step"],
        a["best_val_loss"],
    )
    rows_a, rows_b = _log(a["run_dir"]), _log(b["run_dir"])
    assert [(r["step"], r["loss"], r["val_loss"], r["best"]) for r in rows_b] == [
        (r["step"], r["loss"], r["val_loss"], r["best"]) for r in rows_a
    ]
    best_a = read_checkpoint(os.path.join(a["run_dir"], "model-best"))
    best_b = read_checkpoint(os.path.join(b["run_dir"], "model-best"))
    for name, value in best_a.items():
        np.testing.assert_array_equal(best_b[name], value, err_msg=name)
    # The same command once more: it stopped early, so it trains no further.
    assert (again["step"], again["stopped"], again["loss"]) == (a["step"], "early_stop", None)


def test_sampling_scoring_and_load_model_take_model_best_by_default(early_stop_runs, cli_env):
    from rapgen.judge.perplexity import score

    a = early_stop_runs["a"]
    run = a["run_dir"]
    best, latest = os.path.join(run, "model-best"), os.path.join(run, f"model-{a['step']}")
    assert load_model(run).checkpoint == best
    assert load_model(run, checkpoint="latest").checkpoint == latest
    assert load_model(run, checkpoint="best").checkpoint == best

    # The validation song is scored better by the best than by the newest, which went on to overfit.
    val = early_stop_runs["val"]
    by_default, of_latest = score(val, model=run)["loss"], score(val, model=run, checkpoint="latest")["loss"]
    assert by_default < of_latest

    # The command line says which it took (on stderr: stdout holds the song).
    done = run_cli(["sample", "--model", run, "--artist", "Lil Tofu", "--length", "6", "--seed", "3"], env=cli_env)
    assert done.returncode == 0, done.stderr
    assert f"using {best}, the run's lowest validation loss (--checkpoint latest takes {latest}" in done.stderr
    assert "<<Lil Tofu" in done.stdout and "using" not in done.stdout


def test_a_run_without_validation_has_no_best_and_loads_its_newest(early_stop_runs):
    off = early_stop_runs["off"]
    assert off["best_step"] is None and off["best_val_loss"] is None and off["stopped"] == "steps"
    run = off["run_dir"]
    assert not os.path.exists(os.path.join(run, "model-best.index"))
    assert load_model(run).checkpoint == os.path.join(run, "model-1")


def test_the_loss_plot_marks_the_best_step(early_stop_runs):
    from rapgen.notebook import plot_log

    a = early_stop_runs["a"]
    figure = plot_log(a["run_dir"])
    marks = [line for line in figure.axes[0].get_lines() if "best" in str(line.get_label())]
    assert len(marks) == 1
    assert list(marks[0].get_xdata()) == [a["best_step"]]
    assert marks[0].get_ydata()[0] == pytest.approx(a["best_val_loss"], abs=1e-5)
