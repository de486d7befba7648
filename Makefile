# One command runs the main job, one runs the tests; both install from requirements.lock.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
# torch is pinned to the CPU wheel and onnxruntime to its CPU build; GPU users set both:
#   make install TORCH=<their CUDA torch> ORT=onnxruntime-gpu==1.31.1
TORCH  ?= torch==2.13.0
ORT    ?= onnxruntime==1.32.0
# pip's notes about this machine's extra package indexes are not the user's business
QUIET  := 2> >(grep -v "^WARNING: Location" >&2)
SHELL  := /bin/bash

.PHONY: install run test bench schemas lock clean

$(STAMP): pyproject.toml $(LOCK)
	@echo "installing $(TORCH), $(ORT) and $(LOCK) into $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)" "$(ORT)" $(QUIET)
	@$(PY) -m pip install -q --disable-pip-version-check -r $(LOCK) $(QUIET)
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -e . $(QUIET)
	@$(PY) -m pip check >/dev/null || { $(PY) -m pip check; echo "$(LOCK) is out of date: run make lock"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/settle run

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(PY) bench/settle_throughput.py

schemas: install
	$(PY) -m settle.schemas.jsonschema_gen

# re-resolve the dependencies and rewrite requirements.lock (commit it)
lock:
	PYTHON=$(PYTHON) TORCH="$(TORCH)" ORT="$(ORT)" tools/lock.sh

clean:
	rm -rf var .pytest_cache
