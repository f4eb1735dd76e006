"""Notebook 04 run headless with nbclient in its smoke configuration, in a folder of its own.

Self-contained: the test writes the songs file 03 would have saved, copies the project's sample
lyrics as the training dataset, and puts a tiny model where a run folder would be (the notebook
only needs its vocabulary). espeak-ng and librosa run for real.
"""

import os
import shutil
import wave

import nbformat
import pytest
from nbclient import NotebookClient

from support.helpers import ROOT

pytestmark = pytest.mark.slow  # the notebook runs headless in a Jupyter kernel

COPIED = "Chickpeas stacked and the sky stay sunny"  # a line of the sample lyrics
SONGS = (
    "<<Lil Tofu - Fresh One>>\nmy dog went crazy\nyour cat got lazy\n<|endoftext|>\n"
    "<<Lil Tofu - Copycat>>\n" + COPIED + "\nthe oat milk money\n<|endoftext|>\n"
)


def texts(nb):
    """Every cell's text output, and the MIME types of everything displayed."""
    out, kinds = [], set()
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                out.append(o.text)
            elif o.output_type in ("display_data", "execute_result"):
                kinds.update(o.data)
                out.append(o.data.get("text/plain", ""))
                out.append(o.data.get("text/html", ""))
    return "\n".join(out), kinds


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_model):
    work = tmp_path_factory.mktemp("nb04")
    drive = work / "drive"
    drive.mkdir()
    (drive / "songs.txt").write_text(SONGS, encoding="utf-8")
    shutil.copy(ROOT / "data" / "sample_lyrics.txt", drive / "lyrics.txt")
    tiny_model(drive / "checkpoints" / "run1", n_layer=1, n_embd=16, n_head=2, n_ctx=32, seed=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPGEN_", "COLAB_", "JPY_"))}
    env.pop("MPLBACKEND", None)
    env.update({"RAPGEN_SMOKE": "1", "IPYTHONDIR": str(work / "ipython"), "TF_CPP_MIN_LOG_LEVEL": "2"})
    nb = nbformat.read(str(ROOT / "notebooks" / "04_perform.ipynb"), as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    client.execute(env=env)
    return work, nb


def test_04_judges_the_songs_and_highlights_the_copy(ran):
    _, nb = ran
    text, _ = texts(nb)
    assert "<<Lil Tofu - Fresh One>>" in text and "rhyme density" in text
    assert "longest copied span" in text and "Lil Tofu - Oat Milk Money" in text
    assert f'<mark title="copied from Lil Tofu - Oat Milk Money">{COPIED}</mark>' in text
    assert "best by both: song" in text


def test_04_performs_the_best_song_and_plays_it(ran):
    work, nb = ran
    text, kinds = texts(nb)
    wav = work / "drive" / "verse.wav"
    with wave.open(str(wav), "rb") as w:
        seconds = w.getnframes() / w.getframerate()
    assert seconds == pytest.approx(2 * 4 * 60 / 120, rel=0.01)  # two lines at the smoke tempo
    assert (work / "drive" / "verse.png").read_bytes()[:4] == b"\x89PNG"
    assert "2 bars at 120 bpm" in text
    assert "image/png" in kinds and "<audio" in text  # the picture and the player were shown
