# `make demo` and `make test` work on a fresh clone: they create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch first: a plain install would pull a multi-GB CUDA build (see README for GPUs).
TORCH_SPEC ?= torch==2.13.0
# Another wheel index for torch alone (PyTorch's CUDA index on a GPU machine); empty: PyPI, whose Linux wheel is CPU.
TORCH_INDEX ?=
DEMO_DIR ?= outputs/demo
# Optional dependency groups of pyproject.toml, e.g. EXTRAS=dev,spark. One stamp per set, so a new set installs.
EXTRAS ?= dev
comma := ,
INSTALLED := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: venv demo test test-slow check wheel-demo clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(INSTALLED)

# generate -> train -> export -> score, on the built-in synthetic data.
demo: venv
	$(VENV)/bin/seqfraud synthetic --sessions 3000 --seed 0 --out $(DEMO_DIR)/data/synthetic_smoke
	WANDB_MODE=$${WANDB_MODE:-offline} $(PY) train.py +experiment=smoke paths.data_dir=$(DEMO_DIR)/data \
		hydra.run.dir=$(DEMO_DIR)/run
	$(PY) export.py run_dir=$(DEMO_DIR)/run out=$(DEMO_DIR)/artifact overwrite=true hydra.run.dir=$(DEMO_DIR)/export
	$(VENV)/bin/seqfraud score --artifact $(DEMO_DIR)/artifact --events $(DEMO_DIR)/data/synthetic_smoke/events.parquet \
		--out $(DEMO_DIR)/scores.parquet
	@echo "demo: run $(DEMO_DIR)/run, artifact $(DEMO_DIR)/artifact, scores $(DEMO_DIR)/scores.parquet"

# The default suite (`slow` stays out; markers set in tests/conftest.py), unit and integration tests in one run on
# TEST_WORKERS processes (pytest-xdist, a file per worker at a time): the unit tests' time is CPU, which a second
# core halves, and they fill the time the integration tests spend waiting on servers and subprocesses. One run
# instead of two saved 45 s of 340 on 2 cores (one xdist start-up, and no worker idle at the end of each half).
TEST_WORKERS ?= 2
test: venv
	WANDB_MODE=disabled $(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile --durations=15

test-slow: venv
	WANDB_MODE=disabled $(PY) -m pytest -q -m slow

# Lint, format, types and layering (the import contract in pyproject.toml).
check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy seqfraud
	$(VENV)/bin/lint-imports

# The demo from a built wheel in a fresh venv outside the repository (.ci/wheel_demo.sh).
wheel-demo:
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" bash .ci/wheel_demo.sh

clean:
	rm -rf $(VENV) outputs multirun wandb
