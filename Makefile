# `make demo` and `make test` each set up a virtual environment first (once).
#
# `make test` tests rapgen as users get it: it builds the wheel that `pip install git+…` builds,
# installs it (not editable) into the environment, and runs pytest from a temporary folder, so
# every test, the CLI and the notebook kernels import the installed package, never this tree.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
WHEELS := build/wheels
TESTS ?= tests

.PHONY: demo test wheel install bench

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# The wheel, rebuilt every time (the source may have changed since the last one).
wheel:
	rm -rf $(WHEELS)
	$(PY) -m pip wheel -q --no-deps -w $(WHEELS) .

install: $(VENV)/.installed wheel
	$(PY) -m pip install -q "$$(ls $(WHEELS)/rapgen-*.whl)[test]"
	$(PY) -m pip install -q --force-reinstall --no-deps $(WHEELS)/rapgen-*.whl

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

test: install
	cd "$$(mktemp -d)" && RAPGEN_TEST_INSTALLED=1 "$(abspath $(PY))" -m pytest -q -p no:cacheprovider \
		--rootdir "$(CURDIR)" -c "$(CURDIR)/pyproject.toml" $(addprefix $(CURDIR)/,$(TESTS))

bench: install
	$(PY) bench/bench_core.py
	$(PY) bench/bench_train.py
