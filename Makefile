# `make run`: full E5 comparison on the embedded default table.  `make test`: the test suite.  Both install the
# dependency versions pinned in constraints.txt; `make lock` refreshes it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP_RUN  := $(VENV)/.stamp-run
STAMP_TEST := $(VENV)/.stamp-test
LOCK       := constraints.txt
LOCK_VENV  ?= $(or $(TMPDIR),/tmp)/e5jax-lock-venv
ARGS ?=

.PHONY: run test bench clean-venv lock

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml $(LOCK) | $(PY)
	$(PIP) install --quiet -c $(LOCK) -e .
	touch $@

# torch is pinned to the CPU build that pip finds locally (a bare `torch` pulls a multi-GB CUDA build)
$(STAMP_TEST): pyproject.toml $(LOCK) | $(PY)
	$(PIP) install --quiet -c $(LOCK) -e '.[test,bridge]'
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(VENV)/bin/e5jax run --overwrite $(ARGS)

# one pytest worker per core (pytest-xdist; tests are handed out as workers free up). PYTEST_WORKERS=0: one process
PYTEST_WORKERS ?= auto
test: $(STAMP_TEST)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal

bench: $(STAMP_TEST)
	$(PY) experiments/bench_vectorization.py
	$(PY) experiments/bench_roofline.py

clean-venv:
	rm -rf $(VENV)

