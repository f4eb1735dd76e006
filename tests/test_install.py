"""rapgen as users install it: the wheel `pip install git+…` builds, not this source tree.

`make test` (and so CI) builds that wheel, installs it non-editable and runs pytest from a
temporary folder with `RAPGEN_TEST_INSTALLED=1`. These tests then prove that the suite really
exercised the installed package, and that the install holds every module of the source tree:
a subpackage missing from the wheel (as `rapgen/data/collect/` once was) fails here, not on Colab.
Run outside `make test` (a developer's PYTHONPATH loop) the first two say so and skip.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from support.helpers import ROOT

SOURCE = ROOT / "rapgen"  # the package's source; an environment inside the clone (.venv/) is fine
INSTALLED = os.environ.get("RAPGEN_TEST_INSTALLED") == "1"
needs_install = pytest.mark.skipif(not INSTALLED, reason="run through `make test`, which installs the wheel first")

# Prints {module: file} for every name given on stdin, imported in a clean interpreter.
IMPORT_ALL = r"""
import importlib, json, sys
names = json.load(sys.stdin)
print(json.dumps({name: importlib.import_module(name).__file__ for name in names}))
"""


def source_modules():
    """Dotted names of every module in the source tree's rapgen/ package (`rapgen.__main__` is
    `python -m rapgen`, a script: importing it runs the command line)."""
    names = []
    for path in sorted((ROOT / "rapgen").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if "__pycache__" not in parts and parts[-1] != "__main__":
            names.append(".".join(parts))
    return names


def clean_env():
    """This environment without anything that would put the source tree on the path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME")}


def test_source_tree_lists_the_packages_modules():
    names = source_modules()
    assert "rapgen" in names and "rapgen.data.collect" in names and "rapgen.model.gpt2" in names
    assert len(names) >= 20


@needs_install
def test_the_suite_imports_the_installed_package():
    import rapgen

    here = pathlib.Path(rapgen.__file__).resolve()
    assert SOURCE not in here.parents, f"rapgen was imported from the source tree ({here}), not the installed wheel"
    assert "site-packages" in here.parts or "dist-packages" in here.parts, here


@needs_install
def test_every_module_imports_from_the_install(tmp_path):
    names = source_modules()
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        input=json.dumps(names),
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(files) == sorted(names)
    package = pathlib.Path(files["rapgen"]).resolve().parent
    assert package != SOURCE
    for name, file in files.items():
        path = pathlib.Path(file).resolve()
        assert package in path.parents or path.parent == package, f"{name} came from {path}, outside {package}"
        expected = package.joinpath(*name.split(".")[1:])
        assert path in (expected.with_suffix(".py"), expected / "__init__.py"), (name, path)
    assert (package / "__main__.py").is_file()


@needs_install
def test_the_install_holds_no_module_the_source_tree_lacks():
    """A module moved or deleted in the source must not ship on in the wheel (a stale build/lib)."""
    import rapgen

    package = pathlib.Path(rapgen.__file__).resolve().parent
    installed = sorted(
        ".".join(["rapgen", *p.relative_to(package).with_suffix("").parts]).removesuffix(".__init__")
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts
    )
    stale = sorted(set(installed) - set(source_modules()) - {"rapgen.__main__"})
    assert stale == [], f"installed, not in the source tree: {stale}"


def test_console_script_runs_from_anywhere(tmp_path):
    """The `rapgen` command pip installs next to this interpreter: help, then a collect source's help."""
    script = pathlib.Path(sys.executable).with_name("rapgen")
    exe = str(script) if script.exists() else shutil.which("rapgen")
    assert exe, "no `rapgen` command installed beside this Python"
    for args, needle in ((["--help"], "collect SOURCE"), (["collect", "csv", "--help"], "lyrics_col")):
        proc = subprocess.run([exe, *args], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert needle in out and "Traceback" not in out
