# One command runs the main job, one runs the tests; both install what they need.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch is pinned to the CPU wheel; GPU users install their own torch first.
TORCH  ?= torch==2.13.0
EXTRAS ?= cpu,train,test

.PHONY: install run test bench schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/settle run

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(PY) bench/settle_throughput.py

schemas: install
	$(PY) -m settle.schemas.jsonschema_gen

clean:
	rm -rf var .pytest_cache
