# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: install demo test test-slow clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[test]'
	# The COCO panoptic API (reference PQ for parity tests); its numpy pin is too old.
	$(PIP) install -q --no-deps -c constraints.txt panopticapi-lite
	touch $(STAMP)

demo: install
	$(VENV)/bin/odise-pl demo --out $(DEMO_DIR)

# the default run (< 10 min on 2 cores): lint, the import layers, then every test not marked slow
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports  # the layers of docs/architecture.md ([tool.importlinter] in pyproject.toml)
	$(PY) -m pytest -q -m "not slow"

# the slow end-to-end tests (SLURM, DDP, notebooks, resume after kills, the app in a browser); .ci/run runs them after make test
test-slow: install
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache
