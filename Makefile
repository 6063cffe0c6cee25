# pinpipe — the two commands are `make demo` and `make test`; everything else is what they need.
# Needs only Python 3.11 (+ Java 17 for the Spark engine); builds .venv from requirements.lock, installs the
# Debian servers the integration tests start (mariadb-server, postgresql, chromium) when they are missing.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_PACKAGES := mariadb-server postgresql chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck venv system-deps clean lock help airflow airflow-lock spark35

help:
	@echo "make demo   - set up .venv and run the pipeline end to end (pinpipe demo)"
	@echo "make test   - set up everything and run the whole test suite (lint, types, unit, integration)"
	@echo "make lock   - refresh requirements.lock from pyproject.toml"
	@echo "make airflow - build .venv-airflow (Airflow 3 + Databricks and Amazon providers) from requirements-airflow.lock"
	@echo "make spark35 - build .venv-spark35 (PySpark 3.5, for the Spark 3.5 test) from requirements-spark35.lock"

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

system-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: venv
	$(BIN)/ruff check src tests bench dags
	$(BIN)/ruff format --check src

typecheck: venv
	$(BIN)/mypy

test: venv system-deps airflow spark35 lint typecheck
	$(BIN)/pytest

demo: venv
	$(BIN)/pinpipe demo

lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install --quiet -e '.[mysql,postgres,kafka,kinesis,spark,dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^pinpipe' > requirements.lock && rm -rf .lockenv

# Airflow lives in its own virtualenv (it caps FastAPI below ours); the DAGs call `pinpipe` as a subprocess.
AIRFLOW_VENV  := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

airflow: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): requirements-airflow.lock
	rm -rf $(AIRFLOW_VENV) && $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -r requirements-airflow.lock
	touch $@

airflow-lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install --quiet apache-airflow==3.3.2 apache-airflow-providers-databricks apache-airflow-providers-amazon
	{ sed -n '1,2p' requirements-airflow.lock; .lockenv/bin/pip freeze --all | grep -v -E '^(pip|setuptools|wheel)=='; } > requirements-airflow.lock.new
	mv requirements-airflow.lock.new requirements-airflow.lock && rm -rf .lockenv

# PySpark 3.5 (the Spark of the Databricks LTS runtimes) in its own virtualenv; the test runs `python -m pinpipe`
# from it with the source tree on PYTHONPATH.
SPARK35_VENV  := .venv-spark35
SPARK35_STAMP := $(SPARK35_VENV)/.installed

spark35: $(SPARK35_STAMP)

$(SPARK35_STAMP): requirements-spark35.lock
	rm -rf $(SPARK35_VENV) && $(PYTHON) -m venv $(SPARK35_VENV)
	$(SPARK35_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SPARK35_VENV)/bin/python -m pip install --quiet -r requirements-spark35.lock
	touch $@

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) $(SPARK35_VENV) pinpipe-data .pytest_cache .mypy_cache .ruff_cache
