"""Helpers for the Colab notebooks: set-up report, Drive folder, smoke mode, loss plot, run lookup.

Notebook cells hold no functions of their own (docs/architecture.md): anything that decides or loops
lives here, where it is tested, and a cell is a single call with a sentence above it.
Everything here degrades gracefully off Colab: `drive_folder` makes a local folder in place
of Google Drive, so the notebooks run the same on a laptop and in CI.

`RAPGEN_SMOKE=1` (`smoke()`) is CI's quick run of every notebook: a tiny model from the mirror
in `RAPGEN_MODEL_URL`, a few training steps, a few sampled tokens.

>>> DRIVE = drive_folder()                              # doctest: +SKIP
>>> figure = plot_log("checkpoints/run1")               # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import io
import os
import sys
import unicodedata
from typing import Dict, List, Optional

from rapgen import __version__
from rapgen.colab import get_secret, on_colab, tpu_runtime
from rapgen.data.collect.genius import API_URL, TOKEN_ENV, WEB_URL
from rapgen.data.dataset import dataset_info, read_text
from rapgen.data.lyrics import SEPARATOR, split_songs
from rapgen.devices import quiet_tensorflow_import
from rapgen.errors import RapgenError
from rapgen.fileio import atomic_write_bytes
from rapgen.finetune.events import show_tensorboard
from rapgen.finetune.run import read_log
from rapgen.model.folders import latest_checkpoint, recorded_settings
from rapgen.model.lora_run import ensure_base, is_lora_run

SMOKE_ENV = "RAPGEN_SMOKE"
DRIVE_MOUNT = "/content/drive"


def _on_colab() -> bool:
    return on_colab()


def smoke() -> bool:
    """True when the notebooks should run their smoke configuration (env `RAPGEN_SMOKE=1`)."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def setup_report() -> None:
    """Print the rapgen and TensorFlow versions and the GPU (or TPU), or a warning that there is none."""
    # TensorFlow's start-up chatter would bury the report; the kernel's environment is the
    # user's, so only descriptor 2 is muted, during the import.
    quiet_tensorflow_import(set_environment=False)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name") or gpu.name)
        except (RuntimeError, ValueError):
            names.append(gpu.name)
    print(f"rapgen {__version__}, TensorFlow {tf.__version__}, Python {sys.version.split()[0]}")
    tpu = tpu_runtime(os.environ, "/")
    if names:
        print("GPU: " + ", ".join(names))
    elif tpu:
        print(f"{tpu}: training runs on it (--distribute auto)")
    else:
        print("no GPU: training will be slow (on Colab: Runtime > Change runtime type > GPU)")
    if smoke():
        print(f"smoke mode ({SMOKE_ENV}=1): tiny model, a few steps, a few tokens")


def drive_folder(path: str = DRIVE_MOUNT + "/MyDrive/rapgen", local: str = "drive") -> str:
    """The folder that outlives a Colab session; returns its path.

    On Colab, Google Drive is mounted (the browser asks for permission once) and `path` is
    created in it. Anywhere else `local` is created and used in its place, so the notebooks
    run unchanged on a laptop or in CI.
    """
    if _on_colab():
        from google.colab import drive

        if not os.path.isdir(os.path.join(DRIVE_MOUNT, "MyDrive")):
            drive.mount(DRIVE_MOUNT)
        folder = path
        where = "Google Drive"
    else:
        folder = os.path.abspath(local)
        where = "a local folder standing in for Google Drive (not on Colab)"
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise RapgenError(f"cannot create {folder} ({e.strerror}): choose another folder") from None
    print(f"saving to {folder}: {where}")
    return folder


# -- collecting -----------------------------------------------------------------------


def genius_token() -> bool:
    """Say whether a Genius API token is at hand (never what it is); True if it is."""

    if (get_secret(TOKEN_ENV) or "").strip():
        print(f"Genius token: found ({TOKEN_ENV})")
        return True
    print(
        f"no Genius token: get a client access token at https://genius.com/api-clients, then on Colab add it "
        f"as a secret named {TOKEN_ENV} (the key icon on the left, with notebook access on); elsewhere set the "
        f"environment variable {TOKEN_ENV}"
    )
    return False


def genius_urls() -> Dict[str, str]:
    """`api_url` and `web_url` for `rapgen.collect("genius", ...)`: Genius itself, or in smoke mode
    the loopback imitation named by `RAPGEN_SMOKE_GENIUS_API` and `RAPGEN_SMOKE_GENIUS_WEB`."""

    if not smoke():
        return {"api_url": API_URL, "web_url": WEB_URL}
    urls = {"api_url": os.environ.get("RAPGEN_SMOKE_GENIUS_API"), "web_url": os.environ.get("RAPGEN_SMOKE_GENIUS_WEB")}
    if not urls["api_url"] or not urls["web_url"]:
        raise RapgenError(
            "smoke mode collects from a fake Genius: set RAPGEN_SMOKE_GENIUS_API and "
            "RAPGEN_SMOKE_GENIUS_WEB to its URLs (tests/test_notebooks.py starts one)"
        )
    return urls


def preview(path: str, songs: int = 1, max_chars: int = 1500) -> None:
    """Print the first songs of a lyrics file as the model will read them."""

    pieces = split_songs(read_text(path))
    print(f"{path}: {len(pieces)} songs; the first {min(songs, len(pieces))}:\n")
    text = "".join(p + "\n" + SEPARATOR + "\n" for p in pieces[:songs])
    print(text if len(text) <= max_chars else text[:max_chars] + " …")


# -- runs -----------------------------------------------------------------------------


def _has_checkpoint(folder: str) -> bool:

    return os.path.isdir(folder) and latest_checkpoint(folder) is not None


