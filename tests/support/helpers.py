"""Small helpers many test files use: the three invented songs, the project root, the GPT-2
vocabulary's folder, running the CLI in a subprocess, and checks of its one-line errors."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Three short songs in the lyrics format, invented for these tests.
THREE_SONGS = """<<Lil Tofu - Bean Curd Bounce>>
[Hook]
soy on my wrist and the tempeh on ice
<|endoftext|>
<<MC Fjord - Kall Natt>>
[Verse 1: MC Fjord]
cold harbour lights and the ferry runs late
<|endoftext|>
<<Kid Pixel - Extra Life>>
[Verse 1: Kid Pixel]
press start on the beat and I never respawn slow
<|endoftext|>
"""


def gpt2_vocab_dir():
    """The folder holding the real GPT-2 vocabulary ($RAPGEN_GPT2_DIR or ../shared/gpt2 beside the
    project), or None on a machine that has neither."""
    for folder in (os.environ.get("RAPGEN_GPT2_DIR"), ROOT.parent / "shared" / "gpt2"):
        if (
            folder
            and (pathlib.Path(folder) / "encoder.json").exists()
            and (pathlib.Path(folder) / "vocab.bpe").exists()
        ):
            return str(folder)
    return None


def assert_one_line_error(result, *needles):
    """A CompletedProcess of the CLI that failed as a user mistake must: exit 2, one stderr line
    `rapgen: error: …` holding every needle, no traceback anywhere."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rapgen: error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def snapshot(folder):
    """Every file of a folder and its subfolders (a run's tensorboard/), path -> bytes (to show that
    nothing was overwritten)."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return dict(sorted(out.items()))


def run_cli(args, env, cwd=None, input=None, timeout=300):
    """`python -m rapgen ARGS` -> CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "rapgen", *args],
        env=env,
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
