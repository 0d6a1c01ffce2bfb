# `make demo` and `make test` work on a fresh clone: they create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch first: a plain install would pull a multi-GB CUDA build (see README for GPUs).
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= outputs/demo
# Optional dependency groups of pyproject.toml, e.g. EXTRAS=dev,spark. One stamp per set, so a new set installs.
EXTRAS ?= dev
comma := ,
INSTALLED := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: venv demo test test-slow clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(INSTALLED)

# generate -> train -> export -> score, on the built-in synthetic data.
demo: venv
	$(PY) -m seqfraud.data.synthetic --sessions 3000 --seed 0 --out $(DEMO_DIR)/data/synthetic_smoke
	WANDB_MODE=$${WANDB_MODE:-offline} $(PY) train.py +experiment=smoke paths.data_dir=$(DEMO_DIR)/data \
		hydra.run.dir=$(DEMO_DIR)/run
	$(PY) export.py run_dir=$(DEMO_DIR)/run out=$(DEMO_DIR)/artifact overwrite=true hydra.run.dir=$(DEMO_DIR)/export
	$(PY) -m seqfraud.score --artifact $(DEMO_DIR)/artifact --events $(DEMO_DIR)/data/synthetic_smoke/events.parquet \
		--out $(DEMO_DIR)/scores.parquet
	@echo "demo: run $(DEMO_DIR)/run, artifact $(DEMO_DIR)/artifact, scores $(DEMO_DIR)/scores.parquet"

test: venv
	WANDB_MODE=disabled $(PY) -m pytest -q

test-slow: venv
	WANDB_MODE=disabled $(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) outputs multirun wandb
