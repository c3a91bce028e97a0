# Two entry points for a fresh machine: `make run` (the default experiment) and `make test`.
# Both create .venv and fetch Fashion-MNIST (Debian package) when missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: run test test-slow lint env data-package dvc.yaml

# the run is recorded in dvc.lock and the DVC cache (no recompute), so `dvc status` is clean afterwards
run: env data-package
	snakemake --profile profiles/local
	$(PY) -m pipeline_lib record

# three workers on two cores (tests/conftest.py says why, and how tests are grouped); PYTEST_ARGS: extra pytest options (CI passes
# --durations=15 to print the slowest tests)
test: env data-package
	$(PY) -m pytest -q -n 3 --dist loadscope --no-loadscope-reorder -m "not slow" $(PYTEST_ARGS)

# the `slow` tests: paper-scale wiring at small size (the 64 px tree through both engines, the rehearsal's
# wiring), kept out of make test's 20 minutes; CI runs them after it
test-slow: env data-package
	$(PY) -m pytest -q -n 2 --dist loadscope -m slow $(PYTEST_ARGS)

lint: env
	snakemake --lint && snakefmt --check Snakefile workflow/rules
	ruff check --select F src tests/*.py bench

# dvc.yaml lists one stage per job; rewrite it after changing which models, methods, grid points or tasks exist
dvc.yaml: env
	$(PY) -m pipeline_lib dvc-yaml

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,clip]'
	touch $@

# The pipeline falls back to the official download when the package cannot be installed.
data-package:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi
