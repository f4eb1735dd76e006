"""Damaged checkpoints (a partial Drive sync, a full disk): one line naming the damaged file, the
complete checkpoint to use instead, and the damaged files left as they were. Real checkpoints
written by rapgen's training, real CLI subprocesses."""

import os
import shutil

import pytest

from rapgen.errors import RapgenError
from rapgen.finetune.loop import train
from rapgen.model.checkpoint import checkpoint_problem
from rapgen.model.folders import latest_checkpoint
from rapgen.model.loading import load_model

from support.helpers import THREE_SONGS as LYRICS
from support.helpers import run_cli, snapshot

DATA = ".data-00000-of-00001"
FAST = dict(
    sample_every=0,
    val_every=0,
    print_every=0,
    quiet=True,
    warmup_steps=0,
    val_fraction=0.0,
    batch_size=1,
    sequence_length=8,
    mixed_precision="off",
    distribute="off",
    optimizer="adam",
)


def cut(path, keep=0.5):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def scribble(path, data=b"\x7f" * 600, at=0):
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


DAMAGE = {
    "data cut short": (DATA, lambda p: cut(p, 0.5), "is cut short"),
    "data empty": (DATA, lambda p: cut(p, 0.0), "is cut short: 0 of the"),
    "data overwritten": (DATA, lambda p: scribble(p, at=200), "fails its checksum"),
    "index cut short": (".index", lambda p: cut(p, 0.5), "is not a readable checkpoint index"),
    "index garbage": (".index", lambda p: open(p, "wb").write(os.urandom(300)), "is not a readable checkpoint index"),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model):
    return tiny_model(tmp_path_factory.mktemp("base") / "tiny", n_layer=1, n_embd=16, n_head=2, n_ctx=16, seed=2)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny):
    """A run folder holding model-2 and model-4, both complete, and its lyrics."""
    root = tmp_path_factory.mktemp("run")
    lyrics = root / "lyrics.txt"
    lyrics.write_text(LYRICS, encoding="utf-8")
    train(
        dataset=str(lyrics),
        model=tiny,
        checkpoint_dir=str(root / "ckpt"),
        steps=4,
        save_every=2,
        max_checkpoints=2,
        **FAST,
    )
    run = root / "ckpt" / "run1"
    assert latest_checkpoint(str(run)).endswith("model-4") and os.path.exists(run / f"model-2{DATA}")
    return str(run), str(lyrics)


@pytest.fixture
def damaged_run(trained_run, tmp_path):
    """A copy of the run whose newest checkpoint, model-4, has its data file cut in half."""
    run = tmp_path / "ckpt" / "run1"
    shutil.copytree(trained_run[0], str(run))
    cut(str(run / f"model-4{DATA}"))
    return str(run)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_load_model_names_the_damaged_file_and_leaves_it(tiny, tmp_path, kind):
    suffix, damage, said = DAMAGE[kind]
    model = tmp_path / "model"
    shutil.copytree(tiny, str(model))
    damage(str(model / ("model.ckpt" + suffix)))
    before = snapshot(str(model))
    with pytest.raises(RapgenError) as e:
        load_model(str(model))
    message = str(e.value)
    assert "\n" not in message and said in message
    assert os.path.join(str(model), "model.ckpt" + suffix) in message
    assert "no complete checkpoint beside it" in message
    assert snapshot(str(model)) == before


def test_a_whole_checkpoint_has_no_problem_and_an_older_complete_one_is_named(damaged_run):
    assert checkpoint_problem(os.path.join(damaged_run, "model-2")) is None
    assert "cut short" in checkpoint_problem(os.path.join(damaged_run, "model-4"))
    with pytest.raises(RapgenError) as e:
        load_model(damaged_run)
    older = os.path.join(damaged_run, "model-2")
    assert f"{older} is complete: continue from it with --checkpoint {older}" in str(e.value)
    # That advice works.
    assert load_model(damaged_run, checkpoint=older).checkpoint == older


def test_resuming_a_damaged_run_says_how_to_resume_from_the_older_checkpoint(damaged_run, trained_run, tmp_path):
    before = snapshot(damaged_run)
    options = dict(dataset=trained_run[1], checkpoint_dir=os.path.dirname(damaged_run), **FAST)
    with pytest.raises(RapgenError) as e:
        train(steps=6, **options)
    older = os.path.join(damaged_run, "model-2")
    assert f"model-4{DATA} is cut short" in str(e.value)
    assert f"continue from it with --restore_from {older}" in str(e.value)
    assert snapshot(damaged_run) == before  # nothing deleted, nothing written
    result = train(steps=3, restore_from=older, **options)
    assert result["step"] == 3
    assert os.path.getsize(os.path.join(damaged_run, f"model-4{DATA}")) == len(before[f"model-4{DATA}"])


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sample", "score", "train"])
def test_cli_gives_one_line_naming_the_damaged_file(damaged_run, trained_run, cli_env, command):
    args = {
        "sample": ["sample", "--model", damaged_run, "--length", "4", "--seed", "1"],
        "score": ["score", trained_run[1], "--model", damaged_run],
        "train": [
            "train",
            "--dataset",
            trained_run[1],
            "--checkpoint_dir",
            os.path.dirname(damaged_run),
            "--steps",
            "6",
            "--sequence_length",
            "8",
            "--mixed_precision",
            "off",
        ],
    }[command]
    before = snapshot(damaged_run)
    done = run_cli(args, cli_env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "IndexError" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rapgen: error: checkpoint model-4 is damaged: ")
    assert os.path.join(damaged_run, f"model-4{DATA}") in lines[0]
    flag = "--restore_from" if command == "train" else "--checkpoint"
    assert f"{flag} {os.path.join(damaged_run, 'model-2')}" in lines[0]
    assert snapshot(damaged_run) == before


def test_a_bad_checksum_past_the_weights_is_one_line_on_resume(trained_run, tmp_path):
    """Same size, bytes changed where the step and loss scale are stored (after every model/ tensor
    by name): the weights read whole, the resume state does not."""
    run = tmp_path / "ckpt" / "run1"
    shutil.copytree(trained_run[0], str(run))
    data = str(run / f"model-4{DATA}")
    scribble(data, b"\xff" * 12, at=os.path.getsize(data) - 12)
    with pytest.raises(RapgenError) as e:
        train(dataset=trained_run[1], checkpoint_dir=str(tmp_path / "ckpt"), steps=6, **FAST)
    message = str(e.value)
    assert "\n" not in message and f"model-4{DATA} does not hold what its index records (a checksum fails)" in message
    assert f"--restore_from {run / 'model-2'}" in message
