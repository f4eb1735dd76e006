"""Run folders against their Drive mirror (the newer side wins, a newer mirror is never pruned),
temp files of killed saves cleared when a run starts, and a dataset without separators."""

import csv
import os
import subprocess
import sys

import pytest

from rapgen.errors import RapgenError
from rapgen.finetune.loop import train
from rapgen.model.folders import latest_checkpoint

from support.helpers import THREE_SONGS as LYRICS

DATA = ".data-00000-of-00001"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model):
    return tiny_model(tmp_path_factory.mktemp("base") / "tiny", n_layer=1, n_embd=16, n_head=2, n_ctx=16, seed=4)


@pytest.fixture
def opts(tiny, tmp_path):
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text(LYRICS, encoding="utf-8")
    return dict(
        dataset=str(lyrics),
        model=tiny,
        batch_size=1,
        sequence_length=8,
        save_every=2,
        sample_every=0,
        val_every=0,
        print_every=0,
        warmup_steps=0,
        val_fraction=0.0,
        learning_rate=3e-3,
        mixed_precision="off",
        distribute="off",
        optimizer="adam",
    )


def log_of(run_dir):
    with open(os.path.join(run_dir, "log.csv"), newline="") as f:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(f)}


def steps_in(folder):
    return sorted(
        int(n[len("model-") : -len(".index")])
        for n in os.listdir(folder)
        if n.startswith("model-") and n.endswith(".index")
    )


def said(capsys):
    out = capsys.readouterr()
    return out.out + out.err


@pytest.mark.slow
def test_a_newer_mirror_wins_over_an_older_local_run(opts, tmp_path, capsys):
    drive = str(tmp_path / "drive")
    jupyter, colab = str(tmp_path / "jupyter"), str(tmp_path / "colab")
    # A local Jupyter trains to 2, then a Colab VM takes the run over from Drive and reaches 6.
    train(checkpoint_dir=jupyter, steps=2, drive_dir=drive, quiet=True, **opts)
    train(checkpoint_dir=colab, steps=6, drive_dir=drive, quiet=True, **opts)
    assert steps_in(os.path.join(drive, "run1")) == [6]
    colab_log = log_of(os.path.join(colab, "run1"))
    # Back on the Jupyter machine, whose own run stopped at 2: it continues from the mirror's 6.
    capsys.readouterr()
    result = train(checkpoint_dir=jupyter, steps=8, drive_dir=drive, **opts)
    text = said(capsys)
    assert "the mirror" in text and "is at step 6, newer than" in text and "at step 2" in text
    assert "resuming" in text and "at step 6" in text
    assert result["step"] == 8
    log = log_of(result["run_dir"])
    assert sorted(log) == list(range(1, 9))
    assert all(log[s] == colab_log[s] for s in range(1, 7))  # steps 3-6 came from the Colab run
    assert steps_in(os.path.join(drive, "run1")) == [8]
    assert latest_checkpoint(os.path.join(jupyter, "run1")).endswith("model-8")


def test_a_newer_local_run_wins_over_an_older_mirror(opts, tmp_path, capsys):
    drive = str(tmp_path / "drive")
    local = str(tmp_path / "vm")
    train(checkpoint_dir=local, steps=2, drive_dir=drive, quiet=True, **opts)
    train(checkpoint_dir=local, steps=6, quiet=True, **opts)  # a session without Drive mounted
    assert steps_in(os.path.join(drive, "run1")) == [2]
    capsys.readouterr()
    result = train(checkpoint_dir=local, steps=8, drive_dir=drive, **opts)
    text = said(capsys)
    assert "from the mirror" not in text and "resuming" in text and "at step 6" in text
    assert result["step"] == 8
    assert steps_in(os.path.join(drive, "run1")) == [8]  # the older mirror was updated and pruned


