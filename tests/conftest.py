"""Shared fixtures: the real GPT-2 vocabulary and tiny models made by `rapgen init`.

The vocabulary is found through $RAPGEN_GPT2_DIR or `../shared/gpt2` beside the project;
tests that need it are skipped, with that reason, on a machine that has neither.

In CI (`CI` set, as `.ci/run` has it) nothing may be skipped: a skipped test is reported as a
failure with its reason, so a missing prerequisite (the vocabulary, espeak-ng, an installed
package) can never turn a run green.
"""

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

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


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"


def gpt2_vocab_dir():
    for folder in (os.environ.get("RAPGEN_GPT2_DIR"), ROOT.parent / "shared" / "gpt2"):
        if folder and (pathlib.Path(folder) / "encoder.json").exists() and (pathlib.Path(folder) / "vocab.bpe").exists():
            return str(folder)
    return None


@pytest.fixture(scope="session")
def vocab_dir():
    folder = gpt2_vocab_dir()
    if folder is None:
        pytest.skip("the real GPT-2 vocabulary (encoder.json, vocab.bpe) is not on this machine: "
                    "set RAPGEN_GPT2_DIR to a folder holding it, e.g. a downloaded model")
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, vocab_dir):
    """A 2-layer, 64-wide, 128-context GPT-2 with random weights and the real vocabulary."""
    from rapgen.model.folders import init

    folder = tmp_path_factory.mktemp("tiny") / "model"
    init(str(folder), n_layer=2, n_embd=64, n_head=2, n_ctx=128, seed=0, vocab_dir=vocab_dir)
    return str(folder)


@pytest.fixture
def cli_env(vocab_dir):
    """Environment for running `python -m rapgen` in a subprocess."""
    env = dict(os.environ)
    env["RAPGEN_VOCAB_DIR"] = vocab_dir
    env.pop("RAPGEN_MODEL_URL", None)
    return env


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
    import subprocess

    return subprocess.run([sys.executable, "-m", "rapgen", *args], env=env, cwd=cwd, input=input,
                          capture_output=True, text=True, timeout=timeout)
