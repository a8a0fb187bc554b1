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

.PHONY: venv demo test test-fast test-gpu lint bench bench-deps fmnist chromium compilers clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev,haiku]'
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

# Headless Chromium renders the HTML report in its test (tests/results/test_report.py).
chromium:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "chromium is missing (the report test needs it): run 'sudo apt-get install chromium' (Debian)"; exit 1; \
	  fi; \
	fi

# A C++ compiler and ninja build mmcv's ops (`make mm`, which `make test` runs).
compilers:
	@if ! command -v g++ >/dev/null || ! command -v ninja >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ ninja-build; \
	  else \
	    echo "g++ or ninja is missing (mmcv's build needs them): run 'sudo apt-get install g++ ninja-build' (Debian)"; exit 1; \
	  fi; \
	fi

# The main job on the embedded default: BYOL on Fashion-MNIST, then the evaluations.
demo: venv fmnist
	$(PY) -m results.pipeline --preset byol_r18_fmnist_demo --run-dir $(DEMO_RUN)

# GPU tests (marker gpu) run with `make test-gpu` on a CUDA machine (deselected here, counted as
# such, never skipped). The mmsegmentation tests (marker mm) run in `make test`: it builds mmcv
# once into a cache outside the clone (`make mm`: ~20 min on a fresh machine, then seconds).
test: venv fmnist chromium mm
	$(PY) -m pytest -m "not gpu"

test-gpu: venv
	$(PY) -m pytest -m gpu -s

test-mm: mm
	$(PY) -m pytest -m mm

test-fast: venv
	$(PY) -m pytest -m "not slow and not slurm"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Benchmarks print measured figures (never asserted in tests).
# The step benchmark's peers (lightly, byol-pytorch) go into .venv here, never at run time.
bench-deps: venv
	$(PY) -m pip install -q -e '.[dev,bench]'

bench: bench-deps
	$(PY) -m benchmarks.step
	$(PY) -m benchmarks.data
	$(PY) -m benchmarks.linear
	$(PY) -m benchmarks.transfer_linear --train 10000 --val 1000 --dim 512 --classes 101

clean-demo:
	rm -rf $(DEMO_RUN)

# Full mmcv + mmsegmentation for `python -m transfer.segmentation --engine mmseg` and the tests
# marked `mm`. mmsegmentation 1.2.2 needs mmcv >=2.0.0rc4,<2.2.0 with its compiled ops (mmcv-lite
# cannot import mmseg.apis) and PyPI has no mmcv wheel for torch 2.x here, so mmcv 2.1.0 is built
# for CPU from its sdist: with setuptools<70 (its setup.py imports pkg_resources) and -std=c++20
# instead of -std=c++17 (torch 2.14's headers need C++20). About 20 minutes on 2 cores. It is
# built in a cache outside the clone, MM_CACHE (default ~/.cache/byol-bench/mm), one folder per
# torch release and Python (the wheel only works with the torch it was built against), so later
# clones on the same machine only install it; an interrupted build resumes (ninja keeps the
# object files in $(MM_DIR)/mmcv-2.1.0/build).
MM_CACHE ?= $(HOME)/.cache/byol-bench/mm
PY_TAG := $(shell $(PYTHON) -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
MM_DIR := $(MM_CACHE)/$(subst ==,-,$(word 1,$(TORCH_PINS)))-$(PY_TAG)
MMCV_VERSION := 2.1.0
MM_SETUPTOOLS := $(abspath $(MM_DIR)/setuptools)
.PHONY: mm
mm: venv compilers
	mkdir -p $(MM_DIR)/wheels
	test -d $(MM_SETUPTOOLS) || $(PY) -m pip install -q --target $(MM_SETUPTOOLS) 'setuptools<70' wheel
	set -e; if ! ls $(MM_DIR)/wheels/mmcv-$(MMCV_VERSION)-*.whl >/dev/null 2>&1; then \
	  PYTHONPATH=$(MM_SETUPTOOLS) $(PY) -m pip download -q --no-deps --no-binary :all: \
	    --no-build-isolation mmcv==$(MMCV_VERSION) -d $(MM_DIR); \
	  test -d $(MM_DIR)/mmcv-$(MMCV_VERSION) || tar -xzf $(MM_DIR)/mmcv-$(MMCV_VERSION).tar.gz -C $(MM_DIR); \
	  sed -i 's/-std=c++17/-std=c++20/g' $(MM_DIR)/mmcv-$(MMCV_VERSION)/setup.py; \
	  cd $(MM_DIR)/mmcv-$(MMCV_VERSION) && CUDA_VISIBLE_DEVICES= FORCE_CUDA=0 MMCV_WITH_OPS=1 \
	    MAX_JOBS=$${MAX_JOBS:-2} PYTHONPATH=$(MM_SETUPTOOLS) $(abspath $(PY)) -m pip wheel -v \
	    --no-deps --no-build-isolation -w $(abspath $(MM_DIR)/wheels) . ; \
	fi
	$(PY) -m pip install -q $(MM_DIR)/wheels/mmcv-$(MMCV_VERSION)-*.whl 'mmengine>=0.10,<1' \
	  mmsegmentation==1.2.2 ftfy regex
	$(PY) -c "import mmcv.ops, mmseg.apis; print('mmcv', mmcv.__version__, 'with ops; mmseg', __import__('mmseg').__version__)"
