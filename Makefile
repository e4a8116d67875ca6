PYTHON ?= python
# CPU by default: torch 2.13.0 is a local CPU wheel here. On a GPU machine use `make install TORCH=torch EXTRAS=dev,gpu`.
TORCH ?= torch==2.13.0
EXTRAS ?= dev

.PHONY: install test test-slow lint format benchmark

install:
	$(PYTHON) -m pip install "$(TORCH)"
	$(PYTHON) -m pip install -e ".[$(EXTRAS)]"

test:
	$(PYTHON) -m pytest -q

test-slow:
	$(PYTHON) -m pytest -q -m slow

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

benchmark:
	$(PYTHON) -m experiments.benchmark experts
