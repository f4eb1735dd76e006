"""rapgen's plan, checked from its source: layers, no import cycles, function-local imports only for
heavy libraries, no private names across modules (the rules: tests/support/layers.py).

The package read is the one the tests import (the installed wheel under `make test`), found
without importing it. The checker itself is tried on small packages with one planted mistake.
"""

import importlib.util
import pathlib
import textwrap

import pytest

from support.layers import all_violations

RULES = ("layers", "cycles", "local imports", "private names")


def rapgen_dir():
    return pathlib.Path(importlib.util.find_spec("rapgen").origin).parent


@pytest.fixture(scope="module")
def violations():
    return all_violations(rapgen_dir())


@pytest.mark.parametrize("rule", RULES)
def test_rapgen_keeps_the_rule(violations, rule):
    assert violations[rule] == [], f"{len(violations[rule])} against '{rule}':\n" + "\n".join(violations[rule])


# -- the checker on planted mistakes ------------------------------------------------------

# A small package shaped like rapgen that keeps every rule.
CLEAN = {
    "__init__.py": '"""face"""\n',
    "__main__.py": "from rapgen.cli.commands import main\n",
    "errors.py": "class RapgenError(Exception):\n    pass\n",
    "fileio.py": "import os\n\nfrom rapgen.errors import RapgenError\n",
    "model/__init__.py": "",
    "model/hparams.py": "import json\n\nfrom rapgen.errors import RapgenError\n",
    "model/gpt2.py": "import tensorflow as tf\n\nfrom rapgen.model.hparams import HParams\n",
    "model/folders.py": "from rapgen.model.gpt2 import GPT2\nfrom rapgen.model import hparams\n",
    "data/__init__.py": "",
    "data/lyrics.py": "from rapgen.model.hparams import HParams\n",
    "judge/__init__.py": "",
    "write/__init__.py": "",
    "finetune/__init__.py": "",
    "finetune/loop.py": "from rapgen.model.folders import GPT2\n",
    "stage/__init__.py": "",
    "cli/__init__.py": "",
    "cli/commands.py": (
        "from rapgen.errors import RapgenError\n\n\n"
        "def main():\n    from rapgen.finetune.loop import GPT2\n    return GPT2\n"
    ),
    "notebook.py": "from rapgen.cli.commands import main\n",
}


def write_package(root, files):
    for name, text in files.items():
        path = root / "rapgen" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "rapgen"


def test_the_clean_package_passes(tmp_path):
    assert all_violations(write_package(tmp_path, CLEAN)) == {rule: [] for rule in RULES}


@pytest.mark.parametrize(
    "rule, file, line, needle",
    [
        (
            "layers",
            "fileio.py",
            "from rapgen.data.lyrics import clean\n",
            "rapgen.fileio:1: import of rapgen.data.lyrics (layer 2) from layer 0",
        ),
        (
            "layers",
            "fileio.py",
            "def f():\n    import rapgen.finetune.loop\n",
            "rapgen.fileio:2: function-local import of rapgen.finetune.loop (layer 5) from layer 0",
        ),
        ("layers", "finetune/loop.py", "from rapgen import train\n", "import of rapgen (layer 8) from layer 5"),
        ("layers", "loose.py", "", "rapgen.loose: in no layer"),
        (
            "cycles",
            "model/hparams.py",
            "def f():\n    from rapgen.model.folders import load\n",
            "import cycle among rapgen.model.folders, rapgen.model.gpt2, rapgen.model.hparams",
        ),
        ("cycles", "data/lyrics.py", "from . import lyrics\n", "import cycle among rapgen.data.lyrics"),
        (
            "local imports",
            "finetune/loop.py",
            "def f():\n    from rapgen.model.hparams import HParams\n",
            "rapgen.finetune.loop:2: function-local import of rapgen.model.hparams, which imports no heavy library",
        ),
        (
            "private names",
            "data/lyrics.py",
            "from rapgen.model.hparams import _check\n",
            "rapgen.data.lyrics:1: imports _check from rapgen.model.hparams",
        ),
        (
            "private names",
            "data/lyrics.py",
            "from rapgen.model import hparams\nx = hparams._check\n",
            "rapgen.data.lyrics:2: reads rapgen.model.hparams._check",
        ),
    ],
)
def test_a_planted_mistake_is_found(tmp_path, rule, file, line, needle):
    files = dict(CLEAN)
    files[file] = line + files.get(file, "")
    found = all_violations(write_package(tmp_path, files))
    assert any(needle in v for v in found[rule]), found
    assert all(found[other] == [] for other in RULES if other != rule), found


def test_heaviness_passes_through_top_level_imports_and_parent_packages(tmp_path):
    files = dict(CLEAN)
    files["write/__init__.py"] = "import matplotlib\n"  # every module under write/ pulls it in
    files["write/songs.py"] = '"""light itself"""\n'
    files["finetune/samples.py"] = (
        "def f():\n    from rapgen.model.folders import GPT2\n"  # folders -> gpt2 -> tensorflow
        "def g():\n    from rapgen.write.songs import x\n"
    )
    assert all_violations(write_package(tmp_path, files))["local imports"] == []
