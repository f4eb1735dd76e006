"""The tiny training runs that finetune/test_best_checkpoint.py and finetune/test_tensorboard.py share.

One session-scoped fixture, `early_stop_runs` (a plugin of tests/conftest.py, so defined once),
trains a 1-layer, 16-wide GPT-2 on the three test songs and validates on a fourth after every
step, with `--early_stop 3`:

* run `a`: uninterrupted, saving every other step, until early stopping ends it, mirrored to a Drive folder;
* run `b`: a copy of `a` as a kill after the save at step `resumed_at` (stop-2 or stop-1, whichever
  was saved) would have left it: the newer checkpoints gone, the index back on that one; log.csv
  and the event files hold the lost steps too, as they do after a kill, and the event file ends
  in half a record (killed mid-write). Then run again with the same command, and once more;
* run `off`: one step with `--tensorboard False` and no validation.

Every setting the CPU or the machine would otherwise decide is pinned (precision, devices,
optimizer, recompute, full fine-tuning).
"""

import os
import shutil

import pytest

from support.helpers import THREE_SONGS

VAL_SONG = (
    "<<Lil Tofu - Miso Money>>\n[Verse 1: Lil Tofu]\nmiso in the bowl and the money on the floor\n<|endoftext|>\n"
)

SETTINGS = dict(
    batch_size=2,
    sequence_length=16,
    learning_rate=1e-2,
    warmup_steps=0,
    val_every=1,
    val_batches=1,
    early_stop=3,
    save_every=2,
    sample_every=10,
    sample_length=4,
    print_every=0,
    max_checkpoints=3,
    mixed_precision="off",
    distribute="off",
    optimizer="adam",
    recompute=False,
    only_train_transformer_layers=False,
    lora_rank=0,
)
MAX_STEPS = 200


def _remove_checkpoint(prefix):
    for suffix in (".index", ".data-00000-of-00001"):
        os.unlink(prefix + suffix)


@pytest.fixture(scope="session")
def early_stop_runs(tmp_path_factory, vocab_dir):
    return _train(tmp_path_factory, vocab_dir)


def _train(tmp_path_factory, vocab_dir):
    import contextlib
    import io

    from rapgen.finetune.loop import train
    from rapgen.model.checkpoint import write_checkpoint_index
    from rapgen.model.folders import init

    root = tmp_path_factory.mktemp("early_stop")
    model = str(root / "model")
    init(model, n_layer=1, n_embd=16, n_head=2, n_ctx=32, seed=0, vocab_dir=vocab_dir)
    (root / "train.txt").write_text(THREE_SONGS, encoding="utf-8")
    (root / "val.txt").write_text(VAL_SONG, encoding="utf-8")
    common = dict(
        dataset=str(root / "train.txt"),
        val_dataset=str(root / "val.txt"),
        model=model,
        checkpoint_dir=str(root / "checkpoints"),
        **SETTINGS,
    )

    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(io.StringIO()):
        a = train(run_name="a", steps=MAX_STEPS, drive_dir=str(root / "drive"), **common)
    stop = a["step"]
    assert a["stopped"] == "early_stop" and 4 <= stop < MAX_STEPS, a  # what the runs below build on

    # One or two validations after the best: the count of validations without a new best is 1 or 2.
    resumed_at = stop - 2 if stop % 2 == 0 else stop - 1
    b_dir = os.path.join(common["checkpoint_dir"], "b")
    shutil.copytree(a["run_dir"], b_dir)
    for step in range(resumed_at + 1, stop + 1):
        if os.path.exists(os.path.join(b_dir, f"model-{step}.index")):
            _remove_checkpoint(os.path.join(b_dir, f"model-{step}"))
    write_checkpoint_index(b_dir, [os.path.join(b_dir, f"model-{resumed_at}")])
    events = [os.path.join(b_dir, "tensorboard", n) for n in os.listdir(os.path.join(b_dir, "tensorboard"))]
    assert len(events) == 1
    with open(events[0], "rb+") as f:
        f.truncate(os.path.getsize(events[0]) - 5)
    b = train(run_name="b", steps=MAX_STEPS, **{**common, "quiet": True})
    again = train(run_name="b", steps=MAX_STEPS, **{**common, "quiet": True})

    off = train(
        run_name="off",
        steps=1,
        tensorboard=False,
        quiet=True,
        **{**common, "val_every": 0, "early_stop": 0, "sample_every": 0},
    )
    return dict(
        root=root,
        model=model,
        a=a,
        said=said.getvalue(),
        b=b,
        again=again,
        off=off,
        resumed_at=resumed_at,
        drive=str(root / "drive"),
        val=str(root / "val.txt"),
    )
