"""Shared fixtures and hooks: the real GPT-2 vocabulary and tiny models made by `rapgen init`.
Helpers that are not fixtures live in tests/support/.

The vocabulary is found through $RAPGEN_GPT2_DIR or `../shared/gpt2` beside the project;
tests that need it are skipped, with that reason, on a machine that has neither.

In CI (`CI` set, as `.ci/run` has it) nothing may be skipped: a skipped test is reported as a
failure with its reason, so a missing prerequisite (the vocabulary, espeak-ng, an installed
package) can never turn a run green.
"""

import os
import shutil

import pytest

from support.helpers import gpt2_vocab_dir

# The tiny training runs shared by finetune/test_best_checkpoint.py and finetune/test_tensorboard.py.
pytest_plugins = ["support.early_stop_runs"]


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


@pytest.fixture(scope="session")
def vocab_dir():
    folder = gpt2_vocab_dir()
    if folder is None:
        pytest.skip(
            "the real GPT-2 vocabulary (encoder.json, vocab.bpe) is not on this machine: "
            "set RAPGEN_GPT2_DIR to a folder holding it, e.g. a downloaded model"
        )
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, vocab_dir):
    """Tiny GPT-2 model directories, `rapgen init`'s: random weights of one shape and seed, the real
    vocabulary. `tiny_model(folder, n_layer=1, n_embd=16, n_head=2, n_ctx=16, seed=4)` writes one into
    `folder` (a copy of the session's one of that shape and seed, made once) and returns its path."""
    from rapgen.model.folders import init

    made = {}

    def make(folder, n_layer: int, n_embd: int, n_head: int, n_ctx: int, seed: int) -> str:
        key = (n_layer, n_embd, n_head, n_ctx, seed)
        if key not in made:
            made[key] = str(tmp_path_factory.mktemp("tiny") / "model")
            init(made[key], n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_ctx=n_ctx, seed=seed, vocab_dir=vocab_dir)
        shutil.copytree(made[key], folder)
        return str(folder)

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model):
    """A 2-layer, 64-wide, 128-context GPT-2 with random weights and the real vocabulary (shared:
    tests only read it)."""
    return tiny_model(tmp_path_factory.mktemp("tiny") / "model", n_layer=2, n_embd=64, n_head=2, n_ctx=128, seed=0)


@pytest.fixture
def cli_env(vocab_dir):
    """Environment for running `python -m rapgen` in a subprocess."""
    env = dict(os.environ)
    env["RAPGEN_VOCAB_DIR"] = vocab_dir
    env.pop("RAPGEN_MODEL_URL", None)
    return env
