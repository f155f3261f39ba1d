# The README's commands. `make serve` and `make test` are the whole set-up on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS ?= models

.PHONY: install serve test lint examples bench clean system image

install: $(STAMP)

# Re-install only when the project's dependency list changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/pip install --quiet -e ".[export,loadtest,baseline,gbm]" --group dev
	touch $(STAMP)

# Export the built-in examples once; a later `make serve` reuses them.
$(MODELS)/.examples: | $(STAMP)
	$(BIN)/python -m export examples --out $(MODELS)
	touch $@

examples: $(MODELS)/.examples

serve: $(STAMP) $(MODELS)/.examples
	$(BIN)/python -m serve --model-dir $(MODELS) --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# Chromium (playground test), Node.js (Node example) and wrk (overload test, benchmark) come from Debian's packages.
system:
	./scripts/system-deps.sh

test: $(STAMP) system lint
	$(BIN)/python -m pytest

# tabserve:latest (and tabserve:VERSION), with docker or podman, on a local base image where no registry answers.
image: system
	./scripts/image.sh

bench: $(STAMP) system $(MODELS)/.examples
	$(BIN)/python -m loadtest bench --model-dir $(MODELS) --readme README.md

clean:
	rm -rf $(VENV) $(MODELS)
