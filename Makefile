# synthmix: every target does its own set-up. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup system-deps run test test-fast lint clean mlflow-server mlflow-server-stop

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install synthmix with its dev tools
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]' 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	$(PY) -c 'import synthmix, torch, torchvision, diffusers, mlflow, dvc, optuna'
	touch $(STAMP)

run: setup ## materialise the embedded data (offline) and run the whole study with dvc repro
	test -d .dvc || dvc init --quiet
	synthmix data default --if-missing
	dvc repro
	dvc status

system-deps: ## Debian packages the tests use: Chromium (report), PostgreSQL (Optuna, MLflow), OpenSSH (data remote)
	bash scripts/install-browser.sh
	bash scripts/install-postgres.sh
	bash scripts/install-sshd.sh

test: setup system-deps ## run the full test suite (what CI runs; it checks the layering too)
	HF_HUB_OFFLINE=1 SYNTHMIX_QUIET=1 $(PY) -m pytest

test-fast: setup ## the inner loop: every test not marked slow (under a minute)
	HF_HUB_OFFLINE=1 SYNTHMIX_QUIET=1 $(PY) -m pytest -m "not slow" -q

lint: setup ## ruff, and the package's layering (import-linter: no cycles, stages above their pieces)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports

mlflow-server: setup ## a team's MLflow server (PostgreSQL, proxied artifacts) on 127.0.0.1:5000; ARGS="--host 0.0.0.0" shares it
	bash scripts/install-postgres.sh
	bash scripts/mlflow-server.sh start $(ARGS)

mlflow-server-stop: ## stop the team MLflow server and its PostgreSQL
	bash scripts/mlflow-server.sh stop $(ARGS)

clean: ## remove the virtual environment and caches (not data or results)
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
