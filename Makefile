# `make demo` and `make test` work on a fresh clone: they create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch first: a plain install would pull a multi-GB CUDA build (see README for GPUs).
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= outputs/demo

.PHONY: venv demo test test-slow clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	WANDB_MODE=$${WANDB_MODE:-offline} $(PY) train.py +experiment=smoke hydra.run.dir=$(DEMO_DIR)/run
	@echo "demo: run directory $(DEMO_DIR)/run (metrics.json, predictions/, checkpoints/best.ckpt, spec.json)"

test: venv
	WANDB_MODE=disabled $(PY) -m pytest -q

test-slow: venv
	WANDB_MODE=disabled $(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) outputs multirun wandb
