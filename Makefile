# kvbench: isolated KV-cache reuse benchmarks (vLLM + Mooncake), one fresh stack per scenario.
# Every target installs what it needs (venv, Docker engine, compose v2, images) when missing:
# scripts/setup.sh, the independent steps side by side, one line each (logs in build/logs/).

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

# The set-up steps (venv, venv-test, docker, images[=CONFIG], chromium); see scripts/setup.sh.
SETUP = VENV='$(VENV)' PYTHON='$(PYTHON)' bash scripts/setup.sh

.PHONY: help venv venv-test docker images wheelhouse chromium bench bench-all breakeven working-set capacity report clean test test-fast lint format peer-bench reset-audit

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
	@echo "make reset-audit          a verified reset vs a fresh stack: TOST +-10 %, 8 stack pairs, rounds 1-2 (exit 3: not shown)"
	@echo "make test                 lint + the whole test suite (installs Docker/images when missing)"
	@echo "make test-fast            unit and stub tests only (no Docker, no lint)"
	@echo "make lint / format        ruff (lint + format check) and mypy on harness/; format rewrites"
	@echo "make venv / venv-test / docker / images / wheelhouse   set-up steps, idempotent"

# The venv: kvbench (editable) with its runtime dependencies for the commands that run it, with the
# test extras for test/lint/format (stamps $(VENV)/.installed-run and .installed-test). One line;
# the installer's output (uv, pip where uv cannot) goes to build/logs/venv.log.
venv:
	@$(SETUP) venv

venv-test:
	@$(SETUP) venv-test

docker:
	@$(SETUP) docker

wheelhouse:
	@bash scripts/make_wheelhouse.sh engine master

# One line when the images are present; their tags go to build/images.env.
images:
	@$(SETUP) venv docker images
	@$(PY) -m harness.stack.images --stack $(STACK) --env-file build/images.env

# kvbench builds the images the config's stack needs when they are missing (GPU stacks use public ones);
# the set-up makes what they need meanwhile (base image, wheelhouses).
# Not echoed: kvbench prints its run directory first; the command line would wrap on 80 columns.
bench:
	@$(SETUP) venv docker images=$(CONFIG)
	@$(KVBENCH) bench --config $(CONFIG) --scenario $(SCENARIO) $(ARGS)

bench-all:
	@$(SETUP) venv docker images=$(CONFIG)
	@$(KVBENCH) bench-all --config $(CONFIG) $(ARGS)

breakeven:
	@$(SETUP) venv docker images=configs/breakeven.yaml
	$(KVBENCH) bench-all --config configs/breakeven.yaml $(ARGS)

# Four arms x five working-set ratios; one stack per arm, a verified reset between ratios (docs/working-set.md).
working-set:
	@$(SETUP) venv docker images=configs/working-set.yaml
	$(KVBENCH) bench-all --config configs/working-set.yaml --isolation reset $(ARGS)

capacity: images
	$(PY) benchmarks/capacity.py $(ARGS)

# Equivalence (TOST, +-10 %) of a cell after a verified reset and one on a fresh stack: 8 stack pairs per
# scenario, rounds 1-2; exit 3 when not shown.
reset-audit:
	@$(SETUP) venv docker images
	$(PY) benchmarks/reset_audit.py $(ARGS)

report: venv
	@test -n "$(RUN)" || { echo "usage: make report RUN=results/<run_id>" >&2; exit 2; }
	$(KVBENCH) report $(RUN) $(ARGS)

clean:
	@$(SETUP) venv docker
	$(KVBENCH) clean

# One fresh CPU stack; kvbench and `vllm bench serve` interleaved, each against vLLM's own histograms.
peer-bench:
	@$(SETUP) venv docker images
	$(PY) benchmarks/peer_agreement.py $(ARGS)

# Unit + stub tests only: no Docker needed.
test-fast: venv-test
	$(PY) -m pytest -q -m "not docker and not stack and not browser" $(PYTEST_ARGS)

# Settings in pyproject.toml ([tool.ruff], [tool.mypy]).
lint: venv-test
	@$(VENV)/bin/ruff check harness tests benchmarks
	@$(VENV)/bin/ruff format --check -q harness tests benchmarks || { echo "make format rewrites them" >&2; exit 1; }
	@$(VENV)/bin/mypy

format: venv-test
	$(VENV)/bin/ruff check --fix -q harness tests benchmarks
	$(VENV)/bin/ruff format harness tests benchmarks

chromium:
	@bash scripts/ensure_chromium.sh

# Two workers, a test module each (2 cores: one real stack at a time per worker), in the order
# tests/conftest.py sorts them (real stacks first; xdist would otherwise put the modules with the
# most tests first, and the long real-stack modules last), then the few tests that look at every
# run's Docker resources (marker serial) on their own, with lint beside them: they mostly wait on
# light containers, and mypy from a clean clone takes ~30 s of one core. Podman's set-up (install, the
# images copied from Docker: ~2.5 min on a new machine, mostly disk) runs in the background from the
# start; the podman test waits for it (scripts/ensure_podman.sh takes a lock) and fails with its log
# if it failed. Every part runs even when one before it failed; the exit code is the first failure's.
test:
	@$(SETUP) venv-test docker images chromium
	@$(PY) -m harness.stack.images --stack $(STACK) --env-file build/images.env
	@mkdir -p build/logs; rc=0; \
	(. build/images.env && bash scripts/ensure_podman.sh "$$KVB_ENGINE_IMAGE" "$$KVB_MASTER_IMAGE") \
	  > build/logs/podman-setup.log 2>&1 & podman=$$!; \
	$(PY) -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder -m "not serial" $(DURATIONS) $(PYTEST_ARGS) || rc=$$?; \
	$(MAKE) --no-print-directory lint > build/logs/lint.log 2>&1 & lint=$$!; \
	$(PY) -m pytest -q -m serial $(PYTEST_ARGS); s=$$?; [ $$s -eq 5 ] && s=0; [ $$rc -ne 0 ] || rc=$$s; \
	wait $$lint; l=$$?; cat build/logs/lint.log; wait $$podman; [ $$l -eq 0 ] || echo "make lint failed" >&2; \
	[ $$rc -ne 0 ] || rc=$$l; exit $$rc
