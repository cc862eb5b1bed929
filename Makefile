# cja-audiences: every set-up step lives here; the Dockerfile and .ci/run mirror it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

export AIRFLOW_HOME ?= $(CURDIR)/.local/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export CJA_AUDIENCES_HOME ?= $(CURDIR)/.local/home
# The local (demo) Airflow creates DAGs unpaused; deployments keep Airflow's default (paused).
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := False

.PHONY: venv demo test test-fast lint format airflow celery emulator bench soak shell clean azurite

# The package installs editable from plugins/ (pyproject.toml): `python -m cja_audiences`,
# the `cja-audiences` script and the benchmarks work in any shell with the venv active.
# Code changes need no reinstall; a changed [project.scripts] needs `make venv -B`.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# Azurite (Azure Blob's local server, from the npm registry) for the abfs:// lake tests.
# 3.35.0 is the newest release that runs on Node 20 (3.36 needs Node 21, 3.37 Node 22).
AZURITE := .local/node/node_modules/.bin/azurite-blob
$(AZURITE):
	npm install --prefix .local/node --no-audit --no-fund --silent azurite@3.35.0

azurite: $(AZURITE)

demo: venv
	$(PY) -m dev.demo

test: venv lint $(AZURITE)
	$(PY) -m pytest

test-fast: venv  # the unit tier: no emulator over HTTP, no Airflow DB, no whole DAGs
	$(PY) -m pytest -m "not integration and not e2e"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

airflow: venv
	$(PY) -m dev.airflow

celery: venv
	$(PY) -m dev.celery

emulator: venv
	$(PY) -m emulator --host 127.0.0.1 --port 8765 --state $(CURDIR)/.local/emulator

bench: venv
	for b in emulator extract compute diff publish dashboard scale; do $(PY) -m bench.$$b || exit 1; done

# 30 minutes of ten audiences under faults, then a reconcile; SOAK_ARGS=--quick for 2 minutes
soak: venv
	$(PY) -m bench.soak $(SOAK_ARGS)

shell: venv  # a shell with the venv and the demo's environment (dev/env.sh)
	bash --rcfile <(echo '[ -f ~/.bashrc ] && . ~/.bashrc; . $(VENV)/bin/activate; . dev/env.sh')

clean:
	rm -rf .local
