# `make demo` and `make test` each set up a virtual environment first (once).
#
# `make test` tests rapgen as users get it: it builds the wheel that `pip install git+…` builds,
# installs it (not editable) into the environment, and runs pytest from a temporary folder, so
# every test, the CLI and the notebook kernels import the installed package, never this tree.
# It runs the whole suite (~7 min; CI runs it). `make quick` runs it the same way without the tests
# marked `slow` (training runs, notebooks, many CLI subprocesses): the loop while editing.
# `make test TESTS=tests/model` (or a file, or file::test) runs part of it.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
WHEELS := build/wheels
TESTS ?= tests

.PHONY: demo test quick lint wheel install bench

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# The wheel, rebuilt every time (the source may have changed since the last one). setuptools
# copies the package into build/lib first and never removes a file from there: cleared too, or a
# module moved or deleted in the source would still ship.
wheel:
	rm -rf $(WHEELS) build/lib
	$(PY) -m pip wheel -q --no-deps -w $(WHEELS) .

install: $(VENV)/.installed wheel
	$(PY) -m pip install -q "$$(ls $(WHEELS)/rapgen-*.whl)[test]"
	$(PY) -m pip install -q --force-reinstall --no-deps $(WHEELS)/rapgen-*.whl

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

# pytest against the installed wheel, from a temporary folder, with the project's settings.
PYTEST = cd "$$(mktemp -d)" && RAPGEN_TEST_INSTALLED=1 "$(abspath $(PY))" -m pytest -q -p no:cacheprovider \
	--rootdir "$(CURDIR)" -c "$(CURDIR)/pyproject.toml"

test: install
	$(PYTEST) $(addprefix $(CURDIR)/,$(TESTS))

quick: install
	$(PYTEST) -m "not slow" $(addprefix $(CURDIR)/,$(TESTS))

bench: install
	$(PY) bench/bench_core.py
	$(PY) bench/bench_train.py

# ruff: pyflakes, pycodestyle's errors, bugbear and import order, and the formatter's check
# (settings in pyproject.toml; the same version as .pre-commit-config.yaml).
RUFF_VERSION := 0.17.6
lint: $(VENV)/.installed
	$(PY) -m pip install -q "ruff==$(RUFF_VERSION)"
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
