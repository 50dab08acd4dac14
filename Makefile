# Two entry points (see README): `make demo` and `make test`. Both are idempotent: the
# virtualenv is built once and refreshed only when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_TOOLS := espeak-ng
TEST_TOOLS := espeak-ng sox redis-server chromium  # chromium: the rep's page test
export HF_HUB_OFFLINE := 1

.PHONY: demo serve test lint system-deps demo-deps bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
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

demo: $(VENV)/.installed demo-deps
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
