"""rapgen.notebook: what the notebook cells call, tested without a kernel."""

import json
import os
import shutil
import sys
import types

import pytest

import rapgen.notebook as notebook
from rapgen.errors import RapgenError

from support.helpers import ROOT

SAMPLE_LYRICS = ROOT / "data" / "sample_lyrics.txt"


@pytest.fixture(autouse=True)
def _not_colab(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for name in ("RAPGEN_SMOKE", "RAPGEN_SMOKE_GENIUS_API", "RAPGEN_SMOKE_GENIUS_WEB", "GENIUS_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("0", False), ("", False), (None, False)])
def test_smoke_follows_the_environment(monkeypatch, value, expected):
    if value is not None:
        monkeypatch.setenv("RAPGEN_SMOKE", value)
    assert notebook.smoke() is expected


def test_drive_folder_off_colab_is_a_local_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = notebook.drive_folder()
    assert folder == str(tmp_path / "drive") and os.path.isdir(folder)
    assert "not on Colab" in capsys.readouterr().out
    assert notebook.drive_folder(local="elsewhere/deeper") == str(tmp_path / "elsewhere" / "deeper")


def test_drive_folder_on_colab_mounts_drive(tmp_path, monkeypatch):
    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "MyDrive" / "rapgen"
    assert notebook.drive_folder(path=str(target)) == str(target)
    assert mounted == ["/content/drive"]
    assert target.is_dir() and not (tmp_path / "drive").exists()


def test_setup_report_names_versions_and_device(capsys, monkeypatch):
    import tensorflow as tf

    monkeypatch.setenv("RAPGEN_SMOKE", "1")
    assert notebook.setup_report() is None
    out = capsys.readouterr().out
    assert f"TensorFlow {tf.__version__}" in out and "rapgen " in out and "smoke mode" in out
    if tf.config.list_physical_devices("GPU"):
        assert "GPU: " in out
    else:
        assert "no GPU: training will be slow" in out


@pytest.mark.slow
def test_setup_report_leaves_the_kernels_environment_alone(tmp_path):
    # Fresh interpreters, as a notebook kernel is: TensorFlow is not imported yet, so the muted
    # import really runs. TensorFlow's own import sets a few variables of its own; the kernel's
    # environment after setup_report must be exactly what importing TensorFlow leaves.
    import subprocess

    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS", "RAPGEN_DEBUG")
    }
    show = "import json, os, sys; assert 'tensorflow' in sys.modules; print(json.dumps(dict(os.environ)))"
    after = {}
    for name, call in (("plain", "import tensorflow"), ("report", "import rapgen.notebook as n; n.setup_report()")):
        done = subprocess.run(
            [sys.executable, "-c", f"{call}; {show}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        after[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert after["report"] == after["plain"]


# -- collecting -----------------------------------------------------------------------


def test_genius_token_says_whether_it_is_there_but_never_what(monkeypatch, capsys):
    assert notebook.genius_token() is False
    assert "GENIUS_ACCESS_TOKEN" in capsys.readouterr().out
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", "s3cret-t0ken")
    assert notebook.genius_token() is True
    out = capsys.readouterr().out
    assert "found" in out and "s3cret" not in out


def test_genius_urls_are_genius_unless_smoke(monkeypatch):
    assert notebook.genius_urls() == {"api_url": "https://api.genius.com", "web_url": "https://genius.com"}
    monkeypatch.setenv("RAPGEN_SMOKE", "1")
    with pytest.raises(RapgenError, match="RAPGEN_SMOKE_GENIUS_API"):
        notebook.genius_urls()
    monkeypatch.setenv("RAPGEN_SMOKE_GENIUS_API", "http://127.0.0.1:9/api")
    monkeypatch.setenv("RAPGEN_SMOKE_GENIUS_WEB", "http://127.0.0.1:9")
    assert notebook.genius_urls() == {"api_url": "http://127.0.0.1:9/api", "web_url": "http://127.0.0.1:9"}


def test_preview_prints_the_first_song(capsys):
    notebook.preview(str(SAMPLE_LYRICS))
    out = capsys.readouterr().out
    assert "30 songs" in out
    assert out.count("<|endoftext|>") == 1 and "<<Lil Tofu - " in out
    notebook.preview(str(SAMPLE_LYRICS), songs=3, max_chars=50)
    assert capsys.readouterr().out.rstrip().endswith("…")


# -- runs -----------------------------------------------------------------------------


def fake_run(folder, step, mtime, vocab_dir=None, dataset=None):
    """A run folder as far as find_run/run_artists look: a complete checkpoint, maybe vocab and train.json."""
    os.makedirs(folder, exist_ok=True)
    for suffix in (".index", ".data-00000-of-00001"):
        path = os.path.join(folder, f"model-{step}{suffix}")
        open(path, "wb").close()
        os.utime(path, (mtime, mtime))
    if vocab_dir:
        for name in ("encoder.json", "vocab.bpe"):
            shutil.copy(os.path.join(vocab_dir, name), folder)
    if dataset:
        with open(os.path.join(folder, "train.json"), "w") as f:
            json.dump({"dataset": str(dataset)}, f)
    return str(folder)


def test_find_run_takes_the_named_or_the_newest(tmp_path, capsys):
    old = fake_run(tmp_path / "old", 900, 1_000_000)
    new = fake_run(tmp_path / "new", 10, 2_000_000)
    os.makedirs(tmp_path / "empty")
    assert notebook.find_run(str(tmp_path)) == new
    assert "newest run" in capsys.readouterr().out
    assert notebook.find_run(str(tmp_path), "old") == old
    assert notebook.find_run(str(tmp_path), " old ") == old
    with pytest.raises(RapgenError, match="RUN_NAME"):
        notebook.find_run(str(tmp_path), "empty")
    with pytest.raises(RapgenError, match="02_finetune"):
        notebook.find_run(str(tmp_path / "empty"))
    with pytest.raises(RapgenError, match="02_finetune"):
        notebook.find_run(str(tmp_path / "missing"))


def test_run_artists_reads_the_runs_dataset(tmp_path, vocab_dir, capsys):
    dataset = tmp_path / "lyrics.txt"
    shutil.copy(SAMPLE_LYRICS, dataset)
    run = fake_run(tmp_path / "run1", 4, 1_000_000, vocab_dir=vocab_dir, dataset=dataset)
    artists = notebook.run_artists(run)
    assert sorted(artists) == sorted(
        ["Lil Tofu", "MC Fjord", "Doña Ruido", "Grandpa Static", "Kid Pixel", "Velvet Ghost"]
    )
    assert "6 artists" in capsys.readouterr().out
    dataset.unlink()
    assert notebook.run_artists(run) == []
    assert "not at hand" in capsys.readouterr().out
    assert notebook.run_artists(fake_run(tmp_path / "bare", 1, 1)) == []


# -- the loss plot --------------------------------------------------------------------

LOG = """step,loss,avg_loss,val_loss,learning_rate,tokens_per_sec,time
1,4.0,4.0,,1e-4,100,1
2,3.5,3.75,3.9,1e-4,100,2
3,3.0,3.5,,1e-4,100,3
4,2.5,3.25,3.6,1e-4,100,4
5,2."""


def test_read_log_splits_validation_and_skips_a_torn_line(tmp_path):
    (tmp_path / "log.csv").write_text(LOG)
    log = notebook.read_log(str(tmp_path))
    assert log["step"] == [1, 2, 3, 4] and log["loss"] == [4.0, 3.5, 3.0, 2.5]
    assert log["avg_loss"] == [4.0, 3.75, 3.5, 3.25]
    assert log["val_step"] == [2, 4] and log["val_loss"] == [3.9, 3.6]


def test_plot_log_draws_three_lines_and_saves(tmp_path):
    (tmp_path / "log.csv").write_text(LOG)
    out = tmp_path / "drive" / "loss.png"
    fig = notebook.plot_log(str(tmp_path), save_to=str(out))
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == ["training loss", "training loss (moving average)", "validation loss"]
    assert list(fig.axes[0].lines[2].get_xdata()) == [2, 4]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(out.parent) if p.endswith(".tmp")]


def test_plot_log_without_validation(tmp_path):
    (tmp_path / "log.csv").write_text("step,loss,avg_loss,val_loss\n1,4.0,4.0,\n2,3.0,3.5,\n")
    fig = notebook.plot_log(str(tmp_path))
    assert len(fig.axes[0].lines) == 2


def test_plot_log_explains_a_missing_or_empty_log(tmp_path):
    with pytest.raises(RapgenError, match="train first"):
        notebook.plot_log(str(tmp_path))
    (tmp_path / "log.csv").write_text("step,loss,avg_loss,val_loss\n")
    with pytest.raises(RapgenError, match="no steps yet"):
        notebook.plot_log(str(tmp_path))


def test_pick_artist_spells_it_as_the_dataset_does(capsys):
    artists = ["Lil Tofu", "Doña Ruido", "MC Fjord"]
    assert notebook.pick_artist("lil tofu", artists) == "Lil Tofu"
    assert notebook.pick_artist(" dona  ruido ", artists) == "Doña Ruido"
    assert capsys.readouterr().out == ""
    assert notebook.pick_artist("Lil Tof", artists) == "Lil Tof"
    assert "did you mean Lil Tofu" in capsys.readouterr().out
    assert notebook.pick_artist("Yung Lean", []) == "Yung Lean"  # no table to compare with: no note
    assert capsys.readouterr().out == ""
