# Two commands do all the set-up on a fresh machine:
#   make run    creates .venv, installs infer-orch, runs plans/quickstart.yaml on an embedded Ray
#   make test   creates .venv, installs infer-orch with its test extras, runs the whole test suite
#               (and installs Debian's chromium, for the HTML report's test, when it is missing);
#               after ruff; what CI runs (.ci/run)
#   make test-fast   the tests not marked slow: the daily loop
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Three pytest processes (pytest-xdist) on the 2-vCPU machine the suite is sized for: much of a test
# waits on a subprocess, a Ray node or a sleep, so two processes left a third of both cores idle (283 s,
# 69% busy) and three keep them 90% busy (217-236 s); four were no faster. A test module's tests run in
# one of them (module fixtures built once; each process starts its own Ray when it first needs one),
# the longest modules first
# (tests/conftest.py: LONG_FIRST). Exit code 5 (no tests ran) fails. Bytecode is cached even where
# the environment sets PYTHONDONTWRITEBYTECODE (this machine's image does): otherwise every Ray
# worker, CLI subprocess and pytest process compiles infer-orch's modules and the tests again.
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder --durations=15

.PHONY: run test test-fast coverage lint clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/infer-orch run plans/quickstart.yaml

test: $(STAMP) chromium
	$(BIN)/python -m ruff check orchestrator workers tests bench
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

# Line coverage of the library by the whole suite, in the pytest processes (not in Ray workers or
# CLI subprocesses).
coverage: $(STAMP) chromium
	$(PYTEST) --cov=orchestrator --cov=workers --cov-report=term

# The HTML report is checked in headless Chromium. Installed with apt-get (as root, or through
# sudo); where neither works that one test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	    ($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium \
	      >/dev/null) || echo "note: could not install chromium; the HTML report's browser test will skip"; }

lint: $(STAMP)
	$(BIN)/python -m ruff check orchestrator workers tests bench

clean:
	rm -rf $(VENV) results .pytest_cache