# constraints.txt from a fresh venv: the newest versions pyproject.toml allows (run, test and bridge extras), pinned by
# `pip freeze`; the file's comment lines are kept, torch's +cpu label dropped (see the file's header)
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet -e '.[test,bridge]'
	{ grep '^#' $(LOCK); $(LOCK_VENV)/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

# The fully measured CPU table (docs/measured_table.md): train tiny-llava-olmoe on easy-vqa, profile latency
# (--threads 1) and exact-match quality of every config on 1,500 test questions, validate, run E5 on it and on the
# default table, collect the numbers (artifacts/measured/results_summary.json).
MEASURED       := artifacts/measured
MEASURED_TABLE := artifacts/tables/cpu_tiny_llava_olmoe_easyvqa.npz
.PHONY: measured-table
measured-table: $(STAMP_TEST)
	nice -n 10 $(VENV)/bin/e5jax-bridge train-tiny --out $(MEASURED)/tiny_llava_olmoe --seed 0 --steps 1500 \
	    --summary $(MEASURED)/train_summary.json
	$(VENV)/bin/e5jax-bridge easy-vqa --out $(MEASURED)/easy_vqa --requests 1500 --seed 0
	nice -n 10 $(VENV)/bin/e5jax-bridge profile --arch tiny-llava-olmoe --weights $(MEASURED)/tiny_llava_olmoe \
	    --threads 1 --requests $(MEASURED)/easy_vqa/requests.jsonl --quality-harness --batch-size 256 \
	    --max-new-tokens 4 --repeats 50 --out $(MEASURED_TABLE)
	$(VENV)/bin/e5jax validate $(MEASURED_TABLE)
	$(VENV)/bin/e5jax-bridge knob-effects --table $(MEASURED_TABLE) --table src/e5jax/data/default_table.npz \
	    --out $(MEASURED)/knob_effects.json
	nice -n 10 $(VENV)/bin/e5jax run --table $(MEASURED_TABLE) --out artifacts/measured_e5 --overwrite
	nice -n 10 $(VENV)/bin/e5jax run --out artifacts/default_e5_cmp --overwrite
	$(PY) -m profiling_bridge.measured_summary
	cp artifacts/measured_e5/summary.md $(MEASURED)/e5_summary_measured.md
	cp artifacts/default_e5_cmp/summary.md $(MEASURED)/e5_summary_default.md

# The shapes-vqa table (docs/shapes_table.md): train tiny-llava-olmoe on generated shapes-vqa questions, profile
# latency and graded quality of every config with that same checkpoint on 1,500 generated requests (latency last,
# refused above load 1.5), validate, knob effects per question type, run E5 on it.
SHAPES       := artifacts/shapes
SHAPES_TABLE := artifacts/tables/cpu_tiny_llava_olmoe_shapes.npz
.PHONY: shapes-table
shapes-table: $(STAMP_TEST)
	nice -n 5 $(VENV)/bin/e5jax-bridge train-tiny --task-set shapes --out $(SHAPES)/ck --seed 0 --full-fraction 0.3 \
	    --vision-steps 1500 --freeze-vision --threads 1 --summary $(SHAPES)/train_summary.json
	$(VENV)/bin/e5jax-bridge shapes-vqa --out $(SHAPES)/requests --requests 1500 --seed 0
	$(VENV)/bin/e5jax-bridge profile --arch tiny-llava-olmoe --weights $(SHAPES)/ck --threads 1 --max-load 1.5 \
	    --requests $(SHAPES)/requests/requests.jsonl --quality-harness --batch-size 256 --max-new-tokens 4 \
	    --repeats 50 --rounds 10 --out $(SHAPES_TABLE)
	$(VENV)/bin/e5jax validate $(SHAPES_TABLE) > $(SHAPES)/validate.txt
	$(VENV)/bin/e5jax-bridge knob-effects --table $(SHAPES_TABLE) --table $(MEASURED_TABLE) \
	    --table src/e5jax/data/default_table.npz --out $(SHAPES)/knob_effects.json
	nice -n 10 $(VENV)/bin/e5jax run --table $(SHAPES_TABLE) --out artifacts/shapes_e5 --overwrite
	cp artifacts/shapes_e5/summary.md $(SHAPES)/e5_summary.md
	$(PY) experiments/feature_lut.py --table $(SHAPES_TABLE) --table $(MEASURED_TABLE) \
	    --table src/e5jax/data/default_table.npz --out $(SHAPES)/feature_lut.json
	$(PY) experiments/knob_effects_by_size.py --table $(SHAPES_TABLE) --out $(SHAPES)/knob_effects_by_size.json
	$(PY) experiments/oracle_gap.py --table $(SHAPES_TABLE) --table $(MEASURED_TABLE) \
	    --table src/e5jax/data/default_table.npz --out $(SHAPES)/oracle_gap.json
	$(PY) experiments/latency_leverage.py --table $(SHAPES_TABLE) --knob vision_tokens --feature object_size \
	    --share 0 0.25 0.5 0.75 --output-mix 2 4 8 16 32 64 --out $(SHAPES)/latency_leverage.json

# The replication on 6,000 fresh requests with the same checkpoint (artifacts/shapes6k/PLAN.md: hypotheses fixed
# before measuring; RESULTS.md). Needs $(SHAPES)/ck (make shapes-table, or the committed checkpoint). ~15 min here.
SHAPES6K       := artifacts/shapes6k
SHAPES6K_TABLE := artifacts/tables/cpu_tiny_llava_olmoe_shapes6k.npz
.PHONY: shapes6k-table
shapes6k-table: $(STAMP_TEST)
	$(VENV)/bin/e5jax-bridge shapes-vqa --out $(SHAPES6K)/requests --requests 6000 --seed 1
	$(VENV)/bin/e5jax-bridge profile --arch tiny-llava-olmoe --weights $(SHAPES)/ck --threads 1 --max-load 1.5 \
	    --requests $(SHAPES6K)/requests/requests.jsonl --quality-harness --batch-size 256 --max-new-tokens 4 \
	    --repeats 50 --rounds 10 --out $(SHAPES6K_TABLE)
	$(VENV)/bin/e5jax validate $(SHAPES6K_TABLE) > $(SHAPES6K)/validate.txt
	$(VENV)/bin/e5jax-bridge knob-effects --table $(SHAPES6K_TABLE) --out $(SHAPES6K)/knob_effects.json
	$(PY) experiments/feature_lut.py --table $(SHAPES6K_TABLE) --out $(SHAPES6K)/feature_lut.json
	$(PY) experiments/oracle_gap.py --table $(SHAPES6K_TABLE) --out $(SHAPES6K)/oracle_gap.json
	$(PY) experiments/lut_cells.py --table $(SHAPES6K_TABLE) --out $(SHAPES6K)/lut_cells_b1.json
	$(PY) experiments/latency_leverage.py --table $(SHAPES6K_TABLE) --knob vision_tokens --feature object_size \
	    --share 0 0.25 0.5 0.75 --output-mix 2 4 8 16 32 64 --out $(SHAPES6K)/latency_leverage.json
	$(PY) experiments/label_rule.py --table $(SHAPES6K_TABLE) --table $(SHAPES_TABLE) --table $(MEASURED_TABLE) \
	    --table src/e5jax/data/default_table.npz --out $(SHAPES6K)/label_rule.json
	$(VENV)/bin/e5jax sweep --config $(SHAPES6K)/sweep_supervised/sweep_spec.toml --table $(SHAPES6K_TABLE) \
	    --out artifacts/shapes6k_sweep --overwrite --no-progress
	cp artifacts/shapes6k_sweep/summary.md artifacts/shapes6k_sweep/sweep.json $(SHAPES6K)/sweep_supervised/
	nice -n 10 $(VENV)/bin/e5jax run --table $(SHAPES6K_TABLE) --out artifacts/shapes6k_e5 --overwrite --no-figures
	cp artifacts/shapes6k_e5/summary.md $(SHAPES6K)/e5_summary.md
