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

# The fully measured CPU table (docs/measured_table.md): train tiny-llava-olmoe on easy-vqa, profile latency
# (--threads 1) and exact-match quality of every config on 1,500 test questions, validate, run E5 on it.
MEASURED       := artifacts/measured
MEASURED_TABLE := artifacts/tables/cpu_tiny_llava_olmoe_easyvqa.npz
.PHONY: measured-table
measured-table: $(STAMP_TEST)
	nice -n 10 $(VENV)/bin/e5jax-bridge train-tiny --out $(MEASURED)/tiny_llava_olmoe --seed 0 --steps 1500 \
	    --summary $(MEASURED)/train_summary.json
	$(VENV)/bin/e5jax-bridge easy-vqa --out $(MEASURED)/easy_vqa --requests 1500 --seed 0
	nice -n 10 $(VENV)/bin/e5jax-bridge profile --arch tiny-llava-olmoe --weights $(MEASURED)/tiny_llava_olmoe \
	    --threads 1 --requests $(MEASURED)/easy_vqa/requests.jsonl --quality-harness --batch-size 256 \
	    --max-new-tokens 4 --out $(MEASURED_TABLE)
	$(VENV)/bin/e5jax validate $(MEASURED_TABLE)
	$(VENV)/bin/e5jax-bridge knob-effects --table $(MEASURED_TABLE) --table src/e5jax/data/default_table.npz \
	    --out $(MEASURED)/knob_effects.json
	nice -n 10 $(VENV)/bin/e5jax run --table $(MEASURED_TABLE) --out artifacts/measured_e5 --overwrite