def test_a_save_never_prunes_a_newer_mirror(opts, tmp_path, capsys):
    drive = str(tmp_path / "drive")
    train(checkpoint_dir=str(tmp_path / "a"), steps=2, drive_dir=drive, quiet=True, **opts)
    train(checkpoint_dir=str(tmp_path / "b"), steps=6, drive_dir=drive, quiet=True, **opts)
    mirror_files = sorted(os.listdir(os.path.join(drive, "run1")))
    # Continuing machine a's own older checkpoint on purpose, with the same mirror.
    older = os.path.join(str(tmp_path / "a"), "run1", "model-2")
    capsys.readouterr()
    result = train(checkpoint_dir=str(tmp_path / "a"), steps=4, drive_dir=drive, restore_from=older, **opts)
    text = said(capsys)
    assert result["step"] == 4
    assert "warning: the mirror" in text and "holds model-6, newer than model-4" in text
    assert sorted(os.listdir(os.path.join(drive, "run1"))) == mirror_files  # model-6 and its log are there
    assert steps_in(os.path.join(drive, "run1")) == [6]


def test_a_fresh_start_counts_the_mirror_and_overwrite_keeps_the_old_one_aside(opts, tmp_path, capsys):
    drive = str(tmp_path / "drive")
    train(checkpoint_dir=str(tmp_path / "old_vm"), steps=4, drive_dir=drive, quiet=True, **opts)
    # A new machine, nothing local: starting fresh beside the mirror's run is refused first.
    new_vm = str(tmp_path / "new_vm")
    mirrored = sorted(os.listdir(os.path.join(drive, "run1")))
    with pytest.raises(RapgenError, match=r"^the mirror .*run1 already holds checkpoints: use --restore_from latest"):
        train(checkpoint_dir=new_vm, steps=2, drive_dir=drive, restore_from="fresh", quiet=True, **opts)
    assert sorted(os.listdir(os.path.join(drive, "run1"))) == mirrored and not os.path.exists(new_vm)
    # With --overwrite the new run mirrors into a clean folder (no "mirror is newer" warning),
    # and the old run stays on Drive under another name.
    capsys.readouterr()
    result = train(checkpoint_dir=new_vm, steps=2, drive_dir=drive, restore_from="fresh", overwrite=True, **opts)
    text = said(capsys)
    assert result["step"] == 2 and "newer than" not in text
    assert steps_in(os.path.join(drive, "run1")) == [2]
    kept = [n for n in os.listdir(drive) if n.startswith("run1.replaced-")]
    assert len(kept) == 1 and f"kept as {os.path.join(drive, kept[0])}" in text
    assert sorted(os.listdir(os.path.join(drive, kept[0]))) == mirrored
    # The next `latest` continues the new run, not the old one.
    assert train(checkpoint_dir=new_vm, steps=3, drive_dir=drive, quiet=True, **opts)["step"] == 3


def _start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[19])


def test_a_run_starts_by_removing_temp_files_of_killed_saves(opts, tmp_path, capsys):
    ckpt = str(tmp_path / "ckpt")
    train(checkpoint_dir=ckpt, steps=2, quiet=True, **opts)
    run = os.path.join(ckpt, "run1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_tag = f"pid{dead.pid}-t{_start_time(dead.pid)}"
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live_tag = f"pid{live.pid}-t{_start_time(live.pid)}"
        planted = {
            f".tmp-model-4-{dead_tag}{DATA}.tempstate77": False,
            f".tmp-model-4-{dead_tag}.index": False,
            f".counter.{dead_tag}.abcd1234.tmp": False,
            f".tmp-model-4-{live_tag}{DATA}.tempstate78": True,  # another process still writing
        }
        for name in planted:
            with open(os.path.join(run, name), "wb") as f:
                f.write(b"\0" * 4096)
        capsys.readouterr()
        train(checkpoint_dir=ckpt, steps=4, **opts)
        assert "removed 3 temp file(s) of a killed save" in said(capsys)
        for name, stays in planted.items():
            assert os.path.exists(os.path.join(run, name)) == stays, name
    finally:
        live.kill()
        live.wait()
    assert latest_checkpoint(run).endswith("model-4")


def test_a_dataset_without_separators_warns_once_and_still_trains(opts, tmp_path, capsys):
    one_big = tmp_path / "run_together.txt"
    one_big.write_text(LYRICS.replace("<|endoftext|>\n", ""), encoding="utf-8")
    capsys.readouterr()
    result = train(checkpoint_dir=str(tmp_path / "ckpt"), steps=2, **{**opts, "dataset": str(one_big)})
    warnings = [line for line in said(capsys).splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert str(one_big) in warnings[0] and "<|endoftext|>" in warnings[0] and "one song" in warnings[0]
    assert result["step"] == 2
