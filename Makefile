# The alliance portal. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT
# Test processes (pytest-xdist): each has its own test database, Redis database and folders.
TEST_PROCESSES ?= 2

.DEFAULT_GOAL := help
.PHONY: help demo test lint format worker migrate seed verify-audit bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

demo: $(VENV)/.runtime ## Set up and run the portal and a worker on the embedded default (Ctrl-C stops)
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py serve_demo --port $(PORT)

test: $(VENV)/.dev ## Set up and run the whole test suite (PostgreSQL/Redis if DATABASE_URL/CELERY_BROKER_URL say so)
	$(BIN)/python manage.py check --fail-level WARNING
	$(BIN)/python manage.py makemigrations --check --dry-run
	BROKER_FOLDER=$${BROKER_FOLDER:-$(CURDIR)/var/test-broker} PYTHONPATH=$(CURDIR) \
	  $(BIN)/pytest -p tests.xdist_broker -n $(TEST_PROCESSES) $(PYTEST_ARGS)

lint: $(VENV)/.dev ## ruff (lint and format) and the import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(VENV)/.dev ## Fix what ruff can fix
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

worker: $(VENV)/.runtime ## A coordinator Celery worker on the configured broker
	$(BIN)/celery -A portal worker --loglevel INFO --queues coordinator --pool solo

migrate: $(VENV)/.runtime ## Apply migrations
	$(BIN)/python manage.py migrate

seed: migrate ## Seed the demo alliance (idempotent)
	$(BIN)/python manage.py seed_demo

verify-audit: $(VENV)/.runtime ## Recompute the audit chain
	$(BIN)/python manage.py verify_audit

bench: $(VENV)/.runtime ## Time rounds (plain and secure), the dashboards, pages and API lists under load, the cost of DP and secure aggregation, audit verification
	$(BIN)/python bench/federation.py
	$(BIN)/python bench/dashboards.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/privacy.py
	$(BIN)/python bench/secagg.py
	$(BIN)/python bench/audit.py

clean: ## Remove the virtualenv and local data (var/)
	rm -rf $(VENV) var
