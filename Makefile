# Two entry points for a fresh clone (see README.md):
#   make demo   set up .venv with the tested, pinned set of dependencies and run the quickstart
#   make test   set up .venv the same way and run lint, types, the layer contract and the whole test suite
#
# `make team-demo` (examples/team_demo.sh) shows two homes sharing one team store: a PostgreSQL catalogue (the local
# server; a SQLite file when none answers) and an S3 bucket on a SeaweedFS server it starts on loopback.
#
# The tested set is requirements/lock.txt: exact versions with the SHA-256 of every file, installed in pip's
# hash-checking mode (`make lock` regenerates it from .venv after a deliberate upgrade). torch is installed first,
# on its own: its wheel differs between CPU and CUDA builds. On the project's CPU machines `torch==2.13.0` is a CPU
# wheel already on disk; on a GPU machine, `make TORCH_SPEC=torch==2.13.0 demo` with pip's ordinary index gives the
# CUDA build of the same version.
#
# `make test-latest` installs the newest releases instead (in .venv-latest) and runs the tests: drift is seen
# before users see it. It is not part of CI's required path. torch stays at TORCH_SPEC unless
# LATEST_TORCH_SPEC=torch asks for the newest one too.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_SPEC ?= pip==26.3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lorahub-installed
LATEST := .venv-latest
LATEST_TORCH_SPEC ?= $(TORCH_SPEC)

.PHONY: setup demo team-demo test lint typecheck docs unit bench lock test-latest clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(PIP_SPEC)"
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/quickstart.sh

team-demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/team_demo.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check lorahub tests benchmarks examples
	$(VENV)/bin/ruff format --check lorahub tests benchmarks examples
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# One pytest worker per core (pytest-xdist): many tests wait on subprocesses and servers, so even two workers keep
# a 2-core machine busier than one does. Session fixtures (PostgreSQL schemas, SeaweedFS, the OCI registry, the
# browser) are per worker, on free loopback ports.
unit: $(STAMP)
	$(VENV)/bin/pytest -q -n auto --dist worksteal

test: lint typecheck docs unit

bench: $(STAMP)
	$(PY) benchmarks/hash_throughput.py

lock: $(STAMP)
	requirements/lock.sh $(VENV)

test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[all,dev]" "$(LATEST_TORCH_SPEC)"
	$(LATEST)/bin/python -m pip freeze --exclude-editable
	touch $(LATEST)/.lorahub-installed
	$(MAKE) VENV=$(LATEST) test

clean:
	rm -rf $(VENV) $(LATEST) .mypy_cache .ruff_cache .pytest_cache .hypothesis site
