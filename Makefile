# kvbench: isolated KV-cache reuse benchmarks (vLLM + Mooncake), one fresh stack per scenario.
# Every target installs what it needs (venv, Docker engine, compose v2, images) when missing.

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
KVBENCH  := $(VENV)/bin/kvbench
CONFIG   ?= configs/test_config.yaml
STACK    ?= cpu
SCENARIO ?= long_context_high_reuse
RUN      ?=
ARGS     ?=
PYTEST_ARGS ?=
# The slowest tests in every `make test` output (CI shows where the time goes).
DURATIONS ?= --durations=15

.PHONY: help venv docker images wheelhouse chromium bench bench-all breakeven working-set capacity report clean test test-fast lint format peer-bench reset-audit

help:
	@echo "make bench SCENARIO=x     one scenario on a fresh stack (default: $(SCENARIO))"
	@echo "make bench-all            every default scenario, each on its own fresh stack"
	@echo "   CONFIG=configs/x.yaml  another suite; ARGS='--mode both --isolation both --repeats 3' more kvbench flags"
	@echo "make report RUN=dir       aggregate a run directory into report.md"
	@echo "make clean                remove leftover stacks of crashed runs (by label)"
	@echo "make peer-bench           kvbench vs vllm bench serve on one stack, vs vLLM's server-side TTFT (ARGS='--pairs 3')"
	@echo "make breakeven            the prefix length above which fetching KV beats recomputing it (12 fresh stacks)"
	@echo "make working-set          four arms (none, local, store, local+store) by working set / engine KV pool"
	@echo "make capacity             client capacity: kvbench (1 and N workers) vs vllm bench serve on a stub server"
	@echo "make reset-audit          a verified reset vs a fresh stack (round-1 TTFT, paired), and what the peers' reset leaves"
	@echo "make test                 lint + the whole test suite (installs Docker/images when missing)"
	@echo "make test-fast            unit and stub tests only (no Docker, no lint)"
	@echo "make lint / format        ruff (lint + format check) and mypy on harness/; format rewrites"
	@echo "make docker / images / wheelhouse   set-up steps, idempotent"

# One line; pip's output goes to build/logs/venv.log (its tail is printed when it fails).
$(VENV)/.installed: pyproject.toml
	@bash scripts/logged.sh "[venv] $(VENV): pip install -e .[test]" installed build/logs/venv.log -- \
	  sh -c 'set -e; test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	         $(PY) -m pip install --upgrade pip; $(PY) -m pip install -e ".[test]"'
	@touch $@

venv: $(VENV)/.installed

docker:
	@bash scripts/ensure_docker.sh

wheelhouse:
	@bash scripts/make_wheelhouse.sh engine master

# One line when the images are present; their tags go to build/images.env.
images: venv docker
	@$(PY) -m harness.stack.images --stack $(STACK) --env-file build/images.env

# kvbench builds the images the config's stack needs when they are missing (GPU stacks use public ones).
# Not echoed: kvbench prints its run directory first; the command line would wrap on 80 columns.
bench: venv docker
	@$(KVBENCH) bench --config $(CONFIG) --scenario $(SCENARIO) $(ARGS)

bench-all: venv docker
	@$(KVBENCH) bench-all --config $(CONFIG) $(ARGS)

breakeven: venv docker
	$(KVBENCH) bench-all --config configs/breakeven.yaml $(ARGS)

# Four arms x five working-set ratios; one stack per arm, a verified reset between ratios (docs/working-set.md).
working-set: venv docker
	$(KVBENCH) bench-all --config configs/working-set.yaml --isolation reset $(ARGS)

capacity: venv images
	$(PY) benchmarks/capacity.py $(ARGS)

# One stack per scenario and pair: fresh round 1, the peers' reset, kvbench's verified reset, round 1 again.
reset-audit: venv docker
	$(PY) benchmarks/reset_audit.py $(ARGS)

report: venv
	@test -n "$(RUN)" || { echo "usage: make report RUN=results/<run_id>" >&2; exit 2; }
	$(KVBENCH) report $(RUN) $(ARGS)

clean: venv docker
	$(KVBENCH) clean

# One fresh CPU stack; kvbench and `vllm bench serve` interleaved, each against vLLM's own histograms.
peer-bench: venv docker
	$(PY) benchmarks/peer_agreement.py $(ARGS)

# Unit + stub tests only: no Docker needed.
test-fast: venv
	$(PY) -m pytest -q -m "not docker and not stack and not browser" $(PYTEST_ARGS)

# Settings in pyproject.toml ([tool.ruff], [tool.mypy]).
lint: venv
	@$(VENV)/bin/ruff check harness tests benchmarks
	@$(VENV)/bin/ruff format --check -q harness tests benchmarks || { echo "make format rewrites them" >&2; exit 1; }
	@$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff check --fix -q harness tests benchmarks
	$(VENV)/bin/ruff format harness tests benchmarks

chromium:
	@bash scripts/ensure_chromium.sh

# Two workers, a test module each (2 cores: one real stack at a time per worker), in the order
# tests/conftest.py sorts them (real stacks first; xdist would otherwise put the modules with the
# most tests first, and the long real-stack modules last), then the few
# tests that look at every run's Docker resources (marker serial) on their own.
test: lint images chromium
	$(PY) -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder -m "not serial" $(DURATIONS) $(PYTEST_ARGS)
	$(PY) -m pytest -q -m serial $(PYTEST_ARGS) || [ $$? -eq 5 ]