def find_run(checkpoint_dir: str, run_name: str = "") -> str:
    """The run folder `checkpoint_dir/run_name`, or with no name the most recently saved run.

    >>> find_run("/content/drive/MyDrive/rapgen/checkpoints")    # doctest: +SKIP
    '/content/drive/MyDrive/rapgen/model/folders/run1'
    """
    run_name = str(run_name or "").strip()
    if run_name:
        folder = os.path.join(checkpoint_dir, run_name)
        if not _has_checkpoint(folder):
            raise RapgenError(f"{folder} holds no checkpoint: check RUN_NAME, or leave it empty for the newest run")
        return folder

    runs = []
    if os.path.isdir(checkpoint_dir):
        for name in os.listdir(checkpoint_dir):
            folder = os.path.join(checkpoint_dir, name)
            if _has_checkpoint(folder):
                runs.append((os.path.getmtime(latest_checkpoint(folder) + ".index"), name, folder))
    if not runs:
        raise RapgenError(f"no trained run in {checkpoint_dir}: run 02_finetune.ipynb first")
    folder = max(runs)[2]
    print(f"using the newest run: {folder}")
    return folder


def fetch_base(run_dir: str, models_dir: str = "models") -> None:
    """A LoRA run holds only its adapters: download its released base model (e.g. 355M) when this
    machine lacks it, as a fresh Colab session with the run on Drive does. Nothing for a full run.

    >>> fetch_base("/content/drive/MyDrive/rapgen/model/folders/run1")    # doctest: +SKIP
    """

    if is_lora_run(run_dir):
        print(f"{run_dir} is a LoRA run: its base model is {ensure_base(run_dir, models_dir)}")


def run_artists(run_dir: str, quiet: bool = False) -> List[str]:
    """The artists of the dataset a run was trained on (from its train.json), most songs first.

    Prints the per-artist table unless quiet; an empty list when the dataset is not at hand.
    """

    dataset = recorded_settings(run_dir).get("dataset") or ""
    if not dataset or not os.path.exists(dataset):
        if not quiet:
            print(f"the dataset of {run_dir} is not at hand ({dataset or 'no train.json'}): type any artist's name")
        return []
    info = dataset_info(dataset, model=run_dir, quiet=quiet)
    return [a for a in info.artists if a]


def _name_key(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", str(name).casefold())
    return "".join(c for c in decomposed if c.isalnum())


def pick_artist(artist: str, artists: List[str]) -> str:
    """`artist` spelt as in the dataset (case, accents and spaces aside: `dona ruido` -> `Doña Ruido`).

    A name the dataset lacks is returned as typed, with a note naming the closest ones: the
    model has never seen its `<<Artist` header, so it will guess a style.
    """
    artist = str(artist).strip()
    by_key = {_name_key(a): a for a in artists}
    if _name_key(artist) in by_key:
        return by_key[_name_key(artist)]
    if artists:
        close = difflib.get_close_matches(artist, artists, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        print(f"{artist} is not in the training data, so the model will guess a style{hint}")
    return artist


# -- the loss plot --------------------------------------------------------------------


def tensorboard(logdir: str = "checkpoints") -> None:
    """Notebook 02's TensorBoard cell: on Colab, `%load_ext tensorboard` and `%tensorboard --logdir
    LOGDIR` (every run under it); elsewhere one line saying how to open it (rapgen.finetune.events).

    >>> tensorboard("checkpoints")                          # doctest: +SKIP
    """

    show_tensorboard(logdir)


def _pyplot():
    """pyplot, on the Agg backend when nothing could show a window (scripts, CI without a display)."""
    try:
        import matplotlib
    except ImportError:
        raise RapgenError("the loss plot needs matplotlib: pip install matplotlib") from None
    if (
        "ipykernel" not in sys.modules
        and not os.environ.get("MPLBACKEND")
        and not os.environ.get("DISPLAY")
        and sys.platform.startswith("linux")
    ):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_log(run_dir: str, save_to: Optional[str] = None):
    """Training loss, its moving average and the validation loss against the step; returns the figure.

    While both losses fall, the model learns what carries over to songs it has not seen; when
    the validation loss turns up while the training loss keeps falling, it has started
    memorising the lyrics: stop there, and train the next run for about as many steps as the
    lowest point of the validation loss. `save_to` also writes the figure as an image (e.g. a PNG on Drive).
    """
    log = read_log(run_dir)
    if not log["step"]:
        raise RapgenError(f"{os.path.join(run_dir, 'log.csv')} has no steps yet: train for a few steps first")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(log["step"], log["loss"], color="tab:blue", alpha=0.3, linewidth=1, label="training loss")
    ax.plot(log["step"], log["avg_loss"], color="tab:blue", linewidth=2, label="training loss (moving average)")
    if log["val_loss"]:
        ax.plot(log["val_step"], log["val_loss"], color="tab:orange", marker="o", linewidth=2, label="validation loss")
        if log["best_step"]:
            step = log["best_step"][-1]  # the last new lowest is the best so far
            value = log["val_loss"][log["val_step"].index(step)]
            ax.plot(
                [step],
                [value],
                linestyle="none",
                marker="*",
                markersize=16,
                color="tab:red",
                label=f"best: step {step}, kept as model-best",
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(f"{os.path.basename(os.path.normpath(run_dir))}: step {log['step'][-1]}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if save_to:
        buf = io.BytesIO()
        fig.savefig(buf, format=os.path.splitext(save_to)[1].lstrip(".").lower() or "png", dpi=100)
        os.makedirs(os.path.dirname(os.path.abspath(save_to)), exist_ok=True)
        atomic_write_bytes(save_to, buf.getvalue())
    return fig
