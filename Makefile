# repshift — two commands on a fresh machine (Python 3.11, no GPU needed):
#   make demo   install into .venv and run the workflow on the offline demo preset
#   make test   install the dev tools and run the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
DEMO_TARGET := demo/results/figs/layer_sweep.pdf
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export MPLBACKEND ?= Agg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install dev demo test test-slow test-all lint format clean-demo lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, pinned, from pip (a CPU build is served here; an unpinned torch would pull CUDA wheels)
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

# Regenerate constraints.txt (the tested transitive versions) from the current environment.
lock: dev
	{ sed -n 1,2p constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/snakemake --workflow-profile profiles/demo --cores $(CORES) $(DEMO_TARGET) >&2
	@echo "$(CURDIR)/$(DEMO_TARGET)"

# `make test`: every test but the few marked slow (whole-DAG runs, minutes each); CI runs those as well.
test: dev
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: dev
	$(BIN)/python -m pytest -q -m slow

test-all: dev
	$(BIN)/python -m pytest -q

lint: dev
	$(BIN)/ruff check src tests workflow_scripts benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/python -m pytest -q tests/workflow/test_workflow.py::test_lint_and_format tests/workflow/test_envs.py

format: dev
	$(BIN)/ruff format src tests workflow_scripts benchmarks
	$(BIN)/snakefmt Snakefile rules

clean-demo:
	rm -rf demo

# A real single-node SLURM on this machine (Debian, as root: installs slurm-wlm + munge if missing), the demo DAG
# through it with profiles/slurm-ci (a GPU job killed mid-run must be retried), compared with a local run; the
# daemons it started are stopped on exit. Outputs and logs under build/slurm-test/. See scripts/slurm/.
.PHONY: test-slurm
test-slurm: dev
	REPSHIFT_SLURM_PYTEST=$${REPSHIFT_SLURM_PYTEST:-1} bash scripts/slurm/run_slurm_test.sh

# The real config.yaml through the real `rule all`, offline, against a stand-in hub (tiny models under the real
# repo ids, Gemma-Scope-format SAEs) and stand-in COCO/CIFAR-100 archives on 127.0.0.1; only the sizes in
# scripts/rehearsal/overlay.yaml differ. Outputs under build/rehearsal/. See scripts/rehearsal/.
.PHONY: rehearsal
rehearsal: install
	CORES=$(CORES) BIN=$(BIN) bash scripts/rehearsal/run.sh

# The study presets the same way (tiny Gemma-1 / Mistral stand-ins under their repo ids, the jb SAEs in sae-lens's
# own format, a stand-in ImageNet), each with its own size overlay and loopback port (so that the three rehearsals
# can run side by side). Outputs under build/rehearsal-<preset>/.
.PHONY: rehearsal-llava-gemma rehearsal-line-of-sight
rehearsal-llava-gemma: PORT = 47018
rehearsal-llava-gemma: install
	CORES=$(CORES) BIN=$(BIN) REHEARSAL_CONFIG=config/llava-gemma.yaml \
		REHEARSAL_OVERLAY=scripts/rehearsal/overlay-llava-gemma.yaml REHEARSAL_DIR=build/rehearsal-llava-gemma \
		REHEARSAL_IMAGENET=10 REHEARSAL_PORT=$(PORT) bash scripts/rehearsal/run.sh
rehearsal-line-of-sight: PORT = 47019
rehearsal-line-of-sight: install
	CORES=$(CORES) BIN=$(BIN) REHEARSAL_CONFIG=config/line-of-sight.yaml \
		REHEARSAL_OVERLAY=scripts/rehearsal/overlay-line-of-sight.yaml REHEARSAL_DIR=build/rehearsal-line-of-sight \
		REHEARSAL_IMAGENET=10 REHEARSAL_PORT=$(PORT) bash scripts/rehearsal/run.sh
