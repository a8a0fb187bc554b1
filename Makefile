# byol-bench: every target creates/refreshes .venv itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
DEMO_RUN := runs/demo
ARCH := $(shell uname -m)
# Torch releases that install from this platform's local wheel cache; elsewhere pip resolves them.
ifeq ($(ARCH),x86_64)
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
else
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
endif

.PHONY: venv demo test test-fast lint bench fmnist clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

fmnist:
	@if [ ! -d $(FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian)"; exit 1; \
	  fi; \
	fi

# The main job on the embedded default: BYOL on Fashion-MNIST, then the evaluations.
demo: venv fmnist
	$(PY) -m results.pipeline --preset byol_r18_fmnist_demo --run-dir $(DEMO_RUN)

test: venv fmnist
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow and not slurm"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Benchmarks print measured figures (never asserted in tests).
bench: venv
	$(PY) -m benchmarks.linear

clean-demo:
	rm -rf $(DEMO_RUN)
