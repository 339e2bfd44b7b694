# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[test]'
	# The COCO panoptic API (reference PQ for parity tests); its numpy pin is too old.
	$(PIP) install -q --no-deps -c constraints.txt panopticapi-lite
	touch $(STAMP)

demo: install
	$(VENV)/bin/odise-pl demo --out $(DEMO_DIR)

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
