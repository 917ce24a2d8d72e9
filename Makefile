# make setup | lint | test | test-fast | demo | run. Everything installs into .venv from requirements.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
PYTEST_ARGS ?=

.PHONY: setup lint test test-fast demo run bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Tests run in a random order (pytest-randomly), so a test that leans on another's leftovers fails; the seed is
# printed at the end. Repeat an order with: make test PYTEST_ARGS=--randomly-seed=N
test: setup lint
	$(PY) -m pytest -q -p randomly $(PYTEST_ARGS)

# ruff lints and checks the formatting (settings in pyproject.toml); `ruff format .` fixes the latter.
# lint-imports holds the package's layers (pyproject.toml's [tool.importlinter]).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

# Everything that neither trains nor starts a server or a browser: under a minute on 2 cores.
test-fast: setup
	$(PY) -m pytest -q -p randomly -m "not slow and not browser" $(PYTEST_ARGS)

demo: setup
	$(PY) -m embedder train --data demo --out runs/demo

run: setup
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

# Every benchmark, written into BENCHMARKS.md's generated section (+ knn_recall_qps.png): about 15 min on 2 cores.
bench: setup
	$(PY) -m bench.run_all

clean:
	rm -rf runs/demo .pytest_cache artifacts
