# Two entry points (see README): `make demo` and `make test`. Both are idempotent: the
# virtualenv is built once and refreshed only when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SYSTEM_TOOLS := espeak-ng sox redis-server
export HF_HUB_OFFLINE := 1

.PHONY: demo serve test lint system-deps bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(SYSTEM_TOOLS) >/dev/null; \
	fi

demo: $(VENV)/.installed system-deps
	$(BIN)/cuecard serve --demo

serve: $(VENV)/.installed
	$(BIN)/cuecard serve

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(VENV)/.installed system-deps lint
	$(BIN)/pytest -q

bench: $(VENV)/.installed system-deps
	$(BIN)/python -m bench.bench_stream
