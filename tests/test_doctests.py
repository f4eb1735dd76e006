"""The examples in rapgen's docstrings run, as `python -m doctest` would run them (with ELLIPSIS, as
pytest's own doctests): one test per module that has any to run. Examples marked
`# doctest: +SKIP` (a model on disk, the network) are left out, as doctest itself leaves them.

The modules are those of the rapgen the tests import (the installed wheel under `make test`).
"""

import doctest
import importlib
import importlib.util
import pathlib

import pytest


def modules_with_examples():
    root = pathlib.Path(importlib.util.find_spec("rapgen").origin).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "__main__.py":  # importing it runs the command line
            continue
        examples = doctest.DocTestParser().get_examples(path.read_text(encoding="utf-8"))
        if any(not example.options.get(doctest.SKIP) for example in examples):
            parts = ["rapgen", *path.relative_to(root).with_suffix("").parts]
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=out.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(out)
