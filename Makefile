# `make run`: full E5 comparison on the embedded default table.  `make test`: the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP_RUN  := $(VENV)/.stamp-run
STAMP_TEST := $(VENV)/.stamp-test
ARGS ?=

.PHONY: run test bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

# torch is pinned to the CPU build that pip finds locally (a bare `torch` pulls a multi-GB CUDA build)
$(STAMP_TEST): pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[test,bridge]'
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(VENV)/bin/e5jax run --overwrite $(ARGS)

test: $(STAMP_TEST)
	$(PY) -m pytest

bench: $(STAMP_TEST)
	$(PY) experiments/bench_vectorization.py
	$(PY) experiments/bench_roofline.py

clean-venv:
	rm -rf $(VENV)
