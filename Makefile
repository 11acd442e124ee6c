# The course's commands. `make course` is the main job, `make test` runs every check.
# Both set up .venv/ first (a no-op when it is up to date).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Notebook kernels come from .venv, whatever kernels the user has installed elsewhere.
export JUPYTER_PATH := $(CURDIR)/$(VENV)/share/jupyter
export MPLBACKEND ?= Agg
JOBS ?= 2

.PHONY: help setup notebooks course book test test-fast lab bench clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## create or update the environment in .venv/
	@scripts/setup_env.sh

notebooks: setup  ## regenerate the solution and exercise notebooks from notebooks/src/
	$(PY) scripts/build_notebooks.py

course: setup  ## main job: execute every notebook and build the website into _build/html
	$(PY) scripts/build_notebooks.py --check
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going
	@echo "website: $(CURDIR)/_build/html/index.html"

book: course  ## alias of course

test: setup  ## every check: lint, generated notebooks up to date, unit tests, notebooks (nbval)
	$(VENV)/bin/ruff check .
	$(PY) scripts/build_notebooks.py --check
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -n $(JOBS) --dist loadfile \
	    --nbval-lax --nbval-current-env --nbval-cell-timeout=600 \
	    tests notebooks/[0-9][0-9]_*.ipynb

test-fast: setup  ## unit tests only (no notebooks)
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -n $(JOBS) tests

lab: setup  ## open JupyterLab on the course
	$(VENV)/bin/jupyter lab notebooks/

bench: setup  ## speed against the reference packages (writes benchmarks/results/)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:  ## remove the website build and caches (keeps .venv and data caches)
	rm -rf _build .pytest_cache .ruff_cache
