# Two entry points for a fresh clone (see README.md):
#   make demo   set up .venv and run the quickstart
#   make test   set up .venv and run lint, types and the whole test suite
#
# TORCH_SPEC: on the project's CPU machines `torch==2.13.0` is a CPU wheel already on disk; installing it before the
# project keeps pip from fetching a multi-GB CUDA build. On a GPU machine, `make TORCH_SPEC=torch demo`.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lorahub-installed

.PHONY: setup demo test lint typecheck docs unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/quickstart.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check lorahub tests benchmarks examples
	$(VENV)/bin/ruff format --check lorahub tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

unit: $(STAMP)
	$(VENV)/bin/pytest -q

test: lint typecheck docs unit

bench: $(STAMP)
	$(PY) benchmarks/hash_throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
