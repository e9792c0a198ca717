# Two commands do all the set-up on a fresh machine:
#   make run    creates .venv, installs infer-orch, runs plans/quickstart.yaml on an embedded Ray
#   make test   creates .venv, installs infer-orch with its test extras, runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/infer-orch run plans/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/python -m ruff check orchestrator workers tests bench

clean:
	rm -rf $(VENV) results .pytest_cache
