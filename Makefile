# The course's commands. `make course` is the main job, `make test` runs every check.
# Both set up .venv/ first (a no-op when it is up to date).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Notebook kernels come from .venv, whatever kernels the user has installed elsewhere.
export JUPYTER_PATH := $(CURDIR)/$(VENV)/share/jupyter
JOBS ?= 2

# Builds and tests draw static figures: nobody is there to move a slider.
course site test test-fast dryrun timings: export COURSE_STATIC_FIGURES = 1

.PHONY: help setup notebooks course site book test test-fast dryrun timings gpu-run lab bench zoo clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## create or update the environment in .venv/
	@scripts/setup_env.sh

notebooks: setup  ## regenerate the solution and exercise notebooks from notebooks/src/
	$(PY) scripts/build_notebooks.py

course: setup  ## main job: execute every notebook and build the website into _build/html
	$(PY) scripts/build_notebooks.py --check
	@$(MAKE) --no-print-directory site
	@# the same browser check as `make test`: every page loads with the network blocked
	$(VENV)/bin/pytest tests/website
	@echo "website: file://$(CURDIR)/_build/html/index.html"

# The execution cache is keyed on the code, not on the mode: clear it when the mode changes.
site:
	@mode=$$($(PY) -c 'import course_utils; print(course_utils.get_mode())'); \
	if [ -f _build/.course_mode ] && [ "$$(cat _build/.course_mode)" != "$$mode" ]; then \
	    echo "mode is now $$mode: clearing the notebook execution cache"; \
	    rm -rf _build/.jupyter_cache; \
	fi; mkdir -p _build && echo "$$mode" > _build/.course_mode
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going

book: course  ## alias of course

test: setup  ## every check: lint, generated notebooks up to date, unit tests, notebooks (nbval)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/build_notebooks.py --check
	rm -rf _build/executed _build/test-checkpoints
	@# the notebooks train from scratch, each in a folder of its own (never the user's checkpoints)
	COURSE_TEST_CHECKPOINTS=$(CURDIR)/_build/test-checkpoints COURSE_SAVE_EXECUTED=$(CURDIR)/_build/executed \
	    OMP_NUM_THREADS=1 $(VENV)/bin/pytest -n $(JOBS) \
	    --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=600 \
	    --ignore=tests/website tests notebooks/[0-9][0-9]*_*.ipynb
	@# the website, from the notebooks just executed (nothing runs twice), then the browser check
	$(PY) scripts/cache_executed.py _build/executed
	@$(MAKE) --no-print-directory site
	$(VENV)/bin/pytest tests/website

test-fast: setup  ## unit tests only (no notebooks, no website)
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -n $(JOBS) --ignore=tests/website tests

dryrun: setup  ## full mode with training cut short, every notebook, on any machine (README's times)
	OMP_NUM_THREADS=$(JOBS) $(PY) scripts/dryrun.py --readme $(NOTEBOOKS)

timings: setup  ## fast mode, every notebook, timed one at a time (the README's fast column)
	OMP_NUM_THREADS=$(JOBS) $(PY) scripts/dryrun.py --fast --readme $(NOTEBOOKS)

gpu-run: setup  ## on an NVIDIA GPU: full mode end to end, timed, into benchmarks/results/
	scripts/gpu_run.sh

lab: setup  ## open JupyterLab on the course
	$(VENV)/bin/jupyter lab notebooks/

zoo: setup  ## train the model zoo into models/ (about 30 min a model on 2 CPU cores; resumable)
	$(PY) scripts/train_zoo.py $(ZOO_ARGS)
	$(PY) scripts/train_zoo.py --data usiigaci --methods cellpose $(ZOO_ARGS)

bench: setup  ## speed against the reference packages (writes benchmarks/results/)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:  ## remove the website build and caches (keeps .venv and data caches)
	rm -rf _build .pytest_cache .ruff_cache
